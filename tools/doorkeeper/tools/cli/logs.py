"""`doorkeeper logs ...`: the data owner's tools for entry-log exports.

Export file (`*.dklogs`): the 8-byte magic ``DKLOGS\\0\\1`` followed by frames,
each a big-endian u32 length and a serialised `LogExportFrame`: first one
`LogDeviceKey` per device (the device signing key as the hub registered it),
then the device's `SignedLogBatch`es exactly as the hub received them, in seq
order. Everything in it is ciphertext or routing metadata; only the owner key
opens the entries.

`logs pull` streams `PullLogs` from the hub into such a file; `site owner-key`
(in cli_admin) makes the owner key pair with `generate_owner_key`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from google.protobuf.json_format import MessageToDict
from nacl.public import PrivateKey

from doorkeeper.tools.cli.common import console, friendly, hub_options, operator_client
from doorkeeper.tools.cli.human import site_zone, words
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import durable, keys
from doorkeeper.wire.entrylog import (
    BadLogBatch,
    ExportReport,
    OwnerKey,
    read_export,
    verify_export,
    write_export,
)

CSV_FIELDS = ("device_id", "seq", "wall_time_ms", "monotonic_ns", "door", "decision",
              "credential", "person_id", "similarity", "has_liveness", "liveness",
              "whitelist_version", "reason", "shadow")


def generate_owner_key(private_path: Path) -> OwnerKey:
    """Create a log-owner X25519 key pair: the private half goes to `private_path`
    (mode 0600, refuses to overwrite), the public half to `<private_path>.pub`.
    Returns the public key and its id, for `Admin.SetOwnerKey`."""
    private = PrivateKey.generate()
    keys.write_private(private_path, bytes(private))
    public = bytes(private.public_key)
    durable.write_atomic(private_path.with_name(private_path.name + ".pub"), public, 0o644)
    return OwnerKey.from_public(public)


def load_owner_keys(paths: Sequence[Path]) -> dict[str, bytes]:
    """Owner private keys by key id (several after a rotation). Refuses key files
    others can read (keys.read_private)."""
    out: dict[str, bytes] = {}
    for path in paths:
        secret = keys.read_private(path)
        out[keys.key_id(bytes(PrivateKey(secret).public_key))] = secret
    return out


def export_logs(out_path: Path, device_keys: Iterable[pb.LogDeviceKey],
                batches: Iterable[pb.SignedLogBatch], sealed_roster: bytes = b"") -> int:
    """Write an export file atomically (temp file, fsync, rename); returns the
    number of batches. Refuses to overwrite an existing file."""
    if out_path.exists():
        raise click.ClickException(f"{out_path} already exists")
    tmp = out_path.with_name(out_path.name + ".part")
    with open(tmp, "wb") as f:
        n = write_export(f, device_keys, batches, sealed_roster)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    durable.fsync_dir(out_path.parent)
    return n


def _when(wall_time_ms: int, zone: Any) -> str:
    """Seconds precision in the site's zone (this machine's without a roster)."""
    import datetime as dt

    if not wall_time_ms:
        return "-"
    moment = dt.datetime.fromtimestamp(wall_time_ms / 1000, zone or dt.datetime.now().astimezone().tzinfo)
    return moment.isoformat(sep=" ", timespec="seconds")


def _verify_file(path: Path, owner_keys: dict[str, bytes]) -> ExportReport:
    with open(path, "rb") as f:
        try:
            return verify_export(read_export(f), owner_keys)
        except BadLogBatch as exc:
            raise click.ClickException(exc.reason) from None


_owner_key_option = click.option(
    "--owner-key", "owner_key_paths", multiple=True, required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Owner X25519 private key file; repeat for keys of earlier rotations.")
_file_argument = click.argument("file", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path))


def _print_problems(report: ExportReport) -> None:
    for gap in report.gaps:
        click.echo(f"GAP {gap.device_id} seq {gap.from_seq}..{gap.to_seq}: "
                   f"{gap.dropped} dropped, {gap.unwritten} unwritten ({gap.reason})", err=True)
    for error in report.errors:
        click.echo(f"ERROR {error}", err=True)
    for dev in report.devices.values():
        for error in dev.errors:
            click.echo(f"ERROR {dev.device_id}: {error}", err=True)


@click.group()
def logs() -> None:
    """Entry logs: export, decrypt and verify (data owner)."""


@logs.command()
@_owner_key_option
@_file_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON array of entries.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
def decrypt(owner_key_paths: tuple[Path, ...], file: Path, as_json: bool, as_csv: bool) -> None:
    """Decrypt FILE's entries (verified first; gaps and errors go to stderr,
    and any error makes the exit status 1)."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    report = _verify_file(file, load_owner_keys(owner_key_paths))
    rows = [MessageToDict(e, preserving_proto_field_name=True,
                          always_print_fields_with_no_presence=True) for e in report.entries]
    names = {p.person_id: p.name for p in report.roster.persons} if report.roster else {}
    zone = site_zone(report.roster.utc_offset_minutes) if report.roster else None
    for row in rows:  # int64 fields come out as strings in proto JSON
        for key in ("seq", "wall_time_ms", "monotonic_ns", "whitelist_version"):
            row[key] = int(row.get(key, 0))
        row["person_name"] = names.get(row["person_id"], "")
        row["local_time"] = _when(row["wall_time_ms"], zone)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        for r in rows:
            who = r["person_name"] or (f"person {r['person_id']}" if r["person_id"] else "nobody identified")
            detail = f", similarity {r['similarity']:.2f}" if r["credential"] == "face" else ""
            reason = f" ({words(r['reason'])})" if r["reason"] else ""
            click.echo(f"{r['local_time']}  {r['door']}: {words(r['decision'])} via {r['credential']}, "
                       f"{who}{detail}{reason}  [{r['device_id'][:8]} #{r['seq']}]")
    _print_problems(report)
    for note in report.notes:
        click.echo(f"NOTE {note}", err=True)
    if not report.ok:
        sys.exit(1)


