"""Entry-log wire format: sealed records, the per-device hash chain, signed batches.

Pure functions on bytes; no SQLite, no gRPC, no files except the export
reader/writer at the bottom, which only take a binary stream.

Sealing. Every entry is sealed on its own with libsodium's SealedBox to the
site's log-owner X25519 key. A per-batch content key was rejected: batches are
formed at upload time, long after the record hit the disk, so the device would
have to keep a content key around (on disk, or lose records on a power cut),
and with it the ability to read its own logs, which the design forbids. A
SealedBox uses a fresh ephemeral key per record and costs 48 bytes and one
X25519 operation (~50 us), well inside the append budget.

Chain. Each device's records form one chain. The chain value of a record is
``sha256("doorkeeper/v1/log-chain\\0" || record_bytes)`` over the exact
serialised SealedLogRecord, which contains ``prev_hash``; the first record
links to 32 zero bytes. A *dropped-range* gap marker stands in for records
that were written and later dropped by the storage policy: its ``prev_hash``
is the link before the first dropped record and its ``link_hash`` the chain
value of the last one, so the records after it still verify. A *standalone*
gap marker (decisions never written: disk full, no owner key) is a normal
chain record. Gap markers carry counts and a reason in the clear, never an
entry.

Batches are signed with the device Ed25519 key (context ``log-batch``) over
the exact LogBatch bytes; the hub and the owner verify those same bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox
from nacl.signing import SigningKey

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys

BATCH_CONTEXT = "log-batch"
GENESIS = bytes(32)
HASH_BYTES = 32
MAX_RECORD_BYTES = 16 * 1024  # one sealed entry is ~200 bytes; anything huge is hostile
MAX_TEXT_CHARS = 200  # door, decision, reason, ... (hostile strings are capped, not trusted)
MAX_ID_CHARS = 64
EXPORT_MAGIC = b"DKLOGS\x00\x01"
MAX_FRAME_BYTES = 4 * 1024 * 1024

ENTRY = pb.LOG_RECORD_KIND_ENTRY
GAP = pb.LOG_RECORD_KIND_GAP


class BadLogBatch(Exception):
    """A batch or record is malformed, unsigned, out of order or breaks the chain.

    `reason` is a short, operator-readable sentence; the hub shows it in fleet
    status and maps the exception to a gRPC status.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    """One door decision, as the decision loop reports it (plaintext, memory only)."""

    door: str
    decision: str
    credential: str
    person_id: str = ""
    similarity: float = 0.0
    liveness: float | None = None
    whitelist_version: int = 0
    reason: str = ""
    shadow: bool = False
    wall_time_ms: int = 0
    monotonic_ns: int = 0

    def to_proto(self, device_id: str, seq: int) -> pb.LogEntry:
        return pb.LogEntry(
            device_id=device_id,
            seq=seq,
            wall_time_ms=self.wall_time_ms,
            monotonic_ns=self.monotonic_ns,
            door=self.door[:MAX_TEXT_CHARS],
            decision=self.decision[:MAX_TEXT_CHARS],
            credential=self.credential[:MAX_TEXT_CHARS],
            person_id=self.person_id[:MAX_ID_CHARS],
            similarity=self.similarity,
            has_liveness=self.liveness is not None,
            liveness=self.liveness or 0.0,
            whitelist_version=self.whitelist_version,
            reason=self.reason[:MAX_TEXT_CHARS],
            shadow=self.shadow,
        )


@dataclass(frozen=True)
class OwnerKey:
    """The site's current log-owner public key, as the signed whitelist delivered it."""

    public_key: bytes
    key_id: str

    @classmethod
    def from_public(cls, public_key: bytes) -> OwnerKey:
        keys.public_box_key(public_key)  # size check
        return cls(public_key, keys.key_id(public_key))


def chain_value(record_bytes: bytes) -> bytes:
    """The value the next record's prev_hash must equal (for non-range records)."""
    return hashlib.sha256(b"doorkeeper/v1/log-chain\x00" + record_bytes).digest()


def link_out(record: pb.SealedLogRecord, record_bytes: bytes) -> bytes:
    """Chain value after `record`: `link_hash` for a dropped range, else its hash."""
    if record.kind == GAP and record.gap_dropped and record.link_hash:
        return record.link_hash
    return chain_value(record_bytes)


