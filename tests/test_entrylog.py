"""The shared entry-log format: sealing, the hash chain, signed batches, exports."""

from __future__ import annotations

import io

import pytest
from nacl.public import PrivateKey

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog
from doorkeeper.wire.entrylog import (
    GENESIS,
    BadLogBatch,
    ChainCursor,
    Entry,
    OwnerKey,
    open_batch,
    sign_batch,
)
from doorkeeper.wire.keys import KeyPair

DEV = "dev-1"
SITE = "site-1"


@pytest.fixture
def owner() -> tuple[PrivateKey, OwnerKey]:
    private = PrivateKey.generate()
    return private, OwnerKey.from_public(bytes(private.public_key))


def chain(owner: OwnerKey, n: int, start: int = 1, head: bytes = GENESIS) -> tuple[list[bytes], bytes]:
    records = []
    for seq in range(start, start + n):
        raw = entrylog.seal_entry(Entry("door", "granted", "face", f"p{seq}"), DEV, seq, head, owner)
        head = entrylog.chain_value(raw)
        records.append(raw)
    return records, head


def signed(dev: KeyPair, records: list[bytes]) -> pb.SignedLogBatch:
    return sign_batch(dev.sign_key, site_id=SITE, device_id=DEV, records=records, sent_at_ms=1)


def test_sealed_entry_opens_only_with_owner_key_and_is_bound_to_its_seq(owner):
    private, key = owner
    records, _ = chain(key, 2)
    r1, r2 = (pb.SealedLogRecord.FromString(r) for r in records)
    assert b"p1" not in records[0]
    entry = entrylog.decrypt_record(r1, DEV, {key.key_id: bytes(private)})
    assert (entry.person_id, entry.seq, entry.device_id) == ("p1", 1, DEV)
    with pytest.raises(BadLogBatch, match="not"):
        entrylog.decrypt_record(r1, DEV, {key.key_id: bytes(PrivateKey.generate())})
    # A hub that swaps ciphertexts between positions is caught by the binding.
    r2.ciphertext = r1.ciphertext
    with pytest.raises(BadLogBatch, match="holds the entry of"):
        entrylog.decrypt_record(r2, DEV, {key.key_id: bytes(private)})


def test_batch_signed_by_another_device_is_refused(owner):
    records, _ = chain(owner[1], 3)
    batch = signed(KeyPair.generate(), records)
    with pytest.raises(BadLogBatch, match="signature"):
        open_batch(batch, device_sign_public_key=KeyPair.generate().sign_public,
                   device_id=DEV, site_id=SITE)


def test_batch_naming_another_device_or_site_is_refused(owner):
    dev = KeyPair.generate()
    records, _ = chain(owner[1], 2)
    batch = signed(dev, records)
    with pytest.raises(BadLogBatch, match="device"):
        open_batch(batch, device_sign_public_key=dev.sign_public, device_id="other", site_id=SITE)
    with pytest.raises(BadLogBatch, match="site"):
        open_batch(batch, device_sign_public_key=dev.sign_public, device_id=DEV, site_id="other")


def test_reordered_records_inside_a_batch_are_refused(owner):
    dev = KeyPair.generate()
    records, _ = chain(owner[1], 3)
    with pytest.raises(BadLogBatch, match="out of order"):
        open_batch(signed(dev, [records[0], records[2], records[1]]),
                   device_sign_public_key=dev.sign_public, device_id=DEV, site_id=SITE)


def test_oversized_record_and_too_many_records_are_refused(owner):
    dev = KeyPair.generate()
    records, _ = chain(owner[1], 3)
    with pytest.raises(BadLogBatch, match="cap"):
        open_batch(signed(dev, records), device_sign_public_key=dev.sign_public, device_id=DEV,
                   site_id=SITE, max_records=2)
    huge = pb.SealedLogRecord(seq=1, prev_hash=GENESIS, kind=entrylog.ENTRY, gap_from_seq=1,
                              owner_key_id="k", ciphertext=b"x" * 20000).SerializeToString()
    with pytest.raises(BadLogBatch, match="exceeds"):
        entrylog.parse_record(huge)


def test_broken_chain_is_refused_and_cursor_does_not_move(owner):
    dev = KeyPair.generate()
    first, head = chain(owner[1], 3)
    cursor = ChainCursor()
    cursor.advance(open_batch(signed(dev, first), device_sign_public_key=dev.sign_public,
                              device_id=DEV, site_id=SITE))
    forged, _ = chain(owner[1], 2, start=4, head=bytes(32))  # links to the wrong value
    with pytest.raises(BadLogBatch, match="broken chain at seq 4"):
        cursor.advance(open_batch(signed(dev, forged), device_sign_public_key=dev.sign_public,
                                  device_id=DEV, site_id=SITE))
    assert (cursor.watermark, cursor.head) == (3, head)


def test_hole_before_a_batch_is_refused(owner):
    dev = KeyPair.generate()
    records, _ = chain(owner[1], 6)
    cursor = ChainCursor()
    with pytest.raises(BadLogBatch, match="gap before batch"):
        cursor.advance(open_batch(signed(dev, records[3:]), device_sign_public_key=dev.sign_public,
                                  device_id=DEV, site_id=SITE))
    assert (cursor.watermark, cursor.head) == (0, GENESIS)


def test_dropped_range_marker_links_through_and_is_listed(owner):
    dev = KeyPair.generate()
    records, _ = chain(owner[1], 6)
    links = [entrylog.chain_value(r) for r in records]
    marker = entrylog.gap_marker(seq=3, from_seq=1, prev_hash=GENESIS, dropped=3,
                                 reason="disk floor", link_hash=links[2])
    cursor = ChainCursor()
    new = cursor.advance(open_batch(signed(dev, [marker, *records[3:]]),
                                    device_sign_public_key=dev.sign_public, device_id=DEV,
                                    site_id=SITE))
    assert [r.seq for r, _ in new] == [3, 4, 5, 6]
    assert cursor.gaps == [entrylog.Gap(DEV, 1, 3, 3, 0, "disk floor")]
    assert cursor.head == links[5]


def test_export_round_trip_and_refusals(owner):
    private, key = owner
    dev = KeyPair.generate()
    records, _ = chain(key, 4)
    buf = io.BytesIO()
    entrylog.write_export(buf, [pb.LogDeviceKey(device_id=DEV, sign_public_key=dev.sign_public)],
                          [signed(dev, records[:2]), signed(dev, records[2:])])
    report = entrylog.verify_export(entrylog.read_export(io.BytesIO(buf.getvalue())),
                                    {key.key_id: bytes(private)})
    assert report.ok and [e.seq for e in report.entries] == [1, 2, 3, 4]
    with pytest.raises(BadLogBatch, match="magic"):
        list(entrylog.read_export(io.BytesIO(b"NOTLOGS!" + buf.getvalue()[8:])))
    with pytest.raises(BadLogBatch, match="truncated"):
        list(entrylog.read_export(io.BytesIO(buf.getvalue()[:-3])))


def test_export_with_a_removed_middle_batch_fails_verification(owner):
    private, key = owner
    dev = KeyPair.generate()
    records, _ = chain(key, 6)
    frames = [pb.LogExportFrame(device_key=pb.LogDeviceKey(device_id=DEV,
                                                           sign_public_key=dev.sign_public))]
    frames += [pb.LogExportFrame(batch=signed(dev, records[i:i + 2])) for i in (0, 4)]
    report = entrylog.verify_export(frames, {key.key_id: bytes(private)})
    assert not report.ok
    assert "gap before batch" in report.devices[DEV].errors[0]
