"""Signed calls: how a device or an operator authenticates one RPC.

Before each call the client fetches a single-use nonce from the hub
(`Challenge`), then signs the method name, its principal id, the nonce and the
SHA-256 of the exact request bytes. The hub accepts each nonce once and only
within a short lifetime that the hub itself measures, so a device clock that is
hours wrong after a power cut does not matter, and a captured call cannot be
replayed.
"""

from __future__ import annotations

import hashlib

from nacl.signing import SigningKey

from doorkeeper.wire import keys

MD_PRINCIPAL = "x-dk-principal"
MD_NONCE = "x-dk-nonce"
MD_SIGNATURE = "x-dk-signature"
CONTEXT = "call"
NONCE_BYTES = 24


def call_signature(key: SigningKey, method: str, principal: str, nonce: bytes, request: bytes) -> bytes:
    return keys.sign(key, CONTEXT, method, principal, nonce, hashlib.sha256(request).digest())


def check_call(
    public_key: bytes, signature: bytes, method: str, principal: str, nonce: bytes, request: bytes
) -> bool:
    return keys.verify(
        public_key, signature, CONTEXT, method, principal, nonce, hashlib.sha256(request).digest()
    )


def metadata(principal: str, nonce: bytes, signature: bytes) -> tuple[tuple[str, str], ...]:
    return ((MD_PRINCIPAL, principal), (MD_NONCE, nonce.hex()), (MD_SIGNATURE, signature.hex()))
