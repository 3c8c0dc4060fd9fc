"""A second implementation (Node.js, tests/interop/, written from protos/PROTOCOL.md) checks
every known-answer vector, then works as a door against a real `doorkeeper hub serve`
process set up with the real CLI.

Needs node and `npm ci` in tests/interop. Without them the tests skip with a clear message;
DOORKEEPER_REQUIRE_NODE=1 (set by .ci/run) turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


# ------------------------------------------------------------------ bundles on the watch stream


@dataclass
class Site:
    cli: Cli
    node: str
    door: str
    metrics_port: int

    def pushed(self) -> float:
        """The hub's doorkeeper_bundles_pushed_total (deltas it sent inline on watch streams)."""
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read()
        values = [
            float(line.split()[-1])
            for line in body.decode().splitlines()
            if line.startswith("doorkeeper_bundles_pushed_total ")
        ]
        assert len(values) == 1, body
        return values[0]


@contextmanager
def _site_with_a_node_door(tmp_path: Path) -> Iterator[Site]:
    """A hub process (metrics on), site oak with one person, and a Node door synced to it."""
    node = _node()
    hub_dir = tmp_path / "hub"
    port, metrics_port = free_port(), free_port()
    env = dict(
        os.environ, DOORKEEPER_HUB=f"127.0.0.1:{port}", DOORKEEPER_OPERATOR_KEY=str(hub_dir / "operator.key")
    )
    cli = Cli(env)
    cli("hub", "init", "--data", str(hub_dir))
    proc = spawn_hub(hub_dir, port, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    door = str(tmp_path / "door")
    try:
        cli("site", "add", "oak", "--offline-validity", "3600")
        cli("person", "add", "--site", "oak", "--name", "Ann", "--card", "04a1b2c3")
        token = cli.last("device", "add", "--site", "oak", "--name", "front")
        _run_node(node, "door.js", "register", "--hub", f"127.0.0.1:{port}", "--token", token, "--data", door)
        assert _run_node(node, "door.js", "sync", "--data", door)["outcome"] == "snapshot"
        yield Site(cli, node, door, metrics_port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Watching:
    """`node door.js watch-apply` running: its stdout lines as they come, its stderr at the end."""

    def __init__(self, site: Site, *args: str) -> None:
        self.proc = subprocess.Popen(
            [site.node, "door.js", "watch-apply", "--data", site.door, "--wait", "60", *args],
            cwd=INTEROP,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self) -> dict[str, Any]:
        """The door's next JSON line (bounded wait: the door gives up on its own after 60 s)."""
        try:
            line = self.lines.get(timeout=120)
        except queue.Empty:
            pytest.fail("the Node door printed nothing within 120 s")
        if line is None:
            self.proc.wait(timeout=30)
            assert self.proc.stderr is not None
            pytest.fail(f"the Node door exited ({self.proc.returncode}) early:\n{self.proc.stderr.read()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def finish(self) -> dict[str, Any]:
        out = self.line()
        assert self.proc.wait(timeout=30) == 0
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _assert_in_sync(site: Site, out: dict[str, Any]) -> dict[str, Any]:
    """The door says it holds the hub's version and digest, and the hub's fleet agrees."""
    hub_site = site.cli.site()
    assert (out["version"], out["digest"], out["persons"]) == (
        hub_site["version"],
        hub_site["state_digest"],
        hub_site["persons"],
    )
    assert out["report"] == {
        "in_sync": True,
        "hub_version": hub_site["version"],
        "resync": False,
        "fresh": True,
    }
    fleet = json.loads(site.cli("fleet", "--json").stdout)
    assert len(fleet) == 1 and fleet[0]["in_sync"]
    assert (fleet[0]["reported_version"], fleet[0]["reported_digest"]) == (
        hub_site["version"],
        hub_site["state_digest"],
    )
    return hub_site


def test_a_watching_node_door_applies_a_change_from_the_stream_without_a_fetch(tmp_path: Path) -> None:
    with _site_with_a_node_door(tmp_path) as site:
        held = site.cli.site()["version"]
        watch = Watching(site)
        try:
            assert watch.line() == {"watching": True, "version": held, "claimed": held}
            assert site.pushed() == 0  # the first event names the version the door holds: no bundle
            site.cli("person", "add", "--site", "oak", "--name", "Bob", "--pin", "2468")
            out = watch.finish()
        finally:
            watch.kill()
        hub_site = _assert_in_sync(site, out)
        assert hub_site["version"] == held + 1 == out["beacon_version"]
        assert out["stream_bundle"] == {
            "from_version": held,
            "to_version": held + 1,
            "chunks": 1,
            "applied": True,
        }
        assert out["outcome"] == "delta" and out["fetched"] is None
        assert out["calls"] == {"Watch": 1, "Report": 1}  # no Fetch
        assert out["persons"] == 2
        assert site.pushed() == 1


def test_a_node_door_refuses_a_stream_bundle_that_does_not_fit_and_fetches_instead(tmp_path: Path) -> None:
    with _site_with_a_node_door(tmp_path) as site:
        site.cli("person", "add", "--site", "oak", "--name", "Bob", "--pin", "2468")
        held = _run_node(site.node, "door.js", "sync", "--data", site.door)["version"]
        site.cli("person", "add", "--site", "oak", "--name", "Cy", "--card", "CARD0001")
        site_version = site.cli.site()["version"]
        assert site_version == held + 1 and held - 1 >= 1

        # The door claims a version older than it holds: the hub's first event carries the
        # delta from that version, which the door must not apply (section 7); it fetches.
        watch = Watching(site, "--claim-version", str(held - 1))
        try:
            assert watch.line() == {"watching": True, "version": held, "claimed": held - 1}
            out = watch.finish()
        finally:
            watch.kill()
        assert out["stream_bundle"] == {
            "from_version": held - 1,
            "to_version": site_version,
            "chunks": 1,
            "refused": "VersionGap",
        }
        # The fetched delta starts at the version the door held: the refused bundle changed nothing.
        assert out["fetched"] == {"outcome": "delta", "from_version": held}
        assert out["calls"] == {"Watch": 1, "Fetch": 1, "Report": 1}
        _assert_in_sync(site, out)
        assert site.pushed() == 1

        # A chunk that does not match its header (flipped by the door itself, as a test hook):
        # refused, then fetched.
        watch = Watching(site, "--flip-inline-chunk")
        try:
            assert watch.line() == {"watching": True, "version": site_version, "claimed": site_version}
            site.cli("person", "add", "--site", "oak", "--name", "Di", "--pin", "13579")
            out = watch.finish()
        finally:
            watch.kill()
        assert out["stream_bundle"] == {
            "from_version": site_version,
            "to_version": site_version + 1,
            "chunks": 1,
            "refused": "Truncated",
        }
        assert out["fetched"] == {"outcome": "delta", "from_version": site_version}
        assert out["calls"] == {"Watch": 1, "Fetch": 1, "Report": 1}
        assert _assert_in_sync(site, out)["version"] == site_version + 1
        assert site.pushed() == 2
