"""`doorkeeper rollout`: a site's changes reach canary doors first, then every door.

start, status, promote and abort are signed admin calls (StartRollout, GetRollout,
PromoteRollout, AbortRollout); see protos/PROTOCOL.md "Staged rollouts".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from doorkeeper.agent.sync.hubclient import ADMIN
from doorkeeper.hub.decisions import FACE_REFUSALS
from doorkeeper.tools.cli import human
from doorkeeper.tools.cli.common import (
    change_call,
    console,
    emit_json,
    friendly,
    hub_options,
    operator_client,
)
from doorkeeper.v1 import doorkeeper_pb2 as pb

_DOORS = click.option("--doors", default="", help="Door names or ids, comma separated.")
_AT = click.option("--at", type=human.When(future=True), default=None,
                   help="Do it at this time (ISO 8601, e.g. 2026-12-31T06:00+08:00, or unix seconds); "
                        "the hub keeps the schedule across restarts.")


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@click.group()
def rollout() -> None:
    """Staged whitelist rollouts: canary doors first, promote or abort, automatic stop."""


@rollout.command("start")
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@click.option("--canary", required=True, help="The first stage: door names or ids, comma separated.")
@click.option("--auto-stop", default="",
              help="Rules, comma separated: refusal_rate>0.2, min_attempts=20, digest_mismatch>0, "
                   "refused_bundle>0, offline>N. A tripped rule aborts the rollout.")
@_AT
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def rollout_start(site_ref: str, canary: str, auto_stop: str, at: int | None, as_json: bool,
                  hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Open a rollout: from now (or --at) the site's changes reach the canary doors only."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        st = change_call(client, ADMIN + "StartRollout", pb.StartRolloutRequest(
            site=site_ref, canary=_names(canary), auto_stop=auto_stop, at=at or 0))
    _show(st, as_json)


@rollout.command("status")
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def rollout_status(site_ref: str, as_json: bool, hub_address: str, operator_key: Path,
                   tls_ca: Path | None) -> None:
    """The site's open (or latest) rollout: per door target, reported version and state, the
    stage doors' decision counts, the staged changes."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        st = client.call(ADMIN + "GetRollout", pb.GetRolloutRequest(site=site_ref))
    _show(st, as_json)


@rollout.command("promote")
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@_DOORS
@click.option("--percent", type=click.IntRange(1, 100), default=None,
              help="A next stage: this share of the site's doors (1-100).")
@_AT
@click.option("--deliver-early", is_flag=True,
              help="With --at: send the promotion now to the held doors that honour effective "
                   "times, to apply at --at by their own clock even if cut off from the hub. A "
                   "door holding it that misses a later abort applies the dropped changes at "
                   "--at and returns to the base at its next contact.")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def rollout_promote(site_ref: str, doors: str, percent: int | None, at: int | None, deliver_early: bool,
                    as_json: bool, hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Send the staged changes to a next stage (--doors, --percent) or to every door."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        st = change_call(client, ADMIN + "PromoteRollout", pb.PromoteRolloutRequest(
            site=site_ref, doors=_names(doors), percent=percent or 0, at=at or 0,
            deliver_early=deliver_early))
    _show(st, as_json)


@rollout.command("abort")
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def rollout_abort(site_ref: str, reason: str, as_json: bool, hub_address: str, operator_key: Path,
                  tls_ca: Path | None) -> None:
    """Drop the staged changes: every door returns to the rollout's base content through a
    new, higher version."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        st = change_call(client, ADMIN + "AbortRollout", pb.AbortRolloutRequest(site=site_ref, reason=reason))
    _show(st, as_json)


def as_dict(st: pb.RolloutStatus) -> dict[str, Any]:
    totals = [f.name for f in pb.DecisionTotals.DESCRIPTOR.fields]
    return {
        "rollout_id": st.rollout_id, "site_id": st.site_id, "state": st.state or "none",
        "base_version": st.base_version, "base_digest": st.base_digest.hex(),
        "head_version": st.head_version, "started_at": st.started_at,
        "stage_started_at": st.stage_started_at, "auto_stop": st.auto_stop,
        "stop_reason": st.stop_reason, "scheduled_at": st.scheduled_at,
        "scheduled_action": st.scheduled_action, "closed_at": st.closed_at,
        "closed_version": st.closed_version, "deliver_early": st.deliver_early,
        "doors": [{"device_id": d.device_id, "name": d.name, "in_stage": d.in_stage,
                   "target_version": d.target_version, "reported_version": d.reported_version,
                   "state": d.state, "refused_reason": d.refused_reason,
                   "offline_since": d.offline_since, "pending_effective_at": d.pending_effective_at,
                   "holds_aborted": d.holds_aborted, "last_seen": d.last_seen}
                  for d in st.doors],
        "stage_decisions": {n: getattr(st.stage_decisions, n) for n in totals},
        "baseline_decisions": {n: getattr(st.baseline_decisions, n) for n in totals},
        "staged": [{"version": c.version, "at": c.at, "principal": c.principal, "action": c.action,
                    "detail": c.detail} for c in st.staged],
    }


def _show(st: pb.RolloutStatus, as_json: bool) -> None:
    if as_json:
        emit_json(as_dict(st))
        return
    if not st.rollout_id:
        console.print("no rollout on this site; changes reach every door at once "
                      f"(version {st.head_version})")
        return
    line = f"rollout {st.rollout_id}: {st.state}"
    if st.state != "scheduled":
        line += f", base v{st.base_version} ({st.base_digest.hex()[:12]}), head v{st.head_version}"
    if st.scheduled_at:
        line += (f"; {st.scheduled_action} at {human.local_time(st.scheduled_at)} "
                 f"({human.ago(st.scheduled_at)})")
        if st.deliver_early:
            line += ", delivered early to the doors that honour effective times"
    if st.auto_stop:
        line += f"; auto-stop {st.auto_stop}"
    console.print(line, highlight=False, markup=False)
    if st.stop_reason:
        console.print(f"stopped: {st.stop_reason}", highlight=False, markup=False)
    if st.closed_version:
        console.print(f"restored the base as v{st.closed_version}", highlight=False)
    console.print(human.table(
        ("door", "stage", "target", "reported", "state", "note"),
        ((d.name, human.yes_no(d.in_stage), d.target_version, d.reported_version or "-", d.state,
          _note(st, d)) for d in st.doors)))
    s, b = st.stage_decisions, st.baseline_decisions
    console.print(f"stage doors' face decisions since the stage began: {s.granted_face} granted, "
                  f"{sum(getattr(s, n) for n in FACE_REFUSALS)} refused (before it: "
                  f"{b.granted_face} granted, {sum(getattr(b, n) for n in FACE_REFUSALS)} refused)",
                  highlight=False)
    if st.staged:
        console.print(human.table(("version", "when", "who", "change"),
                                  ((c.version, human.local_time(c.at), c.principal, f"{c.action} {c.detail}")
                                   for c in st.staged),
                                  title="dropped changes" if st.state == "aborted" else "staged changes"))


def _note(st: pb.RolloutStatus, d: pb.RolloutDoor) -> str:
    if d.holds_aborted:
        since = "not seen since abort" if d.last_seen <= st.closed_at else "seen since, still holding it"
        return (f"holds the aborted promotion, effective at {human.local_time(d.pending_effective_at)}, "
                f"{since} (last seen {human.seen(d.last_seen)})")
    if d.refused_reason:
        return d.refused_reason
    if d.state == "offline":
        return f"offline since {human.seen(d.offline_since)}"
    return f"applies {human.local_time(d.pending_effective_at)}" if d.pending_effective_at else ""
