"""`wire.durable.write_atomic` and the key files written through it (no FUSE needed here;
tests/powerloss cuts the power under them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from doorkeeper.wire import durable, keys


def test_write_atomic_sets_the_mode_whatever_the_umask_and_leaves_no_temp_file(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        durable.write_atomic(tmp_path / "a" / "b" / "x.pub", b"public", 0o644)
    finally:
        os.umask(old)
    target = tmp_path / "a" / "b" / "x.pub"
    assert target.read_bytes() == b"public"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["x.pub"]


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    durable.write_atomic(tmp_path / "state.json", b"old and long", 0o600)
    durable.write_atomic(tmp_path / "state.json", b"new", 0o600)
    assert (tmp_path / "state.json").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_private_refuses_to_overwrite_and_keeps_the_old_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "hub.sign.key"
    keys.write_private(path, b"k" * 32)
    with pytest.raises(keys.KeyFileError, match="refusing to overwrite"):
        keys.write_private(path, b"x" * 32)
    assert keys.read_private(path) == b"k" * 32
    assert sorted(os.listdir(path.parent)) == ["hub.sign.key"]
