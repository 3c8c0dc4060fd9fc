"""Cut-over readiness (issue 14, item 6, hub side): a report with known contents from a real hub
and real agents: residents with no usable credential or no consent, doors behind or in shadow,
and each door's would-refuse rate from the hourly counts its signed manifests carry."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest

from doorkeeper.hub.store import ChangeSet
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import MODEL_ID, Agent, both_stores, random_template, register_agent

SHADOW = pb.DOOR_MODE_SHADOW


def _legacy_person(hub, name: str, record: pb.PersonRecord, consent: str = "") -> str:  # type: ignore[no-untyped-def]
    """A row as older hubs (before consent records, or before credentials were required)
    could have stored it: written straight into the store, past today's checks."""
    whitelist = hub.hub.whitelist
    site = hub.hub.store.get_site("oak")
    record.person_id = record.person_id or uuid.uuid4().hex
    write = whitelist.person_write(record, pb.PersonProfile(name=name, consent=consent))
    hub.hub.store.apply_changes(site.site_id, ChangeSet(upserts=(write,)), int(time.time()))
    return record.person_id


def _reports(door: Agent, hours: list[pb.DecisionHour]) -> None:
    door.syncer.status_extra = lambda: {"model_id": MODEL_ID, "decisions": hours}


def _readiness(operator, **kw: object) -> pb.SiteReadinessResponse:  # type: ignore[no-untyped-def]
    return operator.call("SiteReadiness", pb.SiteReadinessRequest(site="oak", **kw))  # type: ignore[no-any-return]


