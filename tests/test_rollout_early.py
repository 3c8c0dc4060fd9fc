"""Scheduled promotions delivered early (`rollout promote --at T --deliver-early`, issue 14
item 3), against real agents on loopback: a real hub (gRPC, SQLite file or a fresh PostgreSQL
database), three real agents (`Syncer`: real verification, real held bundles on disk, signed
reports) whose clocks the test moves (`DoorClock`), and the real rollout job.

door0 is the canary; door1 runs this agent (its manifests set `mode`, so it declares it
honours `BundleHeader.effective_at`); in the first test door2 plays an agent from before
effective times (its own signed manifest with `mode` cleared), which the hub must not
deliver early to. The hub's rollout clock is moved to make the schedule fall due
(`Rollouts.clock`); nothing sleeps until a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from doorkeeper.agent.doorloop.policy import Result
from doorkeeper.agent.sync.identity import AgentFiles
from doorkeeper.agent.sync.syncer import Syncer
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.hub.store import Site
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import Agent, HubThread, Operator, register_agent, wait_for
from tests.test_agent_rollout import DoorClock, present
from tests.test_agent_rollout import start as start_door

CARD_CY = "CARDCy"


Door = tuple[Agent, DoorClock]


def open_with_clock(data_dir: Path, clock: DoorClock) -> Agent:
    files = AgentFiles(data_dir)
    whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    return Agent(files, whitelist, Syncer(files, whitelist, clock=clock.hub_clock()))


@pytest.fixture
def doors(op: Operator, tmp_path: Path) -> Iterator[list[Door]]:
    """Site oak with two persons and three doors at its version, each having reported."""
    op.add_site("oak")
    for name in ("Ana", "Ben"):
        op.add_person("oak", name, cards=[f"CARD{name}"])
    out: list[Door] = []
    for i in range(3):
        register_agent(op, "oak", f"door{i}", tmp_path / f"a{i}").close()
        clock = DoorClock()
        out.append((open_with_clock(tmp_path / f"a{i}", clock), clock))
    yield out
    for a, _ in out:
        a.close()


def sync_and_report(*doors: Door) -> list[str]:
    outcomes = []
    for a, _ in doors:
        outcomes.append(a.syncer.sync_once().outcome)
        a.syncer.heartbeat()
    return outcomes


def old_agent(a: Agent) -> None:
    """Make `a` report like an agent from before effective times: no `mode` in its (still
    signed, still its own) manifests."""
    real = a.syncer.manifest

    def manifest(beacon_nonce: bytes = b"") -> pb.Manifest:
        m = real(beacon_nonce)
        m.ClearField("mode")
        return m

    a.syncer.manifest = manifest  # type: ignore[method-assign]


def rollout(op: Operator) -> pb.RolloutStatus:
    return op.call("GetRollout", pb.GetRolloutRequest(site="oak"))  # type: ignore[return-value]


def promote_early(op: Operator, at: int, **kw: object) -> pb.RolloutStatus:
    return op.call("PromoteRollout", pb.PromoteRolloutRequest(  # type: ignore[return-value]
        site="oak", at=at, deliver_early=True, **kw))


def staged_with_cy(rhub: HubThread, op: Operator, doors: list[Door]) -> tuple[Site, Site, str]:
    """A rollout with door0 as canary and Cy added in it: (base, head, Cy's person id)."""
    store = rhub.hub.store
    base = store.get_site("oak")
    op.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["door0"]))
    cy = op.add_person("oak", "Cy", cards=[CARD_CY]).person_id
    assert sync_and_report(doors[0]) == ["applied"]
    return base, store.get_site("oak"), cy


def held_dir_empty(a: Agent) -> bool:
    return not a.files.held.exists() or not list(a.files.held.iterdir())


