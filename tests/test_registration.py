"""Registration: one-time, expiring tokens that pin the hub key; refusals change nothing."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import grpc
import pytest

from doorkeeper.agent.sync.identity import RegistrationError, init_agent
from doorkeeper.wire import keys
from doorkeeper.wire import token as tokens


def test_register_pins_hub_key_and_writes_private_keys_0600(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    token = operator.add_device("oak", "front").token
    ident = init_agent(tmp_path / "a", hub.address, token)
    assert bytes.fromhex(ident.hub_sign_key) == hub.hub.keys.pair.sign_public
    for name in ("device.sign.key", "device.box.key", "storage.key"):
        mode = stat.S_IMODE((tmp_path / "a" / "keys" / name).stat().st_mode)
        assert mode == 0o600, name
    for name in ("hub.sign.key", "hub.box.key", "data.key"):
        assert stat.S_IMODE((hub.data_dir / "keys" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((hub.data_dir / "operator.key").stat().st_mode) == 0o600
    device = hub.hub.store.get_device(ident.device_id)
    assert device.sign_public == (tmp_path / "a" / "keys" / "device.sign.pub").read_bytes()


def test_hub_keeps_only_a_hash_of_the_token(hub, operator) -> None:
    operator.add_site("oak")
    token = tokens.Token.parse(operator.add_device("oak", "front").token)
    raw = (hub.data_dir / "hub.db").read_bytes() + _wal(hub.data_dir / "hub.db")
    assert token.secret not in raw
    assert tokens.secret_hash(token.secret) in raw


def _wal(db: Path) -> bytes:
    wal = db.with_name(db.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_used_token_is_refused(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    token = operator.add_device("oak", "front").token
    init_agent(tmp_path / "a", hub.address, token)
    before = hub.hub.store.get_device(hub.hub.store.list_devices()[0].device_id)
    with pytest.raises(grpc.RpcError) as err:
        init_agent(tmp_path / "b", hub.address, token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "already used" in err.value.details()
    assert not (tmp_path / "b" / "identity.json").exists()
    assert hub.hub.store.get_device(before.device_id) == before  # keys not rebound


def test_expired_token_is_refused(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    token = operator.add_device("oak", "front", ttl=60).token
    hub.hub.devices.clock = lambda: time.time() + 120
    with pytest.raises(grpc.RpcError) as err:
        init_agent(tmp_path / "a", hub.address, token)
    assert "expired" in err.value.details()
    device = hub.hub.store.list_devices()[0]
    assert device.sign_public is None and device.registered_at is None
    assert not (tmp_path / "a" / "identity.json").exists()


def test_unknown_or_forged_token_is_refused(hub, operator, tmp_path: Path) -> None:
    operator.add_site("oak")
    real = tokens.Token.parse(operator.add_device("oak", "front").token)
    forged = tokens.Token(real.token_id, b"\x00" * tokens.SECRET_BYTES, real.hub_fingerprint)
    with pytest.raises(grpc.RpcError) as err:
        init_agent(tmp_path / "a", hub.address, str(forged))
    assert err.value.details() == "unknown token"
    assert hub.hub.store.get_token(real.token_id).used_at is None  # the real token still works
    init_agent(tmp_path / "b", hub.address, str(real))


def test_token_for_another_hub_key_is_not_pinned(hub, operator, tmp_path: Path) -> None:
    """A hub whose key differs from the token's fingerprint is not trusted (no TOFU)."""
    operator.add_site("oak")
    real = tokens.Token.parse(operator.add_device("oak", "front").token)
    other_hub = keys.fingerprint(keys.KeyPair.generate().sign_public)
    with pytest.raises(RegistrationError, match="fingerprint"):
        init_agent(tmp_path / "a", hub.address, str(tokens.Token(real.token_id, real.secret, other_hub)))
    assert not (tmp_path / "a" / "identity.json").exists()


@pytest.mark.parametrize("text", [
    "", "dk1", "dk2-aaaa-bbbb-cccc", "dk1-'; DROP TABLE tokens;--", "dk1-a-b-c-d", "x" * 10_000,
    "dk1-../../etc-passwd-x",
])
def test_malformed_tokens_are_refused_before_any_network(text: str, tmp_path: Path) -> None:
    with pytest.raises(RegistrationError):
        init_agent(tmp_path / "a", "127.0.0.1:1", text)
    assert not (tmp_path / "a").exists()


def test_admin_commands_need_a_known_operator_key(hub, tmp_path: Path) -> None:
    from tests.harness import Operator

    stranger = tmp_path / "stranger.key"
    keys.write_private(stranger, bytes(keys.KeyPair.generate().sign_key))
    with pytest.raises(grpc.RpcError) as err:
        Operator(hub.address, stranger).add_site("oak")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert hub.hub.store.list_sites() == []
