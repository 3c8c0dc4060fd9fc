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
import hashlib
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from doorkeeper.hub.store import ChangeSet, HubStore, PersonRow, PersonWrite, Site
from doorkeeper.hub.whitelist import InvalidRequest, PersonSpec, Whitelist, check_name
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


def fingerprint(name: str, record: pb.PersonRecord) -> bytes:
    """What makes two enrolments the same: the name and the record without its id (a rerun
    of an import computes the same templates from the same photos and files)."""
    body = pb.PersonRecord()
    body.CopyFrom(record)
    body.person_id = ""
    return hashlib.sha256(name.encode() + b"\x00" + body.SerializeToString(deterministic=True)).digest()


@dataclass
class _Index:
    """One site as of one version: unit template rows per model (a matrix each), who holds
    which card or PIN hash, and each person's fingerprint."""

    version: int
    matrix: dict[str, np.ndarray] = field(default_factory=dict)
    owners: dict[str, list[str]] = field(default_factory=dict)
    credentials: dict[bytes, str] = field(default_factory=dict)
    fingerprints: dict[bytes, str] = field(default_factory=dict)

    pending: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, person_id: str, name: str, record: pb.PersonRecord) -> None:
        """Rows are queued and stacked once, on the next read (`rows`): adding a batch of
        persons costs one copy of the matrix, not one per person."""
        for t in record.templates:
            self.pending.setdefault(t.model_id, []).append(tmpl.decode(t).astype(np.float32))
            self.owners.setdefault(t.model_id, []).append(person_id)
        for h in list(record.card_hashes) + list(record.pin_hashes):
            self.credentials[bytes(h)] = person_id
        self.fingerprints[fingerprint(name, record)] = person_id

    def rows(self, model: str) -> np.ndarray | None:
        """The unit template rows of one model (owners[model][i] holds row i)."""
        queued = self.pending.pop(model, None)
        if queued:
            old = self.matrix.get(model)
            stacked = np.stack(queued)
            self.matrix[model] = stacked if old is None else np.concatenate([old, stacked])
        return self.matrix.get(model)

    def drop(self, person_ids: set[str]) -> None:
        for model in list(self.pending):
            self.rows(model)
        for model, owners in self.owners.items():
            keep = [i for i, pid in enumerate(owners) if pid not in person_ids]
            self.matrix[model] = self.matrix[model][keep]
            self.owners[model] = [owners[i] for i in keep]
        self.credentials = {h: p for h, p in self.credentials.items() if p not in person_ids}
        self.fingerprints = {f: p for f, p in self.fingerprints.items() if p not in person_ids}

    def best(self, template: pb.Template, exclude: set[str]) -> tuple[str, float] | None:
        matrix = self.rows(template.model_id)
        if matrix is None or not len(matrix):
            return None
        sims = matrix @ tmpl.decode(template).astype(np.float32)
        owners = self.owners[template.model_id]
        for index in np.argsort(-sims)[:len(exclude) + 1]:
            if owners[index] not in exclude:
                return owners[index], float(sims[index])
        return None


def person_spec(request: pb.AddPersonRequest) -> PersonSpec:
    return PersonSpec(
        name=request.name, templates=list(request.templates), valid_from=request.valid_from,
        valid_until=request.valid_until, doors=list(request.doors), cards=list(request.cards),
        pins=list(request.pins), schedules=list(request.schedules),
        always_allowed=request.always_allowed, consent=request.consent,
    )


