"""Forging, borrowing, replaying or outliving a call nonce.

Call nonces are MACs until spent (`doorkeeper.hub.auth`): nothing is stored when
one is issued, so everything the store would have checked must now hold by the
MAC: bound to one principal, expiring by the hub's clock, usable once.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from doorkeeper.hub.auth import NONCE_TTL_S, Authenticator, AuthError
from doorkeeper.hub.sqlite_store import SqliteHubStore
from doorkeeper.hub.store import Operator
from doorkeeper.wire import callauth, keys

METHOD = "/doorkeeper.v1.Admin/ListSites"


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteHubStore(tmp_path / "hub.db")
    now = [1_000_000.0]
    auth = Authenticator(store, secrets.token_bytes(32), clock=lambda: now[0])
    pairs = [keys.KeyPair.generate() for _ in range(2)]
    for i, pair in enumerate(pairs):
        store.add_operator(Operator(pair.key_id, pair.sign_public, "admin", f"op{i}", 0))
    yield auth, pairs, now, store
    store.close()


def signed(pair: keys.KeyPair, nonce: bytes, request: bytes = b"req") -> dict[str, str]:
    sig = callauth.call_signature(pair.sign_key, METHOD, pair.key_id, nonce, request)
    return dict(callauth.metadata(pair.key_id, nonce, sig))


def test_a_nonce_works_once_for_its_principal_only(setup) -> None:  # type: ignore[no-untyped-def]
    auth, (alice, bob), _now, _store = setup
    nonce, _ = auth.challenge(alice.key_id)
    with pytest.raises(AuthError, match="nonce"):  # Bob borrows Alice's nonce
        auth.verify(METHOD, signed(bob, nonce), b"req")
    assert auth.verify(METHOD, signed(alice, nonce), b"req").id == alice.key_id
    with pytest.raises(AuthError, match="replay"):
        auth.verify(METHOD, signed(alice, nonce), b"req")


def test_forged_and_expired_nonces_are_refused_and_stored_nowhere(setup) -> None:  # type: ignore[no-untyped-def]
    auth, (alice, _bob), now, store = setup
    forged = secrets.token_bytes(callauth.NONCE_BYTES)
    nonce, _ = auth.challenge(alice.key_id)
    later = (int.from_bytes(nonce[:4], "big") + 3600).to_bytes(4, "big") + nonce[4:]
    for bad in (forged, later):
        with pytest.raises(AuthError, match="nonce"):
            auth.verify(METHOD, signed(alice, bad), b"req")
    now[0] += NONCE_TTL_S + 1
    with pytest.raises(AuthError, match="nonce"):  # outlived
        auth.verify(METHOD, signed(alice, nonce), b"req")
    assert store._conn().execute("SELECT COUNT(*) FROM nonces").fetchone()[0] == 0
