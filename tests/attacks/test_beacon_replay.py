"""Freeze and replay attacks on freshness (python-tuf: test_freeze / timestamp replay).

A man in the middle on loopback relays the door's traffic to the real hub,
records it, then answers with what it recorded: old signed beacons, an old
"up to date", an old report answer, while the hub revokes a resident. Every
beacon verifies (the hub signed it); none carries the nonce the door chose for
the request it answers, so none proves the hub is alive now. The door must go
stale when the site's offline validity runs out, apply the site's stale policy,
and keep its trusted whitelist exactly as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from nacl.signing import SigningKey

from doorkeeper.agent.app import AgentRuntime
from doorkeeper.agent.doorloop.policy import Freshness, Reason, decide_card, evaluate_person
from doorkeeper.agent.sync.freshness import FreshnessTracker, Verdict
from doorkeeper.agent.sync.identity import init_agent
from doorkeeper.agent.sync.service import SyncOptions
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.hub import whitelist as hub_whitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.attacks.mitm import Mitm
from tests.harness import open_agent, random_template, register_agent, wait_for

VALIDITY_S = 3  # the hub's floor is 60 s; lowered for the test so it runs in seconds


@pytest.fixture
def short_validity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_whitelist, "MIN_OFFLINE_VALIDITY_S", 1)


@pytest.fixture
def mitm(hub):  # type: ignore[no-untyped-def]
    m = Mitm(hub.address)
    yield m
    m.close()


def trusted_state(wl: LocalWhitelist) -> tuple[int, bytes, list[bytes], bytes]:
    return (wl.version, wl.state_digest, sorted(r.SerializeToString() for r in wl.records()),
            wl.compute_digest())


def replay_forever(answer: bytes, context: Any) -> Iterator[bytes]:
    while context.is_active():
        yield answer
        time.sleep(0.2)


def is_stale(runtime: AgentRuntime) -> bool:
    """What the door loop asks before every decision (`DoorLoop._stale`)."""
    now = time.monotonic()
    return Freshness.at_start(now, runtime.last_fresh()).is_stale(runtime.service.whitelist_config, now)


def up_to_date_answer(mitm: Mitm) -> list[bytes] | None:
    for seen in reversed(mitm.calls("Fetch")):
        if seen.answers and pb.BundlePart.FromString(seen.answers[-1]).WhichOneof("part") == "up_to_date":
            return list(seen.answers)
    return None


def test_replayed_beacons_do_not_keep_a_door_fresh(  # type: ignore[no-untyped-def]
        hub, operator, mitm, short_validity, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    operator.add_site("oak", offline_validity_s=VALIDITY_S, stale_policy=pb.STALE_POLICY_CARDS_ONLY)
    resident = operator.add_person("oak", templates=[random_template(rng)], cards=["CARD0001"])
    init_agent(tmp_path / "front", mitm.address, operator.add_device("oak", "front").token)
    runtime = AgentRuntime(tmp_path / "front", SyncOptions(poll_interval_s=0.5, heartbeat_interval_s=0.5,
                                                           upload_interval_s=3600))
    wl = runtime.service.whitelist
    runtime.service.start()
    try:
        # Relayed honestly: the door syncs, is fresh, and the attacker records everything.
        v = hub.hub.store.get_site("oak").version
        assert wait_for(lambda: wl.version == v and not is_stale(runtime))
        assert wait_for(lambda: bool(mitm.calls("Watch")) and bool(mitm.calls("Watch")[-1].answers)
                        and up_to_date_answer(mitm) is not None
                        and any(s.answers for s in mitm.calls("Report")))
        old_event = mitm.calls("Watch")[-1].answers[-1]
        old_fetch = up_to_date_answer(mitm)
        assert old_fetch is not None
        old_report = next(s.answers[-1] for s in reversed(mitm.calls("Report")) if s.answers)

        # The attacker freezes the door: old beacons only, nothing new gets through.
        mitm.stream["Watch"] = lambda request, context: replay_forever(old_event, context)
        mitm.stream["Fetch"] = lambda request, context: iter(old_fetch)
        mitm.unary["Report"] = lambda request, context: old_report
        mitm.cut()  # the honest watch stream open now would carry the change itself
        watches_before = len(mitm.calls("Watch"))
        trusted = trusted_state(wl)
        operator.remove_person(resident.person_id)  # the revocation the attacker withholds

        assert wait_for(lambda: is_stale(runtime), timeout=60), "replayed beacons kept the door fresh"
        # The door renews its watch nonce, and the attacker answers each new stream with replays.
        assert wait_for(lambda: len(mitm.calls("Watch")) > watches_before + 1)
        assert is_stale(runtime)
        assert trusted_state(wl) == trusted  # nothing moved the trusted whitelist
        assert runtime.service.syncer.state.refused.get("Unproven", 0) >= 1
        assert wait_for(lambda: hub.hub.devices.status("oak")[0].stale)  # unheard of: stale there too

        # The site's stale policy now applies: cards only. The revoked resident's face,
        # still in the frozen whitelist, no longer opens the door; a card still does.
        config = runtime.service.whitelist_config
        assert config is not None
        record = wl.person(resident.person_id)
        assert record is not None
        face = evaluate_person(record, door="front", now_wall=time.time(), config=config,
                               stale=is_stale(runtime), credential="face", shadow=False,
                               version=wl.version, similarity=0.9)
        assert not face.granted and face.reason == Reason.STALE_CARDS_ONLY
        card = decide_card(wl.by_credential, bytes(config.credential_salt), "CARD0001", door="front",
                           now_wall=time.time(), config=config, stale=is_stale(runtime), shadow=False,
                           version=wl.version)
        assert card.granted

        # The attacker lets go: the door catches up and is fresh again.
        mitm.stream.clear()
        mitm.unary.clear()
        assert wait_for(lambda: wl.version == v + 1 and not is_stale(runtime), timeout=60)
        assert wl.person(resident.person_id) is None
    finally:
        runtime.service.close()


def test_a_replayed_older_delta_does_not_choose_where_the_door_stops(  # type: ignore[no-untyped-def]
        hub, operator, mitm, short_validity, tmp_path: Path) -> None:
    """Once a fresh beacon names version V, the door is behind until it holds V, says so in its
    signed manifest (fleet status shows it), keeps fetching, and goes stale meanwhile."""
    rng = np.random.default_rng(12)
    operator.add_site("oak", offline_validity_s=VALIDITY_S, stale_policy=pb.STALE_POLICY_CARDS_ONLY)
    tenant = operator.add_person("oak", templates=[random_template(rng)])
    init_agent(tmp_path / "front", mitm.address, operator.add_device("oak", "front").token)
    agent = open_agent(tmp_path / "front")
    try:
        assert agent.syncer.sync_once().outcome == "applied"
        v = agent.whitelist.version
        operator.add_person("oak", templates=[random_template(rng)])  # v + 1

        # The attacker records the v -> v+1 delta issued to this door and cuts the link before it lands.
        captured: list[bytes] = []

        def capture_and_cut(request: bytes, context: Any) -> Iterator[bytes]:
            captured.extend(mitm.relay_stream("/doorkeeper.v1.DeviceSync/Fetch", request, context))
            context.abort(grpc.StatusCode.UNAVAILABLE, "link down")
            yield b""  # never reached

        mitm.stream["Fetch"] = capture_and_cut
        assert agent.syncer.sync_once().outcome == "unreachable"
        assert agent.whitelist.version == v and captured
        operator.remove_person(tenant.person_id)  # v + 2: a revocation

        # A fresh beacon (the relayed heartbeat's answer) tells the door version v + 2 exists.
        agent.syncer.heartbeat()
        assert agent.syncer.behind and agent.syncer.state.hub_version == v + 2

        # The attacker now serves the captured delta and withholds version v + 2.
        mitm.stream["Fetch"] = lambda request, context: iter(captured)
        result = agent.syncer.sync_once()
        assert result.outcome == "applied" and agent.whitelist.version == v + 1
        assert result.behind and agent.syncer.state.behind  # it does not take v + 1 for the end
        status = hub.hub.devices.status("oak")[0]
        assert status.reported_version == v + 1 and status.behind and status.known_version == v + 2
        fetches = len(mitm.calls("Fetch"))
        agent.syncer.sync_with_retries(attempts=3, max_wait_s=0.1)
        assert len(mitm.calls("Fetch")) == fetches + 3  # keeps asking while behind
        assert wait_for(agent.syncer.stale, timeout=30)  # never vouched for at version v + 1

        mitm.stream.clear()
        result = agent.syncer.sync_once()
        assert result.outcome == "applied" and agent.whitelist.version == v + 2 and not result.behind
        assert not agent.syncer.stale()
        assert agent.whitelist.person(tenant.person_id) is None
        status = hub.hub.devices.status("oak")[0]
        assert status.in_sync and not status.behind
    finally:
        agent.close()


# ---------------------------------------------------------------- the core, on bytes
def _beacon(key: SigningKey, **fields: Any) -> pb.Beacon:
    raw = pb.Beacon(site_id="s", key_id=keys.key_id(bytes(key.verify_key)), **fields).SerializeToString()
    signed = pb.SignedBeacon(beacon=raw, signature=keys.sign(key, keys.CTX_BEACON, raw))
    return pb.Beacon.FromString(signed.beacon)  # as `bundle.verify_beacon` hands it over


def test_a_beacon_with_another_nonce_proves_nothing() -> None:
    now = [100.0]
    tracker = FreshnessTracker(clock=lambda: now[0])
    hub_key = SigningKey.generate()
    ours = tracker.new_nonce()
    digest = b"d" * 32
    now[0] = 101.0
    assert tracker.observe(_beacon(hub_key, version=4, nonce=ours, state_digest=digest), 4, digest) \
        is Verdict.CURRENT
    assert tracker.age_s() == 1.0  # vouched as of when we chose the nonce (100), not when it came
    now[0] = 150.0
    for nonce in (b"", b"x" * 32, ours[:-1] + bytes([ours[-1] ^ 1])):  # the last byte flipped
        verdict = tracker.observe(_beacon(hub_key, version=4, nonce=nonce, state_digest=digest), 4, digest)
        assert verdict is Verdict.REPLAYED
    assert tracker.age_s() == 50.0  # unchanged by any of them
    tracker.retire(ours)
    assert tracker.observe(_beacon(hub_key, version=4, nonce=ours, state_digest=digest), 4, digest) \
        is Verdict.REPLAYED  # a retired nonce is as good as none


def test_a_fresh_beacon_naming_a_newer_version_vouches_only_once_the_door_holds_it() -> None:
    now = [0.0]
    tracker = FreshnessTracker(clock=lambda: now[0])
    key = SigningKey.generate()
    nonce = tracker.new_nonce()
    now[0] = 1.0
    assert tracker.observe(_beacon(key, version=5, nonce=nonce, state_digest=b"5" * 32), 3, b"3" * 32) \
        is Verdict.BEHIND
    assert tracker.age_s() is None and tracker.behind(3)
    tracker.caught_up(4, b"4" * 32)  # an older delta: still behind, still unvouched
    assert tracker.age_s() is None and tracker.behind(4)
    now[0] = 9.0
    tracker.caught_up(5, b"5" * 32)
    assert tracker.age_s() == 9.0 and not tracker.behind(5)
    # A replayed beacon may raise what the door knows exists (versions only grow), never lower it.
    tracker.observe(_beacon(key, version=7), 5, b"5" * 32)
    assert tracker.behind(5) and tracker.known_version == 7
    tracker.observe(_beacon(key, version=2), 5, b"5" * 32)
    assert tracker.known_version == 7


def test_a_wall_clock_set_back_by_a_power_cut_does_not_make_a_door_fresh(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path) -> None:
    """Across a restart the proof's age is carried by the wall clock; a clock now earlier than
    the proof cannot say how old it is, so the door counts as stale until the hub vouches."""
    operator.add_site("oak", offline_validity_s=3600)
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    assert agent.syncer.sync_once().ok and not agent.syncer.stale()
    agent.close()
    state = json.loads(agent.files.state.read_text())
    assert state["last_beacon_hub_time"] > 0
    state["last_beacon_hub_time"] = int(time.time()) + 86_400  # the clock now reads a day earlier
    agent.files.state.write_text(json.dumps(state))
    restarted = open_agent(tmp_path / "front")
    try:
        assert restarted.syncer.fresh_age_s() is None and restarted.syncer.stale()
        state["last_beacon_hub_time"] = int(time.time()) - 60  # a sane clock: a minute-old proof
        agent.files.state.write_text(json.dumps(state))
    finally:
        restarted.close()
    again = open_agent(tmp_path / "front")
    try:
        age = again.syncer.fresh_age_s()
        assert age is not None and age >= 60 and not again.syncer.stale()
    finally:
        again.close()
