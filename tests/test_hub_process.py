"""`doorkeeper hub serve` as a real process: its metrics endpoint and its health service."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from doorkeeper.hub.server import init_hub
from tests.harness import Operator, free_port, spawn_hub, wait_for


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def test_hub_serves_its_named_metrics_and_health(tmp_path: Path) -> None:
    init_hub(tmp_path / "hub")
    port, metrics_port = free_port(), free_port()
    hub = spawn_hub(tmp_path / "hub", port, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    try:
        op = Operator(f"127.0.0.1:{port}", tmp_path / "hub" / "operator.key")
        op.add_site("oak")
        op.add_device("oak", "front")
        assert wait_for(lambda: 'doorkeeper_site_version{site="oak"} 1.0' in _metrics(metrics_port))
        body = _metrics(metrics_port)
        for name in ("doorkeeper_connected_devices", "doorkeeper_devices_in_sync",
                     "doorkeeper_rollout_progress", "doorkeeper_bundles_built_total",
                     "doorkeeper_bundles_pushed_total", "doorkeeper_rpc_errors_total",
                     "process_resident_memory_bytes"):
            assert name in body, name
        health = subprocess.run([sys.executable, "-m", "doorkeeper.tools.healthcheck", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        hub.terminate()
        hub.wait(30)
    assert hub.returncode == 0  # SIGTERM is a clean stop
