"""Hub-side entry-log ingest: verify, deduplicate, store ciphertext, track device health.

Transport-free: the gRPC servicer authenticates the device, then calls
`LogIngest.ingest` with the device's registered signing key and maps
`BadLogBatch` to a gRPC status (INVALID_ARGUMENT, a gap or broken chain
included: see protos/PROTOCOL.md, status codes). The hub cannot read entries:
it checks signatures, seq continuity and the hash chain over ciphertext only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from doorkeeper.hub.logstore import BatchCommit, DeviceLogStatus, LogStore, StoredBatch
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.entrylog import BadLogBatch, ChainCursor, open_batch

__all__ = ["BadLogBatch", "LogIngest"]

MAX_BATCH_BYTES = 3 * 1024 * 1024  # under gRPC's 4 MiB message limit
MAX_RECORDS_PER_BATCH = 5000
_CAS_RETRIES = 8


class LogIngest:
    """Applies uploaded batches to a `LogStore`.

    `ingest` guarantees, per device: records are stored once (a resent or
    overlapping batch only adds what is new; a fully known batch changes
    nothing but the duplicate counter), in seq order without holes, on an
    unbroken hash chain that starts at the genesis link. Refused with
    `BadLogBatch` (reason recorded for fleet status, stored logs and watermark
    unchanged): oversize or malformed input, a signature that is not this
    device's key (e.g. signed by another device), a batch naming another device
    or site, holes or disorder inside a batch, a batch starting past
    watermark + 1 (a missing or reordered batch), and a broken chain.
    """

    def __init__(self, store: LogStore, *, clock: Callable[[], float] = time.time,
                 max_batch_bytes: int = MAX_BATCH_BYTES,
                 max_records: int = MAX_RECORDS_PER_BATCH) -> None:
        self.store = store
        self._clock = clock
        self.max_batch_bytes = max_batch_bytes
        self.max_records = max_records

    def ingest(self, site_id: str, device_id: str, device_sign_public_key: bytes,
               signed_batch_bytes: bytes) -> pb.LogAck:
        """Verify and store one serialised SignedLogBatch; returns the ack whose
        watermark the device may delete up to."""
        now_ms = int(self._clock() * 1000)
        try:
            return self._ingest(site_id, device_id, device_sign_public_key,
                                signed_batch_bytes, now_ms)
        except BadLogBatch as exc:
            self.store.record_refusal(site_id, device_id, exc.reason, now_ms)
            raise

    def _ingest(self, site_id: str, device_id: str, key: bytes, raw: bytes,
                now_ms: int) -> pb.LogAck:
        if len(raw) > self.max_batch_bytes:
            raise BadLogBatch(f"batch of {len(raw)} bytes exceeds {self.max_batch_bytes}")
        signed = pb.SignedLogBatch()
        try:
            signed.ParseFromString(raw)
        except Exception as exc:  # DecodeError / RuntimeError depending on backend
            raise BadLogBatch(f"malformed batch: {exc}") from None
        opened = open_batch(signed, device_sign_public_key=key, device_id=device_id,
                            site_id=site_id, max_records=self.max_records)
        batch = opened.batch
        skew_s = round(batch.sent_at_ms / 1000 - now_ms / 1000)
        for _ in range(_CAS_RETRIES):
            state = self.store.state(device_id)
            if state is not None and state.site_id != site_id:
                raise BadLogBatch(f"device {device_id} logs belong to another site")
            cursor = (ChainCursor(state.watermark, state.head) if state is not None
                      else ChainCursor())
            before = cursor.watermark
            if batch.last_seq <= before:
                self.store.record_duplicate(site_id, device_id, len(opened.records), now_ms,
                                            batch.backlog, skew_s)
                return pb.LogAck(watermark=before, duplicates=len(opened.records))
            new = cursor.advance(opened)  # raises BadLogBatch on a hole or broken chain
            duplicates = len(opened.records) - len(new)
            first_new = max(new[0][0].gap_from_seq, before + 1)
            committed = self.store.commit_batch(BatchCommit(
                site_id=site_id, device_id=device_id, expected_watermark=before,
                new_watermark=cursor.watermark, new_head=cursor.head, first_seq=first_new,
                received_at_ms=now_ms, signed_batch=raw, backlog=batch.backlog,
                clock_skew_s=skew_s, gaps=cursor.gaps))
            if committed:
                return pb.LogAck(watermark=cursor.watermark, duplicates=duplicates)
        raise BadLogBatch("concurrent uploads for this device kept racing; retry")

    def pull(self, site_id: str, device_id: str | None = None,
             after_seq: int = 0) -> Iterator[StoredBatch]:
        """Stored batches for an export, by device then seq (see LogStore.batches)."""
        return self.store.batches(site_id, device_id, after_seq)

    def pull_responses(self, site_id: str, device_keys: Mapping[str, bytes],
                       device_id: str | None = None, after_seq: int = 0,
                       max_response_bytes: int = MAX_BATCH_BYTES,
                       ) -> Iterator[pb.PullLogsResponse]:
        """`PullLogs` stream messages: each device's LogDeviceKey (from
        `device_keys`: device id -> registered Ed25519 public key) before its first
        batch; batches packed up to `max_response_bytes` per message (one batch
        alone may reach MAX_BATCH_BYTES, under gRPC's 4 MiB default)."""
        sent_keys: set[str] = set()
        out = pb.PullLogsResponse()
        size = 0
        for stored in self.pull(site_id, device_id, after_seq):
            if out.batches and size + stored.byte_size > max_response_bytes:
                yield out
                out, size = pb.PullLogsResponse(), 0
            if stored.device_id not in sent_keys:
                sent_keys.add(stored.device_id)
                out.device_keys.append(pb.LogDeviceKey(
                    device_id=stored.device_id, site_id=site_id,
                    sign_public_key=device_keys.get(stored.device_id, b"")))
            out.batches.append(stored.as_proto())
            size += stored.byte_size
        if out.batches:
            yield out

    def device_status(self, device_id: str) -> DeviceLogStatus | None:
        return self.store.device_status(device_id)
