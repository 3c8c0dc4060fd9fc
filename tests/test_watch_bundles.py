"""Small deltas on the watch stream (PROTOCOL section 7, "Bundles on the stream"), against a
real hub on loopback (SQLite file, or a fresh PostgreSQL database where marked) and real
agents: what the hub puts on the stream and when it must not, and that a door applies what
it can verify and otherwise fetches, its whitelist untouched by whatever it could not use."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from doorkeeper.agent.sync import bundle as core
from doorkeeper.agent.sync.hubclient import SYNC
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.freshness import new_nonce
from doorkeeper.wire.limits import LIMITS
from tests.harness import Agent, HubThread, Operator, both_stores, random_template, register_agent, wait_for

INLINE = LIMITS.max_inline_bundle_bytes


class Stream:
    """A door's signed watch stream, its events collected by a background thread."""

    def __init__(self, agent: Agent, inline_bytes: int = INLINE, current_version: int | None = None) -> None:
        self.nonce = new_nonce()
        version = agent.whitelist.version if current_version is None else current_version
        self.call = agent.syncer.client.stream(SYNC + "Watch", pb.WatchRequest(
            current_version=version, nonce=self.nonce, inline_bundle_bytes=inline_bytes), 60)
        self.trust = agent.syncer.trust
        self.events: queue.Queue[pb.WatchEvent] = queue.Queue()
        self.closed = False
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError:
            if not self.closed:  # our own cancel ends it; anything else is the test's failure
                raise

    def next_naming(self, version: int, timeout: float = 20.0) -> pb.WatchEvent:
        """The first event whose beacon names `version` (earlier ones are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if core.verify_beacon(event.beacon, self.trust).version == version:
                return event

    def versions_for(self, seconds: float) -> set[int]:
        """The versions named by the events of the next `seconds` (asserting none carries a bundle)."""
        seen: set[int] = set()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            assert not event.HasField("header") and not event.chunks
            seen.add(core.verify_beacon(event.beacon, self.trust).version)
        return seen

    def close(self) -> None:
        self.closed = True
        self.call.cancel()  # type: ignore[attr-defined]


class Fetches:
    """Counts the Fetch calls a door's client makes (the stream it spies on is passed through)."""

    def __init__(self, agent: Agent) -> None:
        self.count = 0
        client = agent.syncer.client
        real = client.stream

        def spy(method: str, request: Any, timeout: float) -> Any:
            if method.endswith("/Fetch"):
                self.count += 1
            return real(method, request, timeout)

        client.stream = spy  # type: ignore[method-assign]


def pushed(hub: HubThread) -> float:
    value = hub.hub.metrics.registry.get_sample_value("doorkeeper_bundles_pushed_total")  # type: ignore[union-attr]
    return float(value or 0.0)


def header_of(event: pb.WatchEvent) -> pb.BundleHeader:
    return pb.BundleHeader.FromString(event.header.header)


@pytest.fixture
def door(operator: Operator, tmp_path: Path) -> Iterator[Agent]:
    """Door `front` of site oak with one resident, synced (version 2)."""
    operator.add_site("oak")
    operator.add_person("oak", templates=[random_template(np.random.default_rng(1))])
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    assert agent.syncer.sync_once().outcome == "applied"
    yield agent
    agent.close()


