"""`doorkeeper bench manifest`: how big a door's signed manifest gets with hourly decision counts.

Two cases, both through the code a door runs (`DecisionCounts` on a real SQLite file, then
`syncer.within_cap` on the manifest):

* a realistic day: 24 hours of a compound's front door (``--per-day`` decisions, busiest at
  the morning and evening rush, a few refusals of each kind), counted one decision at a time;
* the worst case: 48 hours with every counter at 2**32 - 1, next to every other manifest
  field at its largest (ids, digest, nonce, a 500-character last error, a refusal).

The cap is `SignedManifest.manifest` in `doorkeeper.wire.limits.REQUEST_FIELD_CAPS` (4096).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from doorkeeper.agent.entries.counts import FIELDS, HOUR_S, MANIFEST_HOURS, MAX_COUNT, DecisionCounts
from doorkeeper.agent.sync.syncer import MAX_MANIFEST_BYTES, within_cap
from doorkeeper.tools.bench.kit import cores, emit, pin, stamp
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.entrylog import Entry

# Share of a day's decisions in each hour (UTC offsets aside): night, morning rush, day, evening.
_HOURLY = np.array([1, 1, 1, 1, 1, 2, 6, 10, 8, 5, 4, 4, 5, 4, 4, 5, 7, 9, 8, 6, 4, 3, 2, 1], dtype=float)
# (decision, credential, reason) and its share: mostly faces let in, a few cards and PINs,
# refusals of every kind a real door sees.
_MIX = (
    (("granted", "face", "ok"), 0.86), (("granted", "card", "ok"), 0.05), (("granted", "pin", "ok"), 0.02),
    (("unknown", "face", "low_similarity"), 0.03), (("denied", "face", "outside_schedule"), 0.01),
    (("denied", "face", "expired"), 0.005), (("unknown", "face", "ambiguous_match"), 0.005),
    (("denied", "card", "revoked_or_unknown"), 0.01), (("denied", "face", "liveness_failed"), 0.01),
)


def largest_manifest(hours: list[pb.DecisionHour]) -> pb.Manifest:
    """A manifest with every field other than the counts at the largest a door sends."""
    return pb.Manifest(
        site_id="f" * 32, device_id="f" * 32, version=2**63 - 1, state_digest=b"\xff" * 32,
        person_count=1_000_000, device_time=2**33, agent_version="99.99.99+g0123456789ab",
        model_id="", stale=True, last_error="e" * 500, outbox_backlog=2**40, outbox_dropped=2**40,
        behind=True, known_version=2**63 - 1, beacon_nonce=b"\xff" * 32, decisions=hours,
        mode=pb.DOOR_MODE_SHADOW, pending_version=2**63 - 1, pending_effective_at=2**33,
        refused_version=2**63 - 1, refused_reason="d" * 32, refused_at=2**33,
    )


def worst_hours(start_hour: int = 2**31 // HOUR_S * HOUR_S) -> list[pb.DecisionHour]:
    """MANIFEST_HOURS hours, every counter at 2**32 - 1 (hours near 2038: 5-byte varints)."""
    return [pb.DecisionHour(hour=start_hour + i * HOUR_S, **dict.fromkeys(FIELDS, MAX_COUNT))
            for i in range(MANIFEST_HOURS)]


def realistic_day(directory: Path, per_day: int, seed: int = 14) -> list[pb.DecisionHour]:
    """Count ``per_day`` decisions over one UTC day through a real `DecisionCounts` file."""
    rng = np.random.default_rng(seed)
    day = int(time.time()) // 86400 * 86400 - 86400
    now = [float(day)]
    counts = DecisionCounts(directory / "counts.db", clock=lambda: now[0])
    kinds, shares = zip(*_MIX, strict=True)
    per_hour = rng.multinomial(per_day, _HOURLY / _HOURLY.sum())
    try:
        for hour, n in enumerate(per_hour):
            for pick in rng.choice(len(kinds), size=int(n), p=np.array(shares) / sum(shares)):
                decision, credential, reason = kinds[pick]
                now[0] = day + hour * HOUR_S + float(rng.uniform(0, HOUR_S - 1))
                counts.add(Entry(door="front", decision=decision, credential=credential, reason=reason))
        return counts.hours()
    finally:
        counts.close()


def measure(per_day: int) -> dict[str, Any]:
    before = stamp()
    pinned = pin(cores()[1])  # one core: the per-decision time is that of the door's recorder thread
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        day = realistic_day(Path(tmp), per_day)
        count_s = time.perf_counter() - started
    typical = within_cap(largest_manifest(day))
    empty = largest_manifest([]).ByteSize()
    worst = worst_hours()
    capped = within_cap(largest_manifest(list(worst)))
    return {
        "sizes": {"per_day": per_day, "day_hours": 24, "worst_hours": MANIFEST_HOURS, "max_count": MAX_COUNT},
        "cap_bytes": MAX_MANIFEST_BYTES,
        "manifest_without_counts_bytes": empty,
        "day_decisions": per_day,
        "day_hours": len(day),
        "day_counts_bytes": typical.ByteSize() - empty,
        "day_manifest_bytes": typical.ByteSize(),
        "day_count_ms_per_decision": round(count_s * 1000 / per_day, 3),
        "worst_hour_bytes": pb.Manifest(decisions=worst[:1]).ByteSize(),
        "worst_counts_bytes": pb.Manifest(decisions=worst).ByteSize(),
        "worst_manifest_uncapped_bytes": largest_manifest(worst).ByteSize(),
        "worst_manifest_bytes": capped.ByteSize(),
        "worst_hours_carried": len(capped.decisions),
        "worst_last_error_chars": len(capped.last_error),
        "pinned": pinned,
        **before,
    }


@click.command("manifest")
@click.option("--per-day", default=2000, show_default=True, help="Decisions in the realistic day.")
@click.option("--quick", is_flag=True, help="200 decisions in the day (for tests).")
@click.option("--json", "as_json", is_flag=True)
def manifest(per_day: int, quick: bool, as_json: bool) -> None:
    """Manifest size with a day of hourly decision counts, and in the worst case."""
    if quick:
        per_day = 200
    if not 1 <= per_day <= 1_000_000:
        raise click.UsageError("--per-day must be 1 to 1,000,000")
    emit(measure(per_day), as_json, title="doorkeeper bench manifest")
