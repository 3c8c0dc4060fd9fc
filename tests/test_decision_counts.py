"""Hourly decision counts on the door: which field each decision lands in, durability,
saturation, pruning, and the manifest's 4096-byte cap in the worst case."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from doorkeeper.agent.doorloop.policy import Credential, Reason, Result
from doorkeeper.agent.entries.counts import (
    FIELDS,
    HOUR_S,
    KEEP_S,
    MANIFEST_HOURS,
    MAX_COUNT,
    DecisionCounts,
    field_for,
)
from doorkeeper.agent.sync.syncer import MAX_MANIFEST_BYTES, within_cap
from doorkeeper.tools.bench.manifest import largest_manifest, realistic_day, worst_hours
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.entrylog import Entry

T0 = 1_800_000_000 // HOUR_S * HOUR_S  # an hour start


def entry(decision: str, credential: str = "face", reason: str = "ok", shadow: bool = False) -> Entry:
    return Entry(door="front", decision=decision, credential=credential, person_id="p" * 32,
                 reason=reason, shadow=shadow)


@pytest.mark.parametrize(("e", "field"), [
    (entry("granted"), "granted_face"),
    (entry("granted", "card"), "granted_card"),
    (entry("granted", "pin"), "granted_pin"),
    (entry("unknown", reason="low_similarity"), "refused_unknown_face"),
    (entry("denied", reason="revoked_or_unknown"), "refused_unknown_face"),
    (entry("unknown", reason="ambiguous_match"), "refused_ambiguous"),
    (entry("denied", "pin", "pin_ambiguous"), "refused_ambiguous"),
    (entry("denied", reason="door_not_allowed"), "refused_not_allowed_now"),
    (entry("denied", "card", "outside_schedule"), "refused_not_allowed_now"),
    (entry("denied", reason="expired"), "refused_expired"),
    (entry("denied", reason="not_yet_valid"), "refused_expired"),
    (entry("denied", reason="stale_cards_only"), "refused_stale"),
    (entry("denied", "pin", "stale_always_allowed_only"), "refused_stale"),
    (entry("denied", "card", "revoked_or_unknown"), "refused_credential"),
    (entry("denied", "pin", "bad_credential_format"), "refused_credential"),
    (entry("denied", reason="liveness_failed"), "refused_other"),
    (entry("denied", reason="actuation_failed"), "refused_other"),
    (entry("denied", "card", "rate_limited"), "refused_other"),
    (entry("denied", reason="a_reason_from_a_newer_agent"), "refused_other"),
    (entry("shadow", shadow=True), "shadow_would_grant"),
    (entry("denied", "card", "revoked_or_unknown", shadow=True), "shadow_would_refuse"),
    (entry("unknown", reason="low_similarity", shadow=True), "shadow_would_refuse"),
])
def test_each_decision_counts_in_one_field(e: Entry, field: str) -> None:
    assert field_for(e) == field


def test_every_policy_outcome_has_a_field() -> None:
    for result in Result:
        for credential in Credential:
            for reason in Reason:
                for shadow in (False, True):
                    assert field_for(entry(result.value, credential.value, reason.value, shadow)) in FIELDS


def test_counts_are_on_disk_when_add_returns_and_carry_no_identity(tmp_path: Path) -> None:
    now = [T0 + 10.0]
    counts = DecisionCounts(tmp_path / "counts.db", clock=lambda: now[0])
    counts.add(entry("granted"))
    counts.add(entry("granted"))
    now[0] = T0 + HOUR_S + 5
    counts.add(entry("denied", "card", "revoked_or_unknown"))
    # Another connection (another process after a crash) sees them without a close.
    rows = sqlite3.connect(tmp_path / "counts.db").execute(
        "SELECT hour, granted_face, refused_credential FROM hours ORDER BY hour").fetchall()
    assert rows == [(T0, 2, 0), (T0 + HOUR_S, 0, 1)]
    counts.close()
    again = DecisionCounts(tmp_path / "counts.db", clock=lambda: now[0])
    got = [(h.hour, h.granted_face, h.refused_credential) for h in again.hours()]
    assert got == [(T0, 2, 0), (T0 + HOUR_S, 0, 1)]
    again.close()
    for path in tmp_path.iterdir():
        assert b"p" * 32 not in path.read_bytes()


def test_counters_saturate_at_the_wire_maximum(tmp_path: Path) -> None:
    counts = DecisionCounts(tmp_path / "counts.db", clock=lambda: T0)
    counts.add(entry("granted"))
    with sqlite3.connect(tmp_path / "counts.db") as db:
        db.execute("UPDATE hours SET granted_face = ?", (MAX_COUNT - 1,))
    counts.add(entry("granted"))
    counts.add(entry("granted"))
    [hour] = counts.hours()
    assert hour.granted_face == MAX_COUNT
    counts.close()


def test_the_manifest_gets_the_latest_48_hours_with_decisions_oldest_first(tmp_path: Path) -> None:
    now = [float(T0)]
    counts = DecisionCounts(tmp_path / "counts.db", clock=lambda: now[0])
    for i in range(80):
        if i % 3 == 0:
            continue  # hours without a decision are not sent
        now[0] = T0 + i * HOUR_S
        counts.add(entry("granted"))
    hours = [h.hour for h in counts.hours()]
    assert len(hours) == MANIFEST_HOURS == 48
    assert hours == sorted(hours) and hours[-1] == T0 + 79 * HOUR_S and T0 + 78 * HOUR_S not in hours
    counts.close()


def test_hours_older_than_eight_days_are_pruned(tmp_path: Path) -> None:
    now = [float(T0)]
    counts = DecisionCounts(tmp_path / "counts.db", clock=lambda: now[0])
    counts.add(entry("granted"))
    now[0] = T0 + KEEP_S - HOUR_S
    counts.add(entry("granted"))
    assert len(counts.hours()) == 2  # seven days and 23 hours: kept
    now[0] = T0 + KEEP_S + HOUR_S
    counts.add(entry("granted"))
    assert [h.hour for h in counts.hours()] == [T0 + KEEP_S - HOUR_S, T0 + KEEP_S + HOUR_S]
    counts.close()


def test_counts_wait_in_memory_while_the_disk_refuses(tmp_path: Path) -> None:
    where = tmp_path / "not-yet" / "counts.db"  # cannot be opened: its folder is missing
    counts = DecisionCounts(where, clock=lambda: T0)
    counts.add(entry("granted"))
    counts.add(entry("denied", reason="expired"))
    [hour] = counts.hours()
    assert (hour.granted_face, hour.refused_expired) == (1, 1)
    assert not where.exists()
    where.parent.mkdir()
    counts.add(entry("granted"))  # the disk takes them again: everything goes out
    rows = sqlite3.connect(where).execute("SELECT granted_face, refused_expired FROM hours").fetchall()
    assert rows == [(2, 1)]
    counts.close()


# ------------------------------------------------------------------ the manifest's cap
def test_the_worst_case_manifest_stays_within_its_cap() -> None:
    """48 hours with every counter at 2**32 - 1, next to every other field at its largest
    (a 500-character last error included), is 4673 bytes: over the cap. The door then sends
    the newest hours that fit (40), never more than 4096 bytes; the hub already holds the
    older ones from the reports before (one a minute)."""
    worst = worst_hours()
    assert all(getattr(h, f) == MAX_COUNT for h in worst for f in FIELDS)
    uncapped = largest_manifest(list(worst))
    assert uncapped.ByteSize() > MAX_MANIFEST_BYTES == 4096
    manifest = within_cap(largest_manifest(list(worst)))
    raw = manifest.SerializeToString()
    assert len(raw) <= MAX_MANIFEST_BYTES
    assert list(manifest.decisions) == worst[-len(manifest.decisions):]  # the newest, in order
    assert len(manifest.decisions) == 40 and manifest.last_error == "e" * 500
    # Without a long error, more hours fit; still within the cap.
    quiet = largest_manifest(list(worst))
    quiet.last_error = ""
    assert within_cap(quiet).ByteSize() <= MAX_MANIFEST_BYTES
    assert len(quiet.decisions) == 47
    # The hub's request cap takes it.
    signed = pb.SignedManifest(manifest=raw, signature=b"\x00" * 64)
    assert len(signed.manifest) <= 4096


def test_a_realistic_day_travels_whole(tmp_path: Path) -> None:
    day = realistic_day(tmp_path, per_day=2000)
    assert len(day) == 24 and sum(sum(getattr(h, f) for f in FIELDS) for h in day) == 2000
    manifest = within_cap(largest_manifest(list(day)))
    assert list(manifest.decisions) == day and manifest.ByteSize() < 1500


def test_another_process_reads_counts_without_creating_anything(tmp_path: Path) -> None:
    from doorkeeper.agent.entries.counts import read_hours

    assert read_hours(tmp_path / "counts.db") == [] and not (tmp_path / "counts.db").exists()
    counts = DecisionCounts(tmp_path / "counts.db", clock=lambda: T0)
    counts.add(entry("granted", "pin"))
    assert [(h.hour, h.granted_pin) for h in read_hours(tmp_path / "counts.db")] == [(T0, 1)]
    assert read_hours(tmp_path / "counts.db") == counts.hours()
    counts.close()
