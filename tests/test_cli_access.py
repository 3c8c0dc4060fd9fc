"""Doors, operator keys and the audit trail, end to end against a real hub on loopback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from nacl.signing import SigningKey

from doorkeeper.agent.sync.hubclient import ADMIN, SYNC, HubClient
from doorkeeper.hub.store import Operator
from doorkeeper.tools.cli import cli
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.harness import both_stores, open_agent, random_template, register_agent


def _last(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.output
    return str(result.stdout.strip().splitlines()[-1])


def _refused_everywhere(address: str, files) -> list[str]:  # type: ignore[no-untyped-def]
    """Every device RPC signed with this door's key: the error details (all must be refusals)."""
    ident = files.load_identity()
    key = files.device_keys().sign_key
    details = []
    with HubClient(address, ident.device_id, key, timeout_s=5) as client:
        for method, request in (("Report", pb.SignedManifest()), ("UploadLogs", pb.SignedLogBatch())):
            with pytest.raises(grpc.RpcError) as err:
                client.call(SYNC + method, request)
            details.append(f"{err.value.code().name} {err.value.details()}")
        for method, request in (("Fetch", pb.FetchRequest(nonce=b"n" * 16)),
                                ("Watch", pb.WatchRequest(nonce=b"n" * 16))):
            with pytest.raises(grpc.RpcError) as err:
                next(iter(client.stream(SYNC + method, request, timeout=5)))
            details.append(f"{err.value.code().name} {err.value.details()}")
    return details


