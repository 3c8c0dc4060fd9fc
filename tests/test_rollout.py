"""Staged rollouts against real agents on loopback: a real hub (gRPC, SQLite file or a fresh
PostgreSQL database), three or four real agents (`Syncer`: real bundle verification, real
SQLite whitelists, signed reports with their own device keys), the real rollout job.

Where a door must misbehave, one test corrupts what reaches the real canary (its transport
wrapped) and the real agent refuses the bundle and reports it. The others put the figures
into the door's manifest directly: refusal counts and a refused bundle through the agent's
`status_extra` hook, a wrong digest by wrapping its `manifest` method. The manifest is still
the agent's own, signed by the real `Syncer` with the door's key; the hub cannot tell these
from a misbehaving door, which is what the rules are for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
from doorkeeper.hub.store import Operator as StoredOperator
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.harness import Agent, HubThread, Operator, open_agent, random_template, register_agent, wait_for


@pytest.fixture
def doors(op: Operator, tmp_path: Path) -> Iterator[list[Agent]]:
    """Site oak with two persons and three doors at its version."""
    rng = np.random.default_rng(14)
    op.add_site("oak")
    for name in ("Ana", "Ben"):
        op.add_person("oak", name, templates=[random_template(rng)], cards=[f"CARD{name}"])
    agents = [register_agent(op, "oak", f"door{i}", tmp_path / f"a{i}") for i in range(3)]
    for a in agents:
        assert a.syncer.sync_once().outcome == "applied"
    yield agents
    for a in agents:
        a.close()


@pytest.fixture
def quick_offline(tmp_path: Path) -> Iterator[tuple[HubThread, Operator]]:
    """A SQLite hub whose doors count as offline after 2 s without a report, with site oak."""
    h = HubThread(tmp_path / "hub", rollout_check_s=0.3, rollout_offline_after_s=2).start()
    op = Operator(h.address, h.data_dir / "operator.key")
    op.add_site("oak")
    yield h, op
    h.stop()


def rollout(op: Operator) -> pb.RolloutStatus:
    return op.call("GetRollout", pb.GetRolloutRequest(site="oak"))  # type: ignore[return-value]


def start(op: Operator, canary: list[str], **kw: object) -> pb.RolloutStatus:
    return op.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=canary, **kw))  # type: ignore[return-value]


def refused(call, *args: object) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code()  # type: ignore[no-any-return]


def test_canary_stage_reaches_canary_only_others_stay_fresh_then_promote_reaches_all(
        rhub: HubThread, op: Operator, doors: list[Agent], tmp_path: Path) -> None:
    store = rhub.hub.store
    base = store.get_site("oak")
    st = start(op, ["door0"], auto_stop="digest_mismatch>0")
    assert st.state == "staged" and st.base_version == base.version and st.base_digest == base.state_digest
    rng = np.random.default_rng(15)
    added = op.add_person("oak", "Cy", templates=[random_template(rng)])
    head = store.get_site("oak")
    assert head.version == base.version + 1

    results = [a.syncer.sync_once() for a in doors]
    assert results[0].outcome == "applied" and doors[0].whitelist.version == head.version
    assert doors[0].whitelist.person(added.person_id) is not None
    for a, r in zip(doors[1:], results[1:], strict=True):
        # Held at the base: up to date, fresh (a signed beacon echoing its nonce), not behind.
        assert r.outcome == "up_to_date"
        assert a.whitelist.version == base.version and a.whitelist.state_digest == base.state_digest
        assert a.whitelist.person(added.person_id) is None
        assert not a.syncer.stale() and not a.syncer.behind and a.syncer.fresh_age_s() is not None
    fleet = {d.name: d for d in rhub.hub.devices.status("oak")}
    assert fleet["door0"].target_version == head.version and fleet["door0"].in_sync
    assert fleet["door1"].target_version == base.version and fleet["door1"].in_sync
    st = rollout(op)
    assert [c.action for c in st.staged] == ["person.add"] and st.staged[0].version == head.version
    assert {d.name: d.state for d in st.doors} == {"door0": "applied", "door1": "applied", "door2": "applied"}

    # A door added during the rollout starts from the base (a snapshot built from its records).
    late = register_agent(op, "oak", "door3", tmp_path / "a3")
    try:
        assert late.syncer.sync_once().outcome == "applied"
        assert late.whitelist.version == base.version and late.whitelist.state_digest == base.state_digest
        assert late.whitelist.compute_digest() == base.state_digest

        # Promote to every door: all reach the head; the rollout closes once all reported it.
        st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
        assert st.state == "promoting"  # type: ignore[attr-defined]
        outcomes = [a.syncer.sync_once().outcome for a in [*doors, late]]
        assert outcomes == ["up_to_date", "applied", "applied", "applied"]  # the canary had it
        for a in [*doors, late]:
            assert a.whitelist.version == head.version and a.whitelist.state_digest == head.state_digest
        assert wait_for(lambda: rollout(op).state == "completed")
        assert all(d.target_version == head.version for d in rhub.hub.devices.status("oak"))
    finally:
        late.close()
    actions = [e.action for e in store.list_audit(50)]
    assert "rollout.start" in actions and "rollout.promote" in actions and "rollout.complete" in actions


def test_next_stage_by_doors_and_percent(rhub: HubThread, op: Operator, doors: list[Agent]) -> None:
    base = rhub.hub.store.get_site("oak")
    start(op, ["door0"])
    op.add_person("oak", "Cy", cards=["CARDCy"])
    st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", doors=["door1"]))
    assert st.state == "staged"  # type: ignore[attr-defined]
    assert [a.syncer.sync_once().outcome for a in doors] == ["applied", "applied", "up_to_date"]
    assert doors[2].whitelist.version == base.version
    st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", percent=100))
    assert all(d.in_stage for d in st.doors)  # type: ignore[attr-defined]
    assert doors[2].syncer.sync_once().outcome == "applied"


def test_abort_returns_canary_to_base_digest_at_a_higher_version(
        rhub: HubThread, op: Operator, doors: list[Agent]) -> None:
    store = rhub.hub.store
    base = store.get_site("oak")
    ben = next(p for p in store.list_persons(base.site_id)
               if rhub.hub.whitelist.person_name(p.name_sealed) == "Ben")
    start(op, ["door0"])
    rng = np.random.default_rng(16)
    cy = op.add_person("oak", "Cy", templates=[random_template(rng)], cards=["CARDBen2"])
    op.remove_person(ben.person_id)
    # A card moves: Cy takes Ben's card during the rollout; the abort gives it back to Ben.
    op.call("UpdatePerson", pb.UpdatePersonRequest(person_id=cy.person_id, cards=["CARDBen"],
                                                    set_cards=True))
    assert doors[0].syncer.sync_once().outcome == "applied"
    assert doors[0].whitelist.person(ben.person_id) is None
    head = store.get_site("oak")

    st = op.call("AbortRollout", pb.AbortRolloutRequest(site="oak", reason="Ben was removed by mistake"))
    assert st.state == "aborted" and st.closed_version == head.version + 1  # type: ignore[attr-defined]
    after = store.get_site("oak")
    assert after.version == head.version + 1 and after.state_digest == base.state_digest
    for a in doors:
        assert a.syncer.sync_once().outcome == "applied"
        assert a.whitelist.version == after.version and a.whitelist.state_digest == base.state_digest
        assert a.whitelist.person(ben.person_id) is not None and a.whitelist.person(cy.person_id) is None
    abort = next(e for e in store.list_audit(20) if e.action == "rollout.abort")
    assert "dropped=3" in abort.detail and "person.add" in abort.detail and "person.remove" in abort.detail
    assert "Ben was removed by mistake" in abort.detail
    # Closed: changes publish to every door at once again.
    op.add_person("oak", "Dee", cards=["CARDDee"])
    assert [a.syncer.sync_once().outcome for a in doors] == ["applied"] * 3


def test_refused_bundle_rule_aborts_by_itself(rhub: HubThread, op: Operator, doors: list[Agent]) -> None:
    """The canary's signed manifest says it refused a bundle of the rollout (injected into
    the real agent's manifest, see the module docstring)."""
    store = rhub.hub.store
    base = store.get_site("oak")
    start(op, ["door0"], auto_stop="refused_bundle>0")
    op.add_person("oak", "Cy", cards=["CARDCy"])
    head = store.get_site("oak")
    time.sleep(1.0)  # several job passes see nothing to stop: no rule trips on a healthy stage
    assert rollout(op).state == "staged"
    doors[0].syncer.status_extra = lambda: {"refused_version": head.version, "refused_reason": "BadSignature"}
    assert doors[0].syncer.heartbeat() is False  # still at the base: not in sync with its target
    assert wait_for(lambda: rollout(op).state == "aborted")
    st = rollout(op)
    assert st.stop_reason.startswith("auto-stop refused_bundle>0: 1 stage door")
    assert st.closed_version == head.version + 1
    assert store.get_site("oak").state_digest == base.state_digest
    entry = next(e for e in store.list_audit(20) if e.action == "rollout.auto_stop")
    assert entry.principal == "hub:rollout-scheduler" and "refused_bundle>0" in entry.detail


