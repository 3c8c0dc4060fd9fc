"""Whitelist sync over real gRPC on loopback, real SQLite files, real PyNaCl."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from doorkeeper.agent.sync.hubclient import ADMIN, SYNC, HubClient
from doorkeeper.agent.sync.service import SyncOptions, SyncService
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth
from tests.harness import random_template, register_agent, wait_for


def test_new_door_gets_snapshot_then_deltas(hub, operator, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    operator.add_site("oak")
    first = operator.add_person("oak", templates=[random_template(rng)], cards=["CARD0001"])
    agent = register_agent(operator, "oak", "front", tmp_path / "a1")
    try:
        kinds: list[int] = []
        real_stream = agent.syncer.client.stream

        def spy(method, request, timeout):  # type: ignore[no-untyped-def]
            for part in real_stream(method, request, timeout):
                if part.WhichOneof("part") == "header":
                    kinds.append(pb.BundleHeader.FromString(part.header.header).kind)
                yield part

        agent.syncer.client.stream = spy  # type: ignore[method-assign]
        assert agent.syncer.sync_once().outcome == "applied"
        assert agent.whitelist.person(first.person_id) is not None
        second = operator.add_person("oak", templates=[random_template(rng)])
        operator.remove_person(first.person_id)
        assert agent.syncer.sync_once().outcome == "applied"
        assert agent.syncer.sync_once().outcome == "up_to_date"
        assert kinds == [pb.BUNDLE_KIND_SNAPSHOT, pb.BUNDLE_KIND_DELTA]
        assert agent.whitelist.person(first.person_id) is None
        assert agent.whitelist.person(second.person_id) is not None
        site = hub.hub.store.get_site("oak")
        assert agent.whitelist.version == site.version
        assert agent.whitelist.state_digest == site.state_digest == agent.whitelist.compute_digest()
        # Fleet status shows what the device reported, signed.
        status = hub.hub.devices.status("oak")[0]
        assert status.in_sync and status.reported_version == site.version
    finally:
        agent.close()


def test_door_never_registered_shows_as_not_in_sync(hub, operator) -> None:
    operator.add_site("oak")
    operator.add_device("oak", "side")
    status = hub.hub.devices.status("oak")[0]
    assert not status.registered and not status.in_sync and status.reported_version == 0


def test_watch_delivers_new_version_within_seconds(hub, operator, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    operator.add_site("elm")
    agent = register_agent(operator, "elm", "gate", tmp_path / "a")
    agent.close()
    service = SyncService(tmp_path / "a", SyncOptions(poll_interval_s=3600, heartbeat_interval_s=3600))
    service.start()
    try:
        assert wait_for(lambda: service.whitelist.version == 1, timeout=30)
        added = operator.add_person("elm", templates=[random_template(rng)])
        # Polling is an hour away: only the watch stream can bring this in time.
        assert wait_for(lambda: service.whitelist.person(added.person_id) is not None, timeout=30)
    finally:
        service.close()


def test_door_keeps_last_whitelist_when_hub_is_gone_and_catches_up(tmp_path: Path) -> None:
    from tests.harness import HubThread, Operator

    rng = np.random.default_rng(3)
    h = HubThread(tmp_path / "hub").start()
    port = h.port
    op = Operator(h.address, h.data_dir / "operator.key")
    op.add_site("pine")
    p1 = op.add_person("pine", templates=[random_template(rng)])
    agent = register_agent(op, "pine", "door", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        h.stop()
        result = agent.syncer.sync_once()
        assert result.outcome == "unreachable"
        assert agent.whitelist.person(p1.person_id) is not None  # still deciding on the last good list
        h2 = HubThread(tmp_path / "hub", port=port).start()
        try:
            p2 = Operator(h2.address, h2.data_dir / "operator.key").add_person(
                "pine", templates=[random_template(rng)])
            assert agent.syncer.sync_with_retries(attempts=5, max_wait_s=1).outcome == "applied"
            assert agent.whitelist.person(p2.person_id) is not None
        finally:
            h2.stop()
    finally:
        agent.close()


def test_device_cannot_fetch_another_sites_bundles(hub, operator, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    operator.add_site("north")
    operator.add_site("south")
    secret = operator.add_person("south", templates=[random_template(rng)])
    north = register_agent(operator, "north", "n1", tmp_path / "n")
    south = register_agent(operator, "south", "s1", tmp_path / "s")
    try:
        assert north.syncer.sync_once().ok
        assert north.whitelist.person(secret.person_id) is None
        assert north.whitelist.version == hub.hub.store.get_site("north").version
        # North's key signing a call as South's device is refused.
        impostor = HubClient(hub.address, south.syncer.identity.device_id, north.syncer.device_keys.sign_key)
        with impostor, pytest.raises(grpc.RpcError) as err:
            list(impostor.stream(SYNC + "Fetch", pb.FetchRequest(current_version=0), 10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A device key is no operator key.
        from doorkeeper.agent.sync.hubclient import ADMIN

        with pytest.raises(grpc.RpcError) as err:
            north.syncer.client.call(ADMIN + "Fleet", pb.FleetRequest())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        north.close()
        south.close()


def test_captured_call_cannot_be_replayed(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        client = agent.syncer.client
        request = pb.FetchRequest(current_version=0).SerializeToString()
        challenge = client.unsigned(SYNC + "Challenge", pb.ChallengeRequest(principal=client.principal))
        sig = callauth.call_signature(client.sign_key, SYNC + "Fetch", client.principal, challenge.nonce,
                                      request)
        md = callauth.metadata(client.principal, challenge.nonce, sig)
        call = client.channel.unary_stream(SYNC + "Fetch", response_deserializer=pb.BundlePart.FromString)
        assert list(call(request, timeout=10, metadata=md))  # first use works
        with pytest.raises(grpc.RpcError) as err:
            list(call(request, timeout=10, metadata=md))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "nonce" in err.value.details()
        # The same nonce with different request bytes does not verify either.
        other = pb.FetchRequest(current_version=5).SerializeToString()
        with pytest.raises(grpc.RpcError):
            list(call(other, timeout=10, metadata=md))
    finally:
        agent.close()


def _signed_by(hub, role: str) -> HubClient:  # type: ignore[no-untyped-def]
    """A client holding a fresh key registered at the hub with ``role``."""
    from nacl.signing import SigningKey

    from doorkeeper.hub.store import Operator as OperatorKey
    from doorkeeper.wire import keys

    key = SigningKey.generate()
    key_id = keys.key_id(bytes(key.verify_key))
    hub.hub.store.add_operator(
        OperatorKey(key_id, bytes(key.verify_key), role, f"test-{role}", int(time.time())))
    return HubClient(hub.address, key_id, key)


def test_operator_role_and_unsigned_admin_calls_refused(hub, operator) -> None:
    with HubClient(hub.address) as anonymous, pytest.raises(grpc.RpcError) as err:
        anonymous.unsigned("/doorkeeper.v1.Admin/AddSite", pb.AddSiteRequest(name="x"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert hub.hub.store.list_sites() == []
    # Properly signed, but by a role that may not: refused, and nothing changed.
    for role in ("auditor", "operator"):
        with _signed_by(hub, role) as client, pytest.raises(grpc.RpcError) as err:
            client.call(ADMIN + "AddSite", pb.AddSiteRequest(name=f"by-{role}"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
    assert hub.hub.store.list_sites() == []
    operator.add_site("oak")
    with _signed_by(hub, "auditor") as auditor, pytest.raises(grpc.RpcError) as err:
        auditor.call(ADMIN + "AddPerson", pb.AddPersonRequest(site="oak", name="Mallory", cards=["40000001"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert hub.hub.store.get_site("oak").person_count == 0
    with _signed_by(hub, "operator") as op:  # the same call by a role that may: it works
        op.call(ADMIN + "AddPerson", pb.AddPersonRequest(site="oak", name="Resident", cards=["40000002"]))
    assert hub.hub.store.get_site("oak").person_count == 1


def test_concurrent_fetches_build_one_bundle(hub, operator, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    operator.add_site("oak")
    for _ in range(3):
        operator.add_person("oak", templates=[random_template(rng)])
    agents = [register_agent(operator, "oak", f"d{i}", tmp_path / f"a{i}") for i in range(4)]
    publisher = hub.hub.publisher
    real_build = publisher._build
    builds: list[int] = []

    def slow_counted_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        builds.append(1)
        time.sleep(0.5)  # widen the race: every fetch arrives while the first build runs
        return real_build(*args, **kwargs)

    publisher._build = slow_counted_build  # type: ignore[method-assign]
    try:
        results = []
        threads = [threading.Thread(target=lambda a=a: results.append(a.syncer.sync_once())) for a in agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.outcome == "applied" for r in results)
        digests = {a.whitelist.state_digest for a in agents}
        assert digests == {hub.hub.store.get_site("oak").state_digest}
        assert len(builds) == 1  # four doors, one build (encrypted once, wrapped per device)
    finally:
        publisher._build = real_build  # type: ignore[method-assign]
        for a in agents:
            a.close()


def test_plaintext_refused_off_loopback(hub) -> None:
    from doorkeeper.hub.server import HubInitError, build_server

    with pytest.raises(HubInitError, match="TLS"):
        build_server(hub.hub, "0.0.0.0:0")


def test_retries_against_an_unreachable_hub_return_instead_of_raising(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        hub.stop()
        result = agent.syncer.sync_with_retries(attempts=2, max_wait_s=0.2)
        assert result.outcome == "unreachable" and not result.ok
    finally:
        agent.close()


def test_hub_shutdown_ends_watch_streams_cleanly(hub, operator, tmp_path: Path) -> None:
    """SIGTERM ends watch streams at once (status OK), instead of cutting them after the grace period."""
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        stream = agent.syncer.client.stream(SYNC + "Watch", pb.WatchRequest(), 30)
        first = next(stream)
        assert first.beacon.signature
        stopper = threading.Thread(target=hub.stop)
        stopper.start()
        rest = list(stream)  # ends normally: no RpcError (CANCELLED / UNAVAILABLE)
        stopper.join()
        assert all(e.beacon.signature for e in rest)
    finally:
        agent.close()


def test_hub_start_precomputes_every_registered_devices_bundle_key(hub, operator, tmp_path: Path) -> None:
    from tests.harness import HubThread

    operator.add_site("oak")
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    device = hub.hub.store.list_devices()[0]
    hub.stop()
    restarted = HubThread(hub.data_dir).start()
    try:
        boxes = restarted.hub.publisher._boxes
        assert wait_for(lambda: (device.device_id, device.box_public) in boxes, timeout=30)
    finally:
        restarted.stop()


def test_fleet_status_marks_a_door_unheard_of_past_the_offline_validity_as_stale(
        hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak", offline_validity_s=3600)
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        assert not hub.hub.devices.status("oak")[0].stale
        hub.hub.devices.clock = lambda: time.time() + 3601
        assert hub.hub.devices.status("oak")[0].stale
    finally:
        agent.close()


def test_a_device_cannot_hold_more_than_two_watch_streams(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        open_streams = [agent.syncer.client.stream(SYNC + "Watch", pb.WatchRequest(), 30) for _ in range(2)]
        for s in open_streams:
            assert next(s).beacon.signature
        third = agent.syncer.client.stream(SYNC + "Watch", pb.WatchRequest(), 30)
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        open_streams[0].cancel()  # type: ignore[attr-defined]
        # Once the hub has seen the cancel, the slot is free again.
        later: list[object] = []

        def reopen() -> bool:
            stream = agent.syncer.client.stream(SYNC + "Watch", pb.WatchRequest(), 30)
            later.append(stream)
            return _first_beacon(stream)

        assert wait_for(reopen, timeout=10, interval=0.2)
        for s in (open_streams[1], *later):
            s.cancel()  # type: ignore[attr-defined]
    finally:
        agent.close()


def _first_beacon(stream) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(next(stream).beacon.signature)
    except grpc.RpcError:
        return False


def test_a_hundred_concurrent_fetches_from_one_device_all_succeed(hub, operator, tmp_path: Path) -> None:
    """Every call's nonce stays good while the others are in flight (none evicts another's)."""
    from concurrent.futures import ThreadPoolExecutor

    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        n = 100
        all_challenged = threading.Barrier(n)

        class Together(HubClient):
            """Each call gets its nonce, then waits until all 100 have theirs."""

            def unsigned(self, method, request, timeout=None, wait_for_ready=False):  # type: ignore[no-untyped-def]
                answer = super().unsigned(method, request, timeout, wait_for_ready)
                if method.endswith("/Challenge"):
                    all_challenged.wait(timeout=120)
                return answer

        client = Together(hub.address, agent.syncer.identity.device_id, agent.syncer.device_keys.sign_key,
                          timeout_s=120)

        def fetch(_: int) -> str:
            request = pb.FetchRequest(current_version=agent.whitelist.version)
            parts = list(client.stream(SYNC + "Fetch", request, 120))
            return parts[-1].WhichOneof("part")

        try:
            with ThreadPoolExecutor(n) as pool:
                outcomes = list(pool.map(fetch, range(n)))
        finally:
            client.close()
        assert outcomes == ["up_to_date"] * n
    finally:
        agent.close()


@pytest.mark.parametrize("size", [1, 15, 65, 1000])
def test_a_freshness_nonce_of_the_wrong_size_is_refused_and_changes_nothing(
        hub, operator, tmp_path: Path, size: int) -> None:
    from doorkeeper.wire import keys

    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        before = hub.hub.store.latest_report(agent.syncer.identity.device_id)
        nonce = b"n" * size
        client = agent.syncer.client
        calls = [
            lambda: list(client.stream(SYNC + "Watch", pb.WatchRequest(nonce=nonce), 10)),
            lambda: list(client.stream(SYNC + "Fetch", pb.FetchRequest(nonce=nonce), 10)),
            lambda: client.unsigned(SYNC + "Challenge", pb.ChallengeRequest(hub_challenge=nonce)),
        ]
        raw = agent.syncer.manifest(nonce).SerializeToString()
        signature = keys.sign(agent.syncer.device_keys.sign_key, keys.CTX_MANIFEST, raw)
        signed = pb.SignedManifest(manifest=raw, signature=signature)
        calls.append(lambda: client.call(SYNC + "Report", signed))
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            # Named by the hub's nonce check, or by the edge's cap on the field (hub_challenge).
            assert "nonce" in err.value.details() or "hub_challenge" in err.value.details()
        assert hub.hub.store.latest_report(agent.syncer.identity.device_id) == before
    finally:
        agent.close()
