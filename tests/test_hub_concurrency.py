"""While a big snapshot builds, the hub keeps answering every other call.

Many doors fetching at once after a change all wait for one build of their site. They
must wait without holding the threads that authentication and unary calls need. Shown
by order of events, never by timing: the build is held until the unary calls are done.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from doorkeeper.agent.sync.hubclient import SYNC
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import register_agent, wait_for

# More waiting fetches than any default thread pool has threads (min(32, cores + 4)).
FETCHES = 40


def test_unary_calls_answer_while_a_snapshot_builds(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    for i in range(3):
        operator.add_person("oak", name=f"Resident {i}", cards=[f"CARD{i:04}"])
    agent = register_agent(operator, "oak", "front", tmp_path / "agent")
    publisher, store = hub.hub.publisher, hub.hub.store
    events: list[str] = []
    building, release = threading.Event(), threading.Event()
    real_build, real_take = publisher._build, store.spend_nonce
    taken = []

    def held_build(*args):  # type: ignore[no-untyped-def]
        building.set()
        release.wait(120)
        events.append("build finished")
        return real_build(*args)

    def counting_take(*args):  # type: ignore[no-untyped-def]
        ok = real_take(*args)
        taken.append(ok)
        return ok

    publisher._build = held_build  # type: ignore[method-assign]
    store.spend_nonce = counting_take  # type: ignore[method-assign]
    headers: list[int] = []

    def fetch() -> None:
        parts = agent.syncer.client.stream(SYNC + "Fetch", pb.FetchRequest(current_version=0), timeout=120)
        try:
            headers.extend(1 for part in parts if part.WhichOneof("part") == "header")
        except grpc.RpcError as exc:
            # The late change makes a newer snapshot; the older one's chunks are pruned
            # under the first fetches, which are told to retry (after their header).
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc

    fetchers = [threading.Thread(target=fetch) for _ in range(FETCHES)]
    try:
        fetchers[0].start()
        assert building.wait(30)
        for t in fetchers[1:]:
            t.start()
        # Every fetch is authenticated and waiting for the build (no assertion on time:
        # when waiting fetches hold the threads, this never happens and the calls below fail).
        wait_for(lambda: len(taken) >= FETCHES, timeout=30)
        sites = operator.call("ListSites", pb.ListSitesRequest())
        added = operator.add_person("oak", name="Late", cards=["CARD9999"])
        events.append("unary calls answered")
        assert [s.name for s in sites.sites] == ["oak"] and added.person_id  # type: ignore[attr-defined]
    finally:
        release.set()
        for t in fetchers:
            t.join(120)
        agent.close()
    # (the late change makes a second snapshot build after the first)
    assert events[:2] == ["unary calls answered", "build finished"]
    assert len(headers) == FETCHES  # every waiting fetch got its bundle after the build
