"""Door decision counts and version history, as operators see them.

Doors report, in their signed manifests, how many decisions of each kind they made per
hour (`DecisionHour`: no person ids, no images, no per-event times); the hub keeps them
per door and hour (`HubStore.decision_rows`). Rollout health, cut-over readiness and the
console's plots read them from here. The hub also records when it made each site version
and when each door first reported holding it, which gives the time a change took to reach
the doors (`history`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from doorkeeper.hub.store import DECISION_COUNTERS, DECISION_KEEP_S, DecisionRow, HubStore
from doorkeeper.v1 import doorkeeper_pb2 as pb

if TYPE_CHECKING:  # devices imports this module (a report carries decision counts)
    from doorkeeper.hub.devices import Devices

HOUR = 3600
DEFAULT_WINDOW_S = 48 * HOUR
FUTURE_SLACK_S = 26 * HOUR  # a door's clock may run ahead (a day plus time zones mistaken)
MAX_HISTORY = 500
DEFAULT_HISTORY = 50
FACE_REFUSALS = ("refused_unknown_face", "refused_not_allowed_now", "refused_expired",
                 "refused_stale", "refused_ambiguous", "refused_other")


def checked_rows(hours: Iterable[pb.DecisionHour], now: int) -> tuple[tuple[DecisionRow, ...], int]:
    """The manifest's hours the hub keeps, and how many it dropped: an hour that is not on
    an hour boundary, older than the hub keeps, too far in the future, or repeated.

    A door with a wrong clock still reports (its manifest is recorded); only the hours that
    cannot be placed are left out."""
    kept: dict[int, DecisionRow] = {}
    dropped = 0
    for h in hours:
        if h.hour % HOUR or h.hour < now - DECISION_KEEP_S or h.hour > now + FUTURE_SLACK_S or h.hour in kept:
            dropped += 1
            continue
        kept[h.hour] = (h.hour, *(getattr(h, c) for c in DECISION_COUNTERS))
    return tuple(kept[k] for k in sorted(kept)), dropped


def hour_of(row: DecisionRow) -> pb.DecisionHour:
    return pb.DecisionHour(hour=row[0], **dict(zip(DECISION_COUNTERS, row[1:], strict=True)))


def totals(rows: Iterable[DecisionRow]) -> pb.DecisionTotals:
    sums = [0] * len(DECISION_COUNTERS)
    for row in rows:
        for i, n in enumerate(row[1:]):
            sums[i] += n
    return pb.DecisionTotals(**dict(zip(DECISION_COUNTERS, sums, strict=True)))


def face_attempts(t: pb.DecisionTotals) -> tuple[int, int]:
    """(refusals, attempts) among face decisions made in enforce mode."""
    refused = sum(getattr(t, c) for c in FACE_REFUSALS)
    return refused, refused + t.granted_face


class Decisions:
    """The DecisionCounts and VersionHistory admin calls."""

    def __init__(self, store: HubStore, devices: Devices, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.devices = devices
        self.clock = clock

    def totals(self, device_ids: Sequence[str], since: int, until: int) -> pb.DecisionTotals:
        return totals(row for _, row in self.store.decision_rows(device_ids, since, until))

    def counts(self, site_ref: str, device_ref: str = "", since: int = 0) -> pb.DecisionCountsResponse:
        now = int(self.clock())
        site = self.store.get_site(site_ref)
        doors = ([self.devices.find(site.site_id, device_ref)] if device_ref
                 else self.store.list_devices(site.site_id))
        since = since or now - DEFAULT_WINDOW_S
        ids = [d.device_id for d in doors]
        rows = self.store.decision_rows(ids, since - since % HOUR, now + FUTURE_SLACK_S)
        by_door: dict[str, list[pb.DecisionHour]] = {}
        for device_id, row in rows:
            by_door.setdefault(device_id, []).append(hour_of(row))
        return pb.DecisionCountsResponse(doors=[
            pb.DoorDecisions(device_id=d.device_id, name=d.name, hours=by_door.get(d.device_id, []))
            for d in doors])

    def history(self, site_ref: str, limit: int = 0) -> pb.VersionHistoryResponse:
        site = self.store.get_site(site_ref)
        limit = min(limit or DEFAULT_HISTORY, MAX_HISTORY)
        versions = self.store.version_rows(site.site_id, limit)
        doors = [d.device_id for d in self.store.list_devices(site.site_id)
                 if d.revoked_at is None and d.registered_at is not None]
        oldest = versions[-1].version if versions else site.version
        # Per door, (version, first reported) ascending: a door holds version v from the
        # first report of any version >= v (it may have jumped over v in one bundle).
        seen: dict[str, list[tuple[int, int]]] = {}
        for device_id, version, at in self.store.door_versions(doors, oldest):
            seen.setdefault(device_id, []).append((version, at))
        out = []
        for v in versions:
            reached = sorted(min((at for version, at in seen.get(d, []) if version >= v.version), default=-1)
                             for d in doors)
            times = [at for at in reached if at >= 0]
            info = pb.VersionInfo(version=v.version, made_at=v.made_at, state_digest=v.state_digest,
                                  person_count=v.person_count, doors_total=len(doors),
                                  doors_applied=len(times), converge_half_s=-1, converge_all_s=-1)
            if v.made_at and doors:
                if len(times) * 2 >= len(doors):
                    info.converge_half_s = max(0, times[(len(doors) + 1) // 2 - 1] - v.made_at)
                if len(times) == len(doors):
                    info.converge_all_s = max(0, times[-1] - v.made_at)
            out.append(info)
        return pb.VersionHistoryResponse(site_id=site.site_id, versions=out)