# ------------------------------------------------------------------ what the hub sends
@both_stores
def test_a_change_rides_the_stream_and_the_door_applies_it_without_a_fetch(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    stream = Stream(door)
    try:
        held = door.whitelist.version
        first = stream.next_naming(held)
        assert not first.HasField("header")  # nothing to carry: the door holds the site's version
        version = operator.add_person("oak", templates=[random_template(np.random.default_rng(2))]).version
        event = stream.next_naming(version)
        h = header_of(event)
        assert (h.kind, h.from_version, h.to_version) == (pb.BUNDLE_KIND_DELTA, held, version)
        assert h.nonce == stream.nonce and h.device_id == door.syncer.identity.device_id
        assert h.effective_at == 0 and sum(len(c.data) for c in event.chunks) <= INLINE
        assert [c.index for c in event.chunks] == list(range(len(h.chunk_sha256)))
        assert pushed(hub) == 1

        fetches = Fetches(door)
        door.syncer.offer_pushed(event.header, event.chunks)
        assert door.syncer.sync_once().outcome == "applied"
        assert fetches.count == 0  # the stream carried it; only the Report went out
        site = hub.hub.store.get_site("oak")
        assert (door.whitelist.version, door.whitelist.state_digest) == (site.version, site.state_digest)
        assert hub.hub.store.latest_report(door.syncer.identity.device_id).version == version
        assert not door.syncer.behind and door.syncer.fresh_age_s() is not None
    finally:
        stream.close()


def test_a_door_that_does_not_ask_gets_beacons_alone(hub, operator: Operator, door: Agent) -> None:  # type: ignore[no-untyped-def]
    stream = Stream(door, inline_bytes=0)
    try:
        version = operator.add_person("oak", templates=[random_template(np.random.default_rng(2))]).version
        event = stream.next_naming(version)
        assert not event.HasField("header") and not event.chunks
        assert pushed(hub) == 0
    finally:
        stream.close()


def test_a_change_larger_than_asked_is_fetched_and_the_next_rides_on_from_there(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """The hub counts a version named without a bundle as the door's (it fetches it): the next
    small change comes as a delta from there."""
    stream = Stream(door)
    try:
        rng = np.random.default_rng(3)
        big = operator.call("ImportPersons", pb.ImportPersonsRequest(site="oak", persons=[  # ~1.3 KB each
            pb.AddPersonRequest(site="oak", name=f"Resident {i}", templates=[random_template(rng)],
                                consent="resident, signed form, ref 1")
            for i in range(60)]))
        big_version = big.version  # type: ignore[attr-defined]
        outcomes = {r.outcome for r in big.results}  # type: ignore[attr-defined]
        assert outcomes == {pb.ImportResult.OUTCOME_IMPORTED}, big
        event = stream.next_naming(big_version)
        assert not event.HasField("header")  # over 64 KiB of chunks: fetched, resumably
        fetches = Fetches(door)
        assert door.syncer.sync_once().outcome == "applied" and fetches.count == 1
        version = operator.add_person("oak", templates=[random_template(rng)]).version
        h = header_of(stream.next_naming(version))
        assert (h.from_version, h.to_version) == (big_version, version)
    finally:
        stream.close()


def test_a_stream_opened_behind_gets_the_delta_from_its_version_at_once(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """A door reopening its stream after a change it missed: the first event carries it."""
    held = door.whitelist.version
    version = operator.add_person("oak", templates=[random_template(np.random.default_rng(4))]).version
    stream = Stream(door)
    try:
        h = header_of(stream.next_naming(version))
        assert (h.from_version, h.to_version) == (held, version)
    finally:
        stream.close()


# ------------------------------------------------------------------ rollouts
@pytest.fixture
def doors(rhub, op: Operator, tmp_path: Path) -> Iterator[list[Agent]]:  # type: ignore[no-untyped-def]
    """Site oak (one resident) on the rollout hub, with doors door0 and door1 synced."""
    op.add_site("oak")
    op.add_person("oak", "Ana", cards=["CARDAna"])
    agents = [register_agent(op, "oak", f"door{i}", tmp_path / f"d{i}") for i in range(2)]
    for agent in agents:
        assert agent.syncer.sync_once().outcome == "applied"
    yield agents
    for agent in agents:
        agent.close()


def test_a_staged_change_rides_to_the_canary_only_and_to_the_rest_on_promotion(  # type: ignore[no-untyped-def]
        op: Operator, doors: list[Agent]) -> None:
    canary, held_door = doors
    streams: list[Stream] = []
    try:
        base = canary.whitelist.version
        op.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["door0"]))
        streams = [Stream(canary), Stream(held_door)]
        head = op.add_person("oak", "Cy", cards=["CARDCy"]).version
        h = header_of(streams[0].next_naming(head))
        assert (h.from_version, h.to_version) == (base, head)
        # The held door is told nothing new: every event names the base, none carries a bundle.
        assert streams[1].versions_for(2.5) == {base}  # beacons every 1 s on this hub
        assert held_door.syncer.sync_once().outcome == "up_to_date" and held_door.whitelist.version == base

        # A promotion for later, delivered early: named at once, but fetched (and held), never inlined.
        at = int(time.time()) + 3600
        held_door.syncer.heartbeat()  # its manifest says it honours effective times
        op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak", at=at, deliver_early=True))
        event = streams[1].next_naming(head)
        assert not event.HasField("header")
        assert held_door.syncer.sync_once().outcome == "held" and held_door.whitelist.version == base

        op.call("AbortRollout", pb.AbortRolloutRequest(site="oak", reason="test"))
    finally:
        for s in streams:
            s.close()


def test_a_promotion_rides_the_stream_to_the_held_doors(op: Operator, doors: list[Agent]) -> None:
    stream: Stream | None = None
    try:
        base = doors[1].whitelist.version
        op.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["door0"]))
        head = op.add_person("oak", "Cy", cards=["CARDCy"]).version
        stream = Stream(doors[1])
        assert stream.next_naming(base)
        op.call("PromoteRollout", pb.PromoteRolloutRequest(site="oak"))
        event = stream.next_naming(head)
        h = header_of(event)
        assert (h.from_version, h.to_version, h.effective_at) == (base, head, 0)
        fetches = Fetches(doors[1])
        doors[1].syncer.offer_pushed(event.header, event.chunks)
        assert doors[1].syncer.sync_once().outcome == "applied" and fetches.count == 0
        assert doors[1].whitelist.version == head
    finally:
        if stream is not None:
            stream.close()


