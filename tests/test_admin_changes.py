"""Operator changes over real gRPC: a change and its audit entry land together or not at
all, and a retried call (same request id) makes its change once."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
from doorkeeper.agent.sync.syncer import grpc_unavailable
from doorkeeper.tools.cli.common import change_call
from doorkeeper.v1 import doorkeeper_pb2 as pb


def _fail_audit(hub, action: str) -> None:  # type: ignore[no-untyped-def]
    """Make the hub's audit insert for `action` fail inside SQLite (as a full disk would)."""
    with sqlite3.connect(hub.data_dir / "hub.db") as db:
        db.execute(f"CREATE TRIGGER audit_fails BEFORE INSERT ON audit WHEN NEW.action = '{action}'"
                   " BEGIN SELECT RAISE(ABORT, 'audit write failed'); END")


def _persons(hub) -> int:  # type: ignore[no-untyped-def]
    with sqlite3.connect(hub.data_dir / "hub.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM persons").fetchone()[0])


def test_a_person_whose_audit_entry_fails_is_not_added(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    before = hub.hub.store.get_site("oak")
    audit_before = hub.hub.store.list_audit()
    _fail_audit(hub, "person.add")
    with pytest.raises(grpc.RpcError):
        operator.add_person("oak", cards=["CARD0001"])
    assert hub.hub.store.get_site("oak") == before
    assert _persons(hub) == 0
    assert hub.hub.store.list_audit() == audit_before


def test_a_door_whose_audit_entry_fails_is_not_created(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    _fail_audit(hub, "device.add")
    with pytest.raises(grpc.RpcError):
        operator.add_device("oak", "front")
    assert hub.hub.store.list_devices() == []


def test_a_repeated_request_id_adds_the_person_once(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    request = pb.AddPersonRequest(site="oak", name="Ann", cards=["CARD0001"], request_id="retry-0001")
    first = operator.call("AddPerson", request)
    again = operator.call("AddPerson", request)  # signed afresh: a new nonce, the same request
    assert again == first
    site = hub.hub.store.get_site("oak")
    assert site.version == first.version and site.person_count == 1
    assert [e.action for e in hub.hub.store.list_audit()].count("person.add") == 1


def test_a_request_id_reused_for_another_request_is_refused(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    operator.call("AddPerson", pb.AddPersonRequest(site="oak", name="Ann", cards=["CARD0001"],
                                                   request_id="retry-0001"))
    before = hub.hub.store.get_site("oak")
    with pytest.raises(grpc.RpcError) as info:
        operator.call("AddPerson", pb.AddPersonRequest(site="oak", name="Bob", cards=["CARD0002"],
                                                       request_id="retry-0001"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert hub.hub.store.get_site("oak") == before


class _LosesFirstAnswer(HubClient):
    """The hub makes the change, but its answer never reaches the operator (a dropped link)."""

    lost = False

    def call(self, method, request, timeout=None, wait_for_ready=False):  # type: ignore[no-untyped-def]
        response = super().call(method, request, timeout, wait_for_ready)
        if not self.lost:
            self.lost = True
            raise grpc_unavailable("connection reset before the answer arrived")
        return response


def test_the_cli_retries_a_lost_answer_without_adding_twice(hub, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    plain = operator.client()
    client = _LosesFirstAnswer(hub.address, plain.principal, plain.sign_key)
    plain.close()
    with client:
        response = change_call(client, ADMIN + "AddPerson",
                               pb.AddPersonRequest(site="oak", name="Ann", cards=["CARD0001"]))
    assert client.lost
    site = hub.hub.store.get_site("oak")
    assert site.person_count == 1 and site.version == response.version
