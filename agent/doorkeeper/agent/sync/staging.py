"""Bundles on the door's disk: a download in progress, and verified bundles held for later.

`Staging` keeps a download chunk by chunk (each fsynced), so a cut download resumes from
the last whole chunk. `HeldBundles` keeps a bundle that was verified in full on receipt
but whose header says it takes effect later (`BundleHeader.effective_at`): it survives a
restart and a power cut, and the sync loop applies it once the door's clock reaches that
time, with or without the hub. Files only here; verification is `bundle`'s business.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.message import DecodeError

from doorkeeper.agent.sync import bundle as core
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import durable

log = logging.getLogger("doorkeeper.agent.sync.syncer")


class Staging:
    """A download in progress: the signed header and the chunks received so far."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.header_path = directory / "header.bin"
        self.payload_path = directory / "payload.part"

    def clear(self) -> None:
        for p in (self.header_path, self.payload_path):
            p.unlink(missing_ok=True)

    def load_header(self) -> pb.SignedBundleHeader | None:
        try:
            return pb.SignedBundleHeader.FromString(self.header_path.read_bytes())
        except (FileNotFoundError, DecodeError):
            return None

    def start(self, signed: pb.SignedBundleHeader, keep_payload: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not keep_payload:
            self.payload_path.unlink(missing_ok=True)
        durable.write_atomic(self.header_path, signed.SerializeToString())

    def complete_chunks(self, vh: core.VerifiedHeader) -> int:
        """How many whole chunks are on disk; truncates a torn last one."""
        try:
            size = self.payload_path.stat().st_size
        except FileNotFoundError:
            return 0
        total, n = 0, 0
        for length in vh.header.chunk_length:
            if total + length > size:
                break
            total += length
            n += 1
        if size != total:
            with open(self.payload_path, "r+b") as f:
                f.truncate(total)
        return n

    def append(self, data: bytes) -> None:
        with open(self.payload_path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def chunks(self, vh: core.VerifiedHeader) -> Iterator[tuple[int, bytes]]:
        yield from _read_chunks(self.payload_path, vh)


class HeldBundles:
    """At most one verified bundle waiting for its effective time, in ``directory``.

    A bundle is two files named by its version: ``<version>.payload`` (the staged chunks,
    moved here by a rename) and ``<version>.header`` (the signed header, written last and
    atomically: it is what makes the pair count). Keeping a newer bundle writes the new pair
    before deleting the old one, so a power cut at any moment leaves the old pair or the
    new one, never neither.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _pairs(self) -> list[tuple[int, Path, Path]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem, dot, ext = name.partition(".")
            if ext == "header" and dot and stem.isdigit():
                found.append((int(stem), self.dir / name, self.dir / f"{stem}.payload"))
        return sorted(found)

    def load(self) -> tuple[pb.SignedBundleHeader, Path] | None:
        """The newest held signed header and its payload file, or None (not yet verified again:
        the caller does that with the trust it holds now)."""
        for _version, header, payload in reversed(self._pairs()):
            try:
                signed = pb.SignedBundleHeader.FromString(header.read_bytes())
            except (OSError, DecodeError) as exc:
                log.warning("held bundle %s unreadable (%s); ignored", header.name, exc)
                continue
            if payload.exists():
                return signed, payload
        return None

    def keep(self, staging: Staging, vh: core.VerifiedHeader, signed: pb.SignedBundleHeader) -> Path:
        """Move the staged (complete, verified) bundle here; older held bundles go. Returns
        the payload file it is held in."""
        durable.make_dirs(self.dir)
        stem = f"{vh.header.to_version:020d}"
        payload = self.dir / f"{stem}.payload"
        os.replace(staging.payload_path, payload)
        durable.fsync_dir(self.dir)
        durable.fsync_dir(staging.dir)
        durable.write_atomic(self.dir / f"{stem}.header", signed.SerializeToString())
        self._drop(keep=vh.header.to_version)
        return payload

    def clear(self) -> None:
        self._drop(keep=None)

    def _drop(self, keep: int | None) -> None:
        removed = False
        for version, header, payload in self._pairs():
            if version != keep:
                header.unlink(missing_ok=True)  # first: a pair without its header does not count
                payload.unlink(missing_ok=True)
                removed = True
        for stray in self.dir.glob("*.payload") if self.dir.exists() else ():
            if not (stray.with_suffix(".header")).exists() and stray.stem != f"{keep or 0:020d}":
                stray.unlink(missing_ok=True)
                removed = True
        if removed:
            durable.fsync_dir(self.dir)

    @staticmethod
    def chunks(payload: Path, vh: core.VerifiedHeader) -> Iterator[tuple[int, bytes]]:
        yield from _read_chunks(payload, vh)


def _read_chunks(path: Path, vh: core.VerifiedHeader) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        for index, length in enumerate(vh.header.chunk_length):
            yield index, f.read(length)
