"""Whitelist changes at the hub: sites, persons, and the site change log.

Every accepted change becomes one new site version in the store. Inputs come
from operators' machines over the network and are validated here (lengths,
charsets, template shape) before anything is written; a refused change leaves
the store exactly as it was.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.store import ChangeSet, Conflict, HubStore, PersonWrite, Site
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import credentials, digest, keys
from doorkeeper.wire import templates as tmpl
from doorkeeper.wire.limits import LIMITS

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")
DEFAULT_OFFLINE_VALIDITY_S = 7 * 24 * 3600
MAX_OFFLINE_VALIDITY_S = 30 * 24 * 3600
MIN_OFFLINE_VALIDITY_S = 60


class InvalidRequest(ValueError):
    """An operator request was refused; nothing was stored."""


def check_name(kind: str, name: str) -> str:
    """Site and door names: 1-64 letters, digits, space, dot, dash, underscore."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"{kind} name must be 1-64 characters of letters, digits, space, '.', '_' or '-'"
        )
    return name


def parse_utc_offset(text: str) -> int:
    if not text:
        return 0
    m = _OFFSET.fullmatch(text)
    if not m or int(m.group(2)) > 14 or int(m.group(3)) > 59:
        raise InvalidRequest("utc offset must look like +08:00")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return -minutes if m.group(1) == "-" else minutes


@dataclass(frozen=True)
class PersonSpec:
    """What an operator asks for; validated by `Whitelist.add_person`."""

    name: str
    templates: Sequence[pb.Template] = ()
    valid_from: int = 0
    valid_until: int = 0
    doors: Sequence[str] = ()
    cards: Sequence[str] = ()
    pins: Sequence[str] = ()
    schedules: Sequence[pb.Schedule] = ()
    always_allowed: bool = False
    consent: str = ""  # who consented to face enrolment, how, a reference
    duplicate_of: Sequence[str] = ()  # persons the face was allowed to match (audited)
    # Keyed hashes of cards and PINs the person already holds (an update that keeps them).
    card_hashes: Sequence[bytes] = ()
    pin_hashes: Sequence[bytes] = ()


# Sealed person profiles start with this mark; older rows hold the bare UTF-8 name (a name
# never starts with a NUL: `person_record` refuses control characters).
PROFILE_MARK = b"\x00dkp1"


def unseal_profile(hub_keys: HubKeys, sealed: bytes) -> pb.PersonProfile:
    """A person's sealed profile (name, consent); a bare name from older rows."""
    plain = hub_keys.unseal(sealed)
    if plain.startswith(PROFILE_MARK):
        return pb.PersonProfile.FromString(plain[len(PROFILE_MARK):])
    return pb.PersonProfile(name=plain.decode())


