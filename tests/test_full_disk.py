"""A door whose disk is full at start still starts and decides on its last whitelist.

For real: the agent's data directory lives on a small tmpfs that is actually full (a
filler file took the last byte), and a real `doorkeeper agent run` process decides
cards from a reader FIFO with a sim door (whose state file, standing in for hardware,
lives elsewhere). When space returns, the decisions that could not be written reach the
hub as one gap marker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from doorkeeper.tools.cli.logs import generate_owner_key
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import doorkeeper_cmd, open_agent, register_agent, wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    assert shutil.disk_usage(mount).free == 0
    return filler


def test_a_door_full_at_start_decides_on_its_last_whitelist(  # type: ignore[no-untyped-def]
        hub, operator, small_disk: Path, tmp_path: Path) -> None:
    operator.add_site("oak")
    owner = generate_owner_key(tmp_path / "owner.key")
    operator.call("SetOwnerKey", pb.SetOwnerKeyRequest(site="oak", public_key=owner.public_key))
    operator.add_person("oak", name="Ann", cards=["CARD0001"])
    data = small_disk / "a"
    agent = register_agent(operator, "oak", "front", data)
    assert agent.syncer.sync_once().ok
    version = agent.whitelist.version
    agent.close()
    filler = _fill(small_disk)
    cam = tmp_path / "cam"
    cam.mkdir()
    cv2.imwrite(str(cam / "00.png"), np.zeros((240, 320, 3), np.uint8))  # no face: no decision
    cards = tmp_path / "cards"
    os.mkfifo(cards)
    proc = subprocess.Popen(
        doorkeeper_cmd("agent", "run", "--data", str(data), "--camera", str(cam), "--loop-camera",
                       "--card-reader", str(cards), "--metrics-listen", "off", "--upload-interval", "3600",
                       "--door-option", f"state_dir={tmp_path / 'doors'}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # The whole test disk is 1 MiB: the outbox's free-space floor would refuse every record.
        env=dict(os.environ, DOORKEEPER_AGENT__OUTBOX__MIN_FREE_BYTES="0"),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()

    def present(card: str) -> None:
        fds: list[int] = []

        def reader_there() -> bool:  # the FIFO opens for writing once the agent reads it
            try:
                fds.append(os.open(cards, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                return proc.poll() is not None
            return True

        wait_for(reader_there, 120)
        assert fds, "the agent is not running:\n" + "".join(lines)
        os.write(fds[0], card.encode() + b"\n")
        os.close(fds[0])

    def seen(text: str, times: int = 1) -> bool:
        return sum(text in x for x in list(lines)) >= times

    try:
        assert wait_for(lambda: seen("whitelist opened READ-ONLY") or proc.poll() is not None, 120)
        assert proc.poll() is None, "".join(lines)
        present("CARD0001")
        granted = "Verification successful: door front"
        assert wait_for(lambda: seen(granted) or proc.poll() is not None, 120), lines
        present("NOPE0002")
        assert wait_for(lambda: seen("door front: denied") or proc.poll() is not None, 120), lines
        assert proc.poll() is None, "".join(lines)
        # (the recorder thread writes decisions to the outbox after they are logged)
        assert wait_for(lambda: seen("decision not written to the outbox: disk full", 2), 60), lines
        assert seen(f"version {version}")
        assert not seen("Traceback")
        # A decision shows twice in the output (the log line and the sim door's): wait for one
        # more than now, or SIGTERM could come before the card below was decided.
        grants = sum(granted in x for x in list(lines))
        filler.unlink()  # space returns: the next decision is written after one gap marker
        present("CARD0001")
        assert wait_for(lambda: seen(granted, grants + 1), 120), lines
        proc.send_signal(signal.SIGTERM)  # the final upload delivers the chain
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    assert "actuation failed" not in "".join(lines)  # the sim door unlatched for the card
    status = hub.hub.logs.ingest.device_status(agent.syncer.identity.device_id)
    assert status is not None and (status.gaps, status.unwritten, status.watermark) == (1, 2, 2), status


def test_a_read_only_whitelist_takes_updates_again_when_space_returns(  # type: ignore[no-untyped-def]
        hub, operator, small_disk: Path) -> None:
    operator.add_site("oak")
    operator.add_person("oak", name="Ann", cards=["CARD0001"])
    data = small_disk / "a"
    register_agent(operator, "oak", "front", data).close()
    agent = open_agent(data)
    assert agent.syncer.sync_once().ok
    before = (agent.whitelist.version, agent.whitelist.state_digest)
    agent.close()
    filler = _fill(small_disk)
    agent = open_agent(data)  # full disk: the whitelist opens read-only
    try:
        assert agent.whitelist.read_only and agent.whitelist.person_count == 1
        added = operator.add_person("oak", name="Bob", cards=["CARD0002"])
        result = agent.syncer.sync_once()
        assert not result.ok and "local storage" in result.detail
        assert (agent.whitelist.version, agent.whitelist.state_digest) == before
        filler.unlink()
        assert agent.syncer.sync_once().outcome == "applied"
        assert not agent.whitelist.read_only and agent.whitelist.version == added.version
        assert agent.whitelist.person(added.person_id) is not None
    finally:
        agent.close()
