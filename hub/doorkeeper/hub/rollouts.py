"""Staged rollouts: a site's changes reach a stage of doors first; every other door is held.

The store keeps only a site's current records, so when a stage begins the rollout takes its
*base* into the store (`HubStore.start_rollout`): the site's version, digest, sealed config
and every person's sealed record as of then. Changes keep applying to the site as always
(its version, the *head*, moves on); what changes is what each door is served:

- a door in the stage, and every door once the rollout is promoting or closed, gets the head;
- any other door is held at the base: its beacons carry the base version and digest (signed,
  fresh, echoing its nonce), a door at the base is up to date, a door below it gets a snapshot
  built from the base records (`Publisher.base_snapshot`).

`served` is that rule; `Watch`, `Fetch`, `Report` and fleet status all go through it. The
rollout row lives in the store, so every replica serves the same targets.

Promote: a next stage (`doors`, `percent`), or every door (state `promoting` until every
active registered door reports the head, then `completed`). Abort: the difference between
the head and the base becomes one new site version whose digest equals the base digest
(asserted; the transaction rolls back otherwise), every door then targets it, and the audit
entry lists the staged changes dropped. Every action (start, promote, abort, auto-stop,
schedule firing, completion) is audited in the same transaction as its change, and is
conditional on the rollout's `rev`: two replicas never both act on the same rollout.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from doorkeeper.hub import rollout_rules
from doorkeeper.hub.audit import AuditedChanges, Done
from doorkeeper.hub.decisions import totals
from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.store import (
    ROLLOUT_OPEN,
    BasePerson,
    ChangeSet,
    Conflict,
    Device,
    HubStore,
    NotFound,
    PersonWrite,
    Rollout,
    Site,
)
from doorkeeper.hub.whitelist import InvalidRequest
from doorkeeper.v1 import doorkeeper_pb2 as pb

log = logging.getLogger("doorkeeper.hub.rollout")

DEFAULT_OFFLINE_AFTER_S = 300
MAX_STAGED_LISTED = 500
MAX_SCHEDULE_AHEAD_S = 366 * 24 * 3600
_VERSION = re.compile(r"\bv(\d+)\b")
SYSTEM = "hub:rollout-scheduler"  # the principal of audit entries the scheduler writes


class LostRace(Exception):
    """The rollout changed under us (another replica or operator acted first): roll back."""


PROMOTE_EARLY = "promote_early"  # Rollout.scheduled_action of a promotion delivered early


def early_at(rollout: Rollout | None, device_id: str) -> int:
    """The effective time a held door is delivered the head with, while a promotion with
    early delivery is scheduled (0: none for this door). The door must also honour
    `BundleHeader.effective_at` (`honours_effective_at`): the caller checks that, since it
    costs a read of the door's latest report."""
    if rollout is None or rollout.state != "staged" or rollout.scheduled_action != PROMOTE_EARLY \
            or device_id in rollout.stage:
        return 0
    if rollout.scheduled_doors and device_id not in rollout.scheduled_doors:
        return 0
    return rollout.scheduled_at


def honours_effective_at(manifest: pb.Manifest | None) -> bool:
    """Whether a door's latest signed manifest declares it honours `BundleHeader.effective_at`:
    a manifest with `mode` set does (every agent that sends a mode holds bundles for their
    time, PROTOCOL section 9.1); a door that never sent one gets promotions at the hub's time."""
    return manifest is not None and manifest.mode != pb.DOOR_MODE_UNSPECIFIED


def served(site: Site, rollout: Rollout | None, device_id: str, honours: bool = False) -> Site:
    """The site as `device_id` is to be served it: the head, or the rollout's base for a door
    held outside a staged rollout's stage. `honours`: the door honours effective times, so while
    a promotion with early delivery is scheduled it is served the head (with `early_at`)."""
    if rollout is None or rollout.state != "staged" or device_id in rollout.stage:
        return site
    if honours and early_at(rollout, device_id):
        return site
    return dataclasses.replace(site, version=rollout.base_version, state_digest=rollout.base_digest,
                               person_count=rollout.base_person_count,
                               config_sealed=rollout.base_config_sealed,
                               config_hash=rollout.base_config_hash)


