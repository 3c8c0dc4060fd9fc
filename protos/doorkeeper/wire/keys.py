"""Key files and domain-separated signatures.

Private keys are 32-byte seeds written once with mode 0600 and never sent
anywhere. Every signature covers a context string plus length-prefixed parts,
so that a signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from doorkeeper.wire import durable
from doorkeeper.wire.capped import TooLarge, read_capped

KEY_BYTES = 32
FINGERPRINT_PREFIX = "SHA256:"

# Signature contexts: one per kind of signed statement.
CTX_BUNDLE_HEADER = "bundle-header"
CTX_BEACON = "beacon"
CTX_MANIFEST = "manifest"
CTX_REGISTER = "register"
CTX_REGISTERED = "registered"
CTX_KEY_ROTATION = "key-rotation"
CTX_HUB_PROOF = "hub-proof"
CTX_AUDIT_ENTRY = "audit-entry"


class KeyFileError(Exception):
    """A key file is missing, has the wrong size or is readable by others."""


def fingerprint(public_key: bytes) -> bytes:
    """SHA-256 of a public key: what a registration token carries and pins."""
    return hashlib.sha256(public_key).digest()


def fingerprint_text(public_key: bytes) -> str:
    """How people see a key: ``SHA256:`` + the fingerprint in base32 (lower case, no padding).

    The same 52 characters end a registration token, so the hub key a token pins can be
    compared by eye with what `hub init`, `hub show`, `device add`, `agent init` and
    `agent status` print.
    """
    return FINGERPRINT_PREFIX + base64.b32encode(fingerprint(public_key)).decode().rstrip("=").lower()


def key_id(public_key: bytes) -> str:
    """Short, stable name of a public key (first 16 hex digits of its fingerprint)."""
    return fingerprint(public_key).hex()[:16]


def write_private(path: Path, secret: bytes) -> None:
    """Create `path` with mode 0600 holding `secret`; refuses to overwrite.

    Durable when this returns (`durable.write_atomic`: temp file, fsync, rename, fsync the
    directory), so neither a crash nor a power cut leaves a half-written or missing key.
    """
    if path.exists():
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    durable.write_atomic(path, secret, 0o600)


def read_private(path: Path) -> bytes:
    """Read a 32-byte private key, refusing files that others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} not found") from None
    if st.st_mode & 0o077:
        mode = st.st_mode & 0o777
        raise KeyFileError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        data = read_capped(path, KEY_BYTES, "key file")
    except TooLarge:
        raise KeyFileError(f"key file {path} holds more than {KEY_BYTES} bytes") from None
    if len(data) != KEY_BYTES:
        raise KeyFileError(f"key file {path} holds {len(data)} bytes, expected {KEY_BYTES}")
    return data


def _message(context: str, parts: tuple[bytes | str | int, ...]) -> bytes:
    out = bytearray(b"doorkeeper/v1/" + context.encode() + b"\x00")
    for part in parts:
        if isinstance(part, int):
            raw = struct.pack(">Q", part)
        elif isinstance(part, str):
            raw = part.encode()
        else:
            raw = bytes(part)
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def sign(key: SigningKey, context: str, *parts: bytes | str | int) -> bytes:
    """Ed25519 signature over `context` and `parts` (64 bytes)."""
    return key.sign(_message(context, parts)).signature


def verify(public_key: bytes, signature: bytes, context: str, *parts: bytes | str | int) -> bool:
    """True when `signature` is `public_key`'s over `context` and `parts`."""
    if len(public_key) != KEY_BYTES or len(signature) != 64:
        return False
    try:
        VerifyKey(public_key).verify(_message(context, parts), signature)
    except BadSignatureError:
        return False
    return True


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 signing key and an X25519 box key, as a device or hub holds them."""

    sign_key: SigningKey
    box_key: PrivateKey

    @property
    def sign_public(self) -> bytes:
        return bytes(self.sign_key.verify_key)

    @property
    def box_public(self) -> bytes:
        return bytes(self.box_key.public_key)

    @property
    def key_id(self) -> str:
        return key_id(self.sign_public)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(SigningKey.generate(), PrivateKey.generate())

    def save(self, directory: Path, prefix: str) -> None:
        """Write `<prefix>.sign.key` and `<prefix>.box.key` (0600) plus `.pub` files."""
        write_private(directory / f"{prefix}.sign.key", bytes(self.sign_key))
        write_private(directory / f"{prefix}.box.key", bytes(self.box_key))
        durable.write_atomic(directory / f"{prefix}.sign.pub", self.sign_public, 0o644)
        durable.write_atomic(directory / f"{prefix}.box.pub", self.box_public, 0o644)

    @classmethod
    def load(cls, directory: Path, prefix: str) -> KeyPair:
        return cls(
            SigningKey(read_private(directory / f"{prefix}.sign.key")),
            PrivateKey(read_private(directory / f"{prefix}.box.key")),
        )


def public_box_key(raw: bytes) -> PublicKey:
    if len(raw) != KEY_BYTES:
        raise ValueError(f"X25519 public key must be {KEY_BYTES} bytes, got {len(raw)}")
    return PublicKey(raw)