@both_stores
def test_readiness_lists_who_and_which_doors_block_the_cut_over(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(14)
    operator.add_site("oak")
    ann = operator.add_person("oak", "Ann Card", cards=["CARD0001"]).person_id
    operator.add_person("oak", "Bo Face", templates=[random_template(rng)])
    cy = _legacy_person(hub, "Cy NoConsent", pb.PersonRecord(templates=[random_template(rng)]))
    di = _legacy_person(hub, "Di OtherModel", pb.PersonRecord(
        templates=[random_template(rng, "old-model.onnx:" + "1" * 64)]), consent="Di, form 9")
    ed = _legacy_person(hub, "Ed Nothing", pb.PersonRecord())
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    back = register_agent(operator, "oak", "back", tmp_path / "back")
    operator.add_device("oak", "side")  # never registered: never reported
    operator.add_device("oak", "stolen")
    operator.call("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="stolen"))
    try:
        hour = int(time.time()) // 3600 * 3600
        _reports(front, [
            pb.DecisionHour(hour=hour - 10 * 86400, shadow_would_refuse=50),  # before the window
            pb.DecisionHour(hour=hour - 7200, shadow_would_grant=4, shadow_would_refuse=1),
            pb.DecisionHour(hour=hour, shadow_would_grant=2, shadow_would_refuse=1, granted_card=3),
        ])
        _reports(back, [])
        assert back.syncer.sync_once().ok
        operator.call("SetDeviceMode", pb.SetDeviceModeRequest(site="oak", device="front", mode=SHADOW))
        assert front.syncer.sync_once().ok  # back is now one version behind
        site = hub.hub.store.get_site("oak")
        r = _readiness(operator)
        assert (r.site_id, r.site_version, r.ready) == (site.site_id, site.version, False)
        assert [(p.name, p.person_id) for p in r.no_credential] == [("Di OtherModel", di), ("Ed Nothing", ed)]
        assert [(p.name, p.person_id) for p in r.no_consent] == [("Cy NoConsent", cy)]
        doors = {d.name: d for d in r.doors}
        assert sorted(doors) == ["back", "front", "side"]  # the revoked door decides nothing
        assert (doors["front"].mode, doors["front"].current, doors["front"].reported_version) == \
            (SHADOW, True, site.version)
        assert (doors["front"].shadow_would_grant, doors["front"].shadow_would_refuse) == (6, 2)
        assert doors["front"].shadow_refuse_rate == pytest.approx(0.25)
        assert (doors["back"].mode, doors["back"].current, doors["back"].reported_version) == \
            (pb.DOOR_MODE_ENFORCE, False, site.version - 1)
        assert (doors["side"].current, doors["side"].reported_version, doors["side"].shadow_refuse_rate) == \
            (False, 0, 0.0)
        # The hub keeps the counts: a later manifest that carries only the last hour (older
        # hours fall out of a door's 48-hour window) changes nothing.
        _reports(front, [pb.DecisionHour(hour=hour, shadow_would_grant=2, shadow_would_refuse=1)])
        front.syncer.heartbeat()
        again = {d.name: d for d in _readiness(operator).doors}["front"]
        assert (again.shadow_would_grant, again.shadow_would_refuse) == (6, 2)
        # A window that starts ten days back counts the old hour too.
        old = {d.name: d for d in _readiness(operator, since=hour - 11 * 86400).doors}["front"]
        assert (old.shadow_would_grant, old.shadow_would_refuse) == (6, 52)

        # Fix what blocks: the three residents go, the doors catch up, the unused door goes.
        for person_id in (cy, di, ed):
            operator.remove_person(person_id)
        operator.call("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="side"))
        for door in (front, back):
            assert door.syncer.sync_once().ok
        r = _readiness(operator)
        assert (list(r.no_credential), list(r.no_consent)) == ([], [])
        assert [d.name for d in r.doors] == ["back", "front"] and all(d.current for d in r.doors)
        assert r.ready  # a door in shadow mode does not block: this is the report to switch it by
        assert hub.hub.store.get_person(ann).person_id == ann
    finally:
        front.close()
        back.close()


@both_stores
def test_readiness_of_an_unknown_site_or_by_an_auditor_is_refused(hub, operator) -> None:  # type: ignore[no-untyped-def]
    from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
    from doorkeeper.hub.store import Operator as StoredOperator
    from doorkeeper.wire import keys

    with pytest.raises(grpc.RpcError) as err:
        operator.call("SiteReadiness", pb.SiteReadinessRequest(site="nowhere"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    operator.add_site("oak")
    pair = keys.KeyPair.generate()
    hub.hub.store.add_operator(StoredOperator(pair.key_id, pair.sign_public, "auditor", "aud", 1))
    with HubClient(hub.address, pair.key_id, pair.sign_key) as client, pytest.raises(grpc.RpcError) as err:
        client.call(ADMIN + "SiteReadiness", pb.SiteReadinessRequest(site="oak"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # it names residents


def test_site_readiness_command_exit_codes(run, hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    operator.add_person("oak", "Ann Card", cards=["CARD0001"])
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    try:
        r = run("site", "readiness", "oak")
        assert r.exit_code == 3 and "NOT READY" in r.stderr and "front" in r.stderr  # never reported
        hour = int(time.time()) // 3600 * 3600
        _reports(front, [pb.DecisionHour(hour=hour, shadow_would_grant=3, shadow_would_refuse=1)])
        assert run("device", "mode", "front", "shadow", "--site", "oak").exit_code == 0
        assert front.syncer.sync_once().ok
        r = run("site", "readiness", "oak")
        assert r.exit_code == 0, r.output
        assert "READY" in r.stderr and "still in shadow mode: front" in r.stderr and "25.0%" in r.stderr
        doc = json.loads(run("site", "readiness", "oak", "--json").stdout)
        assert doc["ready"] is True and doc["no_credential"] == [] and doc["no_consent"] == []
        assert doc["doors"] == [{
            "device_id": front.files.load_identity().device_id, "name": "front", "mode": "shadow",
            "reported_version": hub.hub.store.get_site("oak").version, "current": True,
            "shadow_would_grant": 3, "shadow_would_refuse": 1, "shadow_refuse_rate": 0.25}]
        r = run("site", "readiness", "oak", "--max-refuse-rate", "0.2", "--json")
        assert r.exit_code == 3
        assert json.loads(r.stdout)["over_refuse_rate"] == ["front"]
        assert run("site", "readiness", "oak", "--max-refuse-rate", "0.3").exit_code == 0
        r = run("site", "readiness", "nowhere")
        assert r.exit_code == 2 and "not found" in r.stderr
    finally:
        front.close()


def test_a_site_with_no_door_or_nobody_enrolled_is_not_ready(run, hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Nothing listed is not the same as ready: with no door there is nothing to switch, and
    with nobody enrolled every door would refuse everyone."""
    operator.add_site("oak")
    r = run("site", "readiness", "oak")
    assert r.exit_code == 3 and "no doors" in r.stderr and "NOT READY" in r.stderr
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    try:
        assert front.syncer.sync_once().ok
        r = run("site", "readiness", "oak")
        assert r.exit_code == 3 and "nobody is enrolled" in r.stderr, r.stderr
        operator.add_person("oak", "Ann Card", cards=["CARD0001"])
        assert front.syncer.sync_once().ok
        assert run("site", "readiness", "oak").exit_code == 0
    finally:
        front.close()