def test_early_delivery_is_held_applied_by_the_door_clock_without_hub_and_promoted_after_restart(
        rhub: HubThread, op: Operator, doors: list[Door]) -> None:
    _, (a1, clock1), (a2, _) = doors
    old_agent(a2)
    assert sync_and_report(*doors) == ["applied"] * 3  # every door has reported (and how)
    store = rhub.hub.store
    base, head, cy = staged_with_cy(rhub, op, doors)
    at = int(time.time()) + 3600
    st = promote_early(op, at)
    assert st.state == "staged" and st.scheduled_at == at and st.scheduled_action == "promote"
    assert st.deliver_early

    # door1 honours effective times: it gets the head now, held for `at`; door2 does not.
    assert a1.syncer.sync_once().outcome == "held"
    assert a1.whitelist.version == base.version and a1.whitelist.state_digest == base.state_digest
    assert a1.whitelist.person(cy) is None and a1.syncer.holding_version == head.version
    assert a2.syncer.sync_once().outcome == "up_to_date" and a2.whitelist.version == base.version
    for a, _ in doors:
        a.syncer.heartbeat()
    assert not a1.syncer.behind and not a1.syncer.stale()
    m = a1.syncer.manifest()
    assert (m.version, m.pending_version, m.pending_effective_at) == (base.version, head.version, at)
    by_name = {d.name: d for d in rollout(op).doors}
    assert (by_name["door1"].state, by_name["door1"].target_version) == ("scheduled", head.version)
    assert by_name["door1"].pending_effective_at == at
    assert (by_name["door2"].state, by_name["door2"].target_version) == ("applied", base.version)
    fleet = {d.name: d for d in rhub.hub.devices.status("oak")}
    assert fleet["door1"].target_version == head.version and fleet["door2"].target_version == base.version

    # A change made while the promotion is pending joins it: the newer head replaces the held one.
    dee = op.add_person("oak", "Dee", cards=["CARDDee"]).person_id
    head = store.get_site("oak")
    assert a1.syncer.sync_once().outcome == "held" and a1.syncer.holding_version == head.version
    assert [p.name for p in a1.files.held.iterdir() if p.suffix == ".header"] == \
        [f"{head.version:020d}.header"]
    assert a2.syncer.sync_once().outcome == "up_to_date" and a2.whitelist.person(dee) is None
    a1.syncer.heartbeat()

    # The hub goes away; door1's clock passes `at`: it applies the promotion on its own.
    port, data_dir = rhub.port, rhub.data_dir
    url = getattr(store, "url", None)
    rhub.stop()
    clock1.offset = at - time.time() - 30
    assert not a1.syncer.apply_due() and a1.whitelist.version == base.version
    clock1.offset = at - time.time() + 30
    assert a1.syncer.apply_due()
    assert a1.whitelist.version == head.version and a1.whitelist.state_digest == head.state_digest
    assert a1.whitelist.person(cy) is not None and a1.syncer.pending is None and held_dir_empty(a1)
    assert a2.whitelist.version == base.version  # the old agent still waits for the hub

    # The hub is back and its time has come: its job promotes (the schedule is in the store).
    again = HubThread(data_dir, port=port, store_url=url, rollout_check_s=0.3).start()
    try:
        again.hub.rollouts.clock = lambda: time.time() + (at - time.time()) + 30
        assert wait_for(lambda: again.hub.store.get_rollout(head.site_id).state in ("promoting", "completed"))
        assert a2.syncer.sync_once().outcome == "applied"
        assert a2.whitelist.version == head.version and a2.whitelist.state_digest == head.state_digest
        assert a1.syncer.sync_once().outcome == "up_to_date"
        sync_and_report(*doors)
        assert wait_for(lambda: again.hub.store.get_rollout(head.site_id).state == "completed")
        fired = next(e for e in again.hub.store.list_audit(20) if e.action == "rollout.promote_fired")
        assert f"scheduled_at={at}" in fired.detail
        scheduled = next(e for e in again.hub.store.list_audit(30) if e.action == "rollout.schedule")
        assert "deliver_early" in scheduled.detail
    finally:
        again.stop()


