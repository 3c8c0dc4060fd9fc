"""Registration tokens: one-time, expiring, bound to a site, pinning the hub key.

A token reads `dk1-<token id>-<secret>-<hub key fingerprint>`, all base32
(lower case, no padding) so it survives copy/paste, shells and QR codes. The
hub stores only a hash of the secret. The agent pins the hub signing key whose
SHA-256 equals the fingerprint: there is no trust on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from doorkeeper.wire.keys import FINGERPRINT_PREFIX

PREFIX = "dk1"
SECRET_BYTES = 20
ID_BYTES = 10
FP_BYTES = 32
MAX_TOKEN_CHARS = 200


class TokenFormatError(ValueError):
    """The string is not a doorkeeper registration token."""


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _unb32(text: str, size: int) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded, casefold=False)
    except (ValueError, base64.binascii.Error):  # type: ignore[attr-defined]
        raise TokenFormatError("token is not valid base32") from None
    if len(raw) != size:
        raise TokenFormatError("token has a part of the wrong length")
    return raw


@dataclass(frozen=True)
class Token:
    token_id: str
    secret: bytes
    hub_fingerprint: bytes

    def __str__(self) -> str:
        return f"{PREFIX}-{self.token_id}-{_b32(self.secret)}-{_b32(self.hub_fingerprint)}"

    @property
    def hub_fingerprint_text(self) -> str:
        """The pinned hub key as `keys.fingerprint_text` prints it."""
        return FINGERPRINT_PREFIX + _b32(self.hub_fingerprint)

    @classmethod
    def new(cls, hub_fingerprint: bytes) -> Token:
        return cls(_b32(secrets.token_bytes(ID_BYTES)), secrets.token_bytes(SECRET_BYTES), hub_fingerprint)

    @classmethod
    def parse(cls, text: str) -> Token:
        text = text.strip()
        if len(text) > MAX_TOKEN_CHARS:
            raise TokenFormatError("token is too long")
        parts = text.split("-")
        if len(parts) != 4 or parts[0] != PREFIX:
            raise TokenFormatError("not a doorkeeper token (expected dk1-<id>-<secret>-<fingerprint>)")
        _unb32(parts[1], ID_BYTES)
        return cls(parts[1], _unb32(parts[2], SECRET_BYTES), _unb32(parts[3], FP_BYTES))


def secret_hash(secret: bytes) -> bytes:
    """What the hub keeps of a token secret."""
    return hashlib.sha256(b"doorkeeper/v1/token\x00" + secret).digest()


def secret_matches(secret: bytes, stored_hash: bytes) -> bool:
    return hmac.compare_digest(secret_hash(secret), stored_hash)
