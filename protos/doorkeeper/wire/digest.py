"""The whitelist state digest: what the hub means and what a device holds.

A version number alone can lie (an interrupted sync that bumped it leaves a
device silently missing persons). Both sides therefore compute one digest over
the complete state: the site configuration record plus every person record,
ordered by person id. Records are hashed as the exact bytes the hub signed and
sent, so neither side re-serialises anything.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

DIGEST_BYTES = 32
EMPTY_CONFIG = b""


def record_hash(record_bytes: bytes) -> bytes:
    """SHA-256 of one serialised PersonRecord or SiteConfig."""
    return hashlib.sha256(record_bytes).digest()


def state_digest(config_hash: bytes, persons: Iterable[tuple[str, bytes]]) -> bytes:
    """Digest over the config hash and (person_id, record_hash) pairs.

    `persons` must be ordered by person id (byte order of its UTF-8 form, which
    is what SQLite's default BINARY collation gives); ids are hex so byte order
    and string order agree.
    """
    h = hashlib.sha256(b"doorkeeper/v1/state\x00")
    h.update(struct.pack(">I", len(config_hash)) + config_hash)
    count = 0
    for person_id, rhash in persons:
        raw = person_id.encode()
        h.update(struct.pack(">I", len(raw)) + raw + rhash)
        count += 1
    h.update(struct.pack(">Q", count))
    return h.digest()
