"""`doorkeeper operator ...` and `doorkeeper audit ...`: operator keys and the audit trail.

An operator key is made on the operator's own machine; only its public half goes to the hub.
The audit trail is hash-chained and signed by the hub; `audit verify` checks every entry
here, with the hub's public keys, and names the first one that was edited, removed or
reordered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from doorkeeper.agent.sync.hubclient import ADMIN
from doorkeeper.tools.cli import human
from doorkeeper.tools.cli.common import (
    change_call,
    console,
    emit_json,
    fail,
    friendly,
    hub_options,
    operator_client,
)
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys

ROLES = ("admin", "operator", "auditor")


@click.group("operator")
def operator() -> None:
    """Operator keys: who may change or read what (roles admin, operator, auditor)."""


@operator.command("add")
@click.option("--name", required=True, help="Who holds the key (unique).")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the new private key (0600); it never leaves this machine.")
@hub_options
@friendly
def operator_add(name: str, role: str, out_path: Path, hub_address: str, operator_key: Path,
                 tls_ca: Path | None) -> None:
    """Make a key pair here and register its public key at the hub; prints the key id last."""
    if out_path.exists():
        fail(f"--out {out_path} exists; refusing to overwrite a key", code=2)
    pair = keys.KeyPair.generate()
    try:
        keys.write_private(out_path, bytes(pair.sign_key))  # on disk before the hub knows it
    except OSError as exc:
        fail(f"--out {out_path}: {exc}", code=2)
    try:
        with operator_client(hub_address, operator_key, tls_ca) as client:
            r = change_call(client, ADMIN + "AddOperator",
                            pb.AddOperatorRequest(name=name, role=role, public_key=pair.sign_public))
    except BaseException:
        out_path.unlink(missing_ok=True)  # refused or unreachable: no key the hub does not know
        raise
    console.print(f"operator {r.name} ({r.role}) added; private key written to {out_path} (mode 0600)",
                  highlight=False, markup=False)
    click.echo(r.key_id)


def _operator_row(o: pb.OperatorInfo) -> dict[str, Any]:
    return {"key_id": o.key_id, "name": o.name, "role": o.role, "created_at": o.created_at,
            "revoked_at": o.revoked_at or None}


@operator.command("list")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def operator_list(as_json: bool, hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Operator keys with role, when added and whether revoked."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        ops = client.call(ADMIN + "ListOperators", pb.ListOperatorsRequest()).operators
    rows = [_operator_row(o) for o in ops]
    if as_json:
        emit_json(rows)
        return
    console.print(human.table(("name", "key id", "role", "added", "state"), (
        (r["name"], r["key_id"], r["role"], human.local_time(r["created_at"]),
         f"revoked {human.local_time(r['revoked_at'])}" if r["revoked_at"] else "active") for r in rows)))


@operator.command("revoke")
@click.argument("operator_ref")
@hub_options
@friendly
def operator_revoke(operator_ref: str, hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Revoke an operator key by key id or name; it is refused from then on (the audit trail
    keeps naming it). The last active admin key cannot be revoked."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "RevokeOperator", pb.RevokeOperatorRequest(operator=operator_ref))
    console.print(f"operator {r.name} ({r.key_id}) revoked", highlight=False, markup=False)
    click.echo(r.key_id)


@click.group("audit")
def audit() -> None:
    """The hub's audit trail: who changed what, hash-chained and signed by the hub."""


def _pages(client: Any, request: pb.ListAuditRequest) -> Iterator[pb.ListAuditResponse]:
    while True:
        page = client.call(ADMIN + "ListAudit", request, timeout=60)
        yield page
        if not page.more or not page.entries:
            return
        request.after_seq = page.entries[-1].seq


def _audit_row(e: pb.AuditRecord) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at, "actor": e.principal, "action": e.action, "detail": e.detail,
            "entry_hash": e.entry_hash.hex(), "key_id": e.key_id}


@audit.command("list")
@click.option("--since", type=human.When(), default="0", help="From this date or time (ISO 8601 or unix).")
@click.option("--actor", default="", help="Only entries whose actor holds this text (name or key id).")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def audit_list(since: int, actor: str, limit: int, as_json: bool, hub_address: str, operator_key: Path,
               tls_ca: Path | None) -> None:
    """Audit entries, oldest first: when, who, what."""
    entries: list[pb.AuditRecord] = []
    with operator_client(hub_address, operator_key, tls_ca) as client:
        for page in _pages(client, pb.ListAuditRequest(since=since, actor=actor)):
            entries.extend(page.entries)
            if len(entries) >= limit:
                break
    rows = [_audit_row(e) for e in entries[:limit]]
    if as_json:
        emit_json(rows)
        return
    console.print(human.table(("#", "when", "actor", "action", "detail"), (
        (r["seq"], human.local_time(r["at"]), r["actor"], r["action"], r["detail"]) for r in rows)))


@audit.command("verify")
@hub_options
@friendly
def audit_verify(hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Check the whole chain here: exit 0 when intact, 1 with the first broken entry."""
    from doorkeeper.wire.auditchain import verify_chain

    entries: list[pb.AuditRecord] = []
    hub_keys: dict[str, bytes] = {}
    with operator_client(hub_address, operator_key, tls_ca) as client:
        for page in _pages(client, pb.ListAuditRequest(all=True)):
            entries.extend(page.entries)
            hub_keys.update({k.key_id: k.sign_public_key for k in page.hub_keys})
    checked, broken = verify_chain(entries, hub_keys)
    if broken is not None:
        fail(f"audit trail broken at entry {broken.seq}: {broken.reason} ({checked} entries read)", code=1)
    console.print(f"audit trail intact: {len(entries)} entries, hash-chained and signed by hub key(s) "
                  f"{', '.join(sorted({e.key_id for e in entries})) or '-'}", highlight=False)
    click.echo(str(len(entries)))
