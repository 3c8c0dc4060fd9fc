"""`doorkeeper demo --console`: after the demo, its hub runs again with a console on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import FACES_DIR

pytestmark = pytest.mark.slow


def test_demo_leaves_its_hub_running_with_a_console(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    argv = [sys.executable, "-m", "doorkeeper", "demo", "--quick", "--console", "--dir", str(work)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, DOORKEEPER_FACES_DIR=str(FACES_DIR), PYTHONUNBUFFERED="1"))
    found: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("console login (works once): "):
                found.append(line.split(": ", 1)[1].strip())
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(300), "the demo printed no console login URL"
        url = found[0]
        base = url.split("/login", 1)[0]
        assert base.startswith("http://127.0.0.1:")
        with httpx.Client(timeout=30) as browser:
            assert browser.get(url).status_code == 303
            overview = browser.get(base + "/")
            assert overview.status_code == 200
            assert ">oak</a>" in overview.text  # the demo's site, read from its running hub
            assert browser.get(url).status_code == 403  # the login link works once
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    reader.join(10)
    assert code == 0
    assert not work.exists() or not any(work.iterdir())  # the demo cleans up after the console
