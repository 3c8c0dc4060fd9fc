"""Entry logs end to end over loopback gRPC: outage, upload once and in order, owner decrypts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from doorkeeper.agent.sync.service import SyncOptions, SyncService
from doorkeeper.tools.cli import cli
from doorkeeper.wire.entrylog import Entry
from tests.harness import HubThread, Operator, random_template, register_agent


def _env(h: HubThread) -> dict[str, str]:
    return {"DOORKEEPER_HUB": h.address, "DOORKEEPER_OPERATOR_KEY": str(h.data_dir / "operator.key")}


def test_outage_then_everything_arrives_once_in_order_and_only_the_owner_reads_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    runner = CliRunner()
    h = HubThread(tmp_path / "hub").start()
    port = h.port
    op = Operator(h.address, h.data_dir / "operator.key")
    op.add_site("oak")
    owner_key = tmp_path / "owner.key"
    r = runner.invoke(cli, ["site", "owner-key", "--site", "oak", "--out", str(owner_key)], env=_env(h))
    assert r.exit_code == 0, r.output
    person = op.add_person("oak", templates=[random_template(rng)])
    register_agent(op, "oak", "front", tmp_path / "a").close()
    service = SyncService(tmp_path / "a", SyncOptions(poll_interval_s=3600, upload_interval_s=3600))
    try:
        assert service.syncer.sync_once().ok
        assert service._owner is not None  # the owner key came in the signed bundle
        service.record(Entry(door="front", decision="granted", credential="face",
                             person_id=person.person_id, similarity=0.71, whitelist_version=2))
        assert service.upload().records_acked == 1
        h.stop()  # outage
        for i in range(30):
            service.record(Entry(door="front", decision="denied" if i % 2 else "unknown",
                                 credential="face", similarity=0.1 + i / 100, reason="low_similarity"))
        offline = service.upload()
        assert offline.error and offline.records_acked == 0 and offline.backlog == 30
        h = HubThread(tmp_path / "hub", port=port).start()
        done = service.upload()
        assert done.error == "" and done.records_acked == 30 and done.backlog == 0
        assert service.upload().batches == 0  # nothing left, nothing resent
        # The hub's whitelist knows person ids (they are its own); its log store knows none,
        # and no hub file holds an entry's decision, reason or score. (Hourly decision counts
        # per door are the hub's by design, so its schema names decision kinds such as
        # "granted_face": the log store's files must not even hold those words.)
        logs_raw = b"".join(p.read_bytes() for p in (tmp_path / "hub").glob("logs.db*"))
        assert len(logs_raw) > 0 and person.person_id.encode() not in logs_raw
        for plain in (b"granted", b"denied", b"low_similarity", b"unknown"):
            assert plain not in logs_raw
        hub_raw = logs_raw + b"".join(p.read_bytes() for p in (tmp_path / "hub").glob("hub.db*"))
        assert b"low_similarity" not in hub_raw and b"denied" not in hub_raw
        status = h.hub.devices.status("oak")[0]
        h.hub.logs.annotate(status)  # type: ignore[union-attr]
        assert status.logs_watermark == 31 and status.logs_error == ""
    finally:
        service.close()
    export = tmp_path / "oak.dklogs"
    r = runner.invoke(cli, ["logs", "pull", "--site", "oak", "--out", str(export)], env=_env(h))
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["logs", "verify", "--owner-key", str(owner_key), str(export)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["logs", "decrypt", "--owner-key", str(owner_key), str(export), "--json"])
    assert r.exit_code == 0, r.output
    entries = json.loads(r.stdout)
    assert [e["seq"] for e in entries] == list(range(1, 32))
    assert entries[0]["person_id"] == person.person_id and entries[0]["decision"] == "granted"
    # Someone else's key reads nothing.
    other = tmp_path / "other.key"
    from doorkeeper.tools.cli.logs import generate_owner_key

    generate_owner_key(other)
    r = runner.invoke(cli, ["logs", "decrypt", "--owner-key", str(other), str(export), "--json"])
    assert r.exit_code != 0
    h.stop()


def test_a_door_never_synced_writes_no_plaintext(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    service = SyncService(tmp_path / "a")
    try:
        service.record(Entry(door="front", decision="denied", credential="card", reason="no_whitelist"))
        stats = service.outbox.stats()
        assert stats.backlog_records == 0 and stats.unwritten_total == 1
        raw = b"".join(p.read_bytes() for p in (tmp_path / "a").glob("outbox.db*"))
        assert b"no_whitelist" not in raw
    finally:
        service.close()


def _door_with_one_record(operator, tmp_path: Path) -> SyncService:  # type: ignore[no-untyped-def]
    """A synced door of site "oak" (which has an owner key) with one decision queued."""
    from doorkeeper.tools.cli.logs import generate_owner_key
    from doorkeeper.v1 import doorkeeper_pb2 as pb

    operator.add_site("oak")
    owner = generate_owner_key(tmp_path / "owner.key")
    operator.call("SetOwnerKey", pb.SetOwnerKeyRequest(site="oak", public_key=owner.public_key))
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    service = SyncService(tmp_path / "a")
    assert service.syncer.sync_once().ok
    service.record(Entry(door="front", decision="granted", credential="card", person_id="p"))
    return service


def test_a_batch_signed_by_another_key_is_refused_and_shown_in_fleet_status(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path) -> None:
    import grpc
    import pytest
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import SYNC
    from doorkeeper.wire import entrylog

    service = _door_with_one_record(operator, tmp_path)
    try:
        rows = service.outbox.pending()
        ident = service.syncer.identity
        forged = entrylog.sign_batch(SigningKey.generate(), site_id=ident.site_id, device_id=ident.device_id,
                                     records=[r.record for r in rows], sent_at_ms=0, backlog=0,
                                     dropped_total=0, unwritten_total=0)
        with pytest.raises(grpc.RpcError) as err:
            service.syncer.client.call(SYNC + "UploadLogs", forged)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = hub.hub.devices.status("oak")[0]
        hub.hub.logs.annotate(status)
        assert status.logs_watermark == 0 and "signature" in status.logs_error
        # The real batch still goes through afterwards, and clears the error.
        assert service.upload().records_acked == 1
        status = hub.hub.devices.status("oak")[0]
        hub.hub.logs.annotate(status)
        assert status.logs_watermark == 1 and status.logs_error == ""
    finally:
        service.close()


def test_upload_failures_are_warnings_with_their_reason(hub, operator, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from doorkeeper.wire.keys import KeyPair

    service = _door_with_one_record(operator, tmp_path)
    try:
        real_keys = service.syncer.device_keys
        service.syncer.device_keys = KeyPair.generate()  # batches signed by a key the hub does not know
        caplog.set_level(logging.INFO, logger="doorkeeper")
        for _ in range(2):
            refused = service.upload()
            assert refused.error and not refused.transient and refused.backlog == 1
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name.startswith("doorkeeper.agent")]
        # One line, once (not once per retry), with the hub's own reason.
        assert len(warnings) == 1, warnings
        assert "hub refused the batch" in warnings[0] and "INVALID_ARGUMENT" in warnings[0]
        assert "signature" in warnings[0] and "\n" not in warnings[0]
        service.syncer.device_keys = real_keys
        assert service.upload().records_acked == 1
    finally:
        service.close()


def test_an_upload_bug_is_not_retried_as_if_the_hub_were_down(tmp_path: Path) -> None:
    import pytest

    from doorkeeper.agent.entries.outbox import Outbox
    from doorkeeper.agent.entries.uploader import upload_pending
    from doorkeeper.wire.entrylog import OwnerKey
    from doorkeeper.wire.keys import KeyPair

    owner = OwnerKey.from_public(KeyPair.generate().box_public)
    outbox = Outbox(tmp_path / "outbox.db", device_id="d" * 32, owner_key=lambda: owner)
    outbox.append(Entry(door="front", decision="granted", credential="card", person_id="p"))

    def broken_send(batch):  # type: ignore[no-untyped-def]
        raise AttributeError("'NoneType' object has no attribute 'call'")

    try:
        with pytest.raises(AttributeError):
            upload_pending(outbox, broken_send, device_key=KeyPair.generate().sign_key, site_id="s" * 32)
        assert outbox.stats().backlog_records == 1
    finally:
        outbox.close()
