"""Hostile request bodies at the hub's edge: oversized fields, garbage bytes, out-of-range
numbers and unauthenticated calls are refused with a clear status, counted by full method and
reason, logged at most once per interval, and change nothing; the hub keeps answering."""

from __future__ import annotations

import logging
import re

import grpc
import pytest
from prometheus_client import generate_latest

from doorkeeper.agent.sync.hubclient import ADMIN, SYNC
from doorkeeper.hub.edge import check_request
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth
from doorkeeper.wire.limits import REQUEST_FIELD_CAPS

GARBAGE = b"\xff" * 64  # tag 31 with wire type 7: no protobuf parser accepts it


def refused_count(hub, method: str, code: str, reason: str) -> float:  # type: ignore[no-untyped-def]
    text = generate_latest(hub.hub.metrics.registry).decode()
    labels = f'code="{code}",method="{method}",reason="{reason}"'
    match = re.search(r"^doorkeeper_rpc_errors_total\{" + re.escape(labels) + r"\} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def state(hub) -> tuple[object, ...]:  # type: ignore[no-untyped-def]
    store = hub.hub.store
    return tuple(store.list_sites()), tuple(store.list_devices())


@pytest.mark.parametrize("size", [150_000, 1_000_000])
def test_huge_site_name_is_refused_naming_field_and_cap(hub, operator, caplog, size: int) -> None:
    operator.add_site("oak")
    before = state(hub)
    name = "x" * size
    caplog.set_level(logging.INFO)
    for method, request in (("AddSite", pb.AddSiteRequest(name=name)),
                            ("AddDevice", pb.AddDeviceRequest(site=name, name="front"))):
        with pytest.raises(grpc.RpcError) as err:
            operator.call(method, request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        field = "name" if method == "AddSite" else "site"
        assert f"{method}Request.{field}: at most 64 characters (got {size})" == err.value.details()
    assert state(hub) == before  # nothing stored
    assert "x" * 100 not in caplog.text  # the caller's text never reaches a log line
    assert [s.name for s in operator.call("ListSites", pb.ListSitesRequest()).sites] == ["oak"]
    assert operator.add_site("elm").name == "elm"  # and the hub keeps answering
    assert refused_count(hub, "/doorkeeper.v1.Admin/AddSite", "INVALID_ARGUMENT", "over_cap") == 1


def test_garbage_bodies_get_invalid_argument_one_warning_and_a_count(hub, operator, caplog) -> None:
    operator.add_site("oak")
    before = state(hub)
    caplog.set_level(logging.DEBUG)
    channel = grpc.insecure_channel(hub.address)
    client = operator.client()
    try:
        for _ in range(40):
            for method in (SYNC + "Register", SYNC + "Challenge"):  # public: no signature needed
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary(method)(GARBAGE, timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "does not parse" in err.value.details()
        for method in (ADMIN + "AddSite", SYNC + "Fetch"):  # unary and streaming, signed garbage
            with pytest.raises(grpc.RpcError) as err:
                channel_of = client.channel
                call = channel_of.unary_unary if method.endswith("AddSite") else channel_of.unary_stream
                result = call(method)(GARBAGE, timeout=10, metadata=client._metadata(method, GARBAGE, 10))
                list(result) if method.endswith("Fetch") else None
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:  # unsigned garbage on an authenticated method
            channel.unary_unary(ADMIN + "AddSite")(GARBAGE, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
        client.close()
    assert state(hub) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no tracebacks"
    warnings = [r for r in caplog.records if "refused" in r.getMessage() and r.levelno == logging.WARNING]
    assert len([w for w in warnings if "DeviceSync/Register" in w.getMessage()]) == 1  # rate-limited
    assert "[1 such refusal(s)" in warnings[0].getMessage()
    assert refused_count(hub, "/doorkeeper.v1.DeviceSync/Register", "INVALID_ARGUMENT", "malformed") == 40
    assert refused_count(hub, "/doorkeeper.v1.DeviceSync/Challenge", "INVALID_ARGUMENT", "malformed") == 40
    assert refused_count(hub, "/doorkeeper.v1.Admin/AddSite", "INVALID_ARGUMENT", "malformed") == 2
    assert operator.add_site("elm").name == "elm"


def test_pull_logs_after_seq_beyond_int64_is_refused(hub, operator, caplog) -> None:
    operator.add_site("oak")
    caplog.set_level(logging.INFO)
    for after in (2**63, 2**64 - 1):
        with pytest.raises(grpc.RpcError) as err, operator.client() as client:
            list(client.stream(ADMIN + "PullLogs", pb.PullLogsRequest(site="oak", after_seq=after), 10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "PullLogsRequest.after_seq: at most 2^63-1"
    with operator.client() as client:  # the largest storable value is fine
        request = pb.PullLogsRequest(site="oak", after_seq=2**63 - 1)
        assert list(client.stream(ADMIN + "PullLogs", request, 10)) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_auth_refusals_are_logged_and_counted_by_method_and_reason(hub, operator, caplog) -> None:
    operator.add_site("oak")
    before = state(hub)
    caplog.set_level(logging.INFO)
    method = ADMIN + "AddSite"
    raw = pb.AddSiteRequest(name="elm").SerializeToString()
    channel = grpc.insecure_channel(hub.address)
    client = operator.client()
    try:
        for _ in range(5):  # unsigned
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(raw, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for _ in range(4):  # signed over other bytes
            metadata = client._metadata(method, b"other", 10)
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(raw, timeout=10, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = client._metadata(method, raw, 10)
        channel.unary_unary(method)(raw, timeout=10, metadata=metadata)
        for _ in range(4):  # the same signed call again: replays
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(raw, timeout=10, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()
        client.close()
    assert len(state(hub)[0]) == len(before[0]) + 1  # only the one good call added a site
    full = "/doorkeeper.v1.Admin/AddSite"
    assert refused_count(hub, full, "UNAUTHENTICATED", "unsigned") == 5
    assert refused_count(hub, full, "UNAUTHENTICATED", "bad_signature") == 4
    assert refused_count(hub, full, "UNAUTHENTICATED", "replay") == 4
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    for reason in ("unsigned", "bad_signature", "replay"):
        assert len([line for line in lines if f"({reason})" in line]) == 1, lines
    assert callauth.MD_SIGNATURE not in " ".join(lines)


def _request_types() -> list[type]:
    return [getattr(pb, m.input_type.name) for s in pb.DESCRIPTOR.services_by_name.values()
            for m in s.methods]


def test_every_request_field_has_a_cap() -> None:
    """Every string, bytes and repeated field of every DeviceSync and Admin request is listed."""
    missing: list[str] = []

    def walk(descriptor, seen: set[str]) -> None:  # type: ignore[no-untyped-def]
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            key = f"{descriptor.name}.{field.name}"
            scalar_text = field.type in (field.TYPE_STRING, field.TYPE_BYTES)
            if (field.is_repeated or scalar_text) and key not in REQUEST_FIELD_CAPS:
                missing.append(key)
            if field.is_repeated and scalar_text and key + "[]" not in REQUEST_FIELD_CAPS:
                missing.append(key + "[]")
            if field.type == field.TYPE_MESSAGE:
                walk(field.message_type, seen)

    seen: set[str] = set()
    for request in _request_types():
        walk(request.DESCRIPTOR, seen)
    assert not missing, missing


def test_caps_are_checked_on_nested_and_repeated_fields() -> None:
    template = pb.Template(model_id="m" * 257)
    assert check_request(pb.AddPersonRequest(templates=[template])) == \
        "Template.model_id: at most 256 characters (got 257)"
    assert check_request(pb.AddPersonRequest(cards=["1" * 65])) == \
        "AddPersonRequest.cards[]: at most 64 characters (got 65)"
    assert check_request(pb.AddPersonRequest(doors=["d"] * 257)) == \
        "AddPersonRequest.doors: at most 256 items (got 257)"
    assert check_request(pb.AddPersonRequest(site="oak", name="A", cards=["1234"])) is None


def test_a_servicer_fault_is_internal_with_one_traceback_per_interval(hub, operator, caplog,
                                                                      monkeypatch) -> None:
    operator.add_site("oak")
    caplog.set_level(logging.INFO)

    def broken() -> list[object]:
        raise RuntimeError("store exploded")

    monkeypatch.setattr(hub.hub.store, "list_sites", broken)
    with operator.client() as client:
        for _ in range(20):
            with pytest.raises(grpc.RpcError) as err:
                client.call(ADMIN + "ListSites", pb.ListSitesRequest())
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert err.value.details() == "internal error; the hub logged it"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].name == "doorkeeper.hub" and errors[0].exc_info
    assert refused_count(hub, "/doorkeeper.v1.Admin/ListSites", "INTERNAL", "internal") == 20
    monkeypatch.undo()
    assert [s.name for s in operator.call("ListSites", pb.ListSitesRequest()).sites] == ["oak"]
