"""Where an agent dials the hub: the configured address and CA (config file, environment,
command line) win over those recorded at registration, in `agent run`, `agent sync` and
`agent status`. A hub that moves does not strand its doors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from doorkeeper.agent.sync.syncer import AgentState
from tests.harness import HubThread, Operator, doorkeeper_cmd, register_agent, wait_for
from tests.test_tls import _self_signed


def _agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORKEEPER_AGENT")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.mark.parametrize("how", ["env", "config", "cli"])
def test_agent_run_follows_a_hub_that_moved(tmp_path: Path, how: str) -> None:
    first = HubThread(tmp_path / "hub").start()
    operator = Operator(first.address, first.data_dir / "operator.key")
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    agent.close()
    old_address = first.address
    first.stop()
    moved = HubThread(tmp_path / "hub").start()  # same hub, same keys, another port
    try:
        assert moved.address != old_address
        operator = Operator(moved.address, moved.data_dir / "operator.key")
        operator.add_person("oak", cards=["CARD0001"])
        version = moved.hub.store.get_site("oak").version
        argv = ["agent", "run", "--data", str(tmp_path / "a"), "--metrics-listen", "off",
                "--poll-interval", "1"]
        env = _agent_env()
        if how == "env":
            env["DOORKEEPER_AGENT__HUB_ADDRESS"] = moved.address
        elif how == "config":
            (tmp_path / "a" / "agent.toml").write_text(f'role = "agent"\nhub_address = "{moved.address}"\n')
        else:
            argv += ["--hub", moved.address]
        proc = subprocess.Popen(doorkeeper_cmd(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            synced = wait_for(lambda: AgentState.load(tmp_path / "a" / "state.json").hub_version == version
                              and AgentState.load(tmp_path / "a" / "state.json").last_sync_ok > 0, 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert synced, err[-3000:]
        status = subprocess.run(
            doorkeeper_cmd("agent", "status", "--data", str(tmp_path / "a"), "--json",
                           *(["--config", str(tmp_path / "a" / "agent.toml")] if how == "config" else [])),
            capture_output=True, text=True, timeout=60,
            env=_agent_env(DOORKEEPER_AGENT__HUB_ADDRESS=moved.address) if how != "config" else _agent_env())
        data = json.loads(status.stdout)
        assert data["version"] == version and data["persons"] == 1
        assert data["hub"] == moved.address and data["hub_reachable"] is True
    finally:
        moved.stop()


def test_agent_status_reaches_a_tls_hub_with_the_recorded_ca(tmp_path: Path) -> None:
    from doorkeeper.agent.sync.hubclient import HubClient
    from doorkeeper.agent.sync.identity import init_agent
    from doorkeeper.wire import keys

    cert, key = _self_signed(tmp_path)
    hub = HubThread(tmp_path / "hub", tls=(cert, key)).start()
    try:
        op_key = keys.read_private(hub.data_dir / "operator.key")
        from nacl.signing import SigningKey

        signing = SigningKey(op_key)
        operator = Operator(hub.address, hub.data_dir / "operator.key")
        operator.client = lambda: HubClient(  # type: ignore[method-assign]
            hub.address, keys.key_id(bytes(signing.verify_key)), signing, tls_ca=cert)
        operator.add_site("oak")
        init_agent(tmp_path / "a", hub.address, operator.add_device("oak", "front").token, tls_ca=cert)
        done = subprocess.run(doorkeeper_cmd("agent", "status", "--data", str(tmp_path / "a"), "--json"),
                              capture_output=True, text=True, timeout=60, env=_agent_env())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["hub_reachable"] is True
    finally:
        hub.stop()
