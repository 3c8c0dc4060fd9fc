"""The audit trail: filtered by actor and date, with the whole chain verified here, as
`doorkeeper audit verify` does, with the hub's public keys."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from doorkeeper.tools.cli.human import parse_when
from doorkeeper.tools.console.app import Console
from doorkeeper.tools.console.hubapi import HubError
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.auditchain import verify_chain

SHOWN = 1000


def routes(console: Console) -> list[tuple[str, Any, list[str]]]:
    def load(actor: str, since_text: str, until_text: str) -> dict[str, Any]:
        since = parse_when(since_text) if since_text else 0
        until = parse_when(until_text, end_of_day=True) if until_text else 0
        everything: list[pb.AuditRecord] = []
        hub_keys: dict[str, bytes] = {}
        for page in console.api.audit_pages(pb.ListAuditRequest(all=True)):
            everything.extend(page.entries)
            hub_keys.update({k.key_id: k.sign_public_key for k in page.hub_keys})
        checked, broken = verify_chain(everything, hub_keys)
        # The filters apply here, to the entries just verified (the same the hub's filter gives).
        shown = [
            e
            for e in everything
            if (not actor or actor.lower() in e.principal.lower())
            and e.at >= since
            and (not until or e.at <= until)
        ]
        return {
            "entries": shown[::-1][:SHOWN],
            "matching": len(shown),
            "total": len(everything),
            "checked": checked,
            "broken": broken,
            "actor": actor,
            "since": since_text,
            "until": until_text,
            "hub_key_ids": sorted({e.key_id for e in everything}),
        }

    async def audit(request: Request) -> Response:
        q = request.query_params
        try:
            ctx = await run_in_threadpool(
                load, q.get("actor", "")[:200], q.get("since", "")[:40], q.get("until", "")[:40]
            )
        except ValueError as exc:
            return console.refused(request, HubError(f"date: {exc}", 400, "INVALID_ARGUMENT"), "/audit")
        except HubError as exc:
            return console.refused(request, exc)
        return console.render(request, "audit.html", ctx)

    return [("/audit", audit, ["GET"])]