class _BatchFaces:
    """The templates of an import batch, compared in bulk: against the site (one matrix
    product per model, in slices) and against the batch's own earlier rows."""

    SLICE = 8192

    def __init__(self, rows: Sequence[pb.AddPersonRequest]) -> None:
        self.vectors: dict[str, list[np.ndarray]] = {}
        self.row_of: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            for t in row.templates:
                try:
                    vector = tmpl.decode(t).astype(np.float32)
                except tmpl.TemplateError:
                    continue  # the row is refused with the reason when it is validated
                self.vectors.setdefault(t.model_id, []).append(vector)
                self.row_of.setdefault(t.model_id, []).append(i)
        self.matrix = {m: np.stack(v) for m, v in self.vectors.items()}
        self._self_sims: dict[str, np.ndarray] = {}
        self._mine: dict[tuple[str, int], list[int]] = {}
        for model, rows_of in self.row_of.items():
            for k, r in enumerate(rows_of):
                self._mine.setdefault((model, r), []).append(k)
        self._accepted = {m: np.zeros(len(v), dtype=bool) for m, v in self.row_of.items()}

    def against(self, index: _Index) -> dict[int, tuple[str, float]]:
        """Row -> (closest enrolled person, similarity) over the row's templates."""
        best: dict[int, tuple[str, float]] = {}
        for model, batch in self.matrix.items():
            site = index.rows(model)
            if site is None or not len(site):
                continue
            top = np.full(len(batch), -2.0, dtype=np.float32)
            arg = np.zeros(len(batch), dtype=np.int64)
            for start in range(0, len(site), self.SLICE):
                sims = site[start:start + self.SLICE] @ batch.T
                here = sims.argmax(axis=0)
                values = sims[here, np.arange(len(batch))]
                better = values > top
                top[better], arg[better] = values[better], here[better] + start
            for k, row in enumerate(self.row_of[model]):
                if row not in best or top[k] > best[row][1]:
                    best[row] = (index.owners[model][arg[k]], float(top[k]))
        return best

    def match_earlier(self, row: int, threshold: float) -> tuple[int, float] | None:
        """The accepted earlier row this row's face matches best at or above `threshold`."""
        found: tuple[int, float] | None = None
        for model, rows in self.row_of.items():
            mine = self._mine.get((model, row))
            if not mine or not self._accepted[model].any():
                continue
            if model not in self._self_sims:
                self._self_sims[model] = self.matrix[model] @ self.matrix[model].T
            for k in mine:
                values = np.where(self._accepted[model], self._self_sims[model][k], -2.0)
                j = int(values.argmax())
                if values[j] >= threshold and (found is None or values[j] > found[1]):
                    found = (rows[j], float(values[j]))
        return found

    def accept(self, row: int) -> None:
        for model in self.row_of:
            for k in self._mine.get((model, row), ()):
                self._accepted[model][k] = True


