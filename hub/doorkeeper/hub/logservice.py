"""Entry logs as the hub's gRPC services see them: ingest per device, export per site."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from doorkeeper.hub.logs import LogIngest
from doorkeeper.hub.logstore import SqliteLogStore
from doorkeeper.hub.store import Device, HubStore
from doorkeeper.v1 import doorkeeper_pb2 as pb


class LogService:
    def __init__(self, ingest: LogIngest, store: HubStore) -> None:
        self.ingest = ingest
        self.store = store

    @classmethod
    def open(cls, db_path: Path, store: HubStore) -> LogService:
        return cls(LogIngest(SqliteLogStore(db_path)), store)

    def ingest_device(self, device: Device, signed: pb.SignedLogBatch) -> pb.LogAck:
        """Raises `BadLogBatch` (stored logs unchanged) when the batch is refused."""
        assert device.sign_public is not None
        return self.ingest.ingest(device.site_id, device.device_id, device.sign_public,
                                  signed.SerializeToString())

    def annotate(self, status: pb.DeviceStatus) -> None:
        """Add what the device's uploads say to its fleet status row."""
        logs = self.ingest.device_status(status.device_id)
        if logs is None:
            return
        status.logs_watermark = logs.watermark
        status.logs_gaps = logs.gaps
        status.logs_error = logs.last_error
        if not status.reported_at:
            status.outbox_backlog = logs.backlog
            status.clock_skew_s = logs.clock_skew_s

    async def pull(self, site_id: str, device_id: str = "", after_seq: int = 0
                   ) -> AsyncIterator[pb.PullLogsResponse]:
        devices = await asyncio.to_thread(self.store.list_devices, site_id)
        keys = {d.device_id: d.sign_public or b"" for d in devices}
        responses = self.ingest.pull_responses(site_id, keys, device_id or None, after_seq)
        sentinel = object()
        while True:
            item = await asyncio.to_thread(next, responses, sentinel)
            if item is sentinel:
                return
            yield item  # type: ignore[misc]