@both_stores
def test_a_revoked_door_is_refused_on_every_rpc_while_others_keep_syncing(  # type: ignore[no-untyped-def]
        run, hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    operator.add_person("oak", templates=[random_template(np.random.default_rng(1))])
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    back = register_agent(operator, "oak", "back", tmp_path / "back")
    try:
        assert front.syncer.sync_once().ok and back.syncer.sync_once().ok
        listed = json.loads(run("device", "list", "--site", "oak", "--json").stdout)
        assert {d["name"]: d["state"] for d in listed} == {"front": "active", "back": "active"}
        front_id = front.files.load_identity().device_id
        r = run("device", "revoke", "fronte", "--site", "oak")  # a typo revokes nothing
        assert r.exit_code == 2 and "no door named 'fronte'" in r.stderr
        assert all(d.revoked_at is None for d in hub.hub.store.list_devices())
        assert _last(run("device", "revoke", "front", "--site", "oak")) == front_id
        report_before = hub.hub.store.latest_report(front_id)
        for detail in _refused_everywhere(hub.address, front.files):
            assert detail.startswith("UNAUTHENTICATED") and "revoked" in detail, detail
        assert not front.syncer.sync_once().ok
        assert hub.hub.store.latest_report(front_id) == report_before  # refused calls stored nothing
        version = operator.add_person("oak", cards=["0099AA11"]).version
        result = back.syncer.sync_once()
        assert result.ok and back.whitelist.version == version
        fleet = {d["name"]: d for d in json.loads(run("fleet", "--site", "oak", "--json").stdout)}
        assert fleet["front"]["revoked_at"] and not fleet["back"]["revoked_at"]
        assert "REVOKED" in run("fleet", "--site", "oak").output
        assert "revoked" in run("device", "list", "--site", "oak").output
        # a new terminal for the same door: same id and name, new keys; the old keys stay refused
        token = _last(run("device", "replace", "front", "--site", "oak"))
        r = run("agent", "init", "--data", str(tmp_path / "front2"), "--hub", hub.address, "--token", token)
        assert _last(r) == front_id
        new = open_agent(tmp_path / "front2")
        try:
            assert new.syncer.sync_once().ok and new.whitelist.version == version
        finally:
            new.close()
        assert all("UNAUTHENTICATED" in d for d in _refused_everywhere(hub.address, front.files))
        trail = [e.action for e in hub.hub.store.list_audit(limit=10)]
        assert "device.revoke" in trail and "device.replace" in trail
    finally:
        front.close()
        back.close()


@both_stores
def test_a_mistyped_token_still_works_once_corrected(run, hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    token = operator.add_device("oak", "front").token
    prefix, token_id, secret, fingerprint = token.split("-")

    def typo(part: str) -> str:
        i = len(part) // 2
        # Another letter even read case-blind (tokens are decoded upper-cased): "a" -> "A" is no typo.
        return part[:i] + ("b" if part[i].lower() == "a" else "a") + part[i + 1:]

    for wrong in (f"{prefix}-{token_id}-{typo(secret)}-{fingerprint}",
                  f"{prefix}-{token_id}-{secret}-{typo(fingerprint)}"):
        r = run("agent", "init", "--data", str(tmp_path / "a"), "--hub", hub.address, "--token", wrong)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1, r.stderr
        assert hub.hub.store.get_token(token_id).used_at is None  # not burnt
    device_id = _last(run("agent", "init", "--data", str(tmp_path / "a"), "--hub", hub.address,
                          "--token", token))
    assert hub.hub.store.get_device(device_id).registered_at is not None


def _as(run_env_key: Path, hub, *args: str):  # type: ignore[no-untyped-def]
    env = {"DOORKEEPER_HUB": hub.address, "DOORKEEPER_OPERATOR_KEY": str(run_env_key)}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@both_stores
def test_operator_keys_are_made_here_and_each_role_is_held_to_its_calls(run, hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("site", "add", "oak")
    aud_key, op_key = tmp_path / "aud.key", tmp_path / "op.key"
    aud_id = _last(run("operator", "add", "--name", "Ida", "--role", "auditor", "--out", str(aud_key)))
    op_id = _last(run("operator", "add", "--name", "Oscar", "--role", "operator", "--out", str(op_key)))
    assert aud_key.stat().st_mode & 0o777 == 0o600
    public = bytes(SigningKey(keys.read_private(aud_key)).verify_key)
    assert hub.hub.store.get_operator(aud_id).public_key == public  # only the public half went
    assert keys.key_id(public) == aud_id
    r = run("operator", "add", "--name", "Ida2", "--role", "auditor", "--out", str(aud_key))
    assert r.exit_code == 2 and "exists" in r.stderr
    listed = {o["name"]: o for o in json.loads(run("operator", "list", "--json").stdout)}
    assert listed["Ida"]["role"] == "auditor" and listed["first-admin"]["role"] == "admin"

    refusals = [
        (aud_key, ("person", "list", "--site", "oak"), "admin or operator"),
        (aud_key, ("device", "add", "--site", "oak", "--name", "x"), "admin or operator"),
        (op_key, ("site", "add", "elm"), "the admin role"),
        (op_key, ("operator", "add", "--name", "Eve", "--role", "admin", "--out", str(tmp_path / "e.key")),
         "the admin role"),
        (op_key, ("audit", "list"), "admin or auditor"),
        (op_key, ("operator", "revoke", "Ida"), "the admin role"),
    ]
    before = hub.hub.store.list_audit(limit=1000)
    for key, args, needs in refusals:
        r = _as(key, hub, *args)
        assert r.exit_code == 2 and "permission denied" in r.stderr and needs in r.stderr, (args, r.stderr)
    assert hub.hub.store.list_audit(limit=1000) == before and not (tmp_path / "e.key").exists()
    assert [s.name for s in hub.hub.store.list_sites()] == ["oak"]
    # what each role may do
    added = _as(op_key, hub, "person", "add", "--site", "oak", "--name", "Ann", "--card", "0012AB34")
    assert added.exit_code == 0
    assert _as(aud_key, hub, "audit", "list").exit_code == 0
    assert "Oscar" in _as(aud_key, hub, "audit", "list", "--actor", "Oscar").output
    # revoked keys are refused; the last admin key stays
    assert _last(run("operator", "revoke", "Oscar")) == op_id
    r = _as(op_key, hub, "person", "list", "--site", "oak")
    assert r.exit_code == 2 and "revoked" in r.stderr
    r = run("operator", "revoke", "first-admin")
    assert r.exit_code == 2 and "last active admin" in r.stderr
    assert all(o.revoked_at is None for o in hub.hub.store.list_operators() if o.role == "admin")
    assert run("site", "list").exit_code == 0
    r = run("operator", "add", "--name", "Ida", "--role", "admin", "--out", str(tmp_path / "dup.key"))
    assert r.exit_code == 2 and "already exists" in r.stderr and not (tmp_path / "dup.key").exists()
    assert len(hub.hub.store.list_operators()) == 3


def _db(hub) -> sqlite3.Connection:  # type: ignore[no-untyped-def]
    return sqlite3.connect(hub.data_dir / "hub.db", isolation_level=None)


def test_audit_verify_catches_an_edited_a_removed_and_a_reordered_entry(run, hub) -> None:  # type: ignore[no-untyped-def]
    run("site", "add", "oak")
    for name in ("front", "back", "side"):
        _last(run("device", "add", "--site", "oak", "--name", name))
    listed = json.loads(run("audit", "list", "--json", "--since", "2020-01-01").stdout)
    assert [e["action"] for e in listed] == ["site.add", "device.add", "device.add", "device.add"]
    assert listed[0]["actor"].startswith("operator:first-admin:")
    assert "site.add" in run("audit", "list").output
    assert _last(run("audit", "verify")) == "4"

    db = _db(hub)
    original = db.execute("SELECT id, at, principal, action, detail FROM audit ORDER BY id").fetchall()

    def restore() -> None:
        db.execute("DELETE FROM audit")
        for row in full:
            db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)", row)
        assert run("audit", "verify").exit_code == 0

    full = db.execute("SELECT * FROM audit ORDER BY id").fetchall()
    db.execute("UPDATE audit SET detail = 'nothing happened' WHERE id = 2")  # edited
    r = run("audit", "verify")
    assert r.exit_code == 1 and "entry 2" in r.stderr and "does not match its hash" in r.stderr, r.stderr
    restore()
    db.execute("DELETE FROM audit WHERE id = 3")  # removed
    r = run("audit", "verify")
    assert r.exit_code == 1 and "entry 3 is missing" in r.stderr, r.stderr
    restore()
    # reordered: entries 2 and 3 swap places (content and chain fields move together)
    cols = "at, principal, action, detail, prev_hash, entry_hash, key_id, signature"
    two, three = (db.execute(f"SELECT {cols} FROM audit WHERE id = ?", (i,)).fetchone() for i in (2, 3))
    for target, row in ((2, three), (3, two)):
        db.execute(f"UPDATE audit SET ({cols}) = (?,?,?,?,?,?,?,?) WHERE id = ?", (*row, target))
    r = run("audit", "verify")
    assert r.exit_code == 1 and "entry 2" in r.stderr, r.stderr
    restore()
    after = db.execute("SELECT id, at, principal, action, detail FROM audit ORDER BY id").fetchall()
    assert after == original
    db.close()


@both_stores
def test_admin_calls_name_the_role_they_need(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The refusal itself (not only the CLI line) says which role the call needs."""
    pair = keys.KeyPair.generate()
    hub.hub.store.add_operator(Operator(pair.key_id, pair.sign_public, "auditor", "aud", 1))
    with HubClient(hub.address, pair.key_id, pair.sign_key) as client, pytest.raises(grpc.RpcError) as err:
        client.call(ADMIN + "AddSite", pb.AddSiteRequest(name="x"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "auditor role" in err.value.details() and "needs the admin role" in err.value.details()


@both_stores
@pytest.mark.parametrize("method, request_", [
    ("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="front")),
    # The old terminal's keys are refused once its door is given a new token, an open stream too.
    ("ReplaceDevice", pb.ReplaceDeviceRequest(site="oak", name="front")),
])
def test_a_door_watching_when_revoked_or_replaced_loses_its_stream(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path, method: str, request_: object) -> None:
    operator.add_site("oak")
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    try:
        ident = front.files.load_identity()
        with HubClient(hub.address, ident.device_id, front.files.device_keys().sign_key, timeout_s=5) as door:
            stream = door.stream(SYNC + "Watch", pb.WatchRequest(nonce=b"w" * 16), timeout=30)
            assert next(iter(stream)).beacon.beacon  # watching
            operator.call(method, request_)
            with pytest.raises(StopIteration):  # the hub ends the stream at the revocation
                while True:
                    next(iter(stream))
    finally:
        front.close()


@both_stores
def test_a_revocation_ends_that_doors_stream_only_and_wake_ups_read_no_door_row(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch loop learns of a revocation from the notifier, not by reading the door's row
    on every wake-up: beacons (every second here) and site changes cost no device read, and
    revoking one door ends its stream while its neighbour's keeps going."""
    operator.add_site("oak")
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    back = register_agent(operator, "oak", "back", tmp_path / "back")
    reads: list[str] = []
    get_device = hub.hub.store.get_device

    def counted(device_id: str):  # type: ignore[no-untyped-def]
        reads.append(device_id)
        return get_device(device_id)

    monkeypatch.setattr(hub.hub.store, "get_device", counted)
    clients: list[HubClient] = []
    try:
        streams = {}
        for agent in (front, back):
            ident = agent.files.load_identity()
            client = HubClient(hub.address, ident.device_id, agent.files.device_keys().sign_key, timeout_s=5)
            clients.append(client)
            streams[ident.device_id] = iter(client.stream(SYNC + "Watch", pb.WatchRequest(nonce=b"w" * 16),
                                                          timeout=30))
            assert next(streams[ident.device_id]).beacon.beacon  # watching
        opened = len(reads)  # the interceptor's and the stream's own read, per stream
        assert sorted(reads) == sorted(list(streams) * 2)
        version = operator.add_person("oak", cards=["0099AA12"]).version
        for stream in streams.values():
            while pb.Beacon.FromString(next(stream).beacon.beacon).version != version:
                pass
        for stream in streams.values():
            next(stream)  # a beacon-interval wake-up (1 s) after the change
        assert not set(reads[opened:]) & set(streams)  # no wake-up read a door's row
        front_id, back_id = list(streams)
        operator.call("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="front"))
        with pytest.raises(StopIteration):  # the hub ends the revoked door's stream
            while True:
                next(streams[front_id])
        assert next(streams[back_id]).beacon.beacon  # the other door keeps watching
        assert back_id not in reads[opened:]
    finally:
        for client in clients:
            client.close()
        front.close()
        back.close()


def test_audit_verify_holds_across_a_hub_key_rotation(tmp_path: Path) -> None:
    from doorkeeper.hub.hubkeys import rotate_signing_key
    from tests.harness import HubThread

    h = HubThread(tmp_path / "hub").start()
    env = {"DOORKEEPER_HUB": h.address, "DOORKEEPER_OPERATOR_KEY": str(h.data_dir / "operator.key")}
    runner = CliRunner()
    try:
        assert runner.invoke(cli, ["site", "add", "oak"], env=env).exit_code == 0
        port = h.port
    finally:
        h.stop()
    old, new = rotate_signing_key(tmp_path / "hub" / "keys")
    h = HubThread(tmp_path / "hub", port=port).start()
    try:
        assert runner.invoke(cli, ["site", "add", "elm"], env=env).exit_code == 0
        r = runner.invoke(cli, ["audit", "verify"], env=env)
        assert r.exit_code == 0, r.output
        assert old in r.stderr and new in r.stderr  # entries signed by both keys, all verified
    finally:
        h.stop()
