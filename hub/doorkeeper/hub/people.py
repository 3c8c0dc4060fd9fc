"""Residents as operators manage them: list, show, update, enrol with consent, no silent duplicates.

Rules that hold for every way a person enters (AddPerson, UpdatePerson, ImportPersons):
- a face template is accepted only with a consent record (given now, or already stored);
  a resident without consent can still get a card or a PIN;
- a face that matches another person of the site at or above the doors' match threshold
  is refused, naming that person, unless the operator allows it (the audit entry says so):
  two persons with one face make the door refuse the real resident as ambiguous;
- every accepted change is one new site version; a refused one changes nothing.

Names and consent records stay sealed with the hub data key at rest; they are unsealed
here only to answer an operator.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from doorkeeper.hub.store import ChangeSet, HubStore, PersonRow, Site
from doorkeeper.hub.whitelist import InvalidRequest, PersonSpec, Whitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import templates as tmpl

_PERSON_ID = re.compile(r"[0-9a-f]{32}")


def check_person_id(person_id: str) -> str:
    if not isinstance(person_id, str) or not _PERSON_ID.fullmatch(person_id):
        raise InvalidRequest("person id must be 32 hex digits")
    return person_id


@dataclass(frozen=True)
class Duplicate:
    person_id: str
    name: str
    similarity: float


class DuplicateFace(InvalidRequest):
    """A template matches another person of the site; nothing was stored."""

    def __init__(self, dup: Duplicate, threshold: float) -> None:
        super().__init__(
            f"this face matches {dup.name} ({dup.person_id}) at {dup.similarity:.2f} >= {threshold:.2f}; "
            "enrol it anyway only with allow_duplicate_face (--allow-duplicate-face), which is audited")
        self.duplicate = dup


@dataclass
class _Faces:
    """One site's enrolled templates, unit rows per model, as of one site version."""

    version: int
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)
    owners: dict[str, list[str]] = field(default_factory=dict)

    def add(self, person_id: str, templates: Iterable[pb.Template]) -> None:
        for t in templates:
            self.rows.setdefault(t.model_id, []).append(tmpl.decode(t).astype(np.float32))
            self.owners.setdefault(t.model_id, []).append(person_id)

    def drop(self, person_ids: set[str]) -> None:
        for model, owners in self.owners.items():
            keep = [i for i, pid in enumerate(owners) if pid not in person_ids]
            self.rows[model] = [self.rows[model][i] for i in keep]
            self.owners[model] = [owners[i] for i in keep]

    def best(self, template: pb.Template, exclude: set[str]) -> tuple[str, float] | None:
        rows = self.rows.get(template.model_id)
        if not rows:
            return None
        sims = np.stack(rows) @ tmpl.decode(template).astype(np.float32)
        owners = self.owners[template.model_id]
        for index in np.argsort(-sims):
            if owners[index] not in exclude:
                return owners[index], float(sims[index])
        return None


