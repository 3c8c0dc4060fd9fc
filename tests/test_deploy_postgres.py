"""The scale-out deploy files (PostgreSQL + two hub replicas), parsed: no container engine or
Kubernetes API here. Checked against the repository: real CLI options, the store from the
environment without a password, read-only keys, the pooler warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from doorkeeper.tools.cli.hub import init as hub_init
from doorkeeper.tools.cli.hub import serve as hub_serve
from tests.test_deploy import click_options, used_options

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = DEPLOY / "compose.postgres.yaml"
K8S = DEPLOY / "k8s" / "hub-postgres.yaml"
STORE_ENV = "DOORKEEPER_HUB__STORE"


def _no_password(url: str) -> None:
    assert url.startswith("postgresql://")
    credentials = url.removeprefix("postgresql://").partition("@")[0]
    assert ":" not in credentials, f"a password in {url}"


def test_compose_runs_postgres_and_two_hub_replicas_on_it() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = compose["services"]
    assert {"postgres", "hub-init", "hub1", "hub2", "provision"} <= set(services)
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert "ports" not in services["postgres"]  # internal only
    init_env = services["hub-init"]["environment"]
    _no_password(init_env[STORE_ENV])
    assert any(p.envvar == STORE_ENV for p in hub_init.params)  # `hub init` reads it
    assert services["hub-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("hub1", "hub2"):
        hub = services[name]
        assert hub["command"][:2] == ["hub", "serve"]
        assert used_options(hub["command"]) <= click_options(hub_serve)
        assert hub["environment"][STORE_ENV] == init_env[STORE_ENV]
        assert hub["volumes"] == ["hub-data:/data:ro"]  # keys only; no lock file, no SQLite
    dialled = {services[a]["environment"]["DK_HUB"] for a in services if a.startswith("agent")}
    assert dialled == {"hub1:50051", "hub2:50051"}  # a door on each replica
    assert "transaction mode" in COMPOSE.read_text()


def test_k8s_runs_two_rolling_replicas_with_the_password_from_a_secret() -> None:
    docs = [d for d in yaml.safe_load_all(K8S.read_text()) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deploy["spec"]["template"]["spec"]
    hub = pod["containers"][0]
    assert hub["args"][:2] == ["hub", "serve"]
    assert used_options(hub["args"]) <= click_options(hub_serve)
    env = {e["name"]: e for e in hub["env"]}
    _no_password(env[STORE_ENV]["value"])
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "doorkeeper-db"
    # Keys come from a Secret and are copied with mode 0600 (the hub refuses readable keys).
    keys_init = pod["initContainers"][0]
    assert "umask 077" in keys_init["command"][-1]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in hub["volumeMounts"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])  # stateless
    db = next(d for d in docs if d["kind"] == "StatefulSet")
    db_env = {e["name"]: e for e in db["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "secretKeyRef" in db_env["POSTGRES_PASSWORD"]["valueFrom"]
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert {"doorkeeper-hub", "doorkeeper-db"} <= services
    assert "transaction mode" in K8S.read_text()
