"""Door modes set at the hub (issue 14, item 4): a mode change is one audited site version that
reaches the door only inside a signed bundle; refusals change nothing; fleet shows both the mode
set at the hub and the one the door reports."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from doorkeeper.agent.doorloop.whitelistview import GalleryCache
from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
from doorkeeper.hub.store import Operator as StoredOperator
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import digest, keys
from tests.harness import MODEL_ID, both_stores, register_agent

SHADOW, ENFORCE = pb.DOOR_MODE_SHADOW, pb.DOOR_MODE_ENFORCE


def _set(operator, door: str, mode: int, site: str = "oak", **kw: str) -> pb.SetDeviceModeResponse:  # type: ignore[no-untyped-def]
    return operator.call("SetDeviceMode", pb.SetDeviceModeRequest(site=site, device=door, mode=mode, **kw))


def _config(hub, site: str = "oak") -> pb.SiteConfig:  # type: ignore[no-untyped-def]
    return hub.hub.whitelist.config(hub.hub.store.get_site(site))


def _audit(hub) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """Oldest first."""
    entries = sorted(hub.hub.store.list_audit(1000), key=lambda e: e.seq)
    return [(e.principal, e.action, e.detail) for e in entries]


@both_stores
def test_a_mode_set_at_the_hub_reaches_the_door_in_a_signed_bundle(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    operator.add_person("oak", cards=["CARD0001"])
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    back = register_agent(operator, "oak", "back", tmp_path / "back")
    try:
        for door in (front, back):
            assert door.syncer.sync_once().ok
        before = hub.hub.store.get_site("oak")
        first_config_hash = before.config_hash
        r = _set(operator, "front", SHADOW)
        front_id = front.files.load_identity().device_id
        back_id = back.files.load_identity().device_id
        assert (r.device_id, r.mode, r.version) == (front_id, SHADOW, before.version + 1)
        _set(operator, back_id, SHADOW)  # by id, no site needed
        site = hub.hub.store.get_site("oak")
        assert site.version == before.version + 2
        # Only shadow doors are listed, sorted by device id, whatever order they were set in.
        expected = sorted([front_id, back_id])
        assert [e.device_id for e in _config(hub).door_modes] == expected
        assert {e.mode for e in _config(hub).door_modes} == {SHADOW}
        for door in (front, back):
            assert door.syncer.sync_once().outcome == "applied"
            applied = door.whitelist.site_config()
            assert applied is not None
            assert [(e.device_id, e.mode) for e in applied.door_modes] == [(d, SHADOW) for d in expected]
            assert door.whitelist.state_digest == site.state_digest == door.whitelist.compute_digest()
            # The view the door decides on holds it too.
            view = GalleryCache(door.whitelist, MODEL_ID).view
            assert view.config is not None and view.version == site.version
            assert [(e.device_id, e.mode) for e in view.config.door_modes] == [(d, SHADOW) for d in expected]
        # Back to enforce: the entry goes, and with both doors enforcing the config bytes are
        # the ones the site had before any mode was set (the digest is deterministic).
        _set(operator, "front", ENFORCE)
        _set(operator, "back", ENFORCE)
        site = hub.hub.store.get_site("oak")
        assert site.config_hash == first_config_hash and list(_config(hub).door_modes) == []
        assert front.syncer.sync_once().outcome == "applied"
        applied = front.whitelist.site_config()
        assert applied is not None and list(applied.door_modes) == []
        assert digest.record_hash(applied.SerializeToString(deterministic=True)) == first_config_hash
        # Audited: who, which door, old and new mode, the version.
        modes = [(p, d) for p, a, d in _audit(hub) if a == "device.mode"]
        assert len(modes) == 4 and all(p.startswith("operator:first-admin:") for p, _ in modes)
        assert modes[0][1].startswith(f"{front_id} front site=") and "enforce->shadow" in modes[0][1]
        assert "shadow->enforce" in modes[3][1] and modes[3][1].endswith(f"v{site.version}")
    finally:
        front.close()
        back.close()


@both_stores
def test_mode_refusals_change_nothing(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    operator.add_site("elm")
    operator.add_device("oak", "front")
    operator.add_device("oak", "stolen")
    operator.call("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="stolen"))
    site, audit = hub.hub.store.get_site("oak"), _audit(hub)
    cases = [
        ("front", 0, grpc.StatusCode.INVALID_ARGUMENT, "shadow or enforce"),
        ("front", 7, grpc.StatusCode.INVALID_ARGUMENT, "shadow or enforce"),
        ("nowhere", SHADOW, grpc.StatusCode.NOT_FOUND, "no door named"),
        ("0" * 32, SHADOW, grpc.StatusCode.NOT_FOUND, ""),
        ("stolen", SHADOW, grpc.StatusCode.INVALID_ARGUMENT, "revoked"),
    ]
    for door, mode, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            _set(operator, door, mode)
        assert err.value.code() == code, (door, mode)
        assert words in err.value.details()
    with pytest.raises(grpc.RpcError) as err:  # a door of another site, by name
        _set(operator, "front", SHADOW, site="elm")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        _set(operator, "front", SHADOW, request_id="bad id!")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An auditor may read fleet status but not switch a door.
    pair = keys.KeyPair.generate()
    hub.hub.store.add_operator(StoredOperator(pair.key_id, pair.sign_public, "auditor", "aud", 1))
    with HubClient(hub.address, pair.key_id, pair.sign_key) as client, pytest.raises(grpc.RpcError) as err:
        client.call(ADMIN + "SetDeviceMode", pb.SetDeviceModeRequest(site="oak", device="front", mode=SHADOW))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin or operator" in err.value.details()
    assert hub.hub.store.get_site("oak") == site
    assert _audit(hub) == audit
    # Setting the mode a door already has makes no version (audited as unchanged).
    r = _set(operator, "front", ENFORCE)
    assert r.version == site.version and hub.hub.store.get_site("oak") == site
    assert _audit(hub)[-1][2].endswith("enforce->enforce unchanged")


@both_stores
def test_a_retried_mode_change_makes_one_version(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    operator.add_device("oak", "front")
    before = hub.hub.store.get_site("oak")
    first = _set(operator, "front", SHADOW, request_id="mode-retry-1")
    again = _set(operator, "front", SHADOW, request_id="mode-retry-1")
    assert again == first and first.version == before.version + 1
    assert hub.hub.store.get_site("oak").version == first.version
    assert [a for _, a, _ in _audit(hub)].count("device.mode") == 1
    with pytest.raises(grpc.RpcError) as err:  # the same id for another request
        _set(operator, "front", ENFORCE, request_id="mode-retry-1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert hub.hub.store.get_site("oak").version == first.version


def test_device_mode_and_fleet_commands(run, hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    try:
        r = run("device", "mode", "front", "shadow", "--site", "oak")
        assert r.exit_code == 0, r.output
        device_id = front.files.load_identity().device_id
        assert r.stdout.strip().splitlines()[-1] == device_id and "set to shadow" in r.stderr
        r = run("device", "mode", "front", "paused", "--site", "oak")
        assert r.exit_code == 2 and "paused" in r.stderr
        r = run("device", "mode", "nowhere", "shadow", "--site", "oak")
        assert r.exit_code == 2 and "no door named" in r.stderr
        # The door has not fetched yet: the hub says shadow, the door's report says enforce.
        front.syncer.heartbeat()
        rows = json.loads(run("fleet", "--site", "oak", "--json").stdout)
        assert (rows[0]["mode"], rows[0]["reported_mode"]) == ("shadow", "enforce")
        table = run("fleet", "--site", "oak").stderr
        assert "SHADOW (door: enforce)" in table and "1 door(s) in SHADOW mode" in table
        # The door reports the mode it acts in, what it holds back and what it refused.
        front.syncer.status_extra = lambda: {
            "mode": SHADOW, "pending_version": 9, "pending_effective_at": 1_900_000_000,
            "refused_version": 8, "refused_reason": "bundle expired"}
        assert front.syncer.sync_once().ok
        rows = json.loads(run("fleet", "--site", "oak", "--json").stdout)
        assert (rows[0]["mode"], rows[0]["reported_mode"]) == ("shadow", "shadow")
        assert (rows[0]["pending_version"], rows[0]["pending_effective_at"]) == (9, 1_900_000_000)
        assert (rows[0]["refused_version"], rows[0]["refused_reason"]) == (8, "bundle expired")
        table = run("fleet", "--site", "oak").stderr
        assert "refused v8: bundle expired" in table and "(door:" not in table
        r = run("device", "mode", device_id, "enforce", "--json")
        assert json.loads(r.stdout) == {"device_id": device_id, "mode": "enforce",
                                        "version": hub.hub.store.get_site("oak").version}
        assert json.loads(run("fleet", "--site", "oak", "--json").stdout)[0]["mode"] == "enforce"
    finally:
        front.close()


@both_stores
def test_a_config_change_committed_between_read_and_write_refuses_the_mode_change(  # type: ignore[no-untyped-def]
        hub, operator, monkeypatch) -> None:
    """Another replica sets the owner key after this one read the site config: writing the mode
    on the stale config would drop that key, so the mode change is refused and rolled back."""
    from doorkeeper.hub.doormodes import DoorModes
    from doorkeeper.hub.store import Conflict

    operator.add_site("oak")
    operator.add_device("oak", "front")
    store, whitelist = hub.hub.store, hub.hub.whitelist
    modes = DoorModes(store, whitelist, hub.hub.devices)
    before = store.get_site("oak")
    real_apply = store.apply_changes

    def racing_apply(site_id, changes, now):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(store, "apply_changes", real_apply)
        whitelist.set_owner_key(site_id, b"k" * 32)  # the other writer's commit lands first
        return real_apply(site_id, changes, now)

    monkeypatch.setattr(store, "apply_changes", racing_apply)
    with pytest.raises(Conflict), store.atomic():
        modes.set("oak", "front", SHADOW)
    assert store.get_site("oak") == before  # the whole transaction rolled back
    assert modes.set("oak", "front", SHADOW).site.version == before.version + 1  # a rerun goes through


@both_stores
def test_a_config_change_committed_between_read_and_write_refuses_the_owner_key_change(  # type: ignore[no-untyped-def]
        hub, operator, monkeypatch) -> None:
    """The other way round: a door's mode set through another replica after this one read the
    config; writing the owner key on the stale config would put the door back to enforce."""
    from doorkeeper.hub.doormodes import DoorModes, shadow_doors
    from doorkeeper.hub.store import Conflict

    operator.add_site("oak")
    operator.add_device("oak", "front")
    store, whitelist = hub.hub.store, hub.hub.whitelist
    modes = DoorModes(store, whitelist, hub.hub.devices)
    real_apply = store.apply_changes

    def racing_apply(site_id, changes, now):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(store, "apply_changes", real_apply)
        modes.set(site_id, "front", SHADOW)  # the other writer's commit lands first
        return real_apply(site_id, changes, now)

    before = store.get_site("oak")
    monkeypatch.setattr(store, "apply_changes", racing_apply)
    with pytest.raises(Conflict), store.atomic():
        whitelist.set_owner_key("oak", b"k" * 32)
    # The whole transaction rolled back (here the "other replica" wrote inside it; on a real
    # second replica its commit stays and only this change is undone).
    assert store.get_site("oak") == before
    modes.set("oak", "front", SHADOW)
    whitelist.set_owner_key("oak", b"k" * 32)  # now in order: the key joins the mode
    config = whitelist.config(store.get_site("oak"))
    assert shadow_doors(config) and config.log_owner_public_key == b"k" * 32


def test_a_door_set_to_shadow_before_it_registers_gets_the_mode_in_its_first_bundle(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path) -> None:
    from doorkeeper.agent.sync.identity import init_agent
    from tests.harness import open_agent

    operator.add_site("oak")
    token = operator.add_device("oak", "front").token
    r = _set(operator, "front", SHADOW)
    init_agent(tmp_path / "front", operator.address, token)
    front = open_agent(tmp_path / "front")
    try:
        assert front.files.load_identity().device_id == r.device_id
        assert front.syncer.sync_once().outcome == "applied"
        applied = front.whitelist.site_config()
        assert applied is not None
        assert [(e.device_id, e.mode) for e in applied.door_modes] == [(r.device_id, SHADOW)]
    finally:
        front.close()
