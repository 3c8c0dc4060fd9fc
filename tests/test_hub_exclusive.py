"""One hub per port and per data directory; `hub init` only makes a hub where none lives.

Real processes: a running `doorkeeper hub serve`, and a second one started against its
port or its data directory, which must refuse with one line and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from doorkeeper.hub.server import init_hub
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import Operator, doorkeeper_cmd, free_port, spawn_hub


def _second_hub(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """`hub serve` that must refuse at once; one that serves instead is stopped and fails."""
    proc = subprocess.Popen(
        doorkeeper_cmd("hub", "serve", "--data", str(data_dir), "--listen", f"127.0.0.1:{port}",
                       "--metrics-listen", "off"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the second hub served instead of refusing: {err[-300:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_line_refusal(result: subprocess.CompletedProcess[str], words: str) -> None:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr


@pytest.fixture
def running(tmp_path: Path):  # type: ignore[no-untyped-def]
    init_hub(tmp_path / "a")
    port = free_port()
    proc = spawn_hub(tmp_path / "a", port, "--metrics-listen", "off")
    op = Operator(f"127.0.0.1:{port}", tmp_path / "a" / "operator.key")
    op.add_site("oak")
    yield proc, port, op
    proc.kill()
    proc.wait(30)


def test_a_second_hub_on_the_same_port_is_refused(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, port, op = running
    init_hub(tmp_path / "b")
    _one_line_refusal(_second_hub(tmp_path / "b", port), "port is in use")
    # The first hub alone answers: every call sees its site.
    for _ in range(6):
        assert [s.name for s in op.call("ListSites", pb.ListSitesRequest()).sites] == ["oak"]
    assert proc.poll() is None


def test_a_running_hub_shares_its_port_with_nobody(running) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = running
    other = grpc.server(ThreadPoolExecutor(1))  # gRPC's default: SO_REUSEPORT on
    try:
        with pytest.raises(RuntimeError):
            other.add_insecure_port(f"127.0.0.1:{port}")
    finally:
        other.stop(None)


def test_a_second_hub_on_the_same_data_directory_is_refused(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, _, _ = running
    result = _second_hub(tmp_path / "a", free_port())
    _one_line_refusal(result, f"in use by another running hub (pid {proc.pid})")
    # A hub killed outright leaves no stale lock: the next one starts.
    proc.kill()
    proc.wait(30)
    port = free_port()
    again = spawn_hub(tmp_path / "a", port, "--metrics-listen", "off")
    try:
        op = Operator(f"127.0.0.1:{port}", tmp_path / "a" / "operator.key")
        assert [s.name for s in op.call("ListSites", pb.ListSitesRequest()).sites] == ["oak"]
    finally:
        again.terminate()
        again.wait(30)


def test_hub_init_refuses_a_directory_that_is_not_a_hubs(tmp_path: Path) -> None:
    foreign = tmp_path / "etc"
    foreign.mkdir(mode=0o755)
    (foreign / "passwd").write_text("root:x:0:0\n")
    foreign.chmod(0o755)
    result = subprocess.run(doorkeeper_cmd("hub", "init", "--data", str(foreign)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "not empty and holds no hub" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["passwd"]
    assert (foreign.stat().st_mode & 0o777) == 0o755


def test_hub_init_takes_a_new_or_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "hub.toml").write_text("")  # a config written first is allowed
    for where in (empty, tmp_path / "new" / "hub"):
        result = subprocess.run(doorkeeper_cmd("hub", "init", "--data", str(where)),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert (where / "keys" / "hub.sign.key").exists()
        assert (os.stat(where).st_mode & 0o777) == 0o700