def test_refusal_rate_rule_aborts_on_canary_refusals(rhub: HubThread, op: Operator,
                                                     doors: list[Agent]) -> None:
    """Hourly decision counts in the canary's own signed manifest (injected, see the module
    docstring): 2% refused the hour before the stage, 60% since."""
    start(op, ["door0"], auto_stop="refusal_rate>0.2,min_attempts=30")
    st = rollout(op)
    hour = st.stage_started_at - st.stage_started_at % 3600
    before = pb.DecisionHour(hour=hour - 3600, granted_face=98, refused_unknown_face=2)
    few = pb.DecisionHour(hour=hour, granted_face=4, refused_unknown_face=6)  # 10 attempts < 30
    doors[0].syncer.status_extra = lambda: {"decisions": [before, few]}
    doors[0].syncer.heartbeat()
    time.sleep(1.0)  # job passes: too few attempts to judge
    assert rollout(op).state == "staged"
    assert rollout(op).stage_decisions.refused_unknown_face == 6
    many = pb.DecisionHour(hour=hour, granted_face=16, refused_unknown_face=24)
    doors[0].syncer.status_extra = lambda: {"decisions": [before, many]}
    doors[0].syncer.heartbeat()
    assert wait_for(lambda: rollout(op).state == "aborted")
    assert "refusal_rate>0.2" in rollout(op).stop_reason and "0.600 of 40" in rollout(op).stop_reason


