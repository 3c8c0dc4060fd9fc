"""The hub's keys: Ed25519 signing, X25519 box, and the data key kept apart.

The data key seals personal fields (names) and whitelist records at rest, so a
copy of the hub database alone reveals nothing. It lives in its own file,
outside the database, where a deployment can mount it from a secret store.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import durable, keys
from doorkeeper.wire.capped import TooLarge, read_capped

ROTATIONS_FILE = "rotations.bin"


class SealError(Exception):
    """A sealed column could not be opened: wrong data key or corrupted row."""


@dataclass(frozen=True)
class HubKeys:
    pair: keys.KeyPair
    data_key: bytes
    # Every rotation so far, oldest first; each signed by the key it retired.
    rotations: tuple[pb.SignedKeyRotation, ...] = field(default=())
    # Public keys of retired signing keys by key id, each proven by the rotation it signed
    # (audit entries they signed stay verifiable).
    retired: tuple[tuple[str, bytes], ...] = field(default=())

    @functools.cached_property
    def key_id(self) -> str:
        return self.pair.key_id  # a hash of the public key: every beacon and header names it

    @property
    def nonce_key(self) -> bytes:
        """Key of the call nonces' MACs, derived from the data key (every replica holds it)."""
        return hashlib.blake2b(b"doorkeeper/v1/call-nonce", key=self.data_key, digest_size=32).digest()

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(SecretBox(self.data_key).encrypt(plaintext))

    def unseal(self, sealed: bytes) -> bytes:
        try:
            return SecretBox(self.data_key).decrypt(sealed)
        except CryptoError:
            raise SealError("cannot open a sealed hub record: wrong data key?") from None

    @classmethod
    def create(cls, key_dir: Path) -> HubKeys:
        pair = keys.KeyPair.generate()
        data_key = secrets.token_bytes(SecretBox.KEY_SIZE)
        pair.save(key_dir, "hub")
        keys.write_private(key_dir / "data.key", data_key)
        return cls(pair, data_key)

    @classmethod
    def load(cls, key_dir: Path, data_key_file: Path | None = None) -> HubKeys:
        _finish_rotation(key_dir)
        rotations = tuple(_read_rotations(key_dir / ROTATIONS_FILE))
        return cls(
            keys.KeyPair.load(key_dir, "hub"),
            keys.read_private(data_key_file or key_dir / "data.key"),
            rotations,
            _retired_keys(key_dir / "retired", rotations),
        )


def _retired_keys(folder: Path, rotations: tuple[pb.SignedKeyRotation, ...]) -> tuple[tuple[str, bytes], ...]:
    """Retired public keys that signed a rotation statement (a file alone proves nothing)."""
    out = []
    for signed in rotations:
        old_id = pb.KeyRotation.FromString(signed.rotation).old_key_id
        path = folder / f"{old_id}.sign.pub"
        try:
            public = read_capped(path, keys.KEY_BYTES, "retired key")
        except (OSError, TooLarge):
            continue  # a rotation from before retired keys were kept: nothing to offer
        if keys.key_id(public) == old_id and keys.verify(public, signed.signature, keys.CTX_KEY_ROTATION,
                                                          signed.rotation):
            out.append((old_id, public))
    return tuple(out)


def rotate_signing_key(key_dir: Path) -> tuple[str, str]:
    """Replace the hub signing key; the old key signs the new one, then is destroyed.

    Devices follow the chain at their next fetch and from then on refuse
    anything the retired key signs. Returns (old key id, new key id). The hub
    must be restarted to use the new key.
    """
    old = keys.KeyPair.load(key_dir, "hub")
    new_sign = keys.KeyPair.generate().sign_key
    new_public = bytes(new_sign.verify_key)
    pending = key_dir / "hub.sign.key.new"
    pending.unlink(missing_ok=True)
    keys.write_private(pending, bytes(new_sign))  # the new key is safe on disk before anyone is told
    rotation = pb.KeyRotation(
        old_key_id=old.key_id, new_sign_key=new_public, new_key_id=keys.key_id(new_public),
        issued_at=int(time.time()),
    ).SerializeToString()
    signed = pb.SignedKeyRotation(
        rotation=rotation, signature=keys.sign(old.sign_key, keys.CTX_KEY_ROTATION, rotation)
    ).SerializeToString()
    with open(key_dir / ROTATIONS_FILE, "ab") as f:
        f.write(struct.pack(">I", len(signed)) + signed)
        f.flush()
        os.fsync(f.fileno())
    durable.fsync_dir(key_dir)  # the first rotation creates the file
    durable.write_atomic(key_dir / "retired" / f"{old.key_id}.sign.pub", old.sign_public, 0o644)
    _finish_rotation(key_dir)
    return old.key_id, keys.key_id(new_public)


def _finish_rotation(key_dir: Path) -> None:
    """Install a pending new key once the rotation statement naming it is on disk."""
    pending = key_dir / "hub.sign.key.new"
    if not pending.exists():
        return
    rotations = _read_rotations(key_dir / ROTATIONS_FILE)
    new_public = bytes(SigningKey(keys.read_private(pending)).verify_key)
    if not rotations or pb.KeyRotation.FromString(rotations[-1].rotation).new_sign_key != new_public:
        pending.unlink()  # crashed before the statement was written: the old key stays
        return
    os.replace(pending, key_dir / "hub.sign.key")
    durable.write_atomic(key_dir / "hub.sign.pub", new_public, 0o644)  # also makes the rename durable


def _read_rotations(path: Path) -> list[pb.SignedKeyRotation]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(pb.SignedKeyRotation.FromString(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out
