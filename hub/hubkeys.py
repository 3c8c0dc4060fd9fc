"""The hub's keys: Ed25519 signing, X25519 box, and the data key kept apart.

The data key seals personal fields (names) and whitelist records at rest, so a
copy of the hub database alone reveals nothing. It lives in its own file,
outside the database, where a deployment can mount it from a secret store.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from doorkeeper import keys


class SealError(Exception):
    """A sealed column could not be opened: wrong data key or corrupted row."""


@dataclass(frozen=True)
class HubKeys:
    pair: keys.KeyPair
    data_key: bytes

    @property
    def key_id(self) -> str:
        return self.pair.key_id

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
        return cls(
            keys.KeyPair.load(key_dir, "hub"),
            keys.read_private(data_key_file or key_dir / "data.key"),
        )