def test_digest_mismatch_rule_aborts(rhub: HubThread, op: Operator, doors: list[Agent]) -> None:
    """The canary reports the head version with a digest the hub never made (its own signed
    manifest with the digest field replaced, see the module docstring)."""
    start(op, ["door0"], auto_stop="digest_mismatch>0,offline>2")
    op.add_person("oak", "Cy", cards=["CARDCy"])
    assert doors[0].syncer.sync_once().outcome == "applied"
    real = doors[0].syncer.manifest

    def corrupt(beacon_nonce: bytes = b"") -> pb.Manifest:
        m = real(beacon_nonce)
        m.state_digest = bytes(32)
        return m

    doors[0].syncer.manifest = corrupt  # type: ignore[method-assign]
    doors[0].syncer.heartbeat()
    assert wait_for(lambda: rollout(op).state == "aborted")
    assert rollout(op).stop_reason.startswith("auto-stop digest_mismatch>0: 1 stage door")


def test_second_start_is_refused_and_state_unchanged(rhub: HubThread, op: Operator,
                                                     doors: list[Agent]) -> None:
    first = start(op, ["door0"], auto_stop="offline>1")
    version = rhub.hub.store.get_site("oak").version
    assert refused(start, op, ["door1"]) == grpc.StatusCode.ALREADY_EXISTS
    now = rollout(op)
    assert now.rollout_id == first.rollout_id and now.auto_stop == "offline>1"
    assert [d.in_stage for d in now.doors] == [True, False, False]
    assert rhub.hub.store.get_site("oak").version == version


@pytest.mark.parametrize("rules", [
    "refusal_rate>2", "refusal_rate<0.2", "refusal_rate>0.2;DROP TABLE rollouts", "offline>-1",
    "digest_mismatch>1e9", "unknown_rule>1", "offline>1,offline>2", "min_attempts=5",
    "refusal_rate>nan", "refused_bundle>0,", "refusal_rate>0.2,min_attempts>5", "x" * 100,
])
def test_hostile_rules_are_refused_and_nothing_starts(rhub: HubThread, op: Operator, doors: list[Agent],
                                                     rules: str) -> None:
    version = rhub.hub.store.get_site("oak").version
    with pytest.raises(grpc.RpcError) as info:
        op.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["door0"], auto_stop=rules))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "auto-stop" in (info.value.details() or "")  # type: ignore[attr-defined]
    assert rollout(op).rollout_id == "" and rhub.hub.store.open_rollouts() == []
    assert rhub.hub.store.get_site("oak").version == version


