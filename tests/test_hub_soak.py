"""A hub through many change-and-fetch cycles keeps its descriptors and memory flat.

The quick form of `doorkeeper bench soak`: a hub process, a real agent syncing over gRPC
after every change. Descriptors are counted in /proc/PID/fd (exact, not timing); memory is
bounded loosely (a leak of one connection per bundle grows RSS by megabytes).
"""

from __future__ import annotations

from pathlib import Path

from nacl.public import PrivateKey

from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.publisher import Publisher
from doorkeeper.hub.sqlite_store import SqliteHubStore
from doorkeeper.hub.store import BundleMeta, Device
from doorkeeper.tools.bench.soak import soak

RSS_BOUND_KB = 8 * 1024


def test_change_and_fetch_cycles_leak_no_descriptors(tmp_path: Path) -> None:
    result = soak(cycles=100, warmup=20, workdir=tmp_path)
    assert result.agent_version == result.hub_version == 1 + 120
    # Before the fix every bundle left a store connection (db + WAL): +2 per cycle.
    assert result.end.fds == result.start.fds, result
    assert result.end.rss_kb - result.start.rss_kb < RSS_BOUND_KB, result


def test_device_key_cache_keeps_only_the_most_recent_devices(tmp_path: Path) -> None:
    store = SqliteHubStore(tmp_path / "hub.db")
    publisher = Publisher(store, HubKeys.create(tmp_path / "keys"), device_key_cache=3)
    try:
        meta = BundleMeta("b" * 32, "s" * 32, 1, 0, 1, b"\0" * 32, (), (),
                          publisher.keys.seal(b"k" * 32), b"\0" * 32, 0, 0)
        devices = [Device(f"{i:032x}", "s" * 32, f"door{i}", 0, b"p" * 32,
                          bytes(PrivateKey.generate().public_key)) for i in range(5)]
        for device in devices:
            publisher.issue(meta, device)
        assert publisher.cached_device_keys == 3
        # The evicted device is still served: its key is computed again.
        assert publisher.issue(meta, devices[0]).signature
        assert publisher.cached_device_keys == 3
    finally:
        publisher.close()
        store.close()
