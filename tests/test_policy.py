"""The door's decision core: validity, doors, schedules, stale policies, shadow mode, hostile cards."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from doorkeeper.agent.doorloop import policy as P
from doorkeeper.agent.face.gallery import Gallery
from doorkeeper.agent.sync import bundle
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import digest
from doorkeeper.wire.credentials import card_hash, pin_hash

SALT = bytes(range(32))
MONDAY = 1704067200  # 2024-01-01T00:00:00Z, a Monday
HOUR, DAY = 3600, 86400
NOW = MONDAY + 12 * HOUR
DOOR = "front"
MON, TUE, FRI, SAT, SUN = 1 << 0, 1 << 1, 1 << 4, 1 << 5, 1 << 6


def config(
    policy: int = pb.STALE_POLICY_KEEP_WORKING, offset_min: int = 0, validity: int = 3600
) -> pb.SiteConfig:
    return pb.SiteConfig(
        site_id="site", offline_validity_s=validity, stale_policy=policy,  # type: ignore[arg-type]
        credential_salt=SALT, utc_offset_minutes=offset_min,
    )


def person(pid: str = "p1", **fields: object) -> pb.PersonRecord:
    return pb.PersonRecord(person_id=pid, **fields)  # type: ignore[arg-type]


def local(day: int, hh: int, mm: int = 0, offset_min: int = 0) -> float:
    """UTC seconds of a site-local wall time, ``day`` days after Monday 2024-01-01."""
    return MONDAY + day * DAY + hh * HOUR + mm * 60 - offset_min * 60


def decide(
    record: pb.PersonRecord | None,
    *,
    now: float = NOW,
    cfg: pb.SiteConfig | None = None,
    door: str = DOOR,
    stale: bool = False,
    credential: str = "face",
    shadow: bool = False,
) -> P.Decision:
    return P.evaluate_person(
        record, door=door, now_wall=now, config=cfg or config(), stale=stale,
        credential=credential, shadow=shadow, version=7,
    )


class RecordingLookup:
    """A credential lookup over records that remembers every call."""

    def __init__(self, *records: pb.PersonRecord) -> None:
        self.records = records
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, kind: str, cred_hash: bytes) -> Sequence[pb.PersonRecord]:
        self.calls.append((kind, cred_hash))
        field = {"card": "card_hashes", "pin": "pin_hashes"}[kind]
        return [r for r in self.records if cred_hash in getattr(r, field)]


def card(lookup: RecordingLookup, text: object, **kw: object) -> P.Decision:
    args: dict[str, object] = {"door": DOOR, "now_wall": NOW, "config": config(), "stale": False,
                               "shadow": False, "version": 7}
    args.update(kw)
    return P.decide_card(lookup, SALT, text, **args)  # type: ignore[arg-type]


def pin(lookup: RecordingLookup, text: object, **kw: object) -> P.Decision:
    args: dict[str, object] = {"door": DOOR, "now_wall": NOW, "config": config(), "stale": False,
                               "shadow": False, "version": 7}
    args.update(kw)
    return P.decide_pin(lookup, SALT, text, **args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ validity window
@pytest.mark.parametrize(
    ("valid_from", "valid_until", "now", "reason"),
    [
        (NOW + 1, 0, NOW, "not_yet_valid"),
        (NOW, 0, NOW, "ok"),  # valid_from is inclusive
        (NOW - DAY, NOW + DAY, NOW, "ok"),
        (NOW - DAY, NOW, NOW, "expired"),  # valid_until is exclusive
        (NOW - DAY, NOW - 1, NOW, "expired"),
        (0, 0, NOW, "ok"),  # both unbounded
        (0, NOW + 1, NOW, "ok"),  # open start
        (NOW - 1, 0, NOW + 100 * 365 * DAY, "ok"),  # open end
        (0, NOW - 1, NOW, "expired"),
    ],
)
def test_validity_window(valid_from: int, valid_until: int, now: float, reason: str) -> None:
    d = decide(person(valid_from=valid_from, valid_until=valid_until), now=now)
    assert d.reason == reason
    assert d.granted is d.actuate is (reason == "ok")
    assert d.person_id == "p1" and d.version == 7


# ------------------------------------------------------------------ doors
@pytest.mark.parametrize(
    ("doors", "door", "granted"),
    [
        ([], "front", True),  # empty = every door of the site
        (["front"], "front", True),
        (["back", "front"], "front", True),
        (["back"], "front", False),
        (["Front"], "front", False),  # exact names, no case folding
        (["front"], "", False),
    ],
)
def test_door_scoping(doors: list[str], door: str, granted: bool) -> None:
    d = decide(person(doors=doors), door=door)
    assert d.granted is granted
    assert d.reason == ("ok" if granted else "door_not_allowed")


# ------------------------------------------------------------------ schedules
WORK = pb.Schedule(weekdays_mask=MON | TUE, start_minute=9 * 60, end_minute=17 * 60)
NIGHT_FRI = pb.Schedule(weekdays_mask=FRI, start_minute=22 * 60, end_minute=6 * 60)
EVERY_NIGHT = pb.Schedule(weekdays_mask=0, start_minute=22 * 60, end_minute=6 * 60)


@pytest.mark.parametrize(
    ("schedules", "day", "hh", "mm", "offset", "granted"),
    [
        ([], 3, 3, 0, 0, True),  # no schedule = any time
        ([WORK], 0, 9, 0, 0, True),  # start inclusive
        ([WORK], 0, 16, 59, 0, True),
        ([WORK], 0, 17, 0, 0, False),  # end exclusive
        ([WORK], 0, 8, 59, 0, False),
        ([WORK], 1, 12, 0, 0, True),  # Tuesday in mask
        ([WORK], 2, 12, 0, 0, False),  # Wednesday not in mask
        ([WORK], 6, 12, 0, 0, False),  # Sunday
        ([pb.Schedule(weekdays_mask=SUN, start_minute=0, end_minute=1440)], 6, 23, 59, 0, True),
        # wrap past midnight: the early part belongs to the day the window started
        ([NIGHT_FRI], 4, 22, 0, 0, True),  # Friday 22:00
        ([NIGHT_FRI], 4, 23, 59, 0, True),
        ([NIGHT_FRI], 5, 2, 0, 0, True),  # Saturday 02:00 (Friday's night)
        ([NIGHT_FRI], 5, 6, 0, 0, False),  # Saturday 06:00: end exclusive
        ([NIGHT_FRI], 4, 2, 0, 0, False),  # Friday 02:00 is Thursday's night
        ([NIGHT_FRI], 5, 22, 0, 0, False),  # Saturday evening
        ([NIGHT_FRI], 4, 12, 0, 0, False),
        ([EVERY_NIGHT], 0, 0, 30, 0, True),  # Monday 00:30, Sunday's night, mask 0
        ([EVERY_NIGHT], 2, 12, 0, 0, False),
        ([pb.Schedule(weekdays_mask=SUN, start_minute=22 * 60, end_minute=6 * 60)], 0, 1, 0, 0, True),
        # several schedules: any one admits
        ([WORK, NIGHT_FRI], 5, 1, 0, 0, True),
        ([WORK, NIGHT_FRI], 2, 1, 0, 0, False),
        # empty and out-of-bounds schedules admit nobody
        ([pb.Schedule(start_minute=600, end_minute=600)], 0, 10, 0, 0, False),
        ([pb.Schedule(start_minute=0, end_minute=1441)], 0, 10, 0, 0, False),
        ([pb.Schedule(weekdays_mask=1 << 7, start_minute=0, end_minute=1440)], 0, 10, 0, 0, False),
        # site local time: the schedule is local, the clock is UTC
        ([WORK], 0, 9, 0, 480, True),  # Monday 09:00 at +08:00 is Monday 01:00 UTC
        ([WORK], 0, 8, 59, 480, False),
        ([WORK], 0, 16, 30, -300, True),  # Monday 16:30 at -05:00 is Monday 21:30 UTC
        ([WORK], 1, 8, 0, 480, False),  # Tuesday 08:00 local is Tuesday 00:00 UTC (in UTC hours!)
        ([WORK], 2, 3, 0, 480, False),  # Wednesday local is still Tuesday 19:00 UTC
        ([NIGHT_FRI], 5, 3, 0, 330, True),  # +05:30, Saturday 03:00 local
    ],
)
def test_schedules(
    schedules: list[pb.Schedule], day: int, hh: int, mm: int, offset: int, granted: bool
) -> None:
    d = decide(person(schedules=schedules), now=local(day, hh, mm, offset), cfg=config(offset_min=offset))
    assert d.granted is granted
    assert d.reason == ("ok" if granted else "outside_schedule")


def test_schedule_uses_the_site_offset_not_utc() -> None:
    # Monday 10:00 UTC is 18:00 at +08:00: outside 09-17 there, inside it in UTC.
    now = local(0, 10)
    rec = person(schedules=[WORK])
    assert decide(rec, now=now, cfg=config(offset_min=0)).granted
    assert decide(rec, now=now, cfg=config(offset_min=480)).reason == "outside_schedule"


# ------------------------------------------------------------------ stale policies
KEEP, UNSPEC = pb.STALE_POLICY_KEEP_WORKING, pb.STALE_POLICY_UNSPECIFIED
ALWAYS, CARDS = pb.STALE_POLICY_ALWAYS_ALLOWED_ONLY, pb.STALE_POLICY_CARDS_ONLY


@pytest.mark.parametrize(
    ("policy", "always_allowed", "credential", "reason"),
    [
        *[(p, aa, c, "ok") for p in (KEEP, UNSPEC) for aa in (False, True) for c in ("face", "card", "pin")],
        *[(ALWAYS, False, c, "stale_always_allowed_only") for c in ("face", "card", "pin")],
        *[(ALWAYS, True, c, "ok") for c in ("face", "card", "pin")],
        *[(CARDS, aa, "card", "ok") for aa in (False, True)],
        *[(CARDS, aa, c, "stale_cards_only") for aa in (False, True) for c in ("face", "pin")],
        # a policy this agent does not know is treated as the strictest
        (99, False, "card", "stale_always_allowed_only"),
        (99, True, "face", "ok"),
    ],
)
def test_stale_policy_by_credential(policy: int, always_allowed: bool, credential: str, reason: str) -> None:
    rec = person(always_allowed=always_allowed)
    cfg = config(policy=policy)
    stale = decide(rec, cfg=cfg, stale=True, credential=credential)
    assert stale.reason == reason and stale.granted is (reason == "ok") and stale.stale
    fresh = decide(rec, cfg=cfg, stale=False, credential=credential)
    assert fresh.granted and fresh.reason == "ok"  # policies bite only when stale


def test_person_rules_apply_even_to_always_allowed_when_stale() -> None:
    rec = person(always_allowed=True, valid_until=NOW - 1)
    assert decide(rec, cfg=config(policy=ALWAYS), stale=True).reason == "expired"


def test_person_reason_wins_over_stale_reason() -> None:
    rec = person(doors=["back"])
    assert decide(rec, cfg=config(policy=CARDS), stale=True).reason == "door_not_allowed"


# ------------------------------------------------------------------ revoked, no whitelist
def test_revoked_or_unknown_person_is_denied() -> None:
    d = decide(None)
    assert (d.granted, d.result, d.reason, d.person_id, d.actuate) == (
        False, "denied", "revoked_or_unknown", None, False)


@pytest.mark.parametrize("record", [None, person(always_allowed=True)])
def test_never_synced_denies_everything(record: pb.PersonRecord | None) -> None:
    d = P.evaluate_person(record, door=DOOR, now_wall=NOW, config=None, stale=False,
                          credential="face", shadow=False, version=0)
    assert not d.granted and d.reason == "no_whitelist"
    lookup = RecordingLookup()
    assert card(lookup, "CARD0001", config=None).reason == "no_whitelist"
    assert lookup.calls == []


def test_caller_bugs_raise() -> None:
    with pytest.raises(ValueError):
        decide(person(), credential="iris")
    with pytest.raises(ValueError):
        decide(person(), now=float("nan"))


# ------------------------------------------------------------------ shadow mode
@pytest.mark.parametrize(
    ("record", "result", "granted", "reason"),
    [
        (person(), "shadow", True, "ok"),
        (person(valid_until=NOW - 1), "denied", False, "expired"),
        (person(doors=["back"]), "denied", False, "door_not_allowed"),
        (None, "denied", False, "revoked_or_unknown"),
    ],
)
def test_shadow_mode_never_actuates(
    record: pb.PersonRecord | None, result: str, granted: bool, reason: str
) -> None:
    d = decide(record, shadow=True)
    assert (d.result, d.granted, d.reason, d.actuate, d.shadow) == (result, granted, reason, False, True)


def test_shadow_mode_never_actuates_for_cards_pins_and_faces() -> None:
    rec = person(card_hashes=[card_hash(SALT, "CARD0001")], pin_hashes=[pin_hash(SALT, "4321")])
    lookup = RecordingLookup(rec)
    for d in (card(lookup, "CARD0001", shadow=True), pin(lookup, "4321", shadow=True)):
        assert d.granted and d.result == "shadow" and not d.actuate
    d = face_decide(_gallery(), _VECS[0], lambda pid: rec if pid == "p1" else None, shadow=True)
    assert d.granted and d.result == "shadow" and not d.actuate


def test_decision_is_frozen() -> None:
    d = decide(person())
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.actuate = False  # type: ignore[misc]


# ------------------------------------------------------------------ cards: hostile input
HOSTILE = [
    "1' OR '1'='1",
    "../../etc/passwd",
    "; rm -rf /",
    "$(reboot)",
    "CARD0001\n",
    "CARD0001\x00",
    " CARD0001",
    "A" * 10_000,
    "9" * 65,  # one over the cap
    "١٢٣٤",  # Arabic-Indic digits: str.isdigit() is True, ASCII-only check is not
    "\uff11\uff12\uff13\uff14",  # full-width digits
    "ÄBCD",
    "",
    "abc",  # too short
    None,
    b"CARD0001",
    1234,
    ["CARD0001"],
]


@pytest.mark.parametrize("text", HOSTILE, ids=repr)
def test_hostile_card_is_refused_before_any_lookup(text: object) -> None:
    lookup = RecordingLookup(person(card_hashes=[card_hash(SALT, "CARD0001")]))
    d = card(lookup, text)
    assert (d.granted, d.result, d.reason, d.actuate, d.person_id) == (
        False, "denied", "bad_credential_format", False, None)
    assert lookup.calls == []
    if isinstance(text, str) and text:
        assert text not in repr(d)  # the raw value never reaches what gets recorded


@pytest.mark.parametrize("text", [*HOSTILE, "12345678901234", "12ab"], ids=repr)
def test_hostile_pin_is_refused_before_any_lookup(text: object) -> None:
    lookup = RecordingLookup(person(pin_hashes=[pin_hash(SALT, "1234")]))
    d = pin(lookup, text)
    assert d.reason == "bad_credential_format" and not d.granted
    assert lookup.calls == []


@pytest.mark.parametrize("text", ["CARD0001", "card0001", "1234", "Z" * 64])
def test_valid_card_is_looked_up_by_keyed_hash(text: str) -> None:
    rec = person(card_hashes=[card_hash(SALT, text)])
    lookup = RecordingLookup(rec)
    d = card(lookup, text)
    assert d.granted and d.actuate and d.credential == "card" and d.person_id == "p1"
    assert lookup.calls == [("card", card_hash(SALT, text))]
    assert text.encode() not in lookup.calls[0][1]


def test_card_numbers_are_case_insensitive() -> None:
    lookup = RecordingLookup(person(card_hashes=[card_hash(SALT, "ABCD1234")]))
    assert card(lookup, "abcd1234").granted


def test_unknown_card_is_denied() -> None:
    lookup = RecordingLookup(person(card_hashes=[card_hash(SALT, "CARD0001")]))
    d = card(lookup, "CARD0002")
    assert d.reason == "revoked_or_unknown" and d.person_id is None and len(lookup.calls) == 1


def test_card_found_still_goes_through_person_rules() -> None:
    lookup = RecordingLookup(person(card_hashes=[card_hash(SALT, "CARD0001")], valid_until=NOW - 1))
    d = card(lookup, "CARD0001")
    assert d.reason == "expired" and d.person_id == "p1"


def test_card_with_a_bad_salt_is_refused() -> None:
    lookup = RecordingLookup()
    d = P.decide_card(lookup, b"short", "CARD0001", door=DOOR, now_wall=NOW, config=config(),
                      stale=False, shadow=False, version=7)
    assert d.reason == "bad_site_config" and lookup.calls == []


def test_card_held_by_two_persons_is_not_guessed() -> None:
    h = card_hash(SALT, "CARD0001")
    d = card(RecordingLookup(person("a", card_hashes=[h]), person("b", card_hashes=[h])), "CARD0001")
    assert d.reason == "card_ambiguous" and d.person_id is None and not d.granted


# ------------------------------------------------------------------ PINs
def test_pin_shared_by_several_persons_is_not_guessed() -> None:
    h = pin_hash(SALT, "1234")
    lookup = RecordingLookup(person("a", pin_hashes=[h]), person("b", pin_hashes=[h], always_allowed=True))
    d = pin(lookup, "1234")
    assert (d.granted, d.reason, d.person_id, d.actuate) == (False, "pin_ambiguous", None, False)


def test_unique_pin_is_granted() -> None:
    lookup = RecordingLookup(person("a", pin_hashes=[pin_hash(SALT, "1234")]),
                             person("b", pin_hashes=[pin_hash(SALT, "9876")]))
    d = pin(lookup, "9876")
    assert d.granted and d.person_id == "b" and d.credential == "pin"
    assert lookup.calls == [("pin", pin_hash(SALT, "9876"))]


def test_pin_and_card_hashes_do_not_cross() -> None:
    # The same digits as a card and as a PIN hash differently; a PIN never opens by a card record.
    lookup = RecordingLookup(person(card_hashes=[card_hash(SALT, "1234")]))
    assert pin(lookup, "1234").reason == "revoked_or_unknown"


# ------------------------------------------------------------------ faces (real gallery)
_VECS = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32)
_VECS /= np.linalg.norm(_VECS, axis=1, keepdims=True)


def _gallery() -> Gallery:
    g = Gallery("m", threshold=0.4, margin=0.05)
    g.add("p1", "m", _VECS[0])
    twin = _VECS[1] + 0.05 * _VECS[2]
    g.add("t1", "m", _VECS[1])
    g.add("t2", "m", twin / np.linalg.norm(twin))
    return g


def face_decide(
    gallery: Gallery, probe: np.ndarray, lookup: P.PersonLookup, *, stale: bool = False,
    shadow: bool = False, cfg: pb.SiteConfig | None = None, liveness: bool | None = None,
) -> P.Decision:
    return P.decide_face(gallery.search(probe), lookup, door=DOOR, now_wall=NOW, config=cfg or config(),
                         stale=stale, shadow=shadow, version=7, liveness_passed=liveness)


def test_known_face_is_granted_with_score() -> None:
    d = face_decide(_gallery(), _VECS[0], lambda pid: person(pid))
    assert d.granted and d.actuate and d.person_id == "p1" and d.credential == "face"
    assert d.similarity == pytest.approx(1.0, abs=1e-5) and d.margin is not None and d.margin > 0.5


@pytest.mark.parametrize(
    ("probe", "reason"),
    [
        (np.roll(_VECS[0], 7), "low_similarity"),  # a stranger
        (_VECS[1], "ambiguous_match"),  # two enrolled look-alikes
    ],
)
def test_unknown_face(probe: np.ndarray, reason: str) -> None:
    lookup_calls: list[str] = []

    def lookup(pid: str) -> pb.PersonRecord | None:
        lookup_calls.append(pid)
        return person(pid)

    d = face_decide(_gallery(), probe, lookup)
    assert (d.granted, d.result, d.reason, d.person_id) == (False, "unknown", reason, None)
    assert d.similarity is not None and lookup_calls == []


@pytest.mark.parametrize(
    ("probe", "reason", "nearest"),
    [
        (np.roll(_VECS[0], 7), "low_similarity", None),  # a stranger: nearest to somebody
        (_VECS[1], "ambiguous_match", "t1"),  # two enrolled look-alikes: the closer one
    ],
)
def test_an_unknown_face_in_shadow_mode_names_its_nearest_resident(
        probe: np.ndarray, reason: str, nearest: str | None) -> None:
    gallery = _gallery()
    match = gallery.search(probe)
    d = face_decide(gallery, probe, lambda pid: person(pid), shadow=True)
    assert (d.granted, d.actuate, d.result, d.reason, d.shadow) == (False, False, "unknown", reason, True)
    assert d.person_id == match.nearest and d.person_id in {"p1", "t1", "t2"}
    if nearest is not None:
        assert d.person_id == nearest
    assert d.similarity == pytest.approx(match.score)
    # The same face at an enforcing door names nobody.
    assert face_decide(gallery, probe, lambda pid: person(pid)).person_id is None


def test_empty_gallery_is_unknown() -> None:
    d = face_decide(Gallery("m"), _VECS[0], lambda pid: person(pid))
    assert d.result == "unknown" and d.reason == "low_similarity"
    d = face_decide(Gallery("m"), _VECS[0], lambda pid: person(pid), shadow=True)
    assert d.result == "unknown" and d.person_id is None  # nobody enrolled: nobody to name


def test_face_removed_since_gallery_was_built_is_refused() -> None:
    d = face_decide(_gallery(), _VECS[0], lambda pid: None)
    assert d.reason == "revoked_or_unknown" and not d.granted and d.result == "denied"


def test_face_refused_when_stale_cards_only() -> None:
    d = face_decide(_gallery(), _VECS[0], lambda pid: person(pid), stale=True, cfg=config(policy=CARDS))
    assert d.reason == "stale_cards_only" and not d.actuate


def test_liveness_failure_refuses_a_matching_face() -> None:
    d = face_decide(_gallery(), _VECS[0], lambda pid: person(pid), liveness=False)
    assert (d.granted, d.reason, d.person_id) == (False, "liveness_failed", "p1")
    assert face_decide(_gallery(), _VECS[0], lambda pid: person(pid), liveness=True).granted


# ------------------------------------------------------------------ freshness
@pytest.mark.parametrize(
    ("freshness", "now_mono", "cfg", "state"),
    [
        (P.Freshness.beacon_seen(100.0), 100.0, None, "no_whitelist"),
        (P.Freshness.beacon_seen(100.0), 100.0 + 3600, config(validity=3600), "fresh"),
        (P.Freshness.beacon_seen(100.0), 100.0 + 3601, config(validity=3600), "stale"),
        (P.Freshness.beacon_seen(100.0), 50.0, config(validity=3600), "fresh"),  # clamp, never negative
        (P.Freshness.at_start(10.0), 10.0, config(validity=3600), "stale"),  # age unknown after restart
        (P.Freshness.at_start(10.0, carried_age_s=3000), 600.0, config(validity=3600), "fresh"),
        (P.Freshness.at_start(10.0, carried_age_s=3000), 611.0, config(validity=3600), "stale"),
        (P.Freshness.beacon_seen(0.0), 10.0 * 365 * DAY, config(validity=0), "fresh"),  # 0 = no limit
    ],
)
def test_freshness(freshness: P.Freshness, now_mono: float, cfg: pb.SiteConfig | None, state: str) -> None:
    assert freshness.state(cfg, now_mono) == state
    assert freshness.is_stale(cfg, now_mono) is (state == "stale")


def test_freshness_age() -> None:
    assert P.Freshness.beacon_seen(5.0).age_s(65.0) == 60.0
    assert P.Freshness.at_start(5.0).age_s(65.0) is None


# ------------------------------------------------------------------ real LocalWhitelist
def _apply(wl: LocalWhitelist, to_version: int, snapshot: bool, changes: list[pb.Change],
           persons_after: dict[str, bytes], config_raw: bytes) -> None:
    """Apply changes the way the sync loop does, with a header built as the hub would sign it."""
    state = digest.state_digest(
        digest.record_hash(config_raw),
        sorted((pid, digest.record_hash(raw)) for pid, raw in persons_after.items()),
    )
    header = pb.BundleHeader(
        format=1, kind=pb.BUNDLE_KIND_SNAPSHOT if snapshot else pb.BUNDLE_KIND_DELTA,
        site_id="site", device_id="dev", from_version=wl.version, to_version=to_version,
        state_digest=state, person_count=len(persons_after),
    )
    wl.apply(bundle.VerifiedHeader(header=header, raw=header.SerializeToString()), changes)


def test_with_a_real_local_whitelist(tmp_path: Path) -> None:
    wl = LocalWhitelist(tmp_path / "whitelist.db", bytes(32))
    try:
        def decide_card_now(text: str, **kw: object) -> P.Decision:
            cfg = wl.site_config()
            return P.decide_card(wl.by_credential, cfg.credential_salt if cfg else b"", text, door=DOOR,
                                 now_wall=NOW, config=cfg, stale=False, shadow=False, version=wl.version)

        assert decide_card_now("CARD0001").reason == "no_whitelist"  # never synced
        config_raw = config().SerializeToString(deterministic=True)
        ann = person("a1", card_hashes=[card_hash(SALT, "CARD0001")],
                     pin_hashes=[pin_hash(SALT, "1234")]).SerializeToString()
        bob = person("b2", pin_hashes=[pin_hash(SALT, "1234")], doors=["back"]).SerializeToString()
        _apply(wl, 3, True, [pb.Change(site_config=config_raw), pb.Change(upsert_record=ann),
                             pb.Change(upsert_record=bob)], {"a1": ann, "b2": bob}, config_raw)

        d = decide_card_now("card0001")
        assert (d.granted, d.person_id, d.version) == (True, "a1", 3)
        assert decide_card_now("1' OR '1'='1").reason == "bad_credential_format"
        cfg = wl.site_config()
        assert cfg is not None
        d = P.decide_pin(wl.by_credential, cfg.credential_salt, "1234", door=DOOR, now_wall=NOW,
                         config=cfg, stale=False, shadow=False, version=wl.version)
        assert d.reason == "pin_ambiguous"

        # A person removed by sync is refused at once, by card and by face lookup.
        _apply(wl, 4, False, [pb.Change(remove_person_id="a1")], {"b2": bob}, config_raw)
        assert decide_card_now("CARD0001").reason == "revoked_or_unknown"
        gallery = Gallery("m")
        gallery.add("a1", "m", _VECS[0])  # built before the removal reached the gallery
        d = P.decide_face(gallery.search(_VECS[0]), wl.person, door=DOOR, now_wall=NOW, config=cfg,
                          stale=False, shadow=False, version=wl.version)
        assert (d.reason, d.result, d.granted) == ("revoked_or_unknown", "denied", False)
    finally:
        wl.close()


# ------------------------------------------------------------------ door modes
def test_door_mode_is_the_hubs_word_for_this_door_or_the_installers_shadow() -> None:
    door_mode = P.door_mode
    config = pb.SiteConfig(door_modes=[
        pb.DoorModeEntry(device_id="a" * 32, mode=pb.DOOR_MODE_SHADOW),
        pb.DoorModeEntry(device_id="b" * 32, mode=pb.DOOR_MODE_ENFORCE),
        pb.DoorModeEntry(device_id="c" * 32, mode=pb.DOOR_MODE_UNSPECIFIED),
        pb.DoorModeEntry(device_id="d" * 32, mode=7),  # type: ignore[arg-type]  # a newer hub's mode
    ])
    assert door_mode(config, "a" * 32) == pb.DOOR_MODE_SHADOW
    assert door_mode(config, "b" * 32) == pb.DOOR_MODE_ENFORCE
    assert door_mode(config, "c" * 32) == pb.DOOR_MODE_ENFORCE
    assert door_mode(config, "d" * 32) == pb.DOOR_MODE_SHADOW  # unknown: never actuate
    assert door_mode(config, "e" * 32) == pb.DOOR_MODE_ENFORCE  # not listed
    assert door_mode(None, "a" * 32) == pb.DOOR_MODE_ENFORCE  # never synced (it refuses anyway)
    assert door_mode(config, "b" * 32, installer_shadow=True) == pb.DOOR_MODE_SHADOW