@logs.command()
@_owner_key_option
@_file_argument
def verify(owner_key_paths: tuple[Path, ...], file: Path) -> None:
    """Check FILE: batch signatures, chain continuity per device from its first
    record, every entry decrypting and bound to its seq. Lists every gap.
    Exit status 1 on any broken chain, bad signature or undecryptable entry."""
    report = _verify_file(file, load_owner_keys(owner_key_paths))
    for dev in report.devices.values():
        status = "OK" if not dev.errors else "BROKEN"
        click.echo(f"{status} device {dev.device_id} (sign key {dev.key_id or '?'}): "
                   f"{dev.batches} batches, {dev.entries} entries, up to seq {dev.watermark}, "
                   f"{len(dev.gaps)} gaps")
    _print_problems(report)
    if not report.ok:
        sys.exit(1)


@logs.command()
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Export file to write (refuses to overwrite).")
@click.option("--device", "device_id", default="", help="Only this device.")
@click.option("--after-seq", default=0, help="Only records after this seq (with --device).")
@hub_options
@friendly
def pull(site_ref: str, out_path: Path, device_id: str, after_seq: int, hub_address: str,
         operator_key: Path, tls_ca: Path | None) -> None:
    """Export a site's entry logs from the hub (ciphertext only; the hub cannot read them)."""
    from doorkeeper.agent.sync.hubclient import ADMIN

    device_keys: list[pb.LogDeviceKey] = []
    batches: list[pb.SignedLogBatch] = []
    roster = b""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        request = pb.PullLogsRequest(site=site_ref, device_id=device_id, after_seq=after_seq)
        for response in client.stream(ADMIN + "PullLogs", request, timeout=600):
            device_keys.extend(response.device_keys)
            batches.extend(response.batches)
            roster = roster or response.sealed_roster
    n = export_logs(out_path, device_keys, batches, roster)
    names = "with the roster sealed to the owner key" if roster else "without a roster (no owner key set)"
    console.print(f"wrote {n} batches from {len(device_keys)} devices to {out_path}, {names}")
    click.echo(str(out_path))