# ------------------------------------------------------------------ what the door refuses
def _change_on_the_stream(operator: Operator, agent: Agent, seed: int) -> tuple[pb.WatchEvent, int]:
    stream = Stream(agent)
    try:
        version = operator.add_person("oak", templates=[random_template(np.random.default_rng(seed))]).version
        event = stream.next_naming(version)
        assert event.HasField("header")
        return event, version
    finally:
        stream.close()


def _tampered_chunk(event: pb.WatchEvent) -> pb.WatchEvent:
    bad = pb.WatchEvent()
    bad.CopyFrom(event)
    data = bytearray(bad.chunks[0].data)
    data[-1] ^= 1
    bad.chunks[0].data = bytes(data)
    return bad


def _forged_header(event: pb.WatchEvent) -> pb.WatchEvent:
    bad = pb.WatchEvent()
    bad.CopyFrom(event)
    sig = bytearray(bad.header.signature)
    sig[0] ^= 1
    bad.header.signature = bytes(sig)
    return bad


def _no_chunks(event: pb.WatchEvent) -> pb.WatchEvent:
    bad = pb.WatchEvent()
    bad.CopyFrom(event)
    del bad.chunks[:]
    return bad


@pytest.mark.parametrize("spoil", [_tampered_chunk, _forged_header, _no_chunks],
                         ids=["tampered-chunk", "forged-header", "chunks-missing"])
def test_a_pushed_bundle_that_does_not_verify_changes_nothing_and_the_door_fetches(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent, spoil: Any) -> None:
    event, _ = _change_on_the_stream(operator, door, 5)
    before = (door.whitelist.version, door.whitelist.state_digest, door.whitelist.person_count)

    # With the hub gone the fetch fails too: nothing of the spoiled bundle is applied or staged.
    hub.stop()
    door.syncer.offer_pushed(spoil(event).header, spoil(event).chunks)
    assert door.syncer.sync_once().outcome == "unreachable"
    assert (door.whitelist.version, door.whitelist.state_digest, door.whitelist.person_count) == before
    assert door.syncer.staging.load_header() is None
    assert door.syncer.state.refused == {} and door.syncer.manifest().refused_version == 0


@pytest.mark.parametrize("spoil", [_tampered_chunk, _forged_header, _no_chunks],
                         ids=["tampered-chunk", "forged-header", "chunks-missing"])
def test_the_fetch_after_a_spoiled_pushed_bundle_brings_the_real_one(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent, spoil: Any) -> None:
    event, version = _change_on_the_stream(operator, door, 6)
    fetches = Fetches(door)
    door.syncer.offer_pushed(spoil(event).header, spoil(event).chunks)
    assert door.syncer.sync_once().outcome == "applied" and fetches.count == 1
    site = hub.hub.store.get_site("oak")
    assert (door.whitelist.version, door.whitelist.state_digest) == (version, site.state_digest)
    assert door.syncer.state.refused == {}  # the spoiled copy is not a refusal: the fetch answered


def test_a_bundle_issued_to_another_door_is_not_applied(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent, tmp_path: Path) -> None:
    other = register_agent(operator, "oak", "back", tmp_path / "back")
    try:
        assert other.syncer.sync_once().outcome == "applied"
        event, version = _change_on_the_stream(operator, other, 7)  # sealed to `back`, not `front`
        fetches = Fetches(door)
        door.syncer.offer_pushed(event.header, event.chunks)
        assert door.syncer.sync_once().outcome == "applied" and fetches.count == 1
        assert door.whitelist.version == version
    finally:
        other.close()