class People:
    def __init__(self, store: HubStore, whitelist: Whitelist,
                 threshold: float = tmpl.MATCH_THRESHOLD) -> None:
        self.store = store
        self.whitelist = whitelist
        self.threshold = threshold
        self._faces: dict[str, _Faces] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ reading
    def info(self, row: PersonRow) -> pb.PersonInfo:
        record = self.whitelist.record(row.record_sealed)
        profile = self.whitelist.profile(row.name_sealed)
        return pb.PersonInfo(
            person_id=row.person_id, site_id=row.site_id, name=profile.name,
            templates=len(record.templates), cards=len(record.card_hashes), pins=len(record.pin_hashes),
            valid_from=record.valid_from, valid_until=record.valid_until, doors=list(record.doors),
            schedules=list(record.schedules), always_allowed=record.always_allowed,
            consent=profile.consent, updated_version=row.updated_version, created_at=profile.created_at,
            duplicate_of=list(profile.duplicate_of),
        )

    def find(self, site_ref: str, search: str = "") -> tuple[Site, list[pb.PersonInfo]]:
        """Persons of a site whose name holds `search` (case-insensitive), by name."""
        site = self.store.get_site(site_ref)
        needle = search.casefold()
        found = [self.info(r) for r in self.store.list_persons(site.site_id)]
        found = [p for p in found if needle in p.name.casefold()]
        return site, sorted(found, key=lambda p: (p.name.casefold(), p.person_id))

    def get(self, person_id: str) -> pb.PersonInfo:
        return self.info(self.store.get_person(check_person_id(person_id)))

    # ------------------------------------------------------------ faces
    def _site_faces(self, site: Site) -> _Faces:
        """The site's templates as of `site.version` (rebuilt when another writer moved it)."""
        with self._lock:
            faces = self._faces.get(site.site_id)
            if faces is not None and faces.version == site.version:
                return faces
        faces = _Faces(site.version)
        for row in self.store.list_persons(site.site_id):
            faces.add(row.person_id, self.whitelist.record(row.record_sealed).templates)
        with self._lock:
            self._faces[site.site_id] = faces
        return faces

    def _remember(self, before: Site, after: Site, added: dict[str, Sequence[pb.Template]],
                  removed: set[str]) -> None:
        """Carry the cached faces to the version our own change made."""
        with self._lock:
            faces = self._faces.get(before.site_id)
            if faces is None or faces.version != before.version or after.version != before.version + 1:
                self._faces.pop(before.site_id, None)
                return
            faces.drop(removed | set(added))
            for pid, templates in added.items():
                faces.add(pid, templates)
            faces.version = after.version

    def duplicate(self, faces: _Faces, templates: Sequence[pb.Template],
                  exclude: set[str]) -> Duplicate | None:
        """The closest other person at or above the threshold, if any."""
        best: tuple[str, float] | None = None
        for t in templates:
            hit = faces.best(t, exclude)
            if hit is not None and hit[1] >= self.threshold and (best is None or hit[1] > best[1]):
                best = hit
        if best is None:
            return None
        name = self.whitelist.person_name(self.store.get_person(best[0]).name_sealed)
        return Duplicate(best[0], name, best[1])

    @staticmethod
    def check_consent(templates: Sequence[pb.Template], consent: str) -> None:
        if templates and not consent.strip():
            raise InvalidRequest("a face template needs a consent record (--consent: who consented, how, "
                                 "reference); without consent enrol a card or a PIN only")

    # ------------------------------------------------------------ changes
    def add(self, site_ref: str, spec: PersonSpec,
            allow_duplicate: bool = False) -> tuple[str, Site, Duplicate | None]:
        """Enrol one person (one new version). Refuses a template without consent, or a face
        matching another person unless `allow_duplicate` (then the match is returned)."""
        self.check_consent(spec.templates, spec.consent)
        site = self.store.get_site(site_ref)
        dup = self.duplicate(self._site_faces(site), spec.templates, set()) if spec.templates else None
        if dup is not None and not allow_duplicate:
            raise DuplicateFace(dup, self.threshold)
        if dup is not None:
            spec = dataclasses.replace(spec, duplicate_of=[dup.person_id])
        person_id, after = self.whitelist.add_person(site.site_id, spec)
        self._remember(site, after, {person_id: spec.templates}, set())
        return person_id, after, dup

    def update(self, req: pb.UpdatePersonRequest) -> tuple[Site, list[str], Duplicate | None]:
        """Change the parts of one person that `req` marks; one new version. Returns the site,
        the names of what changed (for the audit entry) and an allowed duplicate match."""
        row = self.store.get_person(check_person_id(req.person_id))
        site = self.store.get_site(row.site_id)
        old = self.whitelist.record(row.record_sealed)
        profile = self.whitelist.profile(row.name_sealed)
        changed: list[str] = []
        templates = [] if req.replace_templates else list(old.templates)
        if req.replace_templates:
            changed.append("templates replaced")
        if req.add_templates:
            templates += list(req.add_templates)
            changed.append(f"{len(req.add_templates)} templates added")
        consent = req.consent or profile.consent
        if req.consent:
            changed.append("consent")
        if req.add_templates:
            self.check_consent(req.add_templates, consent)
        dup = None
        if req.add_templates:
            dup = self.duplicate(self._site_faces(site), req.add_templates, {row.person_id})
            if dup is not None and not req.allow_duplicate_face:
                raise DuplicateFace(dup, self.threshold)
        for part, flag in (("validity", req.set_validity), ("doors", req.set_doors),
                           ("schedules", req.set_schedules), ("always-allowed", req.set_always_allowed),
                           ("cards", req.set_cards), ("pins", req.set_pins)):
            if flag:
                changed.append(part)
        if req.name:
            changed.append("name")
        if not changed:
            raise InvalidRequest("nothing to change: give at least one part to update")
        spec = PersonSpec(
            name=req.name or profile.name,
            templates=templates,
            valid_from=req.valid_from if req.set_validity else old.valid_from,
            valid_until=req.valid_until if req.set_validity else old.valid_until,
            doors=list(req.doors) if req.set_doors else list(old.doors),
            cards=list(req.cards) if req.set_cards else [],
            pins=list(req.pins) if req.set_pins else [],
            card_hashes=[] if req.set_cards else list(old.card_hashes),
            pin_hashes=[] if req.set_pins else list(old.pin_hashes),
            schedules=list(req.schedules) if req.set_schedules else list(old.schedules),
            always_allowed=req.always_allowed if req.set_always_allowed else old.always_allowed,
            consent=consent,
        )
        record = self.whitelist.person_record(site, row.person_id, spec)
        if record.templates and not consent.strip():
            raise InvalidRequest("a face template needs a consent record (--consent)")
        duplicate_of = list(profile.duplicate_of) + ([dup.person_id] if dup is not None else [])
        new_profile = pb.PersonProfile(name=spec.name, consent=consent, created_at=profile.created_at,
                                       duplicate_of=duplicate_of)
        write = self.whitelist.person_write(record, new_profile)
        now = int(self.whitelist.clock())
        after = self.store.apply_changes(site.site_id, ChangeSet(upserts=(write,)), now)
        self._remember(site, after, {row.person_id: list(record.templates)}, set())
        return after, changed, dup

    def remove(self, person_id: str) -> Site:
        """Remove a person and every template of theirs (one new version)."""
        site = self.store.get_site(self.store.person_site(check_person_id(person_id)))
        after = self.whitelist.remove_person(person_id)
        self._remember(site, after, {}, {person_id})
        return after
