"""Deploy files (deploy/), the sd_notify client and the gRPC health probe.

What this machine can run is run for real: the bootstrap script end to end against a real TLS
hub process, the health probe against real hubs, sd_notify against a real AF_UNIX datagram
socket, `systemd-analyze verify`/`security --offline`, shellcheck, and the W^X claim of the
systemd units (the hub, an agent and the ONNX models under PR_SET_MDWE). Docker and a
Kubernetes API server are not available: the Dockerfiles, compose file and manifest are parsed
and checked against the repository (paths, CLI options, healthchecks, no inline secrets).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from doorkeeper.runtime import sdnotify
from doorkeeper.tools import healthcheck
from tests.harness import free_port, spawn_hub, wait_for

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BOOTSTRAP = DEPLOY / "compose-bootstrap.sh"
COMPOSE = DEPLOY / "compose.yaml"
K8S_HUB = DEPLOY / "k8s" / "hub.yaml"
UNITS = DEPLOY / "systemd"
DOCKERFILES = {"hub": DEPLOY / "hub" / "Dockerfile", "agent": DEPLOY / "agent" / "Dockerfile"}
HEALTH_MODULE = "doorkeeper.tools.healthcheck"

# Service keys of the compose specification (compose-spec/schema/compose-spec.json) that a
# file like ours may use; anything else is a typo that `docker compose` would reject.
COMPOSE_SERVICE_KEYS = {
    "build", "cap_add", "cap_drop", "command", "container_name", "depends_on", "devices",
    "entrypoint", "environment", "env_file", "group_add", "healthcheck", "image", "init", "labels",
    "logging", "networks", "ports", "read_only", "restart", "security_opt", "stop_grace_period",
    "stop_signal", "tmpfs", "user", "volumes", "working_dir",
}


# ------------------------------------------------------------------------------ helpers
def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S_HUB.read_text()) if d]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a systemd unit as (key, value) lists: keys like DeviceAllow repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path}: stray line {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_value(entries: list[tuple[str, str]], key: str) -> str | None:
    values = [v for k, v in entries if k == key]
    return values[-1] if values else None


def click_options(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in p.opts if opt.startswith("--")}


def used_options(argv: list[str]) -> set[str]:
    return {a for a in argv if a.startswith("--")}


# ------------------------------------------------------------------------------ compose
def test_compose_has_hub_one_shot_steps_and_three_agents() -> None:
    services = load_compose()["services"]
    assert set(services) == {"hub-init", "hub", "provision", "agent1", "agent2", "agent3"}
    for name, svc in services.items():
        unknown = set(svc) - COMPOSE_SERVICE_KEYS
        assert not unknown, f"{name}: keys outside the compose spec subset: {unknown}"
    assert services["hub-init"]["restart"] == "no" and services["provision"]["restart"] == "no"


def test_compose_start_order_waits_on_health_and_completion() -> None:
    s = load_compose()["services"]
    assert s["hub"]["depends_on"] == {"hub-init": {"condition": "service_completed_successfully"}}
    assert s["provision"]["depends_on"] == {"hub": {"condition": "service_healthy"}}
    for n in (1, 2, 3):
        deps = s[f"agent{n}"]["depends_on"]
        assert deps["hub"]["condition"] == "service_healthy"
        assert deps["provision"]["condition"] == "service_completed_successfully"


def test_compose_healthchecks_use_the_grpc_health_probe_and_agent_status() -> None:
    s = load_compose()["services"]
    hub_test = s["hub"]["healthcheck"]["test"]
    assert hub_test[:4] == ["CMD", "python", "-m", HEALTH_MODULE]
    assert "--tls-ca" in hub_test
    for n in (1, 2, 3):
        test = s[f"agent{n}"]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "doorkeeper", "agent", "status"]
        agent_cli = _agent_cli()
        assert used_options(test) <= click_options(agent_cli.commands["status"])


def test_compose_agents_play_their_own_read_only_camera_folder_with_a_simulated_door() -> None:
    s = load_compose()["services"]
    for n in (1, 2, 3):
        svc = s[f"agent{n}"]
        assert svc["entrypoint"] == ["compose-bootstrap.sh", "agent", f"door{n}"]
        cmd = svc["command"]
        assert cmd[cmd.index("--camera") + 1] == f"hotfolder:/cameras/door{n}"
        assert cmd[cmd.index("--door") + 1] == "sim"
        assert f"./cameras/door{n}:/cameras/door{n}:ro" in svc["volumes"]
        assert "ports" not in svc and "expose" not in svc


def test_compose_referenced_paths_exist_in_the_repository() -> None:
    data = load_compose()
    declared_volumes = set(data["volumes"])
    for name, svc in data["services"].items():
        build = svc["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).is_dir(), f"{name}: bind source {source} missing"
            else:
                assert source in declared_volumes, f"{name}: volume {source} not declared"
        if svc.get("entrypoint", [None])[0] == "compose-bootstrap.sh":
            # The script reaches the image through the Dockerfile's COPY.
            dockerfile = (context / build["dockerfile"]).read_text()
            assert "deploy/compose-bootstrap.sh /usr/local/bin/compose-bootstrap.sh" in dockerfile
    assert BOOTSTRAP.is_file() and os.access(BOOTSTRAP, os.X_OK)


def test_compose_holds_no_secrets_and_keeps_the_owner_key_away_from_doors_and_hub() -> None:
    text = COMPOSE.read_text()
    assert "--token" not in text and "dk1-" not in text
    assert not re.search(r"\b[0-9a-f]{32,}\b", text), "a key-like hex string is inline"
    for name, svc in load_compose()["services"].items():
        env = svc.get("environment", {})
        for key in env:
            assert not re.search(r"TOKEN|SECRET|PASSWORD|PRIVATE|_KEY$", key), f"{name}: {key}"
        mounts = [m.split(":")[0] for m in svc.get("volumes", [])]
        assert ("owner-key" in mounts) == (name == "provision"), name
        if name.startswith("agent"):
            assert "hub-data" not in mounts, "a door must not see the hub's keys"


def test_compose_hub_command_uses_real_hub_serve_options() -> None:
    from doorkeeper.tools.cli.hub import hub

    cmd = load_compose()["services"]["hub"]["command"]
    assert cmd[:2] == ["hub", "serve"]
    assert used_options(cmd) <= click_options(hub.commands["serve"])  # type: ignore[attr-defined]


def test_compose_agent_command_uses_real_agent_run_options() -> None:
    run = _agent_cli().commands["run"]
    services = load_compose()["services"]
    agents = [name for name in services if name.startswith("agent")]
    assert agents
    for name in agents:
        # The bootstrap entrypoint passes these on to `doorkeeper agent run`.
        missing = used_options(services[name]["command"]) - click_options(run)
        assert not missing, f"{name}: `doorkeeper agent run` does not take {sorted(missing)}"


def _agent_cli() -> click.Group:
    from doorkeeper.tools.cli.agent import agent

    return agent


# ------------------------------------------------------------------------------ Dockerfiles
@pytest.mark.parametrize("role", ["hub", "agent"])
def test_dockerfile_builds_from_python_slim_and_runs_doorkeeper_as_non_root(role: str) -> None:
    instructions = dockerfile_instructions(DOCKERFILES[role])
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    froms = [a for w, a in instructions if w == "FROM"]
    assert froms and all(f.split()[0] in ("${PYTHON_IMAGE}", "python:3.11-slim") for f in froms)
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim"
    runs = " ".join(a for w, a in instructions if w == "RUN")
    assert "pip install --no-cache-dir" in runs
    final = final_stage(instructions)
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0
    assert ("VOLUME", '["/data"]') in final
    entry = [a for w, a in final if w == "ENTRYPOINT"]
    assert entry == ['["doorkeeper"]']
    cmd = yaml.safe_load([a for w, a in final if w == "CMD"][-1])
    assert cmd[:2] == [role, "serve" if role == "hub" else "run"]


def test_hub_dockerfile_healthcheck_asks_the_grpc_health_service_and_exposes_the_port() -> None:
    final = final_stage(dockerfile_instructions(DOCKERFILES["hub"]))
    checks = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(checks) == 1
    exec_form = yaml.safe_load(checks[0].split(" CMD ", 1)[1])
    assert exec_form[:3] == ["python", "-m", HEALTH_MODULE]
    assert ("EXPOSE", "50051") in final
    from doorkeeper.tools.cli.hub import hub

    cmd = yaml.safe_load([a for w, a in final if w == "CMD"][-1])
    assert used_options(cmd) <= click_options(hub.commands["serve"])  # type: ignore[attr-defined]


def test_agent_dockerfile_exposes_nothing_and_checks_the_models_at_build_time() -> None:
    instructions = dockerfile_instructions(DOCKERFILES["agent"])
    assert not [a for w, a in instructions if w == "EXPOSE"]
    runs = " ".join(a for w, a in final_stage(instructions) if w == "RUN")
    assert "locate_models" in runs and "InferenceSession" in runs


@pytest.mark.parametrize("role", ["hub", "agent"])
def test_dockerfile_copy_sources_exist_and_pass_the_dockerignore(role: str) -> None:
    ignore = (DOCKERFILES[role].parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in dockerfile_instructions(DOCKERFILES[role]):
        if word != "COPY" or "--from=" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} missing"
            assert source.rstrip("/") in allowed, f"COPY source {source} excluded by dockerignore"


# ------------------------------------------------------------------------------ Kubernetes
def test_k8s_hub_is_one_replica_on_a_pvc_with_tls_from_a_secret() -> None:
    docs = k8s_docs()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "PersistentVolumeClaim", "Service", "Service"]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    text = K8S_HUB.read_text()
    assert "PostgreSQL" in text and "round_robin" in text and "L7" in text
    pod = deploy["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert volumes["tls"]["secret"]["secretName"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"] == labels
    services = [d for d in docs if d["kind"] == "Service"]
    for svc in services:
        assert svc["spec"]["selector"] == labels
    assert any(s["spec"].get("clusterIP") == "None" for s in services), "headless Service"


def test_k8s_hub_probes_ask_the_grpc_health_service() -> None:
    deploy = next(d for d in k8s_docs() if d["kind"] == "Deployment")
    hub = next(c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "hub")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = hub[probe]
        if "grpc" in spec:
            assert spec["grpc"]["port"]
        else:
            assert spec["exec"]["command"][:3] == ["python", "-m", HEALTH_MODULE]
            assert "--tls-ca" in spec["exec"]["command"]
    from doorkeeper.tools.cli.hub import hub as hub_cli

    assert used_options(hub["args"]) <= click_options(hub_cli.commands["serve"])  # type: ignore[attr-defined]


def test_k8s_hub_runs_non_root_read_only_without_capabilities_and_with_limits() -> None:
    deploy = next(d for d in k8s_docs() if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    users = [a for w, a in dockerfile_instructions(DOCKERFILES["hub"]) if w == "USER"]
    assert str(pod["securityContext"]["runAsUser"]) == users[-1].split(":")[0]
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


# ------------------------------------------------------------------------------ systemd
@pytest.mark.parametrize("unit", ["doorkeeper-agent.service", "doorkeeper-hub.service"])
def test_systemd_unit_is_notify_with_watchdog_restart_and_hardening(unit: str) -> None:
    service = unit_entries(UNITS / unit)["Service"]
    expect = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallFilter": "@system-service",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "User": "doorkeeper",
    }
    for key, value in expect.items():
        assert unit_value(service, key) == value, key
    assert re.fullmatch(r"\d+s", unit_value(service, "WatchdogSec") or "")
    assert unit_value(service, "RestartSec")
    state = unit_value(service, "StateDirectory")
    assert state and unit_value(service, "ReadWritePaths") == f"/var/lib/{state}"
    exec_start = unit_value(service, "ExecStart") or ""
    assert exec_start.startswith("/usr/bin/env doorkeeper ")
    assert f"--data /var/lib/{state}" in exec_start


def test_systemd_agent_unit_reaches_cameras_and_gpio_only() -> None:
    service = unit_entries(UNITS / "doorkeeper-agent.service")["Service"]
    assert unit_value(service, "StateDirectory") == "doorkeeper"
    assert unit_value(service, "DevicePolicy") == "closed"
    allowed = {v for k, v in service if k == "DeviceAllow"}
    assert allowed == {"char-video4linux rw", "char-gpiochip rw"}
    assert set((unit_value(service, "SupplementaryGroups") or "").split()) == {"gpio", "video"}
    assert "agent run" in (unit_value(service, "ExecStart") or "")
    hub_service = unit_entries(UNITS / "doorkeeper-hub.service")["Service"]
    assert unit_value(hub_service, "PrivateDevices") == "yes"


def test_systemd_units_pass_systemd_analyze_verify() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here; the units were only parsed")
    units = [str(UNITS / "doorkeeper-agent.service"), str(UNITS / "doorkeeper-hub.service")]
    result = subprocess.run([tool, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values and only warns: any line naming our files fails.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "doorkeeper" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@pytest.mark.parametrize("unit", ["doorkeeper-agent.service", "doorkeeper-hub.service"])
def test_systemd_units_exposure_is_low(unit: str) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    result = subprocess.run([tool, "security", "--offline=yes", str(UNITS / unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    if match is None:
        pytest.skip(f"this systemd-analyze has no `security --offline`: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 2.5, result.stdout[-2000:]


# ------------------------------------------------------------------------------ W^X (MDWE)
# The units set MemoryDenyWriteExecute=yes. Linux >= 6.3 offers the same rule per process
# (prctl PR_SET_MDWE, inherited across exec): run the real programs under it.
MDWE_LAUNCHER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit(77)\n"  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
WX_PROBE = "import mmap; mmap.mmap(-1, 4096, prot=7)"  # PROT_READ|WRITE|EXEC


def under_mdwe(*argv: str) -> list[str]:
    return [sys.executable, "-c", MDWE_LAUNCHER, *argv]


@pytest.fixture(scope="module")
def mdwe() -> None:
    probe = subprocess.run(under_mdwe(sys.executable, "-c", WX_PROBE), capture_output=True, text=True,
                           timeout=30)
    if probe.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert probe.returncode != 0 and "PermissionError" in probe.stderr, "MDWE did not refuse a W+X map"


def test_face_models_load_and_run_under_memory_deny_write_execute(mdwe: None) -> None:
    code = (
        "import numpy as np, cv2, onnxruntime as ort\n"
        "from doorkeeper.agent.face.models import locate_models\n"
        "m = locate_models()\n"
        "for p in (m.detector, m.recognizer):\n"
        "    s = ort.InferenceSession(str(p), providers=['CPUExecutionProvider'])\n"
        "    i = s.get_inputs()[0]\n"
        "    shape = [d if isinstance(d, int) else (1 if n == 0 else 112) for n, d in enumerate(i.shape)]\n"
        "    if p == m.detector: shape = [1, 3, 320, 320]\n"
        "    s.run(None, {i.name: np.zeros(shape, np.float32)})\n"
        "cv2.resize(np.zeros((8, 8, 3), np.uint8), (4, 4))\n"
        "print('ok')\n"
    )
    result = subprocess.run(under_mdwe(sys.executable, "-c", code), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ------------------------------------------------------------------------------ sd_notify
@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # sun_path limit
        pytest.skip("tmp path too long for a unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(2)
    return False


def test_sdnotify_sends_ready_watchdog_stopping_and_status(notify_socket: socket.socket) -> None:
    assert sdnotify.ready()
    assert received(notify_socket) == "READY=1"
    assert sdnotify.watchdog()
    assert received(notify_socket) == "WATCHDOG=1"
    assert sdnotify.stopping()
    assert received(notify_socket) == "STOPPING=1"
    assert sdnotify.ready("deciding at door1")
    assert received(notify_socket) == "READY=1\nSTATUS=deciding at door1"


def test_sdnotify_status_cannot_smuggle_another_assignment(notify_socket: socket.socket) -> None:
    assert sdnotify.status("camera lost\nREADY=1\nWATCHDOG=trigger" + "x" * 500)
    message = received(notify_socket)
    assert "\n" not in message and message.startswith("STATUS=camera lost READY=1")
    assert len(message) == len("STATUS=") + sdnotify.MAX_STATUS_CHARS


def test_sdnotify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"doorkeeper-test-{os.getpid()}-{free_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert received(sock) == "READY=1"


def test_sdnotify_is_a_no_op_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.ready() is False and sdnotify.watchdog() is False and sdnotify.stopping() is False
    wd = sdnotify.Watchdog()
    assert not wd.enabled and wd.kick() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # not a unix socket: ignored
    assert sdnotify.ready() is False


def test_sdnotify_send_failure_returns_false_without_raising(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.watchdog() is False


def test_watchdog_interval_from_env_only_for_this_pid() -> None:
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": pid}) == 20.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    for bad in ("", "0", "-5", "abc", "1e6"):
        assert sdnotify.watchdog_interval({"WATCHDOG_USEC": bad}) is None
    assert sdnotify.watchdog_interval({}) is None


def test_watchdog_kicks_at_most_every_half_interval(notify_socket: socket.socket) -> None:
    now = [100.0]
    wd = sdnotify.Watchdog(env={"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"],
                                "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())},
                           clock=lambda: now[0])
    assert wd.enabled and wd.interval == 10.0
    assert wd.kick() is True  # first kick sends
    assert received(notify_socket) == "WATCHDOG=1"
    for step in (1.0, 2.0, 1.75):  # 4.75 s later: still inside interval/2 (exact binary steps)
        now[0] += step
        assert wd.kick() is False
    assert nothing_waiting(notify_socket)
    now[0] += 0.25  # 5.0 s: due
    assert wd.kick() is True
    assert received(notify_socket) == "WATCHDOG=1"
    # A loop kicking 80 times over 20 s sends 4 datagrams, not 80.
    sent_before = wd.sent
    for _ in range(80):
        now[0] += 0.25
        wd.kick()
    assert wd.sent - sent_before == 4
    with pytest.raises(ValueError):
        sdnotify.Watchdog(interval=0)


# ------------------------------------------------------------------------------ health probe
def test_healthcheck_exit_0_when_serving(hub) -> None:  # type: ignore[no-untyped-def]
    assert healthcheck.main([hub.address]) == 0
    assert healthcheck.main([hub.address, "--service", "no.such.Service"]) == 1


def test_healthcheck_nonzero_when_nothing_listens() -> None:
    assert healthcheck.main([f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1


def test_healthcheck_module_runs_with_python_m(hub) -> None:  # type: ignore[no-untyped-def]
    ok = subprocess.run([sys.executable, "-m", HEALTH_MODULE, hub.address], capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = subprocess.run([sys.executable, "-m", HEALTH_MODULE, f"127.0.0.1:{free_port()}",
                           "--timeout", "1"], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    usage = subprocess.run([sys.executable, "-m", HEALTH_MODULE], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 1  # Docker reserves 2


# ------------------------------------------------------------------------------ bootstrap script
@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_bootstrap_script_syntax(shell: str) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} not installed")
    result = subprocess.run([path, "-n", str(BOOTSTRAP)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    first = BOOTSTRAP.read_text().splitlines()[:30]
    assert first[0] == "#!/bin/sh" and "set -eu" in first
    assert "eval" not in BOOTSTRAP.read_text().split()


def test_bootstrap_script_passes_shellcheck() -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run([tool, "--shell=sh", str(BOOTSTRAP)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def run_bootstrap(env: dict[str, str], *args: str,
                  prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, "sh", str(BOOTSTRAP), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_bootstrap_refuses_names_that_could_leave_the_folder(tmp_path: Path) -> None:
    env = dict(os.environ, DK_DATA=str(tmp_path / "a"), DK_BOOTSTRAP=str(tmp_path / "b"))
    for door in ("../hub", "door 1", "", "a/b", "x" * 65, "$(id)"):
        result = run_bootstrap(env, "agent", door)
        assert result.returncode != 0 and "door" in result.stderr, door
    assert run_bootstrap(env, "nonsense").returncode != 0
    assert not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory, mdwe: None) -> Iterator[dict[str, Any]]:
    """The compose flow, outside containers: hub-init, a TLS hub process, provision; all of it
    (and the agents in the tests) under PR_SET_MDWE, as the systemd units would run them."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    root = tmp_path_factory.mktemp("compose")
    port = free_port()
    env = dict(os.environ, DK_DATA=str(root / "hub"), DK_BOOTSTRAP=str(root / "bootstrap"),
               DK_OWNER_DIR=str(root / "owner"), DK_HUB=f"localhost:{port}", DK_SITE="compose-site",
               DK_DOORS="door1 door2", DK_TOKEN_TTL="600")
    mdwe_prefix = (sys.executable, "-c", MDWE_LAUNCHER)
    init = run_bootstrap(env, "hub-init", prefix=mdwe_prefix)
    assert init.returncode == 0, init.stderr
    tls = root / "hub" / "tls"
    proc = subprocess.Popen(
        under_mdwe(sys.executable, "-m", "doorkeeper", "hub", "serve", "--data", str(root / "hub"),
                   "--listen", f"127.0.0.1:{port}", "--tls-cert", str(tls / "hub.crt"),
                   "--tls-key", str(tls / "hub.key"), "--beacon-interval", "1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        ca = root / "bootstrap" / "hub-ca.pem"
        assert wait_for(lambda: healthcheck.main([f"127.0.0.1:{port}", "--tls-ca", str(ca),
                                                  "--timeout", "1"]) == 0, timeout=30)
        provision = run_bootstrap(env, "provision", prefix=mdwe_prefix)
        assert provision.returncode == 0, provision.stderr
        yield {"root": root, "env": env, "port": port, "ca": ca, "prefix": mdwe_prefix}
    finally:
        proc.terminate()
        proc.wait(30)


def test_bootstrap_hub_init_makes_a_tls_hub_and_shares_only_the_certificate(
        bootstrapped: dict[str, Any]) -> None:
    root: Path = bootstrapped["root"]
    assert (root / "hub" / "keys" / "hub.sign.key").is_file()
    key = root / "hub" / "tls" / "hub.key"
    assert key.stat().st_mode & 0o077 == 0
    shared = sorted(p.name for p in (root / "bootstrap").iterdir())
    assert "hub-ca.pem" in shared and not any(n.endswith(".key") for n in shared)
    assert (root / "bootstrap" / "hub-ca.pem").read_bytes() == (root / "hub" / "tls" / "hub.crt").read_bytes()
    # Idempotent: a second run keeps keys and certificate.
    before = (key.read_bytes(), (root / "hub" / "keys" / "hub.sign.key").read_bytes())
    again = run_bootstrap(bootstrapped["env"], "hub-init")
    assert again.returncode == 0, again.stderr
    assert (key.read_bytes(), (root / "hub" / "keys" / "hub.sign.key").read_bytes()) == before


def test_healthcheck_over_tls_verifies_the_certificate(bootstrapped: dict[str, Any], tmp_path: Path) -> None:
    port, ca = bootstrapped["port"], str(bootstrapped["ca"])
    assert healthcheck.main([f"127.0.0.1:{port}", "--tls-ca", ca]) == 0
    assert healthcheck.main([f"localhost:{port}", "--tls-ca", ca]) == 0
    assert healthcheck.main([f"127.0.0.1:{port}", "--tls-ca", ca, "--server-name", "hub"]) == 0
    assert healthcheck.main([f"127.0.0.1:{port}", "--tls-ca", ca, "--server-name", "evil.example",
                             "--timeout", "2"]) == 1
    assert healthcheck.main([f"127.0.0.1:{port}", "--timeout", "2"]) == 1  # plaintext to a TLS hub
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=other", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
                   check=True, capture_output=True, timeout=60)
    assert healthcheck.main([f"127.0.0.1:{port}", "--tls-ca", str(other), "--timeout", "2"]) == 1
    assert healthcheck.main([f"127.0.0.1:{port}", "--tls-ca", str(tmp_path / "missing.pem")]) == 1


def test_bootstrap_provision_writes_one_private_token_per_door_and_is_idempotent(
        bootstrapped: dict[str, Any]) -> None:
    root: Path = bootstrapped["root"]
    for door in ("door1", "door2"):
        token_file = root / "bootstrap" / "tokens" / f"{door}.token"
        if not token_file.exists():  # door1 may have been used already by another test
            assert (root / "agents" / door / "identity.json").exists()
            continue
        assert token_file.stat().st_mode & 0o077 == 0
        assert re.fullmatch(r"dk1-[a-z0-9-]+\n", token_file.read_text())
    owner = root / "owner" / "owner.key"
    assert owner.is_file() and owner.stat().st_mode & 0o077 == 0
    secret = owner.read_bytes()
    leaked = [p for p in (root / "bootstrap").rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaked, "the owner key must not reach the doors' volume"
    again = run_bootstrap(bootstrapped["env"], "provision")
    assert again.returncode == 0, again.stderr


def test_bootstrap_agent_registers_once_consumes_its_token_and_runs(bootstrapped: dict[str, Any]) -> None:
    root: Path = bootstrapped["root"]
    data = root / "agents" / "door1"
    env = dict(bootstrapped["env"], DK_DATA=str(data))
    token_file = root / "bootstrap" / "tokens" / "door1.token"
    first = run_bootstrap(env, "agent", "door1", "--duration", "1", prefix=bootstrapped["prefix"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert (data / "identity.json").is_file() and (data / "hub-ca.pem").is_file()
    assert not token_file.exists(), "a used token must be deleted"
    assert "applied snapshot" in first.stderr  # `agent run` synced over TLS
    second = run_bootstrap(env, "agent", "door1", "--duration", "1")
    assert second.returncode == 0 and "already registered" in second.stderr, second.stderr[-3000:]
    # The other door's token is untouched; a door without a token says so.
    assert (root / "bootstrap" / "tokens" / "door2.token").is_file()
    lost = run_bootstrap(dict(env, DK_DATA=str(root / "agents" / "door9")), "agent", "door9")
    assert lost.returncode != 0 and "no token for door9" in lost.stderr


def test_spawned_hub_helper_is_compatible(tmp_path: Path) -> None:
    """The harness's plaintext loopback hub answers the probe too (the path `doorkeeper demo` uses)."""
    from doorkeeper.hub.server import init_hub

    init_hub(tmp_path / "hub")
    port = free_port()
    proc = spawn_hub(tmp_path / "hub", port)
    try:
        assert wait_for(lambda: healthcheck.main([f"127.0.0.1:{port}", "--timeout", "1"]) == 0, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    assert healthcheck.main([f"127.0.0.1:{port}", "--timeout", "1"]) == 1