def seal_entry(
    entry: Entry, device_id: str, seq: int, prev_hash: bytes, owner: OwnerKey,
    sealer: Callable[[bytes, bytes], bytes] | None = None,
) -> bytes:
    """Serialised SealedLogRecord holding `entry` sealed to `owner` at `seq`.

    `sealer(plaintext, owner public key)` replaces libsodium's SealedBox (random
    ephemeral key) only in the vector tool, which seeds the ephemeral key."""
    plaintext = entry.to_proto(device_id, seq).SerializeToString()
    if sealer is not None:
        ciphertext = sealer(plaintext, owner.public_key)
    else:
        ciphertext = SealedBox(keys.public_box_key(owner.public_key)).encrypt(plaintext)
    return pb.SealedLogRecord(
        seq=seq,
        prev_hash=prev_hash,
        owner_key_id=owner.key_id,
        ciphertext=bytes(ciphertext),
        kind=ENTRY,
        gap_from_seq=seq,
    ).SerializeToString()


def gap_marker(
    *,
    seq: int,
    prev_hash: bytes,
    from_seq: int | None = None,
    dropped: int = 0,
    unwritten: int = 0,
    reason: str,
    link_hash: bytes = b"",
) -> bytes:
    """Serialised gap marker.

    Standalone (`dropped == 0`): `unwritten` decisions that never got a record;
    covers only `seq`. Dropped range: records `from_seq..seq` were written and
    dropped; `link_hash` is the chain value of the last of them.
    """
    if dropped and len(link_hash) != HASH_BYTES:
        raise ValueError("a dropped-range gap marker needs the link hash of its last record")
    return pb.SealedLogRecord(
        seq=seq,
        prev_hash=prev_hash,
        kind=GAP,
        gap_from_seq=seq if from_seq is None else from_seq,
        gap_dropped=dropped,
        gap_unwritten=unwritten,
        gap_reason=reason[:MAX_TEXT_CHARS],
        link_hash=link_hash if dropped else b"",
    ).SerializeToString()


