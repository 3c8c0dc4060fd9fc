"""Registration against a hub that is not the one the token names, or an answer lost on the way.

The token is the door's only credential until it registers; it must reach the
real hub and nobody else, and only a registration that completed end to end
(the door holds its identity and has made a signed call) may spend it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from doorkeeper.agent.sync.identity import RegistrationError, init_agent
from doorkeeper.wire import token as tokens
from tests.attacks.mitm import Mitm
from tests.harness import HubThread


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Mitm]:
    """Another real hub (its own keys), every byte sent to it recorded."""
    other = HubThread(tmp_path / "impostor").start()
    recorder = Mitm(other.address)
    yield recorder
    recorder.close()
    other.stop()


def test_an_impostor_hub_never_receives_the_token(hub, operator, impostor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    text = operator.add_device("oak", "front").token
    token = tokens.Token.parse(text)
    with pytest.raises(RegistrationError, match="fingerprint"):
        init_agent(tmp_path / "a", impostor.address, text)
    sent = b"".join(s.request for s in impostor.seen)
    assert impostor.seen and not impostor.calls("Register")
    assert token.secret not in sent and token.token_id.encode() not in sent
    assert not (tmp_path / "a" / "identity.json").exists()
    assert hub.hub.store.get_token(token.token_id).used_at is None
    # The real hub still redeems it, for the same door (its keys kept) or another.
    ident = init_agent(tmp_path / "a", hub.address, text)
    device = hub.hub.store.get_device(ident.device_id)
    assert device.registered_at is not None
    assert device.sign_public == (tmp_path / "a" / "keys" / "device.sign.pub").read_bytes()
    assert hub.hub.store.get_token(token.token_id).used_at is not None


def test_the_token_secret_never_travels_in_the_clear(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    text = operator.add_device("oak", "front").token
    relay = Mitm(hub.address)
    try:
        init_agent(tmp_path / "a", relay.address, text)
        sent = b"".join(s.request for s in relay.seen)
    finally:
        relay.close()
    assert relay.calls("Register") and tokens.Token.parse(text).secret not in sent


def test_a_registration_lost_after_the_token_check_leaves_the_token_usable(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path) -> None:
    """The hub checked the token and bound the keys; its answer never reached the door."""
    operator.add_site("oak")
    text = operator.add_device("oak", "front").token
    token_id = tokens.Token.parse(text).token_id
    relay = Mitm(hub.address)

    def answer_lost(request: bytes, context: Any) -> bytes:
        relay.relay_unary("/doorkeeper.v1.DeviceSync/Register", request, context)
        context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        raise AssertionError("abort returns only by raising")

    relay.unary["Register"] = answer_lost
    try:
        with pytest.raises(grpc.RpcError):
            init_agent(tmp_path / "a", relay.address, text)
        assert relay.calls("Register")  # it did reach the hub, past the token check
    finally:
        relay.close()
    device = hub.hub.store.list_devices()[0]
    assert device.registered_at is None and hub.hub.store.get_token(token_id).used_at is None
    assert not (tmp_path / "a" / "identity.json").exists()

    ident = init_agent(tmp_path / "a", hub.address, text)  # the retry works
    assert ident.device_id == device.device_id
    assert hub.hub.store.get_device(device.device_id).registered_at is not None
    assert hub.hub.store.get_token(token_id).used_at is not None
    assert hub.hub.devices.status("oak")[0].registered
    with pytest.raises(grpc.RpcError) as err:  # and now it is spent
        init_agent(tmp_path / "b", hub.address, text)
    assert "already used" in err.value.details()


def test_a_token_rebound_before_the_door_completes_voids_that_doors_registration(  # type: ignore[no-untyped-def]
        hub, operator, tmp_path: Path) -> None:
    """Whoever completes first (first signed call) holds the device; the other door is told
    so plainly and keeps no identity that would fail every call."""
    operator.add_site("oak")
    text = operator.add_device("oak", "front").token
    relay = Mitm(hub.address)

    def thief_first(request: bytes, context: Any) -> bytes:
        init_agent(tmp_path / "thief", hub.address, text)  # rebinds and completes at once
        return relay.relay_unary("/doorkeeper.v1.DeviceSync/Report", request, context)

    relay.unary["Report"] = thief_first
    try:
        with pytest.raises(RegistrationError, match="did not complete"):
            init_agent(tmp_path / "a", relay.address, text)
    finally:
        relay.close()
    assert not (tmp_path / "a" / "identity.json").exists()
    device = hub.hub.store.list_devices()[0]
    assert device.sign_public == (tmp_path / "thief" / "keys" / "device.sign.pub").read_bytes()
