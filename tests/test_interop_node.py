"""A second implementation (Node.js, tests/interop/, written from protos/PROTOCOL.md) checks
every known-answer vector, then works as a door against a real `doorkeeper hub serve`
process set up with the real CLI.

Needs node and `npm ci` in tests/interop. Without them the tests skip with a clear message;
DOORKEEPER_REQUIRE_NODE=1 (set by .ci/run) turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.harness import doorkeeper_cmd, free_port, spawn_hub

INTEROP = Path(__file__).resolve().parent / "interop"
PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader", "libsodium-wrappers-sumo", "protobufjs")
MODEL_ID = "interop.onnx:" + "0" * 64


def _node() -> str:
    node = shutil.which("node")
    missing = [p for p in PACKAGES if not (INTEROP / "node_modules" / p / "package.json").exists()]
    problem = (
        "node is not on PATH"
        if node is None
        else f"missing npm packages {', '.join(missing)}: run `npm ci` in tests/interop"
        if missing
        else ""
    )
    if problem:
        if os.environ.get("DOORKEEPER_REQUIRE_NODE"):
            pytest.fail(f"Node.js interop run required (DOORKEEPER_REQUIRE_NODE) but {problem}")
        pytest.skip(f"Node.js interop run skipped: {problem}")
    assert node is not None
    return node


def _run_node(node: str, *args: str) -> dict[str, Any]:
    r = subprocess.run([node, *args], cwd=INTEROP, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"node {' '.join(args)} failed:\n{r.stderr}\n{r.stdout}"
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_node_checks_every_known_answer_vector() -> None:
    node = _node()
    out = _run_node(node, "check_vectors.js", str(INTEROP.parent.parent / "protos" / "vectors"))
    assert out["ok"] and out["checks"] > 100
    assert {
        "hub-proof",
        "register",
        "registered",
        "call",
        "beacon",
        "bundle-header",
        "manifest",
        "log-batch",
        "key-rotation",
    } <= set(out["contexts"])


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(doorkeeper_cmd(*args), capture_output=True, text=True, env=self.env, timeout=120)
        if ok:
            assert r.returncode == 0, f"doorkeeper {' '.join(args)}:\n{r.stderr}"
        return r

    def last(self, *args: str) -> str:
        return self(*args).stdout.strip().splitlines()[-1]

    def site(self) -> dict[str, Any]:
        return json.loads(self("site", "list", "--json").stdout)[0]  # type: ignore[no-any-return]


def test_a_node_door_registers_syncs_reports_uploads_and_refuses_tampering(tmp_path: Path) -> None:
    node = _node()
    hub_dir = tmp_path / "hub"
    port = free_port()
    env = dict(
        os.environ, DOORKEEPER_HUB=f"127.0.0.1:{port}", DOORKEEPER_OPERATOR_KEY=str(hub_dir / "operator.key")
    )
    cli = Cli(env)
    cli("hub", "init", "--data", str(hub_dir))
    hub_key = cli.last("hub", "show", "--data", str(hub_dir))
    proc = spawn_hub(hub_dir, port, "--metrics-listen", "off")
    door = str(tmp_path / "door")
    try:
        cli("site", "add", "oak", "--offline-validity", "3600")
        owner_key = tmp_path / "owner.key"
        cli("site", "owner-key", "--site", "oak", "--out", str(owner_key))
        np.save(tmp_path / "t.npy", np.random.default_rng(5).standard_normal(512).astype(np.float32))
        ann = cli.last(
            "person", "add", "--site", "oak", "--name", "Ann", "--card", "04a1b2c3", "--pin", "2468"
        )
        cli(
            "person",
            "add",
            "--site",
            "oak",
            "--name",
            "Bob",
            "--template-file",
            str(tmp_path / "t.npy"),
            "--model-id",
            MODEL_ID,
            "--consent",
            "Bob, signed form, ref 1",
        )
        token = cli.last("device", "add", "--site", "oak", "--name", "front")

        # Registration: the Node door pins the key the hub prints.
        reg = _run_node(
            node, "door.js", "register", "--hub", f"127.0.0.1:{port}", "--token", token, "--data", door
        )
        assert reg["hub_key"] == hub_key

        # Snapshot: the Node door's digest is the hub's, computed independently.
        snap = _run_node(node, "door.js", "sync", "--data", door)
        site = cli.site()
        assert snap["outcome"] == "snapshot"
        assert (snap["version"], snap["digest"], snap["persons"]) == (
            site["version"],
            site["state_digest"],
            site["persons"],
        )
        assert snap["templates"] == 1 and len(snap["card_hashes"]) == 1
        assert snap["report"] == {
            "in_sync": True,
            "hub_version": site["version"],
            "resync": False,
            "fresh": True,
        }

        # Delta: one removal, one addition.
        cli("person", "remove", ann)
        cli("person", "add", "--site", "oak", "--name", "Cy", "--card", "CARD0001")
        delta = _run_node(node, "door.js", "sync", "--data", door)
        site = cli.site()
        assert delta["outcome"] == "delta"
        assert (
            (delta["version"], delta["digest"], delta["persons"])
            == (site["version"], site["state_digest"], site["persons"])
            == (delta["version"], delta["digest"], 2)
        )

        # A watch beacon and a report that the hub shows as in sync (fleet shows what the door said).
        rep = _run_node(node, "door.js", "report", "--data", door)
        assert rep["watch"] == {"version": site["version"], "fresh": True, "digest": site["state_digest"]}
        assert rep["report"]["in_sync"] and rep["report"]["fresh"]
        fleet = json.loads(cli("fleet", "--json").stdout)
        assert len(fleet) == 1 and fleet[0]["registered"] and fleet[0]["in_sync"]
        assert (
            fleet[0]["reported_version"] == site["version"]
            and fleet[0]["reported_digest"] == site["state_digest"]
        )

        # Entry records the Python owner tools verify and decrypt.
        logs = _run_node(node, "door.js", "logs", "--data", door)
        assert [a["watermark"] for a in logs["acks"]] == [2, 4, 4] and logs["acks"][2]["duplicates"] == 2
        export = tmp_path / "oak.dklogs"
        cli("logs", "pull", "--site", "oak", "--out", str(export))
        verified = cli("logs", "verify", "--owner-key", str(owner_key), str(export))
        assert "OK device" in verified.stdout + verified.stderr
        assert "2 unwritten (node_interop_gap)" in verified.stdout + verified.stderr
        entries = json.loads(
            cli("logs", "decrypt", "--owner-key", str(owner_key), str(export), "--json").stdout
        )
        assert [(e["seq"], e["decision"], e["credential"]) for e in entries] == [
            (1, "granted", "card"),
            (2, "denied", "pin"),
            (4, "unknown_face", "face"),
        ]
        assert entries[0]["device_id"] == reg["device_id"] and entries[1]["reason"] == "unknown_pin"

        # Tampered bundles are refused by the Node door and change nothing; the hub refuses a
        # call altered after signing and a batch off the chain; then a clean sync still works.
        cli("person", "add", "--site", "oak", "--name", "Di", "--pin", "13579")
        tampered = _run_node(node, "door.js", "tamper", "--data", door)
        assert tampered["refused"]["chunk"] == "Truncated"
        assert tampered["refused"]["header"] == tampered["refused"]["signature"] == "Forged"
        assert tampered["refused"]["replayed_nonce"] == "Unproven"
        assert tampered["refused"]["altered_call"]["code"] == "UNAUTHENTICATED"
        assert tampered["refused"]["broken_chain"]["code"] == "INVALID_ARGUMENT"
        assert tampered["state_unchanged"]
        after = _run_node(node, "door.js", "sync", "--data", door)
        assert after["outcome"] == "delta" and after["digest"] == cli.site()["state_digest"]
        fleet = json.loads(cli("fleet", "--json").stdout)
        assert fleet[0]["logs_watermark"] == 4 and fleet[0]["in_sync"]

        # Key rotation: the Node door follows the chain from the key it pinned to the new one.
        proc.terminate()
        proc.wait(timeout=30)
        cli("hub", "rotate-key", "--data", str(hub_dir))
        new_key = cli.last("hub", "show", "--data", str(hub_dir))
        assert new_key != hub_key
        proc = spawn_hub(hub_dir, port, "--metrics-listen", "off")
        cli("person", "add", "--site", "oak", "--name", "Ed", "--card", "CARD0002")
        rotated = _run_node(node, "door.js", "sync", "--data", door)
        assert rotated["hub_key"] == new_key and rotated["outcome"] == "delta"
        assert rotated["digest"] == cli.site()["state_digest"] and rotated["report"]["in_sync"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
