"""Call nonces handed out on authenticated streams: a change costs a door a Fetch and a Report,
no Challenge, and every signed call stays single-use and bound to its door."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from doorkeeper.agent.sync.hubclient import SYNC, HubClient
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth, keys
from doorkeeper.wire.freshness import new_nonce
from tests.harness import Agent, Operator, random_template, register_agent


def _watch_nonce(client: HubClient, call_nonces: bool = True) -> bytes:
    """The call nonce on the first beacon of a fresh watch stream."""
    stream = client.stream(SYNC + "Watch", pb.WatchRequest(nonce=new_nonce(), call_nonces=call_nonces), 30)
    try:
        return bytes(next(iter(stream)).call_nonce)
    finally:
        stream.cancel()  # type: ignore[attr-defined]


def _signed_report(agent: Agent, nonce: bytes, device_id: str | None = None,
                   key: object | None = None) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A Report's request bytes and metadata signed with `nonce` (as `device_id`, with `key`)."""
    sign_key = key or agent.syncer.device_keys.sign_key
    principal = device_id or agent.syncer.identity.device_id
    raw = agent.syncer.manifest(new_nonce()).SerializeToString()
    signed = pb.SignedManifest(manifest=raw, signature=keys.sign(sign_key, keys.CTX_MANIFEST, raw))
    request = signed.SerializeToString()
    sig = callauth.call_signature(sign_key, SYNC + "Report", principal, nonce, request)  # type: ignore[arg-type]
    return request, callauth.metadata(principal, nonce, sig)


def _report_with(hub_address: str, request: bytes,
                 metadata: tuple[tuple[str, str], ...]) -> pb.ReportResponse:
    with grpc.insecure_channel(hub_address) as channel:
        call = channel.unary_unary(SYNC + "Report", response_deserializer=pb.ReportResponse.FromString)
        return call(request, metadata=metadata, timeout=10)  # type: ignore[no-any-return]


def test_a_change_costs_a_door_no_challenge(hub, operator: Operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The watch beacon's nonce signs the Fetch, the Fetch's nonce signs the Report."""
    rng = np.random.default_rng(1)
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    try:
        assert agent.syncer.sync_once().outcome == "applied"
        client = agent.syncer.client
        client.offer_nonce(_watch_nonce(client))
        version = operator.add_person("oak", templates=[random_template(rng)]).version
        before = client.challenges
        result = agent.syncer.sync_once()
        assert result.outcome == "applied" and agent.whitelist.version == version
        assert client.challenges == before  # neither the Fetch nor the Report needed one
        status = hub.hub.devices.status("oak")[0]
        assert status.reported_version == version and status.in_sync  # the Report landed
    finally:
        agent.close()


def test_doors_that_do_not_ask_get_no_nonces(hub, operator: Operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """v1 doors that predate the fields see the old answers and keep using Challenge."""
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    try:
        assert _watch_nonce(agent.syncer.client, call_nonces=False) == b""
        parts = list(agent.syncer.client.stream(SYNC + "Fetch", pb.FetchRequest(nonce=new_nonce()), 30))
        assert parts and all(not p.call_nonce for p in parts)
        with_nonce = list(agent.syncer.client.stream(
            SYNC + "Fetch", pb.FetchRequest(nonce=new_nonce(), call_nonce=True), 30))
        assert [bool(p.call_nonce) for p in with_nonce] == [True] + [False] * (len(with_nonce) - 1)
    finally:
        agent.close()


def test_an_offered_nonce_is_single_use_and_bound_to_its_door(hub, operator: Operator,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    operator.add_site("oak")
    front = register_agent(operator, "oak", "front", tmp_path / "front")
    back = register_agent(operator, "oak", "back", tmp_path / "back")
    try:
        nonce = _watch_nonce(front.syncer.client)
        request, metadata = _signed_report(front, nonce)
        _report_with(hub.address, request, metadata)
        reported = hub.hub.store.latest_report(front.syncer.identity.device_id)
        with pytest.raises(grpc.RpcError) as replay:
            _report_with(hub.address, request, metadata)  # the same signed call again
        assert replay.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert hub.hub.store.latest_report(front.syncer.identity.device_id) == reported

        # A nonce handed to `front` does not sign a call of `back`, even with back's own key.
        foreign = _watch_nonce(front.syncer.client)
        before = hub.hub.store.latest_report(back.syncer.identity.device_id)
        request, metadata = _signed_report(back, foreign)
        with pytest.raises(grpc.RpcError) as stolen:
            _report_with(hub.address, request, metadata)
        assert stolen.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert hub.hub.store.latest_report(back.syncer.identity.device_id) == before
    finally:
        front.close()
        back.close()


def test_a_refused_offered_nonce_falls_back_to_a_challenge(hub, operator: Operator,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    """A spent (or expired) offered nonce costs one refused attempt, then a Challenge: unary
    calls and streams alike; a nonce offered twice (a replayed answer) is used once."""
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    client = agent.syncer.client
    try:
        assert agent.syncer.sync_once().outcome == "applied"
        with client.fresh(10) as other:
            spent = _watch_nonce(other)  # (opening the watch itself takes a Challenge)
            opened = other.challenges
            other.offer_nonce(spent)
            other.call(SYNC + "Report", pb.SignedManifest(
                manifest=(raw := agent.syncer.manifest(new_nonce()).SerializeToString()),
                signature=keys.sign(agent.syncer.device_keys.sign_key, keys.CTX_MANIFEST, raw)))
            assert other.challenges == opened  # it spent the offered nonce
            spent_too = _watch_nonce(other)
            other.offer_nonce(spent_too)
            list(other.stream(SYNC + "Fetch", pb.FetchRequest(nonce=new_nonce()), 30))
        before = client.challenges
        client.offer_nonce(spent)
        assert agent.syncer.heartbeat()  # Report: refused with the spent nonce, then a Challenge
        assert client.challenges == before + 1
        client.offer_nonce(spent_too)
        assert agent.syncer.sync_once().outcome == "up_to_date"  # Fetch stream reopened likewise
        assert client.challenges == before + 2

        fresh = _watch_nonce(client)
        client.offer_nonce(fresh)
        assert agent.syncer.heartbeat() and client.challenges == before + 3  # (+1: the watch)
        client.offer_nonce(fresh)  # replayed: ignored, not spent twice
        assert agent.syncer.heartbeat() and client.challenges == before + 4
    finally:
        agent.close()


def test_the_agent_retries_what_is_transient() -> None:
    """CANCELLED (a hub or proxy dropping a call under load), RESOURCE_EXHAUSTED, UNAVAILABLE,
    DEADLINE_EXCEEDED and ABORTED are retried; refusals are not."""
    from doorkeeper.agent.sync.hubclient import transient
    from doorkeeper.agent.sync.syncer import grpc_unavailable

    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    retried = {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
               grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
    assert {code for code in grpc.StatusCode if transient(Failed(code))} == retried
    assert transient(grpc_unavailable("cut short"))
