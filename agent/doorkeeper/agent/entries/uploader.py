"""Upload the outbox to the hub, oldest first, independent of the transport.

`send(SignedLogBatch) -> LogAck` is injected (the gRPC wiring passes a stub
call with a deadline; the bench passes `LogIngest.ingest` in-process). The
upload is idempotent: a batch is keyed by (device, seq range) and rebuilt from
the outbox on every attempt, so after a crash, a lost ack or a timeout the
same records are simply sent again and the hub stores them once. Rows are
deleted only up to the watermark the hub acknowledged, and never beyond the
batch that was acknowledged.

Never on the decision path: run `upload_pending` from its own thread or
scheduled job. Each outbox step is a short transaction, so `Outbox.append`
waits at most for one of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nacl.signing import SigningKey

from doorkeeper.agent.entries.outbox import Outbox
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import entrylog

log = logging.getLogger(__name__)

Send = Callable[[pb.SignedLogBatch], pb.LogAck]

# Records per upload batch. One hub core must ingest >= 10,000 records/s from door-sized
# batches (`doorkeeper bench logs`, ingest by batch size, hub pinned to one core): batches of
# 10 only just reach it (about 13,000/s on the shared test machine), 100 clear it with room
# (about 85,000/s). See BENCHMARKS.md.
DEFAULT_BATCH_RECORDS = 100


class UploadFailed(Exception):
    """`send` could not deliver a batch: the hub is unreachable (`transient`) or refused it.
    The transport adapter raises it with a one-line reason (e.g. "UNAVAILABLE: ...")."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.transient = transient


# What `send` may raise that means "resend later"; anything else is a bug and propagates.
SEND_FAILURES: tuple[type[Exception], ...] = (UploadFailed, OSError, entrylog.BadLogBatch)


@dataclass(frozen=True)
class UploadResult:
    batches: int
    records_acked: int  # rows deleted after acknowledgement
    duplicates: int  # records the hub already had
    backlog: int  # rows still queued
    error: str = ""  # why this run stopped early (one line), if it did
    transient: bool = True  # the error was the transport, not the hub refusing a batch


def upload_pending(
    outbox: Outbox,
    send: Send,
    *,
    device_key: SigningKey,
    site_id: str,
    batch_records: int = DEFAULT_BATCH_RECORDS,
    batch_bytes: int = 2 * 1024 * 1024,
    max_batches: int | None = None,
    stop: threading.Event | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> UploadResult:
    """Send queued rows oldest first until the outbox is empty, `max_batches`
    were sent, `stop` is set, or `send` raises.

    A delivery failure from `send` (`SEND_FAILURES`: the transport, or the hub
    refusing the batch) ends the run and is returned in `error`, not raised:
    nothing is deleted for that batch and the next run resends it. Any other
    exception is a bug and propagates. Retry/backoff policy belongs to the
    caller (tenacity or the scheduler interval).
    """
    outbox.flush_gaps()
    sent = acked = dups = 0
    error = ""
    transient = True
    while (max_batches is None or sent < max_batches) and not (stop and stop.is_set()):
        rows = outbox.pending(batch_records, batch_bytes)
        if not rows:
            break
        stats = outbox.stats()
        signed = entrylog.sign_batch(
            device_key,
            site_id=site_id,
            device_id=outbox.device_id,
            records=[r.record for r in rows],
            sent_at_ms=int(wall_clock() * 1000),
            backlog=max(stats.backlog_records - len(rows), 0),
            dropped_total=stats.dropped_total,
            unwritten_total=stats.unwritten_total,
        )
        try:
            ack = send(signed)
        except SEND_FAILURES as exc:  # resend later; the caller reports it
            error = " ".join(str(exc).split())[:300] or type(exc).__name__
            transient = not isinstance(exc, entrylog.BadLogBatch) and getattr(exc, "transient", True)
            log.debug("log upload stopped at seq %d: %s", rows[0].first_seq, error)
            break
        sent += 1
        dups += ack.duplicates
        acked += outbox.acknowledge(ack.watermark, rows[-1].seq)
        if ack.watermark < rows[0].first_seq:
            # The hub stored nothing of this batch and did not refuse it: do not spin.
            error = f"hub acknowledged watermark {ack.watermark} below seq {rows[0].first_seq}"
            break
    return UploadResult(sent, acked, dups, outbox.stats().backlog_records, error, transient)
