"""Door-chosen nonces: how a door tells a live hub from a recording.

A hub signature proves who said something, never when. A door therefore puts
a random nonce of its own in every request whose answer it will trust as
current (a watch stream, a fetch, a report, and the registration challenge),
and the hub signs that nonce into its answer. The answer cannot have been made
before the door chose the nonce, so it proves the hub was alive since then.
"""

from __future__ import annotations

import secrets

NONCE_BYTES = 32  # what doors send
MIN_NONCE_BYTES = 16  # what the hub accepts
MAX_NONCE_BYTES = 64


class BadNonce(ValueError):
    """A nonce outside MIN_NONCE_BYTES..MAX_NONCE_BYTES."""


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def check_nonce(nonce: bytes, optional: bool = True) -> bytes:
    """`nonce` if well-sized (or empty when `optional`); raises BadNonce otherwise."""
    if optional and not nonce:
        return b""
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise BadNonce(f"nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes, got {len(nonce)}")
    return bytes(nonce)