def parse_at(at: int, now: int) -> int:
    """A schedule time: 0 = now; refuses the past and more than a year ahead."""
    if at == 0:
        return 0
    if at <= now:
        raise InvalidRequest(f"--at {at} is not in the future (hub time {now})")
    if at > now + MAX_SCHEDULE_AHEAD_S:
        raise InvalidRequest("--at is more than a year ahead")
    return at


@dataclass(frozen=True)
class DoorView:
    """One door with its latest signed manifest (None: never reported)."""

    device: Device
    manifest: pb.Manifest | None
    reported_at: int


class Rollouts:
    def __init__(self, store: HubStore, hub_keys: HubKeys, changes: AuditedChanges,
                 clock: Callable[[], float] = time.time,
                 offline_after_s: int = DEFAULT_OFFLINE_AFTER_S) -> None:
        self.store = store
        self.keys = hub_keys
        self.changes = changes
        self.clock = clock
        self.offline_after_s = offline_after_s

    def _now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------ operator actions
    # Each runs inside the caller's transaction (`AuditedChanges.run`) and returns its Done.

    def start(self, request: pb.StartRolloutRequest, principal: str) -> Done:
        """Open a rollout with `canary` as its first stage, now or at `request.at`. Refuses
        (InvalidRequest / NotFound / Conflict, nothing stored) bad rules, unknown or revoked
        doors, an empty canary, a past date, a second open rollout."""
        now = self._now()
        site = self.store.get_site(request.site)
        rules = rollout_rules.parse_rules(request.auto_stop)
        at = parse_at(request.at, now)
        stage = self._doors(site, list(request.canary))
        if not stage:
            raise InvalidRequest("a rollout needs at least one canary door (--canary)")
        rollout = Rollout(
            rollout_id=uuid.uuid4().hex, site_id=site.site_id, state="scheduled" if at else "staged",
            created_at=now, principal=principal, auto_stop=rollout_rules.render(rules),
            stage=tuple(d.device_id for d in stage), scheduled_at=at,
            scheduled_action="start" if at else "")
        rollout = self.store.start_rollout(rollout)
        names = ",".join(d.name for d in stage)
        when = f" scheduled_at={at}" if at else f" base=v{rollout.base_version}"
        detail = (f"{rollout.rollout_id} site={site.site_id}{when} canary={names}"
                  f" auto_stop={rollout.auto_stop or '-'}")
        return Done(self.status_of(site, rollout), "rollout.start", detail, site.site_id)

    def promote(self, request: pb.PromoteRolloutRequest) -> Done:
        """A next stage (`doors` / `percent`) or every door; at `request.at`, the rollout
        stores the schedule instead."""
        now = self._now()
        site = self.store.get_site(request.site)
        rollout = self._open(site)
        if request.doors and request.percent:
            raise InvalidRequest("give --doors or --percent, not both")
        if request.percent > 100:
            raise InvalidRequest("--percent must be 1 to 100")
        doors = self._doors(site, list(request.doors))  # checked now, also for a schedule
        at = parse_at(request.at, now)
        if request.deliver_early and not at:
            raise InvalidRequest("--deliver-early needs --at (a time in the future)")
        if request.deliver_early and request.percent:
            raise InvalidRequest("--deliver-early promotes every door or --doors, not --percent")
        if rollout.state == "promoting" and not (doors or request.percent or at):
            # Every door already gets the head; a door that will not apply it (it refuses the
            # bundle, or is gone without being revoked) must not keep the site from its next
            # rollout: promoting again closes it, naming the doors not there yet.
            return self._complete(site, rollout, now, "rollout.promote")
        if rollout.state != "staged":
            raise InvalidRequest(f"the rollout is {rollout.state}: only a staged rollout is promoted")
        if at and rollout.scheduled_action == PROMOTE_EARLY:
            # Doors may hold it for that time, and a door replaces a held bundle only by a
            # newer version: a new time would not reach them.
            raise InvalidRequest(f"a promotion delivered early is scheduled for {rollout.scheduled_at} and "
                                 "doors may hold it for that time: promote now, or abort the rollout")
        if at:
            updated = dataclasses.replace(
                rollout, scheduled_at=at,
                scheduled_action=PROMOTE_EARLY if request.deliver_early else "promote",
                scheduled_doors=tuple(d.device_id for d in doors), scheduled_percent=request.percent)
            self._update(rollout, updated)
            detail = (f"{rollout.rollout_id} site={site.site_id} scheduled_at={at} "
                      f"{_stage_words(doors, request.percent)}"
                      f"{' deliver_early' if request.deliver_early else ''}")
            return Done(self.status_of(site, updated), "rollout.schedule", detail, site.site_id)
        updated = self._promoted(site, rollout, doors, request.percent, now)
        self._update(rollout, updated)
        return Done(self.status_of(site, updated), "rollout.promote",
                    self._promote_detail(site, rollout, updated, doors, request.percent), site.site_id)

    def abort(self, request: pb.AbortRolloutRequest) -> Done:
        site = self.store.get_site(request.site)
        reason = request.reason.strip() or "aborted by the operator"
        if len(reason) > 300 or any(ord(c) < 32 for c in reason):
            raise InvalidRequest("reason must be at most 300 characters, no control characters")
        rollout = self._open(site)
        if rollout.state == "promoting":
            # Its changes went to every door, and the site's changes since were never staged:
            # putting the base back would drop those too.
            raise InvalidRequest("the rollout was promoted to every door: nothing is staged to abort, and "
                                 "changes made since reached every door; undo a change with a new one")
        return self._abort(site, rollout, reason, "rollout.abort")

    def _complete(self, site: Site, rollout: Rollout, now: int, action: str) -> Done:
        """Close a promotion: nothing is held any more. Names the doors not yet reporting the
        head (they get it at their next contact, like any door that was away)."""
        behind = [v for v in self.doors(site) if v.device.revoked_at is None
                  and v.device.registered_at is not None
                  and (v.manifest is None or v.manifest.version < site.version)]
        closed = dataclasses.replace(rollout, state="completed", closed_at=now)
        self._update(rollout, closed)
        detail = f"{rollout.rollout_id} site={site.site_id} "
        if behind:
            words = ", ".join(f"{v.device.name} (reports v{v.manifest.version if v.manifest else 0}, "
                              f"last seen {v.reported_at})" for v in behind)
            detail += f"closed at v{site.version}; not there yet: {words}"
        else:
            detail += f"every door reports v{site.version}"
        return Done(self.status_of(site, closed), action, detail[:8000], site.site_id)

    # ------------------------------------------------------------ the pieces
    def _open(self, site: Site) -> Rollout:
        rollout = self.store.get_rollout(site.site_id)
        if rollout is None or rollout.state not in ROLLOUT_OPEN:
            raise NotFound(f"site {site.name} has no open rollout")
        return rollout

    def _update(self, before: Rollout, after: Rollout) -> None:
        if not self.store.update_rollout(after, before.rev):
            raise LostRace(f"rollout {before.rollout_id} changed meanwhile")

    def _doors(self, site: Site, refs: Iterable[str]) -> list[Device]:
        """Doors of `site` by id or name, each once; refuses unknown and revoked ones. An id
        wins over a name (as in `Devices.find`): a door *named* like another door's id never
        stands in for that door."""
        devices = self.store.list_devices(site.site_id)
        found: dict[str, Device] = {}
        for ref in refs:
            match = next((d for d in devices if d.device_id == ref), None) \
                or next((d for d in devices if d.name == ref), None)
            if match is None:
                raise NotFound(f"no door {ref[:64]!r} in site {site.name}")
            if match.revoked_at is not None:
                raise InvalidRequest(f"door {match.name} is revoked")
            found[match.device_id] = match
        return list(found.values())

    def _promoted(self, site: Site, rollout: Rollout, doors: list[Device], percent: int,
                  now: int) -> Rollout:
        if not doors and not percent:
            return dataclasses.replace(rollout, state="promoting", scheduled_at=0, scheduled_action="",
                                       scheduled_doors=(), scheduled_percent=0)
        stage = list(rollout.stage)
        if percent:
            active = [d for d in self.store.list_devices(site.site_id) if d.revoked_at is None]
            want = math.ceil(percent * len(active) / 100)
            for d in sorted(active, key=lambda d: d.name):
                if sum(1 for s in stage if s in {a.device_id for a in active}) >= want:
                    break
                if d.device_id not in stage:
                    stage.append(d.device_id)
        stage += [d.device_id for d in doors if d.device_id not in stage]
        return dataclasses.replace(rollout, stage=tuple(stage), stage_started_at=now, scheduled_at=0,
                                   scheduled_action="", scheduled_doors=(), scheduled_percent=0)

    def _promote_detail(self, site: Site, before: Rollout, after: Rollout, doors: list[Device],
                        percent: int) -> str:
        if after.state == "promoting":
            return f"{after.rollout_id} site={site.site_id} to every door at v{site.version}"
        added = [d for d in after.stage if d not in before.stage]
        names = {d.device_id: d.name for d in self.store.list_devices(site.site_id)}
        return (f"{after.rollout_id} site={site.site_id} next stage {_stage_words(doors, percent)}"
                f" added={','.join(names.get(d, d) for d in added) or '-'}")

    def _abort(self, site: Site, rollout: Rollout, reason: str, action: str) -> Done:
        """Claim the rollout, then put the base back as one new version (not for a rollout
        that never began: it has no base and changed nothing)."""
        now = self._now()
        closed = dataclasses.replace(rollout, state="aborted", stop_reason=reason, closed_at=now,
                                     scheduled_at=0, scheduled_action="")
        dropped: list[pb.StagedChange] = []
        if rollout.state != "scheduled":
            dropped = self.staged(rollout)
            base = self.store.rollout_persons(rollout.rollout_id)  # read before the claim deletes it
            self._update(rollout, closed)
            version = self._restore(site, rollout, base)
            closed = dataclasses.replace(closed, closed_version=version)
            if not self.store.update_rollout(closed, rollout.rev + 1):
                raise LostRace(f"rollout {rollout.rollout_id} changed meanwhile")
        else:
            self._update(rollout, closed)
        listed = "; ".join(f"v{c.version} {c.action} {c.detail}" for c in dropped) or "none"
        holding = self._holding(site, closed) if rollout.state != "scheduled" else []
        early = ""
        if holding:
            times = sorted({v.manifest.pending_effective_at for v in holding if v.manifest is not None})
            early = (f" held_early={len(holding)} ({','.join(v.device.name for v in holding)} hold the "
                     f"dropped promotion for {','.join(map(str, times))}: each applies it then by its "
                     "own clock unless it hears of this abort first, and returns to the base at its "
                     "next contact)")
        detail = (f"{rollout.rollout_id} site={site.site_id} reason={reason!r} restored base "
                  f"v{rollout.base_version} as v{closed.closed_version}{early} dropped={len(dropped)}: "
                  f"{listed}")
        return Done(self.status_of(self.store.get_site(site.site_id), closed), action, detail[:8000],
                    site.site_id)

    def _restore(self, site: Site, rollout: Rollout, base_persons: list[BasePerson]) -> int:
        """Apply head -> base as one new version; its digest must be the base digest."""
        head = self.store.get_site(site.site_id)  # inside the change: the site row is ours now
        base = {p.person_id: p for p in base_persons}
        upserts: list[PersonWrite] = []
        removes: list[str] = []
        present = set()
        for row in self.store.list_persons(site.site_id):
            present.add(row.person_id)
            if row.updated_version <= rollout.base_version:
                continue  # untouched since the base
            kept = base.get(row.person_id)
            if kept is None:
                removes.append(row.person_id)
            else:
                upserts.append(self._write(kept))
        upserts += [self._write(p) for pid, p in base.items() if pid not in present]
        config = head.config_hash != rollout.base_config_hash
        if not (upserts or removes or config) and head.state_digest == rollout.base_digest:
            return head.version  # nothing was staged (or it cancelled out): no new version
        after = self.store.apply_changes(site.site_id, ChangeSet(
            upserts=tuple(upserts), removes=tuple(removes),
            config_sealed=rollout.base_config_sealed if config else None,
            config_hash=rollout.base_config_hash if config else None), self._now())
        if after.state_digest != rollout.base_digest:
            raise RuntimeError(f"abort of rollout {rollout.rollout_id}: the restored state's digest is not "
                               "the base digest; nothing was changed")
        return after.version

    def _write(self, p: BasePerson) -> PersonWrite:
        record = pb.PersonRecord.FromString(self.keys.unseal(p.record_sealed))
        return PersonWrite(person_id=p.person_id, name_sealed=p.name_sealed, record_sealed=p.record_sealed,
                           record_hash=p.record_hash,
                           credentials=tuple([("card", h) for h in record.card_hashes]
                                             + [("pin", h) for h in record.pin_hashes]))

    def staged(self, rollout: Rollout) -> list[pb.StagedChange]:
        """The site's audited changes after the rollout's base (the audit trail is the source:
        every change names its site and new version)."""
        out: list[pb.StagedChange] = []
        if rollout.state == "scheduled":
            return out
        after = rollout.audit_from
        while len(out) < MAX_STAGED_LISTED:
            page = self.store.audit_page(after, 500)
            if not page:
                break
            for e in page:
                after = e.seq
                if e.action.startswith("rollout.") or rollout.site_id not in e.detail:
                    continue
                found = _VERSION.findall(e.detail)  # the new version closes each change's line
                version = int(found[-1]) if found else 0
                if version <= rollout.base_version:
                    continue
                if rollout.closed_version and version >= rollout.closed_version:
                    continue
                out.append(pb.StagedChange(version=version, at=e.at, principal=e.principal,
                                           action=e.action, detail=e.detail[:300]))
        return out[:MAX_STAGED_LISTED]

    def _holding(self, site: Site, closed: Rollout) -> list[DoorView]:
        """The doors whose latest manifest says they hold a version of an aborted rollout for
        later (delivered early): a version above the base and below the abort's."""
        return [v for v in self.doors(site) if v.device.revoked_at is None
                and _holds_aborted(closed, v.manifest)]

    # ------------------------------------------------------------ status
    def doors(self, site: Site, only: tuple[str, ...] | None = None) -> list[DoorView]:
        """The site's doors (or those of `only`) with their latest signed manifests."""
        out = []
        reports = self.store.latest_reports(site.site_id)
        for d in self.store.list_devices(site.site_id):
            if only is not None and d.device_id not in only:
                continue
            r = reports.get(d.device_id)
            m = pb.Manifest.FromString(r.manifest) if r is not None else None  # verified when recorded
            out.append(DoorView(d, m, r.reported_at if r is not None else 0))
        return out

    def status(self, site_ref: str) -> pb.RolloutStatus:
        site = self.store.get_site(site_ref)
        rollout = self.store.get_rollout(site.site_id)
        if rollout is None:
            return pb.RolloutStatus(site_id=site.site_id, head_version=site.version)
        return self.status_of(site, rollout)

    def status_of(self, site: Site, rollout: Rollout) -> pb.RolloutStatus:
        now = self._now()
        st = pb.RolloutStatus(
            rollout_id=rollout.rollout_id, site_id=site.site_id, state=rollout.state,
            base_version=rollout.base_version, base_digest=rollout.base_digest, head_version=site.version,
            started_at=rollout.started_at, stage_started_at=rollout.stage_started_at,
            auto_stop=rollout.auto_stop, stop_reason=rollout.stop_reason,
            scheduled_at=rollout.scheduled_at,
            scheduled_action="promote" if rollout.scheduled_action == PROMOTE_EARLY
            else rollout.scheduled_action,
            deliver_early=rollout.scheduled_action == PROMOTE_EARLY,
            closed_at=rollout.closed_at, closed_version=rollout.closed_version)
        views = self.doors(site)
        for v in views:
            if v.device.revoked_at is not None:
                continue
            st.doors.append(self._door(site, rollout, v, now))
        if rollout.stage_started_at:
            stage, base = self.decision_windows(rollout, [v.device for v in views], now)
            st.stage_decisions.CopyFrom(stage)
            st.baseline_decisions.CopyFrom(base)
        st.staged.extend(self.staged(rollout))
        return st

    def _door(self, site: Site, rollout: Rollout, v: DoorView, now: int) -> pb.RolloutDoor:
        m = v.manifest
        target = served(site, rollout, v.device.device_id, honours_effective_at(m)).version \
            if rollout.state in ROLLOUT_OPEN else site.version
        door = pb.RolloutDoor(device_id=v.device.device_id, name=v.device.name,
                              in_stage=v.device.device_id in rollout.stage
                              or rollout.state in ("promoting", "completed"),
                              target_version=target)
        if m is not None and _holds_aborted(rollout, m):
            # Delivered early and not heard from since it applied the abort: at
            # pending_effective_at it applies the dropped changes by its own clock.
            door.holds_aborted, door.last_seen = True, v.reported_at
            door.pending_effective_at = m.pending_effective_at
        if m is None or now - v.reported_at > self.offline_after_s:
            door.state = "offline"
            door.offline_since = v.reported_at
            if m is not None:
                door.reported_version = m.version
            return door
        door.reported_version = m.version
        if m.refused_version > m.version and m.refused_version > rollout.base_version:
            door.state, door.refused_reason = "refused", m.refused_reason[:300]
        elif m.pending_version >= target > m.version and m.pending_effective_at:
            door.state, door.pending_effective_at = "scheduled", m.pending_effective_at
        elif m.version >= target:
            door.state = "applied"
        else:
            door.state = "pending"
        return door

    def decision_windows(self, rollout: Rollout, devices: list[Device],
                         now: int) -> tuple[pb.DecisionTotals, pb.DecisionTotals]:
        """The active stage doors' decision counts since the stage began, and over an equal
        window before it (the hub keeps them per door and hour from signed manifests)."""
        ids = [d.device_id for d in devices if d.device_id in rollout.stage and d.revoked_at is None]
        (since, until), (base_since, base_until) = rollout_rules.windows(rollout.stage_started_at, now)
        return (totals(row for _, row in self.store.decision_rows(ids, since, until)),
                totals(row for _, row in self.store.decision_rows(ids, base_since, base_until)))

    # ------------------------------------------------------------ the scheduler's side
    def figures(self, site: Site, rollout: Rollout) -> rollout_rules.Figures:
        """What the auto-stop rules look at, over the stage doors (active ones)."""
        now = self._now()
        views = [v for v in self.doors(site, rollout.stage) if v.device.revoked_at is None]
        stage, base = self.decision_windows(rollout, [v.device for v in views], now)
        known = {site.version: site.state_digest, rollout.base_version: rollout.base_digest}
        mismatch = sum(1 for v in views if v.manifest is not None and v.manifest.version in known
                       and v.manifest.state_digest != known[v.manifest.version])
        refused = sum(1 for v in views if v.manifest is not None
                      and v.manifest.refused_version > rollout.base_version)
        offline = sum(1 for v in views if (v.manifest is None and v.device.registered_at is not None
                      and now - max(v.device.registered_at, rollout.stage_started_at) > self.offline_after_s)
                      or (v.manifest is not None and now - v.reported_at > self.offline_after_s))
        return rollout_rules.Figures(stage, base, mismatch, refused, offline)

    def tick(self) -> list[str]:
        """One pass of the scheduler over every open rollout: fire due schedules, stop on a
        tripped rule, close a promotion every door has applied. Returns the sites whose
        targets moved. A pass that loses a race to another replica changes nothing."""
        moved = []
        for rollout in self.store.open_rollouts():
            try:
                if self._tick_one(rollout):
                    moved.append(rollout.site_id)
            except (LostRace, Conflict, NotFound) as exc:
                log.info("rollout %s: another hub acted first (%s)", rollout.rollout_id, exc)
        return moved

    def _tick_one(self, rollout: Rollout) -> bool:
        now = self._now()
        site = self.store.get_site(rollout.site_id)
        if rollout.scheduled_at and now >= rollout.scheduled_at:
            return self._fire(rollout, now)
        if rollout.state == "staged" and rollout.auto_stop:
            reason = rollout_rules.tripped(rollout_rules.parse_rules(rollout.auto_stop),
                                           self.figures(site, rollout))
            if reason is not None:
                log.warning("rollout %s of site %s stops by itself: %s", rollout.rollout_id, site.name,
                            reason)
                self.changes.apply(SYSTEM, lambda: self._abort(
                    self.store.get_site(site.site_id), rollout, "auto-stop " + reason, "rollout.auto_stop"))
                return True
        if rollout.state == "promoting":
            # Doors away longer than the offline threshold do not hold the promotion open: they
            # get the head at their next contact (the completion's audit entry names them).
            behind = [v.device.name for v in self.doors(site) if v.device.revoked_at is None
                      and v.device.registered_at is not None
                      and (v.manifest is None or v.manifest.version < site.version)
                      and now - max(v.reported_at, rollout.stage_started_at or rollout.started_at)
                      <= self.offline_after_s]
            if not behind:
                self.changes.apply(SYSTEM, lambda: self._complete(
                    self.store.get_site(site.site_id), rollout, now, "rollout.complete"))
                return True
        return False

    def _fire(self, rollout: Rollout, now: int) -> bool:
        """A schedule's time came: begin the stage, or promote."""
        def fire() -> Done:
            site = self.store.get_site(rollout.site_id)
            current = rollout
            if current.state == "scheduled":  # a scheduled start
                staged = self.store.stage_rollout(current.rollout_id, current.rev, now)
                if staged is None:
                    raise LostRace(f"rollout {current.rollout_id} changed meanwhile")
                return Done(None, "rollout.start_fired",
                            f"{staged.rollout_id} site={site.site_id} base=v{staged.base_version} "
                            f"scheduled_at={rollout.scheduled_at} by {rollout.principal}", site.site_id)
            doors = [d for d in self.store.list_devices(site.site_id)
                     if d.device_id in rollout.scheduled_doors and d.revoked_at is None]
            updated = self._promoted(site, current, doors, rollout.scheduled_percent, now)
            self._update(current, updated)
            return Done(None, "rollout.promote_fired",
                        self._promote_detail(site, current, updated, doors, rollout.scheduled_percent)
                        + f" scheduled_at={rollout.scheduled_at}", site.site_id)

        self.changes.apply(SYSTEM, fire)
        return True


def _holds_aborted(rollout: Rollout, m: pb.Manifest | None) -> bool:
    return (rollout.state == "aborted" and m is not None and m.pending_effective_at > 0
            and rollout.base_version < m.pending_version < rollout.closed_version)


def _stage_words(doors: list[Device], percent: int) -> str:
    if percent:
        return f"percent={percent}"
    if doors:
        return "doors=" + ",".join(d.name for d in doors)
    return "every door"