def test_refusals_of_bad_targets_and_dates(rhub: HubThread, op: Operator, doors: list[Agent]) -> None:
    past = int(time.time()) - 10
    assert refused(start, op, ["nope"]) == grpc.StatusCode.NOT_FOUND
    assert refused(start, op, []) == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(lambda: start(op, ["door0"], at=past)) == grpc.StatusCode.INVALID_ARGUMENT
    assert rollout(op).rollout_id == ""
    assert refused(op.call, "PromoteRollout",
                   pb.PromoteRolloutRequest(site="oak")) == grpc.StatusCode.NOT_FOUND
    start(op, ["door0"])
    before = rollout(op)
    assert refused(op.call, "PromoteRollout",
                   pb.PromoteRolloutRequest(site="oak", at=past)) == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(op.call, "PromoteRollout",
                   pb.PromoteRolloutRequest(site="oak", doors=["door1"], percent=50)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    after = rollout(op)
    assert after.SerializeToString(deterministic=True) == before.SerializeToString(deterministic=True)


def test_an_auditor_may_not_start_promote_or_abort_a_rollout(rhub: HubThread, op: Operator,
                                                            doors: list[Agent]) -> None:
    pair = keys.KeyPair.generate()
    rhub.hub.store.add_operator(StoredOperator(pair.key_id, pair.sign_public, "auditor", "aud", 1))
    version = rhub.hub.store.get_site("oak").version
    with HubClient(rhub.address, pair.key_id, pair.sign_key) as auditor:
        with pytest.raises(grpc.RpcError) as err:
            auditor.call(ADMIN + "StartRollout", pb.StartRolloutRequest(site="oak", canary=["door0"]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert rollout(op).rollout_id == "" and rhub.hub.store.open_rollouts() == []
        start(op, ["door0"])
        op.add_person("oak", "Cy", cards=["CARDCy"])
        before = rollout(op).SerializeToString(deterministic=True)
        head = rhub.hub.store.get_site("oak")
        for method, request in (("PromoteRollout", pb.PromoteRolloutRequest(site="oak")),
                                ("PromoteRollout", pb.PromoteRolloutRequest(site="oak", percent=100)),
                                ("AbortRollout", pb.AbortRolloutRequest(site="oak", reason="no"))):
            with pytest.raises(grpc.RpcError) as err:
                auditor.call(ADMIN + method, request)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert auditor.call(ADMIN + "GetRollout", pb.GetRolloutRequest(site="oak")).state == "staged"
    assert rollout(op).SerializeToString(deterministic=True) == before
    assert rhub.hub.store.get_site("oak") == head and head.version == version + 1


def test_a_door_named_like_another_doors_id_never_stands_in_for_it(rhub: HubThread, op: Operator,
                                                                   doors: list[Agent]) -> None:
    # "zz" sorts after any hex id, so a name-first lookup would find the impostor first.
    real = op.call("AddDevice", pb.AddDeviceRequest(site="oak", name="zz")).device_id
    impostor = op.call("AddDevice", pb.AddDeviceRequest(site="oak", name=real)).device_id
    st = start(op, [real])
    assert [d.device_id for d in st.doors if d.in_stage] == [real]
    st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", doors=[real]))
    assert [d.device_id for d in st.doors if d.in_stage] == [real]  # type: ignore[attr-defined]
    st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", doors=["door0"]))
    assert impostor not in [d.device_id for d in st.doors if d.in_stage]  # type: ignore[attr-defined]


def test_scheduled_promotion_fires_after_a_hub_restart(rhub: HubThread, op: Operator,
                                                      doors: list[Agent]) -> None:
    start(op, ["door0"])
    op.add_person("oak", "Cy", cards=["CARDCy"])
    head = rhub.hub.store.get_site("oak")
    at = int(time.time()) + 3
    st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", at=at))
    assert st.state == "staged" and st.scheduled_at == at and st.scheduled_action == "promote"  # type: ignore[attr-defined]
    assert doors[1].syncer.sync_once().outcome == "up_to_date"
    port, data_dir = rhub.port, rhub.data_dir
    url = getattr(rhub.hub.store, "url", None)  # PostgreSQL: the same database
    rhub.stop()
    while time.time() <= at:  # the hub is down when the schedule falls due
        time.sleep(0.2)
    again = HubThread(data_dir, port=port, store_url=url, rollout_check_s=0.3).start()
    try:
        assert wait_for(lambda: again.hub.store.get_rollout(head.site_id).state in ("promoting", "completed"))
        for a in doors:
            a.syncer.sync_once()
            assert a.whitelist.version == head.version
        fired = next(e for e in again.hub.store.list_audit(20) if e.action == "rollout.promote_fired")
        assert f"scheduled_at={at}" in fired.detail
    finally:
        again.stop()


def test_scheduled_start_takes_its_base_when_it_fires(rhub: HubThread, op: Operator,
                                                     doors: list[Agent]) -> None:
    at = int(time.time()) + 2
    st = start(op, ["door0"], at=at)
    assert st.state == "scheduled" and st.base_version == 0
    op.add_person("oak", "Cy", cards=["CARDCy"])  # before the start: reaches every door
    assert [a.syncer.sync_once().outcome for a in doors] == ["applied"] * 3
    assert wait_for(lambda: rollout(op).state == "staged")
    assert rollout(op).base_version == rhub.hub.store.get_site("oak").version
    op.add_person("oak", "Dee", cards=["CARDDee"])
    assert [a.syncer.sync_once().outcome for a in doors] == ["applied", "up_to_date", "up_to_date"]


def test_cli_rollout_start_status_promote_abort(rhub: HubThread, doors: list[Agent], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`doorkeeper rollout ...` against the real hub: tables, --json, one-line refusals."""
    import json

    from click.testing import CliRunner

    from doorkeeper.tools.cli import cli
    from doorkeeper.tools.cli.common import console

    monkeypatch.setattr(console, "width", 200)
    env = {"DOORKEEPER_HUB": rhub.address, "DOORKEEPER_OPERATOR_KEY": str(rhub.data_dir / "operator.key")}

    def run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["rollout", *args], env=env, catch_exceptions=False)

    r = run("status", "--site", "oak")
    assert r.exit_code == 0 and "no rollout on this site" in r.stderr
    r = run("start", "--site", "oak", "--canary", "door0", "--auto-stop", "offline>5,tpyo>1")
    assert r.exit_code == 2 and "unknown auto-stop rule 'tpyo'" in r.stderr and "Traceback" not in r.output
    assert rhub.hub.store.open_rollouts() == []
    r = run("start", "--site", "oak", "--canary", "door0", "--at", "2001-01-01T00:00+00:00")
    assert r.exit_code == 2 and "in the past" in r.stderr
    r = run("start", "--site", "oak", "--canary", "door0,door1", "--auto-stop", "refusal_rate>0.25")
    assert r.exit_code == 0, r.output
    assert "staged" in r.stderr and "auto-stop refusal_rate>0.25" in r.stderr
    Operator(rhub.address, rhub.data_dir / "operator.key").add_person("oak", "Cy", cards=["CARDCy"])
    r = run("status", "--site", "oak", "--json")
    data = json.loads(r.stdout)
    assert data["state"] == "staged" and [d["in_stage"] for d in data["doors"]] == [True, True, False]
    assert [c["action"] for c in data["staged"]] == ["person.add"]
    r = run("status", "--site", "oak")
    assert "door2" in r.stderr and "staged changes" in r.stderr and "person.add" in r.stderr
    fleet = CliRunner().invoke(cli, ["fleet", "--site", "oak"], env=env, catch_exceptions=False)
    assert fleet.exit_code == 0 and "4 (held at 3: rollout)" in fleet.stderr, fleet.output
    r = run("promote", "--site", "oak", "--doors", "door2", "--percent", "50")
    assert r.exit_code == 2 and "not both" in r.stderr
    r = run("abort", "--site", "oak", "--reason", "cold feet", "--json")
    data = json.loads(r.stdout)
    assert data["state"] == "aborted" and data["closed_version"] == data["head_version"]
    assert data["stop_reason"] == "cold feet"


def test_watch_wakes_only_doors_whose_target_moved(rhub: HubThread, op: Operator, doors: list[Agent],
                                                   tmp_path: Path) -> None:
    """Real agent services (watch stream; polling an hour away): a staged change reaches the
    canary through its stream, the held doors' streams only ever carry the base version and
    start no fetch; `promote --doors` wakes the newly staged door; promote wakes the rest."""
    from doorkeeper.agent.sync.service import SyncOptions, SyncService

    for a in doors:
        a.close()
    base = rhub.hub.store.get_site("oak")
    services = [SyncService(tmp_path / f"a{i}", SyncOptions(poll_interval_s=3600, heartbeat_interval_s=3600,
                                                            upload_interval_s=3600)) for i in range(3)]
    seen: list[list[int]] = [[] for _ in services]
    syncs = [0, 0, 0]
    for i, s in enumerate(services):
        def observe(signed, i=i, real=s.syncer.observe_beacon):  # type: ignore[no-untyped-def]
            beacon, verdict = real(signed)
            if beacon is not None:
                seen[i].append(beacon.version)
            return beacon, verdict

        def counted(i=i, real=s.syncer.sync_once):  # type: ignore[no-untyped-def]
            syncs[i] += 1
            return real()

        s.syncer.observe_beacon = observe  # type: ignore[method-assign]
        s.syncer.sync_once = counted  # type: ignore[method-assign]
        s.start()
    try:
        assert wait_for(lambda: all(len(x) > 0 for x in seen))
        start(op, ["door0"])
        added = op.add_person("oak", "Cy", cards=["CARDCy"])
        assert wait_for(lambda: services[0].whitelist.version == added.version)
        before = list(syncs)
        time.sleep(2.0)  # beacon intervals pass: the held doors hear only the base
        assert syncs[1:] == before[1:]
        assert set(seen[1]) == set(seen[2]) == {base.version}
        assert services[1].whitelist.version == services[2].whitelist.version == base.version
        op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", doors=["door1"]))
        assert wait_for(lambda: services[1].whitelist.version == added.version)
        assert services[2].whitelist.version == base.version and set(seen[2]) == {base.version}
        op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
        assert wait_for(lambda: services[2].whitelist.version == added.version)
        assert wait_for(lambda: rollout(op).state == "completed")
    finally:
        for s in services:
            s.close()


def test_two_replicas_agree_and_only_one_acts(pg_url: str, tmp_path: Path) -> None:
    """Two hubs on one PostgreSQL database, each with its rollout job passing every 0.2 s:
    doors connected to either are served the same targets (the rollout lives in the store),
    and when a rule trips exactly one replica aborts (one audit entry, one new version)."""
    from doorkeeper.agent.sync.identity import init_agent
    from tests.harness import open_agent

    a = HubThread(tmp_path / "hub", store_url=pg_url, rollout_check_s=0.2).start()
    b = HubThread(tmp_path / "hub", store_url=pg_url, rollout_check_s=0.2).start()
    agents: list[Agent] = []
    try:
        op_a, op_b = (Operator(h.address, h.data_dir / "operator.key") for h in (a, b))
        op_a.add_site("oak")
        op_a.add_person("oak", "Ana", cards=["CARDAna"])
        for i, h in enumerate((a, b, b)):
            init_agent(tmp_path / f"a{i}", h.address, op_a.add_device("oak", f"door{i}").token)
            agents.append(open_agent(tmp_path / f"a{i}"))
        for x in agents:
            assert x.syncer.sync_once().outcome == "applied"
        base = a.hub.store.get_site("oak")
        start(op_b, ["door0", "door1"], auto_stop="refused_bundle>0")
        op_a.add_person("oak", "Cy", cards=["CARDCy"])
        assert [x.syncer.sync_once().outcome for x in agents] == ["applied", "applied", "up_to_date"]
        assert agents[2].whitelist.version == base.version and not agents[2].syncer.stale()
        head = a.hub.store.get_site("oak")
        agents[1].syncer.status_extra = lambda: {"refused_version": head.version, "refused_reason": "x"}
        agents[1].syncer.heartbeat()
        assert wait_for(lambda: rollout(op_a).state == "aborted")
        time.sleep(1.0)  # both replicas' jobs pass again: nothing more happens
        audit = a.hub.store.list_audit(50)
        assert [e.action for e in audit].count("rollout.auto_stop") == 1
        assert a.hub.store.get_site("oak").version == head.version + 1
        assert a.hub.store.get_site("oak").state_digest == base.state_digest
        for x in agents:
            x.syncer.sync_once()
            assert x.whitelist.version == head.version + 1 and x.whitelist.state_digest == base.state_digest
    finally:
        for x in agents:
            x.close()
        b.stop()
        a.stop()


def test_a_scheduled_start_aborted_before_its_time_changes_nothing(rhub: HubThread, op: Operator,
                                                                   doors: list[Agent]) -> None:
    version = rhub.hub.store.get_site("oak").version
    st = start(op, ["door0"], at=int(time.time()) + 2)
    assert st.state == "scheduled"
    st = op.call("AbortRollout", pb.AbortRolloutRequest(site="oak"))
    assert st.state == "aborted" and st.closed_version == 0  # type: ignore[attr-defined]
    assert st.stop_reason == "aborted by the operator"  # type: ignore[attr-defined]
    time.sleep(3.0)  # past its time: the rollout job passes and fires nothing
    assert rollout(op).state == "aborted" and rhub.hub.store.get_site("oak").version == version
    assert rhub.hub.store.open_rollouts() == []
    op.add_person("oak", "Cy", cards=["CARDCy"])
    assert [a.syncer.sync_once().outcome for a in doors] == ["applied"] * 3


def test_a_promotion_through_one_replica_wakes_a_door_watching_another(pg_url: str, tmp_path: Path) -> None:
    """The door watches hub A (polling an hour away; A's beacons, store re-reads and
    reconciles every 600 s); the operator promotes through hub B:
    only LISTEN/NOTIFY (the rollout row's update notifies) can tell A in time, and A's
    stream then sends the door the head."""
    from doorkeeper.agent.sync.identity import init_agent
    from doorkeeper.agent.sync.service import SyncOptions, SyncService

    a = HubThread(tmp_path / "hub", store_url=pg_url, beacon_interval_s=600, reconcile_s=600).start()
    b = HubThread(tmp_path / "hub", store_url=pg_url, beacon_interval_s=600, reconcile_s=600).start()
    service = None
    try:
        op_a, op_b = (Operator(h.address, h.data_dir / "operator.key") for h in (a, b))
        op_a.add_site("oak")
        op_a.add_device("oak", "door0")
        init_agent(tmp_path / "a1", a.address, op_a.add_device("oak", "door1").token)
        service = SyncService(tmp_path / "a1", SyncOptions(poll_interval_s=3600, heartbeat_interval_s=3600,
                                                           upload_interval_s=3600))
        service.start()
        assert wait_for(lambda: service.whitelist.version == 1)  # type: ignore[union-attr]
        start(op_b, ["door0"])
        added = op_b.add_person("oak", "Cy", cards=["CARDCy"])
        time.sleep(1.5)  # the change woke A's stream through NOTIFY: door1 is held, nothing moves
        assert service.whitelist.version == 1
        op_b.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", doors=["door1"]))
        assert wait_for(lambda: service.whitelist.version == added.version)  # type: ignore[union-attr]
    finally:
        if service is not None:
            service.close()
        b.stop()
        a.stop()


def test_a_rollout_beginning_mid_fetch_never_hands_a_held_door_a_staged_change(
        rhub: HubThread, op: Operator, doors: list[Agent]) -> None:
    """door1 fetches after a change (no rollout yet); while the hub builds its bundle a
    rollout begins (canary door0) and a staged change lands, so the bundle just built leads
    past the base. The hub resolves door1's target again and serves it the base instead."""
    added = op.add_person("oak", "Cy", cards=["CARDCy"])
    publisher = rhub.hub.publisher
    real = publisher.bundle_for
    fired: list[int] = []

    def racing(site_id: str, current: int, want_snapshot: bool = False):  # type: ignore[no-untyped-def]
        if not fired:
            fired.append(1)
            start(op, ["door0"])  # through the hub's own gRPC server, from its build thread
            fired.append(op.add_person("oak", "Dee", cards=["CARDDee"]).version)
        return real(site_id, current, want_snapshot)

    publisher.bundle_for = racing  # type: ignore[method-assign]
    try:
        assert doors[1].syncer.sync_once().outcome == "applied"
    finally:
        publisher.bundle_for = real  # type: ignore[method-assign]
    st = rollout(op)
    assert fired[1] == added.version + 1 and st.base_version == added.version
    assert doors[1].whitelist.version == added.version
    assert doors[1].whitelist.state_digest == st.base_digest
    assert doors[0].syncer.sync_once().outcome == "applied" and doors[0].whitelist.version == fired[1]


def test_a_door_mode_set_during_a_rollout_is_staged_like_any_change(rhub: HubThread, op: Operator,
                                                                    doors: list[Agent]) -> None:
    base = rhub.hub.store.get_site("oak")
    start(op, ["door0"])
    set_mode = op.call("SetDeviceMode", pb.SetDeviceModeRequest(site="oak", device="door2",
                                                                 mode=pb.DOOR_MODE_SHADOW))
    assert set_mode.version == base.version + 1  # type: ignore[attr-defined]
    assert [a.syncer.sync_once().outcome for a in doors] == ["applied", "up_to_date", "up_to_date"]
    assert doors[2].whitelist.version == base.version
    assert [(c.action, c.version) for c in rollout(op).staged] == [("device.mode", base.version + 1)]
    op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
    assert doors[2].syncer.sync_once().outcome == "applied"
    assert doors[2].whitelist.version == base.version + 1


def test_offline_rule_aborts_when_a_canary_goes_quiet(quick_offline: tuple[HubThread, Operator],
                                                      tmp_path: Path) -> None:
    """The canary reports once and then goes quiet (its agent stops), the held door keeps
    reporting."""
    _, op = quick_offline
    agents = [register_agent(op, "oak", f"door{i}", tmp_path / f"a{i}") for i in range(2)]
    try:
        for a in agents:
            a.syncer.sync_once()
        st = start(op, ["door0"], auto_stop="offline>0")
        assert {d.name: d.state for d in st.doors} == {"door0": "applied", "door1": "applied"}
        agents[0].close()  # the canary is cut off
        assert wait_for(lambda: (agents[1].syncer.heartbeat() or True) and rollout(op).state == "aborted",
                        interval=0.5)
        st = rollout(op)
        assert st.stop_reason == "auto-stop offline>0: 1 stage door(s) are offline"
        assert {d.name: d.state for d in st.doors}["door0"] == "offline"
        assert {d.name: d.offline_since for d in st.doors}["door0"] > 0
    finally:
        for a in agents[1:]:
            a.close()


def test_a_canary_that_refuses_a_corrupted_bundle_stops_the_rollout(rhub: HubThread, op: Operator,
                                                                   doors: list[Agent]) -> None:
    """Nothing injected into the manifest: one ciphertext byte of the staged bundle is flipped
    on its way to the canary (its transport wrapped, as a broken link or a proxy would), the
    real agent refuses the bundle and says so in its own signed manifest, and the
    `refused_bundle` rule stops the rollout."""
    start(op, ["door0"], auto_stop="refused_bundle>0")
    op.add_person("oak", "Cy", cards=["CARDCy"])
    head = rhub.hub.store.get_site("oak")
    client = doors[0].syncer.client
    real = client.stream

    def flipping(method, request, timeout):  # type: ignore[no-untyped-def]
        for part in real(method, request, timeout):
            if part.WhichOneof("part") == "chunk":
                data = bytearray(part.chunk.data)
                data[-1] ^= 0x01
                part = pb.BundlePart(chunk=pb.Chunk(index=part.chunk.index, data=bytes(data)))
            yield part

    client.stream = flipping  # type: ignore[method-assign]
    assert doors[0].syncer.sync_once().outcome == "refused"
    doors[0].syncer.heartbeat()  # the door's own report, with the refusal
    assert wait_for(lambda: rollout(op).state == "aborted")
    st = rollout(op)
    assert st.stop_reason.startswith("auto-stop refused_bundle>0: 1 stage door")
    report = rhub.hub.store.latest_report(doors[0].files.load_identity().device_id)
    assert report is not None
    manifest = pb.Manifest.FromString(report.manifest)
    assert manifest.refused_version == head.version and manifest.refused_reason
    client.stream = real  # type: ignore[method-assign]
    assert doors[0].syncer.sync_once().outcome == "applied"
    assert doors[0].whitelist.version == st.closed_version


def test_a_promotion_is_not_held_open_by_a_door_that_went_away(quick_offline: tuple[HubThread, Operator],
                                                               tmp_path: Path) -> None:
    """door2 stops (its terminal died, nobody revoked it) before the promotion: the promotion
    still completes once the live doors report the head, and the completion's audit entry names
    the missing door, which gets the head when it comes back (nothing is held any more)."""
    h, op = quick_offline
    agents = [register_agent(op, "oak", f"door{i}", tmp_path / f"a{i}") for i in range(3)]
    try:
        for a in agents:
            a.syncer.sync_once()
        start(op, ["door0"])
        op.add_person("oak", "Cy", cards=["CARDCY"])
        agents[2].close()  # gone, not revoked
        op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
        assert wait_for(lambda: all(a.syncer.sync_once() and True for a in agents[:2])
                        and rollout(op).state == "completed", interval=0.5)
        head = h.hub.store.get_site("oak").version
        entry = next(e for e in h.hub.store.list_audit(20) if e.action == "rollout.complete")
        assert "not there yet: door2" in entry.detail and f"closed at v{head}" in entry.detail
        back = open_agent(tmp_path / "a2")
        try:
            assert back.syncer.sync_once().outcome == "applied" and back.whitelist.version == head
        finally:
            back.close()
    finally:
        for a in agents[:2]:
            a.close()


def test_a_promoting_rollout_is_not_aborted_and_promote_closes_it(rhub: HubThread, op: Operator,
                                                                   doors: list[Agent]) -> None:
    """Once promoted to every door, abort is refused with nothing changed (putting the base
    back would also drop changes made since, which were never staged); promoting again closes
    the rollout even while a door has not applied the head, naming that door."""
    start(op, ["door0"])
    op.add_person("oak", "Cy", cards=["CARDCY"])
    op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
    later = op.add_person("oak", "Di", cards=["CARDDI"])  # after the promotion: never staged
    for a in doors[:2]:
        a.syncer.sync_once()
    before = (rollout(op).SerializeToString(), rhub.hub.store.get_site("oak"),
              len(rhub.hub.store.list_audit(1000)))
    assert before[1].version == later.version
    code = refused(op.call, "AbortRollout", pb.AbortRolloutRequest(site="oak"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    after = (rollout(op).SerializeToString(), rhub.hub.store.get_site("oak"),
             len(rhub.hub.store.list_audit(1000)))
    assert after == before and rollout(op).state == "promoting"
    st = op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
    assert st.state == "completed"  # type: ignore[attr-defined]
    entry = next(e for e in rhub.hub.store.list_audit(20) if e.action == "rollout.promote")
    assert "not there yet: door2" in entry.detail
    assert doors[2].syncer.sync_once().outcome == "applied"
    assert doors[2].whitelist.person(later.person_id) is not None


def test_aborting_a_rollout_that_staged_nothing_makes_no_version(rhub: HubThread, op: Operator,
                                                                 doors: list[Agent]) -> None:
    base = rhub.hub.store.get_site("oak")
    start(op, ["door0"])
    st = op.call("AbortRollout", pb.AbortRolloutRequest(site="oak"))
    assert st.state == "aborted" and st.closed_version == base.version  # type: ignore[attr-defined]
    assert rhub.hub.store.get_site("oak") == base
    assert all(a.syncer.sync_once().outcome == "up_to_date" for a in doors)