def test_abort_before_the_time_reaches_online_doors_and_lists_the_offline_holder(
        rhub: HubThread, op: Operator, doors: list[Door], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (a0, _), (a1, _), (a2, clock2) = doors
    assert sync_and_report(*doors) == ["applied"] * 3
    store = rhub.hub.store
    base, head, cy = staged_with_cy(rhub, op, doors)
    at = int(time.time()) + 3600
    promote_early(op, at)
    assert sync_and_report(doors[1], doors[2]) == ["held", "held"]
    assert a2.syncer.manifest().pending_version == head.version

    # door2 is cut off from here on; the operator aborts before the time.
    st = op.call("AbortRollout", pb.AbortRolloutRequest(site="oak", reason="Cy is not a resident"))
    assert st.state == "aborted" and st.closed_version == head.version + 1  # type: ignore[attr-defined]
    after = store.get_site("oak")
    assert after.state_digest == base.state_digest
    entry = next(e for e in store.list_audit(20) if e.action == "rollout.abort")
    assert "held_early=2 (door1,door2 hold the dropped promotion for " + str(at) in entry.detail

    # The online door hears of it: the abort version (higher) replaces what it held.
    assert a1.syncer.sync_once().outcome == "applied"
    assert a1.whitelist.version == after.version and a1.whitelist.state_digest == base.state_digest
    assert a1.syncer.pending is None and held_dir_empty(a1) and a1.whitelist.person(cy) is None
    a1.syncer.heartbeat()
    assert a1.syncer.manifest().pending_version == 0
    assert sync_and_report(doors[0]) == ["applied"]
    assert a0.whitelist.state_digest == base.state_digest

    st = rollout(op)
    holders = [d for d in st.doors if d.holds_aborted]
    assert [(d.name, d.pending_effective_at) for d in holders] == [("door2", at)]
    assert holders[0].last_seen <= st.closed_at
    monkeypatch.setattr("doorkeeper.tools.cli.common.console.width", 250)
    env = {"DOORKEEPER_HUB": rhub.address, "DOORKEEPER_OPERATOR_KEY": str(rhub.data_dir / "operator.key")}
    from doorkeeper.tools.cli import cli

    r = CliRunner().invoke(cli, ["rollout", "status", "--site", "oak"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if "door2" in x)  # the console writes to stderr
    assert "holds the aborted promotion" in line and "not seen since abort" in line, r.output
    assert "holds the aborted" not in next(x for x in r.output.splitlines() if "door1" in x)
    r = CliRunner().invoke(cli, ["rollout", "status", "--site", "oak", "--json"], env=env)
    doors_json = {d["name"]: d for d in json.loads(r.stdout)["doors"]}
    assert doors_json["door2"]["holds_aborted"] and not doors_json["door1"]["holds_aborted"]

    # The documented trade-off: door2, still cut off, applies the dropped change at the time...
    clock2.offset = at - time.time() + 30
    assert a2.syncer.apply_due() and a2.whitelist.version == head.version
    assert a2.whitelist.person(cy) is not None
    # ...and returns to the base content at its next contact.
    assert a2.syncer.sync_once().outcome == "applied"
    assert a2.whitelist.version == after.version and a2.whitelist.state_digest == base.state_digest
    a2.syncer.heartbeat()
    assert not any(d.holds_aborted for d in rollout(op).doors)


def test_deliver_early_refusals_change_nothing(rhub: HubThread, op: Operator, doors: list[Door]) -> None:
    sync_and_report(*doors)
    op.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["door0"]))
    op.add_person("oak", "Cy", cards=[CARD_CY])
    before = rollout(op)
    version = rhub.hub.store.get_site("oak").version
    audit = len(rhub.hub.store.list_audit(100))
    for kw in ({"at": 0}, {"at": int(time.time()) - 10},
               {"at": int(time.time()) + 3600, "percent": 50}):
        with pytest.raises(grpc.RpcError) as info:
            op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", deliver_early=True, **kw))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    after = rollout(op)
    assert after.SerializeToString(deterministic=True) == before.SerializeToString(deterministic=True)
    assert not after.deliver_early and after.scheduled_at == 0
    assert rhub.hub.store.get_site("oak").version == version
    assert len(rhub.hub.store.list_audit(100)) == audit
    # Nothing is delivered early either: held doors stay at the base, as before.
    assert [a.syncer.sync_once().outcome for a, _ in doors[1:]] == ["up_to_date", "up_to_date"]
    assert all(a.syncer.pending is None for a, _ in doors)

    # Once delivered early, its time cannot move (a door replaces a held bundle only by a
    # newer version): a new --at is refused; abort or promote now.
    at = int(time.time()) + 3600
    promote_early(op, at)
    assert sync_and_report(doors[1]) == ["held"]
    before = rollout(op)
    for kw in ({"at": at + 600}, {"at": at - 600, "deliver_early": True}):
        with pytest.raises(grpc.RpcError) as info:
            op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", **kw))  # type: ignore[arg-type]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "abort the rollout" in (info.value.details() or "")  # type: ignore[attr-defined]
    after = rollout(op)
    assert after.SerializeToString(deterministic=True) == before.SerializeToString(deterministic=True)


