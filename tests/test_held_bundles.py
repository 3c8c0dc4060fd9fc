"""Bundles held for their effective time, on disk: one pair per version, the header written
last, so a cut at any moment leaves the old bundle or the new one, never neither."""

from __future__ import annotations

from pathlib import Path

from doorkeeper.agent.sync import bundle as core
from doorkeeper.agent.sync.staging import HeldBundles, Staging
from doorkeeper.v1 import doorkeeper_pb2 as pb

Staged = tuple[Staging, core.VerifiedHeader, pb.SignedBundleHeader]


def staged(root: Path, version: int, payload: bytes) -> Staged:
    staging = Staging(root / "staging")
    header = pb.BundleHeader(to_version=version, chunk_length=[len(payload)])
    signed = pb.SignedBundleHeader(header=header.SerializeToString(), signature=b"s" * 64)
    staging.start(signed, keep_payload=False)
    staging.append(payload)
    return staging, core.VerifiedHeader(header, signed.header), signed


def test_a_newer_bundle_replaces_the_held_one(tmp_path: Path) -> None:
    held = HeldBundles(tmp_path / "held")
    assert held.load() is None
    held.keep(*staged(tmp_path, 3, b"three"))
    signed, payload = held.load()  # type: ignore[misc]
    assert pb.BundleHeader.FromString(signed.header).to_version == 3 and payload.read_bytes() == b"three"
    staging, vh, signed4 = staged(tmp_path, 4, b"four")
    held.keep(staging, vh, signed4)
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == [f"{4:020d}.header", f"{4:020d}.payload"]
    signed, payload = held.load()  # type: ignore[misc]
    assert pb.BundleHeader.FromString(signed.header).to_version == 4
    assert [data for _, data in HeldBundles.chunks(payload, vh)] == [b"four"]
    assert not staging.payload_path.exists()  # moved, not copied
    held.clear()
    assert held.load() is None and not list((tmp_path / "held").iterdir())


def test_a_cut_before_the_new_header_leaves_the_old_bundle(tmp_path: Path) -> None:
    held = HeldBundles(tmp_path / "held")
    held.keep(*staged(tmp_path, 3, b"three"))
    (tmp_path / "held" / f"{4:020d}.payload").write_bytes(b"four, header never written")
    (tmp_path / "held" / f"{5:020d}.header").write_bytes(b"\xff\xfftorn")  # and a torn one
    signed, payload = held.load()  # type: ignore[misc]
    assert pb.BundleHeader.FromString(signed.header).to_version == 3 and payload.read_bytes() == b"three"
    held.keep(*staged(tmp_path, 6, b"six"))  # the next keep sweeps the leftovers
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == [f"{6:020d}.header", f"{6:020d}.payload"]


def test_a_header_without_its_payload_does_not_count(tmp_path: Path) -> None:
    held = HeldBundles(tmp_path / "held")
    held.keep(*staged(tmp_path, 3, b"three"))
    (tmp_path / "held" / f"{3:020d}.payload").unlink()
    assert held.load() is None
