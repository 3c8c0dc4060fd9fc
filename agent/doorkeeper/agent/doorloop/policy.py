"""The door's decision core: who may pass, here, now. Pure: no I/O, no clock reads.

Every input arrives as an argument (the person record, the site config, the
time, whether the whitelist is stale, a lookup callable for credentials), so
the same call gives the same `Decision` offline, in tests and in replays.

Order of checks (the first failure is the reason recorded):

1. ``no_whitelist``: no site config, i.e. the device never completed a sync.
   Everything is denied; there is no exception (not even ``always_allowed``,
   which is a property of records this device does not have).
2. credential input (card/PIN): format checked with `doorkeeper.wire.credentials`
   before anything is hashed or looked up (``bad_credential_format``).
3. identity: unknown/revoked person (``revoked_or_unknown``), unknown face
   (``low_similarity``/``ambiguous_match``), several holders of one credential
   (``pin_ambiguous``/``card_ambiguous``), liveness (``liveness_failed``).
4. the person's own rules: validity window, door scope, schedule.
5. the site's stale policy (only when the whitelist is stale).

Person rules come before the stale policy on purpose: when both refuse, the
operator sees the reason that reconnecting the device would not fix.

Shadow mode (per door) runs every check and records the outcome, but a
`Decision` made in shadow mode never has ``actuate`` set: a would-be grant is
``result == "shadow"`` with ``granted`` True, a refusal stays a refusal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.credentials import CredentialError, card_hash, check_pin, normalise_card, pin_hash

MINUTES_PER_DAY = 1440
SECONDS_PER_DAY = 86400
SALT_BYTES = 32
# 1970-01-01 was a Thursday; with Monday = 0 (the proto's bit 0) that is 3.
_EPOCH_WEEKDAY = 3


class Result(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    UNKNOWN = "unknown"  # a face that matches nobody (or nobody clearly)
    SHADOW = "shadow"  # would have been granted; shadow mode does not actuate


class Credential(StrEnum):
    FACE = "face"
    CARD = "card"
    PIN = "pin"


class Reason(StrEnum):
    """Stable short codes: they go into entry logs and fleet status; never rename one."""

    OK = "ok"
    NO_WHITELIST = "no_whitelist"
    BAD_SITE_CONFIG = "bad_site_config"
    REVOKED_OR_UNKNOWN = "revoked_or_unknown"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    DOOR_NOT_ALLOWED = "door_not_allowed"
    OUTSIDE_SCHEDULE = "outside_schedule"
    STALE_CARDS_ONLY = "stale_cards_only"
    STALE_ALWAYS_ALLOWED_ONLY = "stale_always_allowed_only"
    LOW_SIMILARITY = "low_similarity"
    AMBIGUOUS_MATCH = "ambiguous_match"
    LIVENESS_FAILED = "liveness_failed"
    BAD_CREDENTIAL_FORMAT = "bad_credential_format"
    PIN_AMBIGUOUS = "pin_ambiguous"
    CARD_AMBIGUOUS = "card_ambiguous"
    RATE_LIMITED = "rate_limited"  # too many unknown PINs/cards in a row: keypad locked out a while
    # Granted by the policy, but the door did not open: the unlock was discarded (the agent
    # was stopping, or the actuation queue was full), or the door driver failed.
    NOT_ACTUATED = "not_actuated"
    ACTUATION_FAILED = "actuation_failed"


@dataclass(frozen=True)
class Decision:
    """One door decision, ready to record in the entry log and to act on.

    ``actuate`` is the only field a door driver may act on: it is True only for
    a grant outside shadow mode. ``reason`` is a `Reason` code, never free
    text, and never contains the presented card number or PIN.
    """

    granted: bool
    result: Result
    credential: Credential
    person_id: str | None
    reason: Reason
    version: int
    door: str
    actuate: bool
    shadow: bool = False
    stale: bool = False
    similarity: float | None = None
    margin: float | None = None


def not_carried_out(decision: Decision, reason: Reason) -> Decision:
    """What to record for a grant whose unlock did not happen: denied, with ``reason``
    (the person id stays, so an auditor sees who was let down). A decision that was not
    meant to move the door (shadow, refusals) is returned unchanged."""
    if not decision.actuate:
        return decision
    return replace(decision, granted=False, result=Result.DENIED, actuate=False, reason=reason)


class FaceMatch(Protocol):
    """What the face gallery reports (`doorkeeper.agent.face.gallery.Match` fits).

    ``reason`` is one of accepted, below_threshold, ambiguous, empty_gallery.
    """

    @property
    def person_id(self) -> str | None: ...
    @property
    def score(self) -> float: ...
    @property
    def margin(self) -> float: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def nearest(self) -> str | None: ...


# (kind, keyed hash) -> every person holding that credential; kind is "card" or "pin".
# `LocalWhitelist.by_credential` has this shape.
CredentialLookup = Callable[[str, bytes], Sequence[pb.PersonRecord]]
# person id -> record, or None when revoked/unknown (`LocalWhitelist.person`).
PersonLookup = Callable[[str], pb.PersonRecord | None]


# ------------------------------------------------------------------ door mode
def door_mode(config: pb.SiteConfig | None, device_id: str, installer_shadow: bool = False) -> pb.DoorMode:
    """The mode a door acts in (a `pb.DoorMode` value): SHADOW when the installer's flag
    forces it or the site config the hub signed lists this door (by device id) as shadow,
    else ENFORCE (a door not listed, or listed as unspecified). A mode this agent does not
    know (a newer hub) counts as SHADOW: never actuating is the strictest we have."""
    if installer_shadow:
        return pb.DOOR_MODE_SHADOW
    if config is not None:
        for entry in config.door_modes:
            if entry.device_id == device_id:
                if entry.mode in (pb.DOOR_MODE_UNSPECIFIED, pb.DOOR_MODE_ENFORCE):
                    return pb.DOOR_MODE_ENFORCE
                return pb.DOOR_MODE_SHADOW
    return pb.DOOR_MODE_ENFORCE


def mode_name(mode: int) -> str:
    """"shadow" or "enforce" (for status, metrics and logs)."""
    return "shadow" if mode == pb.DOOR_MODE_SHADOW else "enforce"


# ------------------------------------------------------------------ freshness
class FreshnessState(StrEnum):
    NO_WHITELIST = "no_whitelist"
    FRESH = "fresh"
    STALE = "stale"


@dataclass(frozen=True)
class Freshness:
    """How long ago the hub last vouched for this device's whitelist.

    Ages are measured on the monotonic clock (the wall clock may jump by hours
    after a power cut). ``anchor_mono`` is a `time.monotonic()` reading and
    ``age_at_anchor_s`` the age of the hub's last proof at that moment:
    0 when a beacon was just verified (`beacon_seen`); at process start
    (`at_start`) whatever lower bound the caller carried over from before the
    restart, or None when it has none. An unknown age counts as stale: the
    device cannot show that the hub vouched for it recently, so a site that
    chose a strict stale policy gets it until the next beacon. (Sites on the
    default KEEP_WORKING policy see no difference at the door.)

    Instances are immutable; observe a beacon by replacing the instance.
    """

    anchor_mono: float
    age_at_anchor_s: float | None = 0.0

    @classmethod
    def beacon_seen(cls, now_mono: float) -> Freshness:
        """The hub vouched for the whitelist at ``now_mono`` (a beacon proven fresh by the
        door's own nonce: `doorkeeper.agent.sync.freshness`)."""
        return cls(anchor_mono=now_mono, age_at_anchor_s=0.0)

    @classmethod
    def at_start(cls, now_mono: float, carried_age_s: float | None = None) -> Freshness:
        """No beacon yet in this process; ``carried_age_s`` as described above."""
        return cls(anchor_mono=now_mono, age_at_anchor_s=carried_age_s)

    def age_s(self, now_mono: float) -> float | None:
        """Seconds since the last verified beacon, or None when unknown."""
        if self.age_at_anchor_s is None:
            return None
        # The monotonic clock never goes back within a boot; clamp anyway so a
        # caller mixing readings cannot make a beacon look younger than fresh.
        return self.age_at_anchor_s + max(0.0, now_mono - self.anchor_mono)

    def state(self, config: pb.SiteConfig | None, now_mono: float) -> FreshnessState:
        """NO_WHITELIST without a site config (never synced), else FRESH or STALE.

        ``offline_validity_s <= 0`` means no limit (the proto's 0 = unbounded
        convention; the hub itself only issues 60 s and up).
        """
        if config is None:
            return FreshnessState.NO_WHITELIST
        age = self.age_s(now_mono)
        if age is None:
            return FreshnessState.STALE
        limit = config.offline_validity_s
        if limit > 0 and age > limit:
            return FreshnessState.STALE
        return FreshnessState.FRESH

    def is_stale(self, config: pb.SiteConfig | None, now_mono: float) -> bool:
        """The ``stale`` argument for the decide functions; False when never synced."""
        return self.state(config, now_mono) is FreshnessState.STALE


# ------------------------------------------------------------------ rules
def in_schedule(schedule: pb.Schedule, local_seconds: float) -> bool:
    """Whether a local time (seconds since the epoch, shifted to site time) is in a schedule.

    Minutes are [start, end); ``end < start`` wraps past midnight and the part
    after midnight belongs to the day the window started on (a Friday
    22:00-06:00 window admits on Saturday at 02:00, not on Friday at 02:00).
    ``weekdays_mask`` 0 means every day; bit 0 is Monday. ``start == end`` is
    an empty window, and a schedule outside the hub's own bounds (start >=
    1440, end > 1440, mask >= 128) admits nobody: fail closed.
    """
    start, end, mask = schedule.start_minute, schedule.end_minute, schedule.weekdays_mask
    if start >= MINUTES_PER_DAY or end > MINUTES_PER_DAY or mask >= 1 << 7:
        return False
    day_index = math.floor(local_seconds / SECONDS_PER_DAY)
    minute = int(local_seconds - day_index * SECONDS_PER_DAY) // 60
    weekday = (day_index + _EPOCH_WEEKDAY) % 7

    def day_ok(day: int) -> bool:
        return mask == 0 or bool(mask >> day & 1)

    if start <= end:
        return start <= minute < end and day_ok(weekday)
    if minute >= start:
        return day_ok(weekday)
    return minute < end and day_ok((weekday - 1) % 7)


def _stale_refusal(config: pb.SiteConfig, record: pb.PersonRecord, credential: Credential) -> Reason | None:
    """The site's stale policy, applied only when the whitelist is stale.

    KEEP_WORKING (and UNSPECIFIED): no change. ALWAYS_ALLOWED_ONLY: only records
    flagged ``always_allowed``, with any credential. CARDS_ONLY: cards only,
    for everyone; faces and PINs are refused. A stale whitelist may still hold
    someone revoked since: a card can be taken back at move-out, a face and a
    memorised or shared PIN cannot. A policy value this agent does not know
    (a newer hub) is treated as ALWAYS_ALLOWED_ONLY, the strictest we have.
    """
    policy = config.stale_policy
    if policy in (pb.STALE_POLICY_UNSPECIFIED, pb.STALE_POLICY_KEEP_WORKING):
        return None
    if policy == pb.STALE_POLICY_CARDS_ONLY:
        return None if credential is Credential.CARD else Reason.STALE_CARDS_ONLY
    return None if record.always_allowed else Reason.STALE_ALWAYS_ALLOWED_ONLY


def _person_refusal(
    record: pb.PersonRecord, door: str, now_wall: float, config: pb.SiteConfig
) -> Reason | None:
    if record.valid_from and now_wall < record.valid_from:
        return Reason.NOT_YET_VALID
    if record.valid_until and now_wall >= record.valid_until:
        return Reason.EXPIRED
    if record.doors and door not in record.doors:
        return Reason.DOOR_NOT_ALLOWED
    if record.schedules:
        local = now_wall + 60 * config.utc_offset_minutes
        if not any(in_schedule(s, local) for s in record.schedules):
            return Reason.OUTSIDE_SCHEDULE
    return None


@dataclass(frozen=True)
class _Context:
    """What every decision at this door, at this moment, records."""

    door: str
    version: int
    shadow: bool
    stale: bool

    def refuse(
        self,
        reason: Reason,
        credential: Credential,
        *,
        person_id: str | None = None,
        result: Result = Result.DENIED,
        similarity: float | None = None,
        margin: float | None = None,
    ) -> Decision:
        return Decision(
            granted=False, result=result, credential=credential, person_id=person_id, reason=reason,
            version=self.version, door=self.door, actuate=False, shadow=self.shadow, stale=self.stale,
            similarity=similarity, margin=margin,
        )


def evaluate_person(
    record: pb.PersonRecord | None,
    *,
    door: str,
    now_wall: float,
    config: pb.SiteConfig | None,
    stale: bool,
    credential: str,
    shadow: bool,
    version: int,
    similarity: float | None = None,
    margin: float | None = None,
) -> Decision:
    """Decide for an identified person (or None: revoked or never known).

    ``now_wall`` is unix seconds. Offline, the device wall clock is all there
    is, so validity windows and schedules use it, and a clock that is hours off
    after a power cut shifts them by as much. When the agent holds a verified
    hub beacon, the caller should pass hub time advanced by the monotonic clock
    instead (`doorkeeper.agent.sync.syncer.HubClock.now()`, which falls back to the
    wall clock when not anchored). Schedules use the site's fixed
    ``utc_offset_minutes`` (no daylight-saving rules travel in the config).

    ``door`` is this device's door name, matched exactly against
    ``record.doors`` (empty = every door). ``similarity``/``margin`` are only
    carried into the `Decision` (face path). Grants set ``actuate`` only when
    ``shadow`` is False. Raises ValueError for an unknown ``credential`` or a
    non-finite ``now_wall`` (caller bugs, not door input).
    """
    cred = Credential(credential)
    if not math.isfinite(now_wall):
        raise ValueError("now_wall must be a finite number of unix seconds")
    ctx = _Context(door=door, version=version, shadow=shadow, stale=stale)
    if config is None:
        return ctx.refuse(Reason.NO_WHITELIST, cred, similarity=similarity, margin=margin)
    if record is None:
        return ctx.refuse(Reason.REVOKED_OR_UNKNOWN, cred, similarity=similarity, margin=margin)
    refusal = _person_refusal(record, door, now_wall, config)
    if refusal is None and stale:
        refusal = _stale_refusal(config, record, cred)
    if refusal is not None:
        return ctx.refuse(refusal, cred, person_id=record.person_id, similarity=similarity, margin=margin)
    return Decision(
        granted=True, result=Result.SHADOW if shadow else Result.GRANTED, credential=cred,
        person_id=record.person_id, reason=Reason.OK, version=version, door=door,
        actuate=not shadow, shadow=shadow, stale=stale, similarity=similarity, margin=margin,
    )


# ------------------------------------------------------------------ card / PIN
def _decide_credential(
    cred: Credential,
    lookup: CredentialLookup,
    salt: bytes,
    text: object,
    *,
    door: str,
    now_wall: float,
    config: pb.SiteConfig | None,
    stale: bool,
    shadow: bool,
    version: int,
) -> Decision:
    ctx = _Context(door=door, version=version, shadow=shadow, stale=stale)
    if config is None:
        return ctx.refuse(Reason.NO_WHITELIST, cred)
    # Validate first: nothing malformed reaches the hash, the lookup or a log.
    # The credentials module checks type and length before its ASCII-only
    # regex runs, so a 10 kB string or a non-str costs nothing.
    if not isinstance(text, str):
        return ctx.refuse(Reason.BAD_CREDENTIAL_FORMAT, cred)
    try:
        if cred is Credential.CARD:
            normalise_card(text)
        else:
            check_pin(text)
    except CredentialError:
        return ctx.refuse(Reason.BAD_CREDENTIAL_FORMAT, cred)
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        return ctx.refuse(Reason.BAD_SITE_CONFIG, cred)
    key = card_hash(salt, text) if cred is Credential.CARD else pin_hash(salt, text)
    holders = list(lookup(cred.value, key))
    if not holders:
        return ctx.refuse(Reason.REVOKED_OR_UNKNOWN, cred)
    if len(holders) > 1:
        ambiguous = Reason.CARD_AMBIGUOUS if cred is Credential.CARD else Reason.PIN_AMBIGUOUS
        return ctx.refuse(ambiguous, cred)
    return evaluate_person(
        holders[0], door=door, now_wall=now_wall, config=config, stale=stale,
        credential=cred, shadow=shadow, version=version,
    )


def decide_card(
    lookup: CredentialLookup,
    salt: bytes,
    card_text: object,
    *,
    door: str,
    now_wall: float,
    config: pb.SiteConfig | None,
    stale: bool,
    shadow: bool,
    version: int,
) -> Decision:
    """Decide for a presented card number (hostile input, any type).

    Refuses with ``bad_credential_format`` anything `normalise_card` refuses
    (not a str, not 4-64 ASCII letters/digits) without hashing it or calling
    ``lookup``, and never raises for it. A well-formed card is looked up by its
    keyed hash under ``salt`` (the site's 32-byte ``credential_salt``; any
    other length gives ``bad_site_config``). No holder: ``revoked_or_unknown``;
    several holders: ``card_ambiguous`` (a data error; we do not guess); one
    holder: `evaluate_person`. Exceptions raised by ``lookup`` (storage) propagate.
    """
    return _decide_credential(
        Credential.CARD, lookup, salt, card_text, door=door, now_wall=now_wall, config=config,
        stale=stale, shadow=shadow, version=version,
    )


def decide_pin(
    lookup: CredentialLookup,
    salt: bytes,
    pin_text: object,
    *,
    door: str,
    now_wall: float,
    config: pb.SiteConfig | None,
    stale: bool,
    shadow: bool,
    version: int,
) -> Decision:
    """Decide for an entered PIN (hostile input, any type); as `decide_card`, plus:

    PINs are short and not unique by construction, so a PIN held by several
    persons is refused with ``pin_ambiguous`` rather than guessing whose it is
    (the hub should refuse such enrolments; the door never relies on that).
    A PIN is refused while stale under CARDS_ONLY. Rate-limiting attempts at a
    keypad is the caller's job: this core keeps no state.
    """
    return _decide_credential(
        Credential.PIN, lookup, salt, pin_text, door=door, now_wall=now_wall, config=config,
        stale=stale, shadow=shadow, version=version,
    )


# ------------------------------------------------------------------ face
def decide_face(
    match: FaceMatch,
    person: PersonLookup,
    *,
    door: str,
    now_wall: float,
    config: pb.SiteConfig | None,
    stale: bool,
    shadow: bool,
    version: int,
    liveness_passed: bool | None = None,
) -> Decision:
    """Decide for a gallery search result (after the loop's frame confirmation).

    ``liveness_passed`` None means no liveness check ran (the agent says so at
    start); False refuses with ``liveness_failed``, recording the matched
    person id, if any, for the audit trail. A match the gallery did not accept
    is ``result == "unknown"`` with ``ambiguous_match`` (gallery reason
    "ambiguous") or ``low_similarity`` (anything else), and no person id, except
    in shadow mode: there it names the nearest enrolled person (``match.nearest``),
    a candidate for the data owner's cut-over list (`logs readiness`), sealed to
    the owner like every entry; an enforcing door's unknown faces name nobody. An
    accepted match is re-read through ``person`` so a person removed by a
    sync since the gallery was built is refused (``revoked_or_unknown``), then
    goes through `evaluate_person`. Score and margin are always recorded.
    """
    ctx = _Context(door=door, version=version, shadow=shadow, stale=stale)
    score, margin = float(match.score), float(match.margin)
    if config is None:
        return ctx.refuse(Reason.NO_WHITELIST, Credential.FACE, similarity=score, margin=margin)
    if liveness_passed is False:
        return ctx.refuse(
            Reason.LIVENESS_FAILED, Credential.FACE, person_id=match.person_id if match.accepted else None,
            similarity=score, margin=margin,
        )
    if not match.accepted or not match.person_id:
        reason = Reason.AMBIGUOUS_MATCH if match.reason == "ambiguous" else Reason.LOW_SIMILARITY
        return ctx.refuse(reason, Credential.FACE, result=Result.UNKNOWN, similarity=score, margin=margin,
                          person_id=match.nearest if shadow else None)
    return evaluate_person(
        person(match.person_id), door=door, now_wall=now_wall, config=config, stale=stale,
        credential=Credential.FACE, shadow=shadow, version=version, similarity=score, margin=margin,
    )