def test_a_running_door_gets_the_early_promotion_through_its_watch_stream(
        hub: HubThread, operator: Operator, tmp_path: Path) -> None:
    """The agent's own service (watch stream, sync loop; no test-driven sync) holds the
    promotion once it is scheduled, and keeps deciding on the base until its time."""
    operator.add_site("oak")
    operator.add_person("oak", "Ana", cards=["CARDAna"])
    for name in ("canary", "front"):
        a = register_agent(operator, "oak", name, tmp_path / name)
        assert a.syncer.sync_once().outcome == "applied"
        a.syncer.heartbeat()  # the hub learns this door honours effective times
        a.close()
    base = hub.hub.store.get_site("oak")
    runtime = start_door(tmp_path / "front")
    try:
        operator.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["canary"]))
        operator.add_person("oak", "Cy", cards=[CARD_CY])
        head = hub.hub.store.get_site("oak")
        syncer = runtime.service.syncer
        at = int(time.time()) + 3600
        operator.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", at=at, deliver_early=True))
        assert wait_for(lambda: syncer.holding_version == head.version)
        assert syncer.whitelist.version == base.version and syncer.manifest().pending_effective_at == at
        assert present(runtime, CARD_CY) is Result.DENIED  # not before its time
    finally:
        runtime.loop.close()
        runtime.service.close()


def test_the_console_rollout_panel_names_early_delivery_and_doors_holding_an_aborted_promotion() -> None:
    """The console's template, rendered with its own filters, from a RolloutStatus like the
    hub's after an abort (door2 held the promotion and was not seen since)."""
    from starlette.templating import Jinja2Templates

    from doorkeeper.tools.console import app

    templates = Jinja2Templates(directory=app.HERE / "templates")
    templates.env.filters.update(when=app.when, ago=app.ago)
    panel = templates.env.get_template("_rollout.html")
    at, closed = 1_900_000_000, 1_899_990_000
    aborted = pb.RolloutStatus(rollout_id="r1", state="aborted", closed_at=closed, closed_version=5, doors=[
        pb.RolloutDoor(name="door1", state="applied", reported_version=5, target_version=5),
        pb.RolloutDoor(name="door2", state="pending", reported_version=3, target_version=5,
                       holds_aborted=True, pending_effective_at=at, last_seen=closed - 60)])
    html = panel.render(rollout=aborted)
    row = next(r for r in html.split("<tr>") if "door2" in r)
    assert "holds the aborted promotion, effective at" in row and "not seen since abort" in row
    assert "holds the aborted" not in next(r for r in html.split("<tr>") if "door1" in r)
    scheduled = pb.RolloutStatus(rollout_id="r2", state="staged", scheduled_at=at, scheduled_action="promote",
                                 deliver_early=True)
    assert "delivered early to the doors that honour effective times" in panel.render(rollout=scheduled)
    assert "delivered early" not in panel.render(rollout=pb.RolloutStatus(
        rollout_id="r3", state="staged", scheduled_at=at, scheduled_action="promote"))
