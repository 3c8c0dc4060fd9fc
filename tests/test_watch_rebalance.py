"""Streams that rebalance: watch streams end by themselves after a jittered maximum age and
doors resume from their version; keepalive within what the hub permits; reconnects spread."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from doorkeeper.agent.sync import hubclient
from doorkeeper.agent.sync.hubclient import SYNC
from doorkeeper.agent.sync.watch import ReconnectBackoff
from doorkeeper.hub import server as hub_server
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.freshness import new_nonce
from tests.harness import HubThread, Operator, random_template, register_agent, wait_for


def test_a_watch_stream_ends_by_itself_after_its_maximum_age(tmp_path: Path) -> None:
    hub = HubThread(tmp_path / "hub", watch_max_age_s=(0.5, 1.0)).start()
    try:
        operator = Operator(hub.address, hub.data_dir / "operator.key")
        operator.add_site("oak")
        agent = register_agent(operator, "oak", "front", tmp_path / "front")
        try:
            stream = agent.syncer.client.stream(SYNC + "Watch", pb.WatchRequest(nonce=new_nonce()), 60)
            beacons = list(stream)  # ends without an error: status OK
            assert beacons and stream.code() == grpc.StatusCode.OK  # type: ignore[attr-defined]
        finally:
            agent.close()
    finally:
        hub.stop()


def test_the_agent_resumes_from_its_version_without_a_snapshot(tmp_path: Path) -> None:
    hub = HubThread(tmp_path / "hub", watch_max_age_s=(0.5, 1.0)).start()
    stop = threading.Event()
    try:
        operator = Operator(hub.address, hub.data_dir / "operator.key")
        operator.add_site("oak")
        rng = np.random.default_rng(3)
        operator.add_person("oak", templates=[random_template(rng)])
        agent = register_agent(operator, "oak", "front", tmp_path / "front")
        syncer = agent.syncer
        assert syncer.sync_once().outcome == "applied"
        watches: list[int] = []
        kinds: list[int] = []
        real = syncer.client.stream

        def spy(method: str, request: Any, timeout: float) -> Iterator[Any]:
            if method.endswith("/Watch"):
                watches.append(request.current_version)

            return _Kinds(real(method, request, timeout), kinds)

        syncer.client.stream = spy  # type: ignore[method-assign]

        def on_version(_version: int) -> None:
            threading.Thread(target=syncer.sync_once, daemon=True).start()

        watcher = threading.Thread(target=syncer.watch, args=(stop, on_version), daemon=True)
        watcher.start()
        try:
            assert wait_for(lambda: len(watches) >= 3, timeout=30)  # the hub ended two streams
            version = agent.whitelist.version
            assert set(watches) == {version}  # each reopened from the version the door holds
            new = operator.add_person("oak", templates=[random_template(rng)]).version
            assert wait_for(lambda: agent.whitelist.version == new, timeout=30)
            assert kinds and set(kinds) == {pb.BUNDLE_KIND_DELTA}  # never a snapshot
        finally:
            stop.set()
            watcher.join(10)
            agent.close()
    finally:
        hub.stop()


class _Kinds:
    """A Fetch's parts or a watch stream's events (a delta may ride them), passed through;
    the kind of every bundle header among them is appended to `kinds`."""

    def __init__(self, stream: Any, kinds: list[int]) -> None:
        self.stream, self.kinds = stream, kinds

    def __iter__(self) -> Iterator[Any]:
        for part in self.stream:
            if part.HasField("header"):
                self.kinds.append(pb.BundleHeader.FromString(part.header.header).kind)
            yield part

    def cancel(self) -> None:
        self.stream.cancel()


def _holds_an_idle_stream(tmp_path: Path, client_options: list[tuple[str, Any]],
                          server_options: list[tuple[str, Any]], seconds: float) -> grpc.StatusCode | None:
    """Open a watch stream that carries nothing for `seconds` (a beacon interval longer than
    that): the status it ended with (None: still open, no GOAWAY)."""
    original = hub_server.SERVER_OPTIONS
    hub_server.SERVER_OPTIONS = server_options
    hub = HubThread(tmp_path / "hub", beacon_interval_s=600).start()
    hub_server.SERVER_OPTIONS = original
    try:
        operator = Operator(hub.address, hub.data_dir / "operator.key")
        operator.add_site("oak")
        agent = register_agent(operator, "oak", "front", tmp_path / "front")
        real_options = hubclient.CLIENT_OPTIONS
        hubclient.CLIENT_OPTIONS = client_options
        try:
            client = agent.syncer.client.fresh(10)
        finally:
            hubclient.CLIENT_OPTIONS = real_options
        ended: list[grpc.StatusCode] = []
        stream = client.stream(SYNC + "Watch", pb.WatchRequest(nonce=new_nonce()), 120)

        def follow() -> None:
            try:
                for _ in stream:
                    pass
                ended.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                ended.append(exc.code())  # type: ignore[attr-defined]

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        thread.join(seconds)
        stream.cancel()  # type: ignore[attr-defined]
        thread.join(10)
        client.close()
        agent.close()
        return None if ended == [grpc.StatusCode.CANCELLED] else ended[0]
    finally:
        hub.stop()


def test_client_keepalive_stays_within_what_the_hub_permits(tmp_path: Path) -> None:
    """The agent pings no more often than the hub allows (else: GOAWAY too_many_pings, and
    every door's stream drops): by the numbers, then for real with both sides' own options, an
    idle watch stream held past the agent's keepalive interval (about 20 s)."""
    client = dict(hubclient.CLIENT_OPTIONS)
    server = dict(hub_server.SERVER_OPTIONS)
    assert client["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    assert client["grpc.http2.max_pings_without_data"] == 0 and client["grpc.keepalive_permit_without_calls"]
    assert server["grpc.keepalive_permit_without_calls"]
    held_s = client["grpc.keepalive_time_ms"] / 1000 + 3
    options = (hubclient.CLIENT_OPTIONS, hub_server.SERVER_OPTIONS)
    assert _holds_an_idle_stream(tmp_path, *options, held_s) is None


def _arrivals(doors: int, outage_s: float, seed: int) -> Counter[int]:
    """When `doors` watch streams that all dropped at t=0 reconnect to a hub back at `outage_s`:
    attempts per second of the first second-long windows after it is back."""
    rng = random.Random(seed)
    arrivals: Counter[int] = Counter()
    for _ in range(doors):
        clock = [0.0]
        backoff = ReconnectBackoff(clock=lambda c=clock: c[0], jitter=rng.random)  # type: ignore[misc]
        while True:
            clock[0] += backoff.next()
            if clock[0] >= outage_s:
                arrivals[int(clock[0] - outage_s)] += 1
                break
    return arrivals


def test_ten_thousand_doors_returning_at_once_do_not_stampede() -> None:
    """10,000 doors lose the hub together (a hub restart). While it is down they retry spread
    out, and when it is back they arrive over several seconds: at most 2,000 in any second
    after a 20 s outage, 1,400 after two minutes (the caps trade this against how soon a door
    finds a restored link: within 10 s, and 15 s after a long outage). (Jitter over the upper
    half of a 2 s cap, as before, had every door back within one second: 10,000/s.) A blip of
    a second or three is not smoothed as much (about 3,000/s): doors that had just tried come
    back together soon."""
    after_outage = _arrivals(10_000, 20.0, seed=1)
    after_long = _arrivals(10_000, 120.0, seed=2)
    assert sum(after_outage.values()) == sum(after_long.values()) == 10_000
    assert max(after_outage.values()) <= 2_000, sorted(after_outage.items())[:12]
    assert max(after_long.values()) <= 1_400, sorted(after_long.items())[:12]
    # ... and none waits longer than the cap once the hub is back.
    assert max(after_outage) < ReconnectBackoff().healthy_cap_s
    assert max(after_long) < ReconnectBackoff().outage_cap_s


def test_the_hub_logs_its_file_limit_and_warns_when_a_fleet_cannot_fit(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging
    import resource

    caplog.set_level(logging.INFO, logger="doorkeeper.hub")
    soft = hub_server.check_fd_limit(10)
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert any("open-file limit" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    caplog.clear()
    hub_server.check_fd_limit(soft)  # a fleet of as many doors as descriptors cannot fit
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "below" in warnings[0] and f"{soft} registered doors" in warnings[0]


def test_the_hub_holds_a_whole_fleets_burst_of_calls_before_grpc_sheds_any() -> None:
    """gRPC core cancels calls the server has not taken up yet past
    `grpc.server.max_pending_requests` (default 1,000, at random up to the hard limit, 3,000):
    at 2,000 doors a change had hundreds of fetches answered CANCELLED that no hub code saw
    (BENCHMARKS.md). The hub raises both above what one replica serves (10,000 doors on two
    replicas: 5,000 each, a Fetch and a Report per door)."""
    server = dict(hub_server.SERVER_OPTIONS)
    soft = server["grpc.server.max_pending_requests"]
    assert soft >= 2 * 5_000 and server["grpc.server.max_pending_requests_hard_limit"] >= 2 * soft
