"""The audit chain core on bytes (no hub, no store): what `audit verify` checks."""

from __future__ import annotations

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import auditchain, keys


def _chain(pair: keys.KeyPair, n: int) -> list[pb.AuditRecord]:
    out, prev = [], auditchain.GENESIS
    for seq in range(1, n + 1):
        digest = auditchain.entry_hash(seq, 1000 + seq, "operator:ann:k1", "person.add", f"p{seq}", prev)
        out.append(pb.AuditRecord(seq=seq, at=1000 + seq, principal="operator:ann:k1", action="person.add",
                                  detail=f"p{seq}", prev_hash=prev, entry_hash=digest, key_id=pair.key_id,
                                  signature=keys.sign(pair.sign_key, auditchain.CTX_AUDIT_ENTRY, digest)))
        prev = digest
    return out


def test_an_intact_chain_verifies() -> None:
    pair = keys.KeyPair.generate()
    assert auditchain.verify_chain(_chain(pair, 5), {pair.key_id: pair.sign_public}) == (5, None)


def test_an_edited_entry_is_named() -> None:
    pair = keys.KeyPair.generate()
    chain = _chain(pair, 5)
    chain[2].detail = "nothing happened"
    _, broken = auditchain.verify_chain(chain, {pair.key_id: pair.sign_public})
    assert broken is not None and broken.seq == 3 and "hash" in broken.reason


def test_a_removed_entry_is_named_even_with_its_successor_renumbered() -> None:
    pair = keys.KeyPair.generate()
    chain = _chain(pair, 5)
    del chain[1]
    _, broken = auditchain.verify_chain(chain, {pair.key_id: pair.sign_public})
    assert broken is not None and broken.seq == 2 and "missing" in broken.reason
    renumbered = _chain(pair, 5)
    del renumbered[1]
    for e in renumbered[1:]:
        e.seq -= 1
    _, broken = auditchain.verify_chain(renumbered, {pair.key_id: pair.sign_public})
    assert broken is not None and broken.seq == 2 and "link" in broken.reason


def test_reordered_entries_are_named() -> None:
    pair = keys.KeyPair.generate()
    chain = _chain(pair, 4)
    chain[1], chain[2] = chain[2], chain[1]
    _, broken = auditchain.verify_chain(chain, {pair.key_id: pair.sign_public})
    assert broken is not None and broken.seq == 2  # where it first shows: entry 3 came second
    swapped = _chain(pair, 4)  # contents swapped, seq numbers kept in place
    swapped[1].seq, swapped[2].seq = 3, 2
    swapped[1], swapped[2] = swapped[2], swapped[1]
    _, broken = auditchain.verify_chain(swapped, {pair.key_id: pair.sign_public})
    assert broken is not None and broken.seq == 2


def test_a_chain_rebuilt_without_the_hub_key_is_refused() -> None:
    hub, forger = keys.KeyPair.generate(), keys.KeyPair.generate()
    forged = _chain(forger, 3)
    for e in forged:
        e.key_id = hub.key_id  # claims the hub's key, signed by another
    _, broken = auditchain.verify_chain(forged, {hub.key_id: hub.sign_public})
    assert broken is not None and broken.seq == 1 and "signature" in broken.reason


def test_the_published_vector_pins_the_entry_hash() -> None:
    import json

    from doorkeeper.tools import vectors

    v = json.loads((vectors.VECTORS_DIR / "keys.json").read_text())["audit_entry"]
    digest = auditchain.entry_hash(v["seq"], v["at"], v["principal"], v["action"], v["detail"],
                                   bytes.fromhex(v["prev_hash"]))
    assert digest.hex() == v["entry_hash"] and v["signed"]["context"] == "audit-entry"
