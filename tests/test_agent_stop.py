"""Stopping a door agent while its hub is unreachable: SIGTERM ends the process promptly (its
replacement can bind the metrics port), every decision stays in the outbox for the next start,
and a grant whose unlock was thrown away at stop is recorded as not carried out."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from doorkeeper.agent.entries.outbox import Outbox
from doorkeeper.agent.sync.identity import AgentFiles
from doorkeeper.agent.sync.syncer import AgentState
from doorkeeper.tools.cli.logs import generate_owner_key
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import HubThread, Operator, doorkeeper_cmd, free_port, register_agent, wait_for

# Generous: a stop that waits on the unreachable hub takes 5 s and more; a bounded one well
# under a second. The measured time is printed (pytest -s) for the report.
STOP_DEADLINE_S = 4.0


def _decisions(port: int) -> float:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(v) for v in re.findall(r"^doorkeeper_decisions_total\{[^}]*\} (\S+)$", body, re.M))


def _port_free(port: int) -> bool:
    """Whether a replacement metrics server could bind the port now (it sets SO_REUSEADDR,
    as http.server does, so our scrapes' TIME_WAIT connections do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_sigterm_with_the_hub_unreachable_stops_promptly_and_keeps_every_record(tmp_path: Path) -> None:
    hub = HubThread(tmp_path / "hub").start()
    operator = Operator(hub.address, hub.data_dir / "operator.key")
    operator.add_site("oak")
    owner = generate_owner_key(tmp_path / "owner.key")
    operator.call("SetOwnerKey", pb.SetOwnerKeyRequest(site="oak", public_key=owner.public_key))
    operator.add_person("oak", cards=["CAFE0001"])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    assert agent.syncer.sync_once().ok
    agent.close()
    hub.stop()  # from here on the hub is unreachable (connection refused)
    camera = tmp_path / "cam"
    camera.mkdir()
    cards = tmp_path / "cards"
    cards.write_text("CAFE0001\nDEAD0002\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORKEEPER_AGENT")}
    proc = subprocess.Popen(
        doorkeeper_cmd("agent", "run", "--data", str(tmp_path / "a"), "--camera", f"hotfolder:{camera}",
                       "--card-reader", str(cards), "--metrics-listen", f"127.0.0.1:{port}",
                       "--poll-interval", "1", "--upload-interval", "1", "--heartbeat-interval", "1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(env, PYTHONUNBUFFERED="1"))
    try:
        state = tmp_path / "a" / "state.json"
        started = time.time()
        # Running, deciding, and failing to reach the hub: both card decisions are made and
        # the sync loop has tried (and failed) since the start.
        assert wait_for(lambda: AgentState.load(state).last_attempt > started
                        and not AgentState.load(state).hub_reachable and _decisions(port) == 2, 90)
        assert not _port_free(port)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_DEADLINE_S)
        stopped_in = time.monotonic() - sent
        alive = proc.poll() is None
        print(f"agent stopped {stopped_in:.2f}s after SIGTERM (hub unreachable)")
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert not alive, f"still running {STOP_DEADLINE_S}s after SIGTERM:\n{err[-3000:]}"
    assert proc.returncode == 0, err[-3000:]
    assert _port_free(port)  # a replacement can serve metrics at once
    files = AgentFiles(tmp_path / "a")
    outbox = Outbox(files.outbox, device_id=files.load_identity().device_id, owner_key=lambda: None)
    try:
        stats = outbox.stats()
        assert stats.backlog_records == 2 and stats.unwritten_total == 0  # nothing lost
    finally:
        outbox.close()


def test_stop_never_clears_its_flag_nor_closes_stores_under_a_running_worker(tmp_path: Path) -> None:
    from doorkeeper.agent.sync.service import SyncService

    hub = HubThread(tmp_path / "hub").start()
    try:
        operator = Operator(hub.address, hub.data_dir / "operator.key")
        operator.add_site("oak")
        register_agent(operator, "oak", "front", tmp_path / "a").close()
        service = SyncService(tmp_path / "a")
        release = threading.Event()
        seen: list[bool] = []

        def stuck() -> None:  # a worker busy in something that does not watch the stop flag
            release.wait(120)
            seen.append(service.stop.is_set())

        service._spawn("stuck", stuck)
        closer = threading.Thread(target=service.close, kwargs={"deadline_s": 0.5})
        closer.start()
        flag: list[bool] = []
        while closer.is_alive():
            flag.append(service.stop.is_set())
            time.sleep(0.01)
        assert flag and all(flag[1:]), "the stop flag was cleared while a worker still ran"
        assert service.stop.is_set()
        assert service.outbox.stats().backlog_records == 0  # its stores were left open for it
        release.set()
        service._threads[-1].join(30)
        assert seen == [True]
        service.outbox.close()
        service.whitelist.close()
    finally:
        hub.stop()


def test_watch_reconnects_with_a_low_jittered_cap(tmp_path: Path) -> None:
    """With the hub gone, the waits between watch reconnects stay under the healthy cap and
    differ from each other; the old loop doubled up to 30 s."""
    hub = HubThread(tmp_path / "hub").start()
    operator = Operator(hub.address, hub.data_dir / "operator.key")
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    hub.stop()
    waits: list[float] = []
    done = threading.Event()

    class Recording:  # a stop event that records each reconnect wait instead of sleeping it
        def is_set(self) -> bool:
            return done.is_set()

        def wait(self, timeout: float | None = None) -> bool:
            if timeout is None:
                return done.wait()
            waits.append(timeout)
            if len(waits) >= 12:
                done.set()
            return done.is_set()

    try:
        agent.syncer.watch(Recording(), lambda _v: None)  # type: ignore[arg-type]
    finally:
        done.set()
        agent.close()
    from doorkeeper.agent.sync.watch import ReconnectBackoff

    assert len(waits) == 12
    assert max(waits) <= ReconnectBackoff().healthy_cap_s, waits

    assert len(set(waits)) > 1
    late = ReconnectBackoff(clock=iter([0.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0]).__next__)
    assert max(late.next() for _ in range(6)) <= late.outage_cap_s  # long outage: still capped