def test_a_pushed_delta_that_does_not_start_at_the_doors_version_is_fetched_past(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """A stream opened claiming an older version than the door holds (a door restored from a
    backup, say): the delta it carries starts elsewhere; the door fetches its own."""
    held = door.whitelist.version
    version = operator.add_person("oak", templates=[random_template(np.random.default_rng(8))]).version
    stream = Stream(door, current_version=held - 1)
    try:
        event = stream.next_naming(version)
        assert (header_of(event).from_version, header_of(event).to_version) == (held - 1, version)
    finally:
        stream.close()
    fetches = Fetches(door)
    door.syncer.offer_pushed(event.header, event.chunks)
    assert door.syncer.sync_once().outcome == "applied" and fetches.count == 1
    assert door.whitelist.version == version and door.syncer.state.refused == {}


def test_a_door_that_wants_a_snapshot_ignores_pushed_deltas(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    event, version = _change_on_the_stream(operator, door, 9)
    door.syncer.state.resync_wanted = True
    kinds: list[int] = []
    client = door.syncer.client
    real = client.stream

    def spy(method: str, request: Any, timeout: float) -> Iterator[Any]:
        for part in real(method, request, timeout):
            if part.WhichOneof("part") == "header":
                kinds.append(pb.BundleHeader.FromString(part.header.header).kind)
            yield part

    client.stream = spy  # type: ignore[method-assign]
    door.syncer.offer_pushed(event.header, event.chunks)
    assert door.syncer.sync_once().outcome == "applied"
    assert kinds == [pb.BUNDLE_KIND_SNAPSHOT] and door.whitelist.version == version


# ------------------------------------------------------------------ the agent's own loop
def test_the_agents_watch_applies_changes_from_the_stream(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """`Syncer.watch` with a sync pass per wake-up, as the agent runs it: three changes, no Fetch."""
    fetches = Fetches(door)
    stop = threading.Event()
    passes: list[str] = []

    def on_version(_version: int) -> None:
        passes.append(door.syncer.sync_once().outcome)

    watcher = threading.Thread(target=door.syncer.watch, args=(stop, on_version), daemon=True)
    watcher.start()
    try:
        rng = np.random.default_rng(10)
        for _ in range(3):
            version = operator.add_person("oak", templates=[random_template(rng)]).version
            assert wait_for(lambda v=version: door.whitelist.version == v, timeout=30)  # type: ignore[misc]
        device_id = door.syncer.identity.device_id
        assert wait_for(lambda: hub.hub.store.latest_report(device_id).version == version)
        assert fetches.count == 0 and passes.count("applied") == 3
        assert pushed(hub) >= 3
    finally:
        stop.set()
        watcher.join(10)


def test_a_snapshot_or_an_unreadable_header_on_the_stream_is_not_used(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """The hub puts only deltas on the stream; a door fetches rather than take anything else
    from it (here: a real snapshot issued to this door, and a header that does not parse)."""
    version = operator.add_person("oak", templates=[random_template(np.random.default_rng(11))]).version
    meta = hub.hub.publisher.bundle_for(hub.hub.store.get_site("oak").site_id, 0, True)
    device = hub.hub.store.get_device(door.syncer.identity.device_id)
    snapshot_header = hub.hub.publisher.issue(meta, device, b"")
    chunks = [pb.Chunk(index=i, data=hub.hub.store.read_chunk(meta.bundle_id, i))
              for i in range(len(meta.chunk_length))]
    unreadable = pb.SignedBundleHeader(header=b"\xff\xff", signature=b"")
    for header in (snapshot_header, unreadable):
        fetches = Fetches(door)
        door.syncer.offer_pushed(header, chunks)
        before = door.whitelist.version
        assert door.syncer.sync_once().ok and fetches.count == 1
        assert door.whitelist.version == version and before <= version


def test_a_store_failure_while_inlining_costs_the_door_a_fetch_never_the_beacon(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent, monkeypatch) -> None:
    from doorkeeper.hub.store import Unavailable

    def unavailable(bundle_id: str, index: int) -> bytes:
        raise Unavailable("the database is unavailable (test); retry")

    monkeypatch.setattr(hub.hub.store, "read_chunk", unavailable)
    stream = Stream(door)
    try:
        version = operator.add_person("oak", templates=[random_template(np.random.default_rng(12))]).version
        event = stream.next_naming(version)
        assert not event.HasField("header") and not event.chunks  # the beacon alone
        monkeypatch.undo()
        stream.versions_for(1.5)  # the stream lives on: beacons every 1 s, none carrying a bundle
        assert stream.call.is_active()  # type: ignore[attr-defined]
    finally:
        stream.close()
    assert door.syncer.sync_once().outcome == "applied" and door.whitelist.version == version


def test_a_rollout_started_while_the_delta_is_built_does_not_ride_to_a_held_door(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent, tmp_path: Path) -> None:
    """The hub reads the site (no rollout), then builds the delta to it; a rollout started and a
    staged change committed in between must not reach a door outside the stage on the stream
    (a Fetch re-reads its target when the bundle it built goes past it; so must the stream)."""
    canary = register_agent(operator, "oak", "back", tmp_path / "back")
    stream: Stream | None = None
    try:
        assert canary.syncer.sync_once().outcome == "applied"
        held = door.whitelist.version
        publisher = hub.hub.publisher
        real = publisher.bundle_for
        staged: list[int] = []

        def racing(site_id: str, current_version: int, want_snapshot: bool = False):  # type: ignore[no-untyped-def]
            if not staged:  # the first build: a rollout begins and stages a change meanwhile
                operator.call("StartRollout", pb.StartRolloutRequest(site="oak", canary=["back"]))
                template = random_template(np.random.default_rng(21))
                staged.append(operator.add_person("oak", templates=[template]).version)
            return real(site_id, current_version, want_snapshot)

        publisher.bundle_for = racing  # type: ignore[method-assign]
        stream = Stream(door)
        assert stream.next_naming(held)
        base = operator.add_person("oak", templates=[random_template(np.random.default_rng(20))]).version
        event = stream.next_naming(base)
        assert staged, "the build did not run on the stream's path"
        carried = header_of(event).to_version if event.HasField("header") else None
        door.syncer.offer_pushed(event.header, event.chunks)
        door.syncer.sync_once()
        # Never the staged change, neither on the stream nor applied.
        assert (carried in (None, base), door.whitelist.version) == (True, base), (carried, staged)
    finally:
        if stream is not None:
            stream.close()
        canary.close()


def test_a_build_that_fails_on_the_stream_still_sends_the_beacon(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """Whatever goes wrong putting a bundle on an event costs the door a Fetch, never the event
    (here the build fails, e.g. a full disk or a store error)."""
    def failing(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("no space left on device")

    hub.hub.publisher.bundle_for = failing  # type: ignore[method-assign]
    stream = Stream(door)
    try:
        assert stream.next_naming(door.whitelist.version)
        version = operator.add_person("oak", templates=[random_template(np.random.default_rng(22))]).version
        event = stream.next_naming(version, timeout=10)
        assert not event.HasField("header")
    finally:
        stream.close()


def test_a_door_revoked_while_its_delta_is_built_gets_no_bundle(  # type: ignore[no-untyped-def]
        hub, operator: Operator, door: Agent) -> None:
    """The stream ends without the event: nothing sealed to a revoked door leaves the hub."""
    publisher = hub.hub.publisher
    real = publisher.bundle_for
    revoked: list[bool] = []

    def revoking(site_id: str, current_version: int, want_snapshot: bool = False):  # type: ignore[no-untyped-def]
        if not revoked:
            operator.call("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="front"))
            revoked.append(True)
        return real(site_id, current_version, want_snapshot)

    publisher.bundle_for = revoking  # type: ignore[method-assign]
    stream = Stream(door)
    try:
        held = door.whitelist.version
        assert stream.next_naming(held)
        version = operator.add_person("oak", templates=[random_template(np.random.default_rng(23))]).version
        assert wait_for(lambda: bool(revoked) and not stream.call.is_active(), timeout=20)  # type: ignore[attr-defined]
        seen = []
        while not stream.events.empty():
            seen.append(stream.events.get())
        assert all(not e.HasField("header") for e in seen)
        assert version not in {core.verify_beacon(e.beacon, stream.trust).version for e in seen}
    finally:
        stream.close()
