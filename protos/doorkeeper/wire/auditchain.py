"""The audit trail's chain, checked the same way by the hub and by `doorkeeper audit verify`.

Each entry's hash covers its position (seq), time, principal, action, detail and the
previous entry's hash; the hub signs that hash. An entry edited in the database no longer
matches its hash, a removed one leaves a gap in seq and a broken link, a reordered one
hashes for another position: each is reported at the first entry where it shows.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys

CTX_AUDIT_ENTRY = keys.CTX_AUDIT_ENTRY
GENESIS = bytes(32)  # prev_hash of the first entry


def entry_hash(seq: int, at: int, principal: str, action: str, detail: str, prev_hash: bytes) -> bytes:
    out = bytearray(b"doorkeeper/v1/audit-hash\x00")
    for part in (struct.pack(">Q", seq), struct.pack(">q", at), principal.encode(), action.encode(),
                 detail.encode(), prev_hash):
        out += struct.pack(">I", len(part)) + part
    return hashlib.sha256(out).digest()


@dataclass(frozen=True)
class Broken:
    seq: int  # the first entry where the chain does not hold
    reason: str


def verify_chain(entries: Iterable[pb.AuditRecord],
                 hub_keys: Mapping[str, bytes]) -> tuple[int, Broken | None]:
    """(entries checked, the first break or None). `entries` in stored order, from the first."""
    prev_hash, prev_seq, count = GENESIS, 0, 0
    for e in entries:
        count += 1
        if e.seq != prev_seq + 1:
            if e.seq > prev_seq + 1:
                return count, Broken(prev_seq + 1, f"entry {prev_seq + 1} is missing (removed), "
                                     f"the next one present is {e.seq}")
            return count, Broken(e.seq, f"entry {e.seq} is out of order after entry {prev_seq}")
        if e.prev_hash != prev_hash:
            return count, Broken(e.seq, "its link to the previous entry is broken (an entry before it "
                                 "was removed, edited or reordered)")
        if entry_hash(e.seq, e.at, e.principal, e.action, e.detail, e.prev_hash) != e.entry_hash:
            return count, Broken(e.seq, "its content does not match its hash (edited or moved)")
        public = hub_keys.get(e.key_id)
        if public is None or not keys.verify(public, e.signature, CTX_AUDIT_ENTRY, e.entry_hash):
            return count, Broken(e.seq, f"its signature does not verify with hub key {e.key_id or '-'}")
        prev_hash, prev_seq = e.entry_hash, e.seq
    return count, None