def parse_record(raw: bytes) -> pb.SealedLogRecord:
    """Parse and sanity-check one record; raises BadLogBatch."""
    if len(raw) > MAX_RECORD_BYTES:
        raise BadLogBatch(f"record of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    rec = pb.SealedLogRecord()
    try:
        rec.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError by backend
        raise BadLogBatch(f"malformed record: {exc}") from None
    if rec.seq < 1 or rec.gap_from_seq < 1 or rec.gap_from_seq > rec.seq:
        raise BadLogBatch(f"record has an invalid seq range {rec.gap_from_seq}..{rec.seq}")
    if len(rec.prev_hash) != HASH_BYTES:
        raise BadLogBatch(f"record {rec.seq} has no valid prev_hash")
    if rec.kind == ENTRY:
        if rec.gap_from_seq != rec.seq or not rec.ciphertext or not rec.owner_key_id:
            raise BadLogBatch(f"entry record {rec.seq} is incomplete")
    elif rec.kind == GAP:
        if rec.ciphertext:
            raise BadLogBatch(f"gap marker {rec.seq} carries ciphertext")
        if rec.gap_dropped and len(rec.link_hash) != HASH_BYTES:
            raise BadLogBatch(f"dropped-range gap marker {rec.seq} has no link hash")
        if not rec.gap_dropped and rec.gap_from_seq != rec.seq:
            raise BadLogBatch(f"standalone gap marker {rec.seq} covers a range")
    else:
        raise BadLogBatch(f"record {rec.seq} has unknown kind {rec.kind}")
    return rec


# ------------------------------------------------------------------ batches


def sign_batch(
    device_key: SigningKey,
    *,
    site_id: str,
    device_id: str,
    records: list[bytes],
    sent_at_ms: int,
    backlog: int = 0,
    dropped_total: int = 0,
    unwritten_total: int = 0,
) -> pb.SignedLogBatch:
    """Build and sign a batch of consecutive serialised records (oldest first)."""
    if not records:
        raise ValueError("an empty batch")
    first = pb.SealedLogRecord.FromString(records[0])
    last = pb.SealedLogRecord.FromString(records[-1])
    batch = pb.LogBatch(
        device_id=device_id,
        site_id=site_id,
        first_seq=first.gap_from_seq,
        last_seq=last.seq,
        records=records,
        sent_at_ms=sent_at_ms,
        backlog=backlog,
        dropped_total=dropped_total,
        unwritten_total=unwritten_total,
    )
    raw = batch.SerializeToString()
    return pb.SignedLogBatch(batch=raw, signature=keys.sign(device_key, BATCH_CONTEXT, raw))


@dataclass(frozen=True)
class OpenedBatch:
    """A batch whose signature, binding and internal continuity were checked."""

    batch: pb.LogBatch
    records: tuple[pb.SealedLogRecord, ...]
    raw_records: tuple[bytes, ...]


def open_batch(
    signed: pb.SignedLogBatch,
    *,
    device_sign_public_key: bytes,
    device_id: str,
    site_id: str | None,
    max_records: int = 5000,
) -> OpenedBatch:
    """Verify a signed batch in this order: signature, device/site binding, caps,
    each record's shape, and seq contiguity inside the batch.

    Refused (BadLogBatch): a signature that is not `device_sign_public_key`'s
    (a batch signed by another device), a batch naming another device or site,
    more than `max_records` records, malformed records, holes or reordering
    inside the batch, first/last seq that disagree with the records. Chain
    continuity against what came before is the caller's business (`ChainCursor`).
    """
    if not keys.verify(device_sign_public_key, signed.signature, BATCH_CONTEXT, signed.batch):
        raise BadLogBatch(f"bad signature: batch not signed by device {device_id}'s key")
    batch = pb.LogBatch()
    try:
        batch.ParseFromString(signed.batch)
    except Exception as exc:  # DecodeError / RuntimeError depending on backend
        raise BadLogBatch(f"malformed batch: {exc}") from None
    if batch.device_id != device_id:
        raise BadLogBatch(f"batch names device {batch.device_id[:MAX_ID_CHARS]!r}, not {device_id!r}")
    if site_id is not None and batch.site_id != site_id:
        raise BadLogBatch(f"batch names site {batch.site_id[:MAX_ID_CHARS]!r}, not {site_id!r}")
    if not batch.records:
        raise BadLogBatch("empty batch")
    if len(batch.records) > max_records:
        raise BadLogBatch(f"batch holds {len(batch.records)} records, cap is {max_records}")
    records = tuple(parse_record(r) for r in batch.records)
    expect = records[0].gap_from_seq
    for rec in records:
        if rec.gap_from_seq != expect:
            raise BadLogBatch(
                f"records out of order or missing inside the batch: expected seq {expect}, "
                f"got {rec.gap_from_seq}"
            )
        expect = rec.seq + 1
    if batch.first_seq != records[0].gap_from_seq or batch.last_seq != records[-1].seq:
        raise BadLogBatch("batch first/last seq disagree with its records")
    return OpenedBatch(batch, records, tuple(batch.records))


@dataclass(frozen=True)
class Gap:
    """Decisions missing from a device's log, as one marker declared them."""

    device_id: str
    from_seq: int
    to_seq: int
    dropped: int
    unwritten: int
    reason: str


@dataclass
class ChainCursor:
    """Where one device's verified chain stands: last seq and chain value.

    `advance` consumes an opened batch and returns the records that are new
    (seq > watermark). Records at or below the watermark were already verified
    and are skipped (a resent or overlapping batch). Refused (BadLogBatch): a
    batch that starts after watermark + 1 (a hole: a lost or reordered batch)
    and a first new record whose prev_hash is not the current chain value (a
    broken or forked chain). On refusal the cursor does not move.
    """

    watermark: int = 0
    head: bytes = GENESIS
    gaps: list[Gap] = field(default_factory=list)

    def advance(
        self, opened: OpenedBatch
    ) -> list[tuple[pb.SealedLogRecord, bytes]]:
        device = opened.batch.device_id
        if opened.batch.last_seq <= self.watermark:
            return []
        if opened.batch.first_seq > self.watermark + 1:
            raise BadLogBatch(
                f"gap before batch: have up to seq {self.watermark}, batch starts at "
                f"{opened.batch.first_seq} (seqs {self.watermark + 1}..{opened.batch.first_seq - 1} "
                "missing)"
            )
        head = self.head
        new: list[tuple[pb.SealedLogRecord, bytes]] = []
        gaps: list[Gap] = []
        for rec, raw in zip(opened.records, opened.raw_records, strict=True):
            if rec.seq <= self.watermark:
                continue
            straddles = rec.gap_from_seq <= self.watermark
            # A dropped range that began before our watermark: the device dropped
            # records we already hold (their ack was lost). Its prev link points
            # before our head, so only its link_hash can be checked downstream.
            if straddles and not (rec.kind == GAP and rec.gap_dropped):
                raise BadLogBatch(f"record {rec.seq} overlaps seq {self.watermark}")
            if not straddles and rec.prev_hash != head:
                raise BadLogBatch(f"broken chain at seq {rec.gap_from_seq}: prev_hash does not "
                                  "match the previous record")
            head = link_out(rec, raw)
            if rec.kind == GAP:
                gaps.append(Gap(device, max(rec.gap_from_seq, self.watermark + 1), rec.seq,
                                rec.gap_dropped, rec.gap_unwritten, rec.gap_reason))
            new.append((rec, raw))
        self.watermark = opened.batch.last_seq
        self.head = head
        self.gaps.extend(gaps)
        return new


# ------------------------------------------------------------------ owner side


def owner_key_id(private_key: bytes) -> str:
    return keys.key_id(bytes(PrivateKey(private_key).public_key))


def decrypt_record(
    rec: pb.SealedLogRecord, device_id: str, owner_keys: Mapping[str, bytes]
) -> pb.LogEntry:
    """Open an entry record with the owner private key named by its owner_key_id.

    Refused (BadLogBatch): no key with that id, a ciphertext that does not open,
    and a plaintext bound to another device or seq (a hub that swapped
    ciphertexts between records).
    """
    private = owner_keys.get(rec.owner_key_id)
    if private is None:
        raise BadLogBatch(f"record {rec.seq} is sealed to owner key {rec.owner_key_id!r}, "
                          "which was not given")
    try:
        plaintext = SealedBox(PrivateKey(private)).decrypt(rec.ciphertext)
    except CryptoError:
        raise BadLogBatch(f"record {rec.seq} does not decrypt with owner key "
                          f"{rec.owner_key_id}") from None
    entry = pb.LogEntry.FromString(plaintext)
    if entry.device_id != device_id or entry.seq != rec.seq:
        raise BadLogBatch(f"record {rec.seq} holds the entry of {entry.device_id}/{entry.seq}")
    return entry


MAX_ROSTER_BYTES = 3 * 1024 * 1024


def seal_roster(roster: pb.Roster, owner_public_key: bytes) -> bytes:
    """The roster sealed (SealedBox) to the site's log-owner key: only the data owner reads it."""
    return SealedBox(keys.public_box_key(owner_public_key)).encrypt(roster.SerializeToString())


def open_roster(sealed: bytes, owner_keys: Mapping[str, bytes]) -> pb.Roster | None:
    """The roster if one of `owner_keys` opens it (and it parses), else None."""
    if len(sealed) > MAX_ROSTER_BYTES:
        return None
    for secret in owner_keys.values():
        try:
            return pb.Roster.FromString(SealedBox(PrivateKey(secret)).decrypt(sealed))
        except (CryptoError, DecodeError):  # sealed to another key (or garbled): try the next
            continue
    return None


def write_export(
    out: BinaryIO,
    device_keys: Iterable[pb.LogDeviceKey],
    batches: Iterable[pb.SignedLogBatch],
    sealed_roster: bytes = b"",
) -> int:
    """Write an export file: EXPORT_MAGIC, then frames of u32 big-endian length +
    serialised LogExportFrame (the sealed roster if any, device keys, then batches in
    hub order). Returns the number of batches written."""
    out.write(EXPORT_MAGIC)

    def frame(msg: pb.LogExportFrame) -> None:
        raw = msg.SerializeToString()
        out.write(struct.pack(">I", len(raw)) + raw)

    if sealed_roster:
        frame(pb.LogExportFrame(sealed_roster=sealed_roster))

    for key in device_keys:
        frame(pb.LogExportFrame(device_key=key))
    n = 0
    for batch in batches:
        frame(pb.LogExportFrame(batch=batch))
        n += 1
    return n


def read_export(stream: BinaryIO) -> Iterator[pb.LogExportFrame]:
    """Frames of an export file. Refused (BadLogBatch): wrong magic, frames over
    MAX_FRAME_BYTES, a truncated frame, unparsable frames."""
    if stream.read(len(EXPORT_MAGIC)) != EXPORT_MAGIC:
        raise BadLogBatch("not a doorkeeper log export (bad magic)")
    while True:
        head = stream.read(4)
        if not head:
            return
        if len(head) != 4:
            raise BadLogBatch("truncated export file")
        (size,) = struct.unpack(">I", head)
        if size > MAX_FRAME_BYTES:
            raise BadLogBatch(f"export frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        raw = stream.read(size)
        if len(raw) != size:
            raise BadLogBatch("truncated export file")
        frame = pb.LogExportFrame()
        try:
            frame.ParseFromString(raw)
        except Exception as exc:  # DecodeError / RuntimeError depending on backend
            raise BadLogBatch(f"malformed export frame: {exc}") from None
        yield frame


@dataclass
class DeviceReport:
    device_id: str
    key_id: str
    watermark: int = 0
    entries: int = 0
    batches: int = 0
    gaps: list[Gap] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    """Outcome of verifying an export: per device, plus decrypted entries."""

    devices: dict[str, DeviceReport] = field(default_factory=dict)
    entries: list[pb.LogEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    roster: pb.Roster | None = None  # person id -> name, when the owner key opens it
    notes: list[str] = field(default_factory=list)  # not errors: e.g. a roster for another key

    @property
    def ok(self) -> bool:
        return not self.errors and all(not d.errors for d in self.devices.values())

    @property
    def gaps(self) -> list[Gap]:
        return [g for d in self.devices.values() for g in d.gaps]


def verify_export(
    frames: Iterable[pb.LogExportFrame],
    owner_keys: Mapping[str, bytes],
    *,
    decrypt: bool = True,
) -> ExportReport:
    """Verify a whole export for the data owner.

    Per device: every batch's signature with the device key in the file (a
    batch from a device without a key frame is an error), chain continuity
    from the genesis link (so records removed from the start or middle, and
    replaced or reordered batches, are errors), and, with `decrypt`, that every
    entry opens with one of `owner_keys` (key id -> X25519 private key) and is
    bound to its device and seq. Every gap marker is listed. After a device's
    first error its later batches are not trusted (reported once).
    """
    report = ExportReport()
    device_keys: dict[str, bytes] = {}
    cursors: dict[str, ChainCursor] = {}
    for frame in frames:
        kind = frame.WhichOneof("frame")
        if kind == "device_key":
            dk = frame.device_key
            device_keys[dk.device_id] = dk.sign_public_key
            report.devices.setdefault(
                dk.device_id, DeviceReport(dk.device_id, keys.key_id(dk.sign_public_key))
            )
            continue
        if kind == "sealed_roster":
            report.roster = open_roster(frame.sealed_roster, owner_keys)
            if report.roster is None:
                report.notes.append("the roster (names) does not open with the given owner keys")
            continue
        if kind != "batch":
            report.errors.append("unknown frame in export")
            continue
        peek = pb.LogBatch()
        try:
            peek.ParseFromString(frame.batch.batch)
        except Exception:  # DecodeError / RuntimeError depending on backend
            report.errors.append("unparsable batch in export")
            continue
        device = peek.device_id[:MAX_ID_CHARS]
        dev = report.devices.setdefault(device, DeviceReport(device, ""))
        if dev.errors:
            continue
        key = device_keys.get(device)
        if key is None:
            dev.errors.append(f"batch for device {device!r} without its signing key")
            continue
        cursor = cursors.setdefault(device, ChainCursor())
        try:
            opened = open_batch(frame.batch, device_sign_public_key=key, device_id=device,
                                site_id=None)
            new = cursor.advance(opened)
            for rec, _raw in new:
                if rec.kind == ENTRY and decrypt:
                    report.entries.append(decrypt_record(rec, device, owner_keys))
                dev.entries += rec.kind == ENTRY
        except BadLogBatch as exc:
            dev.errors.append(exc.reason)
            continue
        dev.batches += 1
        dev.watermark = cursor.watermark
        dev.gaps = list(cursor.gaps)
    return report
