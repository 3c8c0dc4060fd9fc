"""The harness itself: it must lose what SQLite never fsynced, and only that.

If these fail the other power-loss tests prove nothing: a file system that kept unsynced
writes would pass them all (as SIGKILL-only tests do, since the page cache survives a kill).
"""

from __future__ import annotations

import os
from pathlib import Path

from doorkeeper.tools.powerloss.mount import LazyMount
from doorkeeper.tools.powerloss.trials import sqlite_trial


def test_synchronous_off_loses_acknowledged_commits(disk: Path) -> None:
    tally = sqlite_trial(disk, cuts=3, records=100, synchronous="OFF")
    assert tally.acknowledged > 0
    assert tally.lost > 0, tally.figures()


def test_wal_normal_loses_commits_between_checkpoints(disk: Path) -> None:
    # 100 rows stay far below the 1000-page auto-checkpoint, so nothing was ever fsynced.
    tally = sqlite_trial(disk, cuts=2, records=100, synchronous="NORMAL", journal_mode="WAL")
    assert tally.acknowledged > 0
    assert tally.lost > 0, tally.figures()


def test_synchronous_full_loses_nothing(disk: Path) -> None:
    tally = sqlite_trial(disk, cuts=3, records=100, synchronous="FULL")
    assert tally.acknowledged > 0
    assert (tally.lost, tally.reissued_versions, tally.integrity_failures) == (0, 0, 0), tally.figures()


def test_synchronous_full_loses_nothing_when_cuts_also_tear_unsynced_pages(disk: Path) -> None:
    tally = sqlite_trial(disk, cuts=6, records=100, synchronous="FULL", torn=True, seed=5)
    assert tally.acknowledged > 0 and tally.torn_cuts > 0
    assert (tally.lost, tally.reissued_versions, tally.integrity_failures) == (0, 0, 0), tally.figures()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def test_cut_keeps_exactly_what_was_synced(disk: Path) -> None:
    """Data needs the file's fsync, names need the directory's: each alone is not enough."""
    mount = LazyMount(disk / "disk", disk / "mnt").start()
    try:
        root = mount.path
        (root / "synced").write_bytes(b"old")
        _fsync(root / "synced")
        (root / "name-only").write_bytes(b"lost contents")  # never fsynced itself
        (root / "renamed.tmp").write_bytes(b"z")
        _fsync(root / "renamed.tmp")
        _fsync(root)  # synced, name-only (empty on disk) and renamed.tmp are now durable names
        with open(root / "synced", "r+b") as f:
            f.write(b"NEW and longer")  # not fsynced: the disk keeps "old"
        (root / "data-only").write_bytes(b"x")
        _fsync(root / "data-only")  # its name was never made durable
        os.mkdir(root / "sub")
        (root / "sub" / "inner").write_bytes(b"y")
        _fsync(root / "sub" / "inner")
        _fsync(root / "sub")  # durable inside sub, but sub itself is not in the root
        os.replace(root / "renamed.tmp", root / "renamed")  # the directory is not fsynced again
        mount.cut()
        mount.start()
        assert sorted(os.listdir(root)) == ["name-only", "renamed.tmp", "synced"]
        assert (root / "synced").read_bytes() == b"old"
        assert (root / "name-only").read_bytes() == b""
        assert (root / "renamed.tmp").read_bytes() == b"z"
    finally:
        mount.stop()


def test_truncate_extend_and_overwrite_read_back_as_on_a_real_disk(disk: Path) -> None:
    """SQLite truncates and rewrites its WAL: the page overlay must never show stale bytes."""
    mount = LazyMount(disk / "disk", disk / "mnt").start()
    try:
        path = mount.path / "f"
        synced = os.urandom(10_000)
        path.write_bytes(synced)
        _fsync(path)
        _fsync(mount.path)
        with open(path, "r+b") as f:
            f.truncate(100)
            f.seek(9000)
            f.write(b"tail")  # a hole from 100 to 9000 must read as zeros, not the old bytes
            f.seek(50)
            f.write(b"mid")
        expected = synced[:50] + b"mid" + synced[53:100] + bytes(8900) + b"tail"
        assert path.read_bytes() == expected
        mount.cut()
        mount.start()
        assert path.read_bytes() == synced  # nothing after the last fsync happened
        with open(path, "r+b") as f:
            f.truncate(100)
            f.seek(9000)
            f.write(b"tail")
            f.flush()  # out of Python's buffer first, or the fsync comes before the write
            os.fsync(f.fileno())
        mount.cut()
        mount.start()
        assert path.read_bytes() == synced[:100] + bytes(8900) + b"tail"
    finally:
        mount.stop()
