"""Power cuts and kills: hub killed mid-snapshot, agent killed mid-apply, deleted bytes gone."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import numpy as np

from doorkeeper.agent.sync.syncer import grpc_unavailable
from doorkeeper.hub.server import init_hub
from doorkeeper.runtime import faults
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import digest
from tests.harness import (
    Operator,
    doorkeeper_cmd,
    free_port,
    open_agent,
    random_template,
    register_agent,
    spawn_hub,
    wait_for,
)


def _add_many(op: Operator, site: str, n: int, rng: np.random.Generator) -> None:
    for _ in range(n):
        op.add_person(site, templates=[random_template(rng)])


def test_hub_killed_mid_snapshot_then_agent_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    init_hub(tmp_path / "hub")
    port = free_port()
    hub = spawn_hub(tmp_path / "hub", port, "--chunk-bytes", "16384")
    try:
        op = Operator(f"127.0.0.1:{port}", tmp_path / "hub" / "operator.key")
        op.add_site("oak")
        _add_many(op, "oak", 120, rng)  # ~130 kB: about 8 chunks of 16 kB
        agent = register_agent(op, "oak", "front", tmp_path / "a")
        real = agent.syncer.client.stream
        killed = {"done": False}

        def kill_after_two_chunks(method, request, timeout):  # type: ignore[no-untyped-def]
            seen = 0
            for part in real(method, request, timeout):
                yield part
                if part.WhichOneof("part") == "chunk":
                    seen += 1
                if seen == 2 and not killed["done"]:
                    hub.send_signal(signal.SIGKILL)
                    hub.wait(10)
                    killed["done"] = True
                    raise grpc_unavailable("hub died mid-stream")

        agent.syncer.client.stream = kill_after_two_chunks  # type: ignore[method-assign]
        assert agent.syncer.sync_once().outcome == "unreachable"
        assert agent.whitelist.version == 0 and agent.whitelist.person_count == 0
        staged = agent.syncer.staging.payload_path.stat().st_size
        assert staged > 0

        hub = spawn_hub(tmp_path / "hub", port, "--chunk-bytes", "16384")
        requests: list[pb.FetchRequest] = []
        first_chunks: list[int] = []

        def spy(method, request, timeout):  # type: ignore[no-untyped-def]
            requests.append(request)
            for part in real(method, request, timeout):
                if part.WhichOneof("part") == "chunk" and len(first_chunks) < len(requests):
                    first_chunks.append(part.chunk.index)
                yield part

        agent.syncer.client.stream = spy  # type: ignore[method-assign]
        result = agent.syncer.sync_with_retries(attempts=10, max_wait_s=1)
        assert result.outcome == "applied", result
        assert requests[0].resume_from_chunk == 2
        assert first_chunks[0] == 2  # the restarted hub sent only what was missing
        assert agent.whitelist.person_count == 120
        assert agent.whitelist.compute_digest() == agent.whitelist.state_digest
        agent.close()
    finally:
        hub.kill()
        hub.wait(10)


def _state(db: Path) -> tuple[int, bytes, bytes, str]:
    conn = sqlite3.connect(db)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = int.from_bytes(meta.get("version", b""), "big")
        rows = conn.execute("SELECT person_id, record_hash FROM persons ORDER BY person_id").fetchall()
        recomputed = digest.state_digest(meta.get("config_hash", b""), [(p, bytes(h)) for p, h in rows])
        return version, bytes(meta.get("state_digest", b"")), recomputed, check
    finally:
        conn.close()


# Where each kill lands: inside the apply transaction (changes written, not committed), or
# just after COMMIT (before the WAL checkpoint). The agent holds still there (a fault point it
# honours only under pytest) until the test kills it, so every kill provably lands in its window.
WINDOWS = (("whitelist.apply:written", "old"), ("whitelist.apply:committed", "new"))


def test_agent_killed_mid_apply_keeps_old_or_new_never_a_mix(hub, operator, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    agent.close()
    db = tmp_path / "a" / "whitelist.db"
    iterations, landed = 6, []
    for i in range(iterations):
        point, expect = WINDOWS[i % len(WINDOWS)]
        before = _state(db)[0] if db.exists() else 0
        for _ in range(40):
            operator.add_person("oak", templates=[random_template(rng)])
        target = hub.hub.store.get_site("oak").version
        marker = tmp_path / f"fault-{i}"
        env = {**os.environ, faults.POINT_ENV: point, faults.MARKER_ENV: str(marker)}
        proc = subprocess.Popen(doorkeeper_cmd("agent", "sync", "--data", str(tmp_path / "a")),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            assert wait_for(lambda m=marker, p=proc: m.exists() or p.poll() is not None, timeout=120)
            assert marker.exists() and proc.poll() is None, f"{point}: the agent never reached it"
            assert marker.read_text().split() == [str(proc.pid), point]
            os.kill(proc.pid, signal.SIGKILL)
            landed.append(point)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        version, stored, recomputed, check = _state(db)
        assert check == "ok"
        assert version == (before if expect == "old" else target), (point, version, before, target)
        if version:
            assert stored == recomputed  # the stored digest describes exactly the rows present
    assert len(landed) == iterations  # every kill landed inside the window it claims
    # Whatever happened, a clean pass converges.
    agent = open_agent(tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        assert agent.whitelist.state_digest == hub.hub.store.get_site("oak").state_digest
    finally:
        agent.close()


def test_fault_points_are_inert_outside_tests(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An armed point does nothing without pytest's marker variable (a production process)."""
    monkeypatch.setenv(faults.POINT_ENV, "whitelist.apply:written")
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    faults.reached("whitelist.apply:written")  # returns: would hang forever if honoured


def test_removed_person_bytes_are_gone_from_agent_database(hub, operator, tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    operator.add_site("oak")
    keep = operator.add_person("oak", templates=[random_template(rng)])
    gone_template = random_template(rng)
    gone = operator.add_person("oak", templates=[gone_template], cards=["CARD7777"])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        db = tmp_path / "a" / "whitelist.db"
        conn = sqlite3.connect(db)
        sealed, rhash = conn.execute(
            "SELECT record_sealed, record_hash FROM persons WHERE person_id = ?", (gone.person_id,)
        ).fetchone()
        conn.close()
        files = [db, db.with_name("whitelist.db-wal")]

        def raw() -> bytes:
            return b"".join(f.read_bytes() for f in files if f.exists())

        assert bytes(sealed) in raw()
        # Templates are never stored in clear, not even while the person is on the list.
        assert gone_template.vector not in raw() and gone.person_id.encode() in raw()
        operator.remove_person(gone.person_id)
        assert agent.syncer.sync_once().outcome == "applied"
        data = raw()
        assert bytes(sealed) not in data
        assert bytes(sealed)[24:56] not in data  # not even a fragment of the ciphertext
        assert bytes(rhash) not in data
        assert gone.person_id.encode() not in data
        assert agent.whitelist.person(keep.person_id) is not None
    finally:
        agent.close()
