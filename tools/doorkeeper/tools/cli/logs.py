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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


# Decisions that let the person in (or would have, in shadow mode).
_GRANTS = frozenset({"granted", "shadow", "shadow_granted"})
DEFAULT_NEAR_SIMILARITY = 0.25
NOT_READY_EXIT = 3


@dataclass
class Refused:
    """One resident's shadow-mode refusals in the file."""

    person_id: str
    name: str
    refused: int = 0
    shadow_decisions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    doors: set[str] = field(default_factory=set)
    last_ms: int = 0
    as_nearest: int = 0  # of `refused`: as the nearest candidate of an unrecognised face


@dataclass
class CutOver:
    """What the data owner learns from an export before the doors enforce (no hub involved)."""

    would_refuse: list[Refused]
    never_seen: list[tuple[str, str]]  # (person id, name) on the roster, in no entry
    unrecognised: int  # shadow refusals of faces naming nobody (close enough)
    first_ms: int
    last_ms: int


def cut_over(entries: Sequence[pb.LogEntry], roster: pb.Roster,
             near_similarity: float = DEFAULT_NEAR_SIMILARITY) -> CutOver:
    """Residents seen in shadow mode and refused, and residents never seen at all.

    A shadow entry naming a person and not granting is a would-be refusal of that resident
    (expired, not allowed now, outside the schedule, ...). An unrecognised face names its
    nearest enrolled resident only in shadow mode (`low_similarity` or `ambiguous_match`,
    result `unknown`): it counts as that resident seen, and refused, only at a similarity of
    at least `near_similarity` (a stranger passing the door is nearest to somebody, far off).
    A resident is seen by any entry that names them, shadow or not (except such far-off
    candidates)."""
    names = {p.person_id: p.name for p in roster.persons}
    seen: set[str] = set()
    refused: dict[str, Refused] = {}
    unrecognised = 0
    for e in entries:
        candidate = e.decision == "unknown"
        if candidate and e.person_id and e.similarity < near_similarity:
            if e.shadow:
                unrecognised += 1
            continue
        if not e.person_id:
            if e.shadow and candidate:
                unrecognised += 1
            continue
        seen.add(e.person_id)
        if not e.shadow:
            continue
        r = refused.setdefault(e.person_id, Refused(e.person_id, names.get(e.person_id, "")))
        r.shadow_decisions += 1
        if e.decision not in _GRANTS:
            r.refused += 1
            r.reasons[e.reason or e.decision] += 1
            r.doors.add(e.door)
            r.last_ms = max(r.last_ms, e.wall_time_ms)
            r.as_nearest += int(candidate)
    would_refuse = sorted((r for r in refused.values() if r.refused),
                          key=lambda r: (r.name.casefold() or "\uffff", r.person_id))
    never = sorted(((p.person_id, p.name) for p in roster.persons if p.person_id not in seen),
                   key=lambda p: (p[1].casefold(), p[0]))
    times = [e.wall_time_ms for e in entries if e.wall_time_ms]
    return CutOver(would_refuse, never, unrecognised, min(times, default=0), max(times, default=0))


@logs.command()
@_owner_key_option
@_file_argument
@click.option("--near-similarity", type=click.FloatRange(0.0, 1.0), default=DEFAULT_NEAR_SIMILARITY,
              show_default=True,
              help="An unrecognised face in shadow mode counts for its nearest resident from this "
                   "similarity up (below it: a stranger).")
@click.option("--json", "as_json", is_flag=True)
def readiness(owner_key_paths: tuple[Path, ...], file: Path, near_similarity: float, as_json: bool) -> None:
    """Before the doors enforce: residents, by name, whom shadow-mode doors would have refused,
    and residents never seen in FILE's period, so the committee can call them in. Exit status
    0 when nobody is listed, 3 when somebody is, 1 when FILE does not verify."""
    report = _verify_file(file, load_owner_keys(owner_key_paths))
    if report.roster is None:
        raise click.ClickException(
            "FILE holds no roster this key opens (names): pull it again after `site owner-key` is set")
    zone = site_zone(report.roster.utc_offset_minutes)
    c = cut_over(report.entries, report.roster, near_similarity)
    doc: dict[str, Any] = {
        "site_id": report.roster.site_id, "site_name": report.roster.site_name,
        "entries": len(report.entries), "from": _when(c.first_ms, zone), "to": _when(c.last_ms, zone),
        "would_refuse": [{
            "person_id": r.person_id, "name": r.name, "refused": r.refused,
            "shadow_decisions": r.shadow_decisions, "reasons": dict(sorted(r.reasons.items())),
            "doors": sorted(r.doors), "last_refused": _when(r.last_ms, zone), "as_nearest": r.as_nearest,
        } for r in c.would_refuse],
        "never_seen": [{"person_id": pid, "name": name} for pid, name in c.never_seen],
        "unrecognised_faces": c.unrecognised,
    }
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(f"{doc['site_name']}: {doc['entries']} entries from {doc['from']} to {doc['to']}")
        click.echo(f"{len(c.would_refuse)} resident(s) seen in shadow mode who would have been refused:")
        for r in doc["would_refuse"]:
            reasons = ", ".join(f"{words(k)} x{n}" for k, n in r["reasons"].items())
            who = r["name"] or f"person {r['person_id']} (not on the roster)"
            nearest = f", {r['as_nearest']} as an unrecognised face's nearest" if r["as_nearest"] else ""
            click.echo(f"  {who}: refused {r['refused']} of {r['shadow_decisions']} at "
                       f"{', '.join(r['doors'])} ({reasons}{nearest}); last {r['last_refused']}")
        click.echo(f"{len(c.never_seen)} resident(s) never seen in this period:")
        for n in doc["never_seen"]:
            click.echo(f"  {n['name']}  ({n['person_id']})")
        if c.unrecognised:
            click.echo(f"{c.unrecognised} shadow refusal(s) of faces matching no resident closely "
                       f"(similarity below {near_similarity:.2f}, or an agent that names no candidate)")
    _print_problems(report)
    if not report.ok:
        sys.exit(1)
    if c.would_refuse or c.never_seen:
        sys.exit(NOT_READY_EXIT)


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