def _check_text(what: str, text: str, cap: int, *, required: bool) -> None:
    if not isinstance(text, str) or len(text) > cap or (required and not text.strip()):
        raise InvalidRequest(f"{what} must be {'1' if required else '0'}-{cap} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidRequest(f"{what} must not hold control characters")


class Whitelist:
    def __init__(self, store: HubStore, hub_keys: HubKeys, clock: Callable[[], float] = time.time):
        self.store = store
        self.keys = hub_keys
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------ sites
    def add_site(
        self,
        name: str,
        offline_validity_s: int = 0,
        stale_policy: int = pb.STALE_POLICY_KEEP_WORKING,
        utc_offset: str = "",
    ) -> Site:
        check_name("site", name)
        validity = offline_validity_s or DEFAULT_OFFLINE_VALIDITY_S
        if not MIN_OFFLINE_VALIDITY_S <= validity <= MAX_OFFLINE_VALIDITY_S:
            raise InvalidRequest(
                f"offline validity must be {MIN_OFFLINE_VALIDITY_S} s to {MAX_OFFLINE_VALIDITY_S} s")
        if stale_policy not in pb.StalePolicy.values():
            raise InvalidRequest("unknown stale policy")
        site_id = uuid.uuid4().hex
        config = pb.SiteConfig(
            site_id=site_id,
            offline_validity_s=validity,
            stale_policy=stale_policy or pb.STALE_POLICY_KEEP_WORKING,  # type: ignore[arg-type]
            credential_salt=secrets.token_bytes(32),
            utc_offset=utc_offset or "+00:00",
            utc_offset_minutes=parse_utc_offset(utc_offset),
        )
        raw = config.SerializeToString(deterministic=True)
        chash = digest.record_hash(raw)
        site = Site(
            site_id=site_id,
            name=name,
            version=1,
            state_digest=digest.state_digest(chash, []),
            person_count=0,
            config_sealed=self.keys.seal(raw),
            config_hash=chash,
            created_at=self._now(),
        )
        self.store.create_site(site)
        return site

    def config(self, site: Site) -> pb.SiteConfig:
        return pb.SiteConfig.FromString(self.keys.unseal(site.config_sealed))

    def set_owner_key(self, site_ref: str, public_key: bytes) -> tuple[str, Site]:
        """Set the X25519 key entry logs are sealed to; it reaches doors in the next bundle."""
        if len(public_key) != keys.KEY_BYTES:
            raise InvalidRequest("owner public key must be 32 bytes (X25519)")
        site = self.store.get_site(site_ref)
        config = self.config(site)
        config.log_owner_public_key = public_key
        config.log_owner_key_id = keys.key_id(public_key)
        return config.log_owner_key_id, self.replace_config(site, config)

    def replace_config(self, site: Site, config: pb.SiteConfig) -> Site:
        """Write `config`, read from `site`, as the site's new config (one new version).

        Read, change, write: another replica may have changed the config between the read and
        the version bump (PostgreSQL orders writers only there), and its change would be lost.
        So a bump that is not the next version after `site` is refused as Conflict; the caller
        runs inside the operator's transaction, so nothing of this change stays."""
        raw = config.SerializeToString(deterministic=True)
        changes = ChangeSet(config_sealed=self.keys.seal(raw), config_hash=digest.record_hash(raw))
        after = self.store.apply_changes(site.site_id, changes, self._now())
        if after.version != site.version + 1:
            raise Conflict("the site changed while its config was being changed; run the command again")
        return after

    # ------------------------------------------------------------ persons
    def person_record(self, site: Site, person_id: str, spec: PersonSpec) -> pb.PersonRecord:
        """Validate `spec` and build the record doors receive (no name, no photo)."""
        _check_text("person name", spec.name, LIMITS.max_name_chars, required=True)
        _check_text("consent", spec.consent, LIMITS.max_consent_chars, required=False)
        if not (spec.templates or spec.cards or spec.pins or spec.card_hashes or spec.pin_hashes):
            raise InvalidRequest("a person needs a face template, a card or a PIN")
        if len(spec.templates) > LIMITS.max_templates_per_person:
            raise InvalidRequest(f"at most {LIMITS.max_templates_per_person} templates per person")
        if len(spec.cards) + len(spec.pins) + len(spec.card_hashes) + len(spec.pin_hashes) > \
                LIMITS.max_credentials_per_person:
            raise InvalidRequest(f"at most {LIMITS.max_credentials_per_person} cards and PINs")
        if len(spec.doors) > LIMITS.max_doors_per_person:
            raise InvalidRequest(f"at most {LIMITS.max_doors_per_person} doors per person")
        if len(spec.schedules) > LIMITS.max_schedules_per_person:
            raise InvalidRequest(f"at most {LIMITS.max_schedules_per_person} schedules")
        if spec.valid_from < 0 or spec.valid_until < 0 or (
            spec.valid_until and spec.valid_from and spec.valid_until <= spec.valid_from
        ):
            raise InvalidRequest("validity window must have valid_until after valid_from")
        wire = []
        for t in spec.templates:
            try:
                wire.append(tmpl.encode(tmpl.decode(t), t.model_id))
            except tmpl.TemplateError as exc:
                raise InvalidRequest(f"bad template: {exc}") from None
        for s in spec.schedules:
            if s.start_minute >= 1440 or s.end_minute > 1440 or s.weekdays_mask >= 128:
                raise InvalidRequest("schedule minutes must be within a day, weekdays mask < 128")
            if s.start_minute == s.end_minute:
                raise InvalidRequest("schedule start and end are equal: it would admit nobody")
        salt = self.config(site).credential_salt
        try:
            cards = sorted({credentials.card_hash(salt, c) for c in spec.cards} | set(spec.card_hashes))
            pins = sorted({credentials.pin_hash(salt, p) for p in spec.pins} | set(spec.pin_hashes))
        except credentials.CredentialError as exc:
            raise InvalidRequest(str(exc)) from None
        return pb.PersonRecord(
            person_id=person_id,
            templates=wire,
            valid_from=spec.valid_from,
            valid_until=spec.valid_until,
            doors=sorted({check_name("door", d) for d in spec.doors}),
            card_hashes=cards,
            pin_hashes=pins,
            schedules=list(spec.schedules),
            always_allowed=spec.always_allowed,
        )

    def _write(self, site: Site, person_id: str, spec: PersonSpec) -> PersonWrite:
        record = self.person_record(site, person_id, spec)
        profile = pb.PersonProfile(name=spec.name, consent=spec.consent, created_at=self._now(),
                                   duplicate_of=list(spec.duplicate_of))
        return self.person_write(record, profile)

    def person_write(self, record: pb.PersonRecord, profile: pb.PersonProfile) -> PersonWrite:
        """The sealed row for a validated record and its profile."""
        raw = record.SerializeToString(deterministic=True)
        return PersonWrite(
            person_id=record.person_id,
            name_sealed=self.keys.seal(PROFILE_MARK + profile.SerializeToString(deterministic=True)),
            record_sealed=self.keys.seal(raw),
            record_hash=digest.record_hash(raw),
            credentials=tuple([("card", h) for h in record.card_hashes]
                              + [("pin", h) for h in record.pin_hashes]),
        )

    def add_persons(self, site_ref: str, specs: Sequence[PersonSpec]) -> tuple[list[str], Site]:
        """Add several persons as one change (one new version). All or nothing."""
        site = self.store.get_site(site_ref)
        ids = [uuid.uuid4().hex for _ in specs]
        writes = tuple(self._write(site, pid, spec) for pid, spec in zip(ids, specs, strict=True))
        return ids, self.store.apply_changes(site.site_id, ChangeSet(upserts=writes), self._now())

    def add_person(self, site_ref: str, spec: PersonSpec) -> tuple[str, Site]:
        ids, site = self.add_persons(site_ref, [spec])
        return ids[0], site

    def remove_person(self, person_id: str) -> Site:
        if not isinstance(person_id, str) or not re.fullmatch(r"[0-9a-f]{32}", person_id):
            raise InvalidRequest("person id must be 32 hex digits")
        site_id = self.store.person_site(person_id)
        return self.store.apply_changes(site_id, ChangeSet(removes=(person_id,)), self._now())

    def person_name(self, sealed: bytes) -> str:
        return self.profile(sealed).name

    def profile(self, sealed: bytes) -> pb.PersonProfile:
        return unseal_profile(self.keys, sealed)

    def record(self, sealed: bytes) -> pb.PersonRecord:
        return pb.PersonRecord.FromString(self.keys.unseal(sealed))
