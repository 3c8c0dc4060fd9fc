"""`doorkeeper agent run` as a real process: metrics endpoint, SIGTERM loses no decision."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
from doorkeeper.agent.face.quality import enrol
from doorkeeper.tools.cli.logs import generate_owner_key
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import templates as tmpl
from tests.harness import doorkeeper_cmd, free_port, register_agent

DECISION = re.compile(r"Verification successful: door|door front: (denied|unknown|shadow) ")


def decision_logged(line: str) -> bool:
    """A decision's INFO log line: JSON (the agent's output is not a terminal) or text."""
    try:
        record = json.loads(line)
    except ValueError:
        return " INFO " in line and bool(DECISION.search(line))
    return record.get("level") == "info" and bool(DECISION.search(record.get("message", "")))


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(EngineConfig())


def test_sigterm_records_every_decision_and_metrics_are_served(  # type: ignore[no-untyped-def]
        hub, operator, faces_dir: Path, engine: FaceEngine, tmp_path: Path) -> None:
    operator.add_site("oak")
    owner = generate_owner_key(tmp_path / "owner.key")
    operator.call("SetOwnerKey", pb.SetOwnerKeyRequest(site="oak", public_key=owner.public_key))
    template = enrol(engine, [faces_dir / "obama" / "obama1.jpg"])[0]
    person = operator.add_person("oak", templates=[tmpl.encode(template.embedding, template.model_id)])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    assert agent.syncer.sync_once().ok
    agent.close()
    cam = tmp_path / "cam"
    cam.mkdir()
    # Alternating faces: every switch is a new episode and a new decision.
    frames = ["obama/obama2.jpg", "biden/biden1.jpg", "obama/obama3.jpg", "kit_harington/kit1.jpg"]
    for i, src in enumerate(frames):
        shutil.copy(faces_dir / src, cam / f"{i:02d}.jpg")
    port = free_port()
    proc = subprocess.Popen(
        doorkeeper_cmd("agent", "run", "--data", str(tmp_path / "a"), "--camera", str(cam), "--loop-camera",
                       "--confirm-frames", "1", "--upload-interval", "3600", "--metrics-listen",
                       f"127.0.0.1:{port}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if sum(map(decision_logged, lines)) >= 5:
                break
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for name in ("doorkeeper_decisions_total", "doorkeeper_decision_latency_seconds_bucket",
                     "doorkeeper_whitelist_version", "doorkeeper_sync_lag_seconds",
                     "doorkeeper_outbox_backlog_records", "doorkeeper_upload_errors_total",
                     "doorkeeper_bad_frames_total", "doorkeeper_stale"):
            assert name in body, name
        granted = re.search(r'doorkeeper_decisions_total\{credential="face",result="granted"\} (\S+)', body)
        assert granted and float(granted.group(1)) >= 1
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        lines.extend(rest.splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    # Lines may be printed twice (stdout echo and log): count the log lines only.
    decided = sum(map(decision_logged, lines))
    assert decided >= 5
    # Who entered when is for the sealed entry log only, not the terminal's log lines.
    assert person.person_id not in "".join(lines)
    # The final upload on SIGTERM delivered every decision the door made.
    status = hub.hub.devices.status("oak")[0]
    hub.hub.logs.annotate(status)
    assert status.logs_watermark == decided, (status.logs_watermark, decided)
    from doorkeeper.agent.doors import read_door_state

    assert read_door_state(tmp_path / "a" / "doors", "front").locked  # fails secure on SIGTERM


def test_missing_or_corrupt_models_stop_the_agent_with_one_line(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    cam = tmp_path / "cam"
    cam.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    (models / "det_10g.onnx").write_bytes(b"not onnx")
    (models / "w600k_r50.onnx").write_bytes(b"not onnx either")
    for args in (["--models", str(tmp_path / "nowhere")], ["--models", str(models)]):
        r = subprocess.run(doorkeeper_cmd("agent", "run", "--data", str(tmp_path / "a"), "--camera", str(cam),
                                          "--metrics-listen", "off", *args),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert len(errors) == 1, r.stderr