class People:
    def __init__(self, store: HubStore, whitelist: Whitelist,
                 threshold: float = tmpl.MATCH_THRESHOLD) -> None:
        self.store = store
        self.whitelist = whitelist
        self.threshold = threshold
        self._index: dict[str, _Index] = {}
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
    def _site_index(self, site: Site) -> _Index:
        """The site as of `site.version` (rebuilt when another writer moved it)."""
        with self._lock:
            index = self._index.get(site.site_id)
            if index is not None and index.version == site.version:
                return index
        index = _Index(site.version)
        for row in self.store.list_persons(site.site_id):
            index.add(row.person_id, self.whitelist.profile(row.name_sealed).name,
                      self.whitelist.record(row.record_sealed))
        with self._lock:
            self._index[site.site_id] = index
        return index

    def _remember(self, before: Site, after: Site, added: dict[str, tuple[str, pb.PersonRecord]],
                  removed: set[str]) -> None:
        """Carry the cached index to the version our own change made."""
        with self._lock:
            index = self._index.get(before.site_id)
            if index is None or index.version != before.version or after.version != before.version + 1:
                self._index.pop(before.site_id, None)
                return
            index.drop(removed | set(added))
            for pid, (name, record) in added.items():
                index.add(pid, name, record)
            index.version = after.version

    def check_doors(self, site: Site, doors: Iterable[str]) -> None:
        """Refuses a malformed door name, then one the site has no door of."""
        doors = [check_name("door", d) for d in doors]
        known = {d.name for d in self.store.list_devices(site.site_id)}
        unknown = sorted(set(doors) - known)
        if unknown:
            raise InvalidRequest(f"unknown door {unknown[0]!r} in site {site.name}; its doors are: "
                                 f"{', '.join(sorted(known)) or 'none yet (add one with device add)'}")

    def duplicate(self, faces: _Index, templates: Sequence[pb.Template],
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
        self.check_doors(site, spec.doors)
        dup = self.duplicate(self._site_index(site), spec.templates, set()) if spec.templates else None
        if dup is not None and not allow_duplicate:
            raise DuplicateFace(dup, self.threshold)
        if dup is not None:
            spec = dataclasses.replace(spec, duplicate_of=[dup.person_id])
        person_id = uuid.uuid4().hex
        write, record = self._written(site, person_id, spec)
        after = self.store.apply_changes(site.site_id, ChangeSet(upserts=(write,)), self._now())
        self._remember(site, after, {person_id: (spec.name, record)}, set())
        return person_id, after, dup

    def _now(self) -> int:
        return int(self.whitelist.clock())

    def _written(self, site: Site, person_id: str, spec: PersonSpec) -> tuple[PersonWrite, pb.PersonRecord]:
        record = self.whitelist.person_record(site, person_id, spec)
        profile = pb.PersonProfile(name=spec.name, consent=spec.consent, created_at=self._now(),
                                   duplicate_of=list(spec.duplicate_of))
        return self.whitelist.person_write(record, profile), record

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
            dup = self.duplicate(self._site_index(site), req.add_templates, {row.person_id})
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
        if req.set_doors:
            self.check_doors(site, req.doors)
        record = self.whitelist.person_record(site, row.person_id, spec)
        if record.templates and not consent.strip():
            raise InvalidRequest("a face template needs a consent record (--consent)")
        duplicate_of = list(profile.duplicate_of) + ([dup.person_id] if dup is not None else [])
        new_profile = pb.PersonProfile(name=spec.name, consent=consent, created_at=profile.created_at,
                                       duplicate_of=duplicate_of)
        write = self.whitelist.person_write(record, new_profile)
        now = int(self.whitelist.clock())
        after = self.store.apply_changes(site.site_id, ChangeSet(upserts=(write,)), now)
        self._remember(site, after, {row.person_id: (spec.name, record)}, set())
        return after, changed, dup

    def import_rows(self, site_ref: str,
                    rows: Sequence[pb.AddPersonRequest]) -> tuple[list[pb.ImportResult], Site]:
        """Many persons as one change (one new version, none when nothing is imported). Each
        row stands alone: refused with its reason (no consent, unknown door, bad card, a card
        or face another person holds), or skipped when the same person is already present
        (so a rerun changes nothing), or imported."""
        site = self.store.get_site(site_ref)
        index = self._site_index(site)
        doors = {d.name for d in self.store.list_devices(site.site_id)}
        results = [pb.ImportResult() for _ in rows]
        new_faces = _BatchFaces(rows)
        taken: dict[bytes, int] = {}  # credential hash -> row that takes it
        seen: dict[bytes, int] = {}  # fingerprint -> row
        accepted: dict[int, tuple[str, PersonSpec, PersonWrite, pb.PersonRecord]] = {}
        existing = new_faces.against(index)
        for i, row in enumerate(rows):
            result = results[i]
            try:
                spec = person_spec(row)
                self.check_consent(spec.templates, spec.consent)
                unknown = sorted({check_name("door", d) for d in spec.doors} - doors)
                if unknown:
                    raise InvalidRequest(f"unknown door {unknown[0]!r}")
                person_id = uuid.uuid4().hex
                record = self.whitelist.person_record(site, person_id, spec)
            except (InvalidRequest, tmpl.TemplateError) as exc:
                result.outcome, result.reason = pb.ImportResult.OUTCOME_REFUSED, str(exc)
                continue
            fp = fingerprint(spec.name, record)
            if fp in index.fingerprints or fp in seen:
                result.outcome = pb.ImportResult.OUTCOME_SKIPPED
                result.person_id = index.fingerprints.get(fp) or results[seen[fp]].person_id
                if fp in index.fingerprints:
                    result.reason = "same person already present"
                else:
                    result.reason, result.other_row = "same person as an earlier row", seen[fp] + 1
                continue
            held = [bytes(h) for h in list(record.card_hashes) + list(record.pin_hashes)]
            clash = next((h for h in held if h in index.credentials or h in taken), None)
            if clash is not None:
                result.outcome = pb.ImportResult.OUTCOME_REFUSED
                if clash in taken:
                    result.reason, result.other_row = "a card or PIN of this row is in an earlier row", \
                        taken[clash] + 1
                else:
                    holder = self.store.get_person(index.credentials[clash])
                    result.reason = f"a card or PIN of this row is held by " \
                        f"{self.whitelist.person_name(holder.name_sealed)} ({holder.person_id})"
                continue
            dup = existing.get(i)
            if dup is not None and dup[1] < self.threshold:
                dup = None
            in_batch = new_faces.match_earlier(i, self.threshold)
            if (dup is not None or in_batch is not None) and not row.allow_duplicate_face:
                if dup is not None:
                    name = self.whitelist.person_name(self.store.get_person(dup[0]).name_sealed)
                    reason = f"face matches {name} ({dup[0]}) at {dup[1]:.2f}"
                else:
                    assert in_batch is not None
                    reason = f"face matches an earlier row at {in_batch[1]:.2f}"
                    result.other_row = in_batch[0] + 1
                result.outcome, result.reason = pb.ImportResult.OUTCOME_REFUSED, reason
                continue
            if dup is not None:
                spec = dataclasses.replace(spec, duplicate_of=[dup[0]])
            write, record = self._written(site, person_id, spec)
            accepted[i] = (person_id, spec, write, record)
            new_faces.accept(i)
            seen[fp] = i
            taken.update({h: i for h in held})
            result.outcome, result.person_id = pb.ImportResult.OUTCOME_IMPORTED, person_id
        if not accepted:
            return results, site
        writes = tuple(w for _, _, w, _ in accepted.values())
        after = self.store.apply_changes(site.site_id, ChangeSet(upserts=writes), self._now())
        added = {pid: (spec.name, rec) for pid, spec, _, rec in accepted.values()}
        self._remember(site, after, added, set())
        return results, after

    def remove(self, person_id: str) -> Site:
        """Remove a person and every template of theirs (one new version)."""
        site = self.store.get_site(self.store.person_site(check_person_id(person_id)))
        after = self.whitelist.remove_person(person_id)
        self._remember(site, after, {}, {person_id})
        return after
