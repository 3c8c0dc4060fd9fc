"""Fleet overview, a site's page, its live door list, the rollout panel and readiness."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from doorkeeper.tools.console import plots
from doorkeeper.tools.console.app import Console
from doorkeeper.tools.console.fleetwatch import STATES
from doorkeeper.tools.console.hubapi import HubError, NotAvailable
from doorkeeper.v1 import doorkeeper_pb2 as pb

T = TypeVar("T")
_SITE_VERSION = re.compile(r"site=([0-9a-f]+) v(\d+)")
# A full page polls the hub first when the snapshot is older than this (the poller is late) or
# older than the console's last change; live fragments never do.
FULL_PAGE_MAX_AGE_S = 15.0
MODES = {pb.DOOR_MODE_UNSPECIFIED: "enforce", pb.DOOR_MODE_ENFORCE: "enforce", pb.DOOR_MODE_SHADOW: "shadow"}


def attempt(fn: Callable[[], T]) -> tuple[T | None, str, bool]:
    """(value, error sentence, not available on this hub) for a part of a page."""
    try:
        return fn(), "", False
    except NotAvailable as exc:
        return None, str(exc), True
    except HubError as exc:
        return None, str(exc), False


def canary_list(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s]+", text) if p.strip()]


def routes(console: Console) -> list[tuple[str, Any, list[str]]]:
    def overview_context(max_age_s: float | None = None) -> dict[str, Any]:
        snap, summaries = console.watch.summaries(max_age_s=max_age_s)
        return {"snap": snap, "summaries": summaries, "states": STATES, "attention_cap": 200}

    async def overview(request: Request) -> Response:
        ctx = await run_in_threadpool(overview_context, FULL_PAGE_MAX_AGE_S)
        return console.render(request, "overview.html", ctx)

    async def overview_live(request: Request) -> Response:
        return console.render(request, "_overview.html", await run_in_threadpool(overview_context))

    def site_doors(site_ref: str, max_age_s: float | None = None) -> dict[str, Any]:
        snap, summaries = console.watch.summaries(max_age_s=max_age_s)
        for s in summaries:
            if site_ref in (s.site.site_id, s.site.name):
                return {"snap": snap, "summary": s, "states": STATES, "modes": MODES}
        raise HubError(f"no site {site_ref!r} at the hub", 404, "NOT_FOUND")

    def site_context(site_ref: str) -> dict[str, Any]:
        ctx = site_doors(site_ref, max_age_s=FULL_PAGE_MAX_AGE_S)
        site: pb.SiteInfo = ctx["summary"].site
        rollout, ctx["rollout_error"], ctx["rollout_na"] = attempt(
            lambda: console.api.read("GetRollout", pb.GetRolloutRequest(site=site.site_id))
        )
        readiness, ctx["readiness_error"], ctx["readiness_na"] = attempt(
            lambda: console.api.read("SiteReadiness", pb.SiteReadinessRequest(site=site.site_id))
        )
        decisions, ctx["decisions_error"], ctx["decisions_na"] = attempt(
            lambda: console.api.read("DecisionCounts", pb.DecisionCountsRequest(site=site.site_id))
        )
        versions, _, versions_na = attempt(
            lambda: console.api.read("VersionHistory", pb.VersionHistoryRequest(site=site.site_id, limit=100))
        )
        if versions is not None:  # the hub's own record: when each version was made, when doors had it
            history: list[dict[str, Any]] | None = [
                {
                    "version": v.version,
                    "at": v.made_at,
                    "persons": v.person_count,
                    "applied": f"{v.doors_applied}/{v.doors_total}",
                    "half": v.converge_half_s,
                    "all": v.converge_all_s,
                }
                for v in versions.versions
            ]
            ctx["history_error"] = ""
            timed = [
                (int(v.version), float(v.converge_all_s) if v.converge_all_s >= 0 else None)
                for v in sorted(versions.versions, key=lambda v: v.version)
            ]
            ctx["converge_source"] = "hub"
        else:  # an older hub: the audit trail's versions, and convergence as this console saw it
            history, ctx["history_error"], _ = attempt(lambda: version_history(site.site_id))
            timed = [
                (c.version, c.seconds) for c in console.watch.convergence(site.site_id) if not c.baseline
            ]
            ctx["converge_source"] = "console"
        ctx.update(
            rollout=rollout,
            readiness=readiness,
            history=history or [],
            versions_na=versions_na,
            converge_chart=plots.convergence_chart(timed[-40:]),
            decision_charts=[(d, plots.decisions_chart(d)) for d in decisions.doors if d.hours]
            if decisions
            else [],
            poll_s=console.watch.interval_s,
        )
        return ctx

    def version_history(site_id: str) -> list[dict[str, Any]]:
        """The site's versions from the audit trail (entries naming site=ID vN), newest first."""
        out = []
        for page in console.api.audit_pages(pb.ListAuditRequest(all=True)):
            for e in page.entries:
                m = _SITE_VERSION.search(e.detail)
                if m and m.group(1) == site_id:
                    out.append(
                        {"version": int(m.group(2)), "at": e.at, "actor": e.principal, "action": e.action}
                    )
        return out[::-1][:100]

    async def site_page(request: Request) -> Response:
        site = request.path_params["site"]
        return await console.page(request, "site.html", lambda: site_context(site))

    async def site_live(request: Request) -> Response:
        site = request.path_params["site"]
        return await console.page(request, "_site_doors.html", lambda: site_doors(site))

    async def rollout_live(request: Request) -> Response:
        site = request.path_params["site"]
        return await console.page(
            request,
            "_rollout.html",
            lambda: {"rollout": console.api.read("GetRollout", pb.GetRolloutRequest(site=site))},
        )

    async def rollout_action(request: Request) -> Response:
        site = request.path_params["site"]
        action = request.path_params["action"]
        form = await request.form()
        back = f"/sites/{site}"

        def field(name: str) -> str:
            value = form.get(name, "")
            return value.strip() if isinstance(value, str) else ""

        try:
            if action == "start":
                req: Any = pb.StartRolloutRequest(
                    site=site, canary=canary_list(field("canary")), auto_stop=field("auto_stop")
                )
                method, words = "StartRollout", "rollout started"
            elif action == "promote":
                percent = field("percent")
                if percent and not (percent.isdigit() and 1 <= int(percent) <= 100):
                    raise HubError("percent must be a whole number from 1 to 100", 400, "INVALID_ARGUMENT")
                req = pb.PromoteRolloutRequest(
                    site=site, doors=canary_list(field("doors")), percent=int(percent or 0)
                )
                method, words = "PromoteRollout", "rollout promoted"
            elif action == "abort":
                req = pb.AbortRolloutRequest(site=site, reason=field("reason") or "aborted from the console")
                method, words = "AbortRollout", "rollout aborted"
            else:
                raise HubError(f"no rollout action {action!r}", 404, "NOT_FOUND")
            status = await run_in_threadpool(console.api.change, method, req)
        except HubError as exc:
            return console.refused(request, exc, back)
        return console.done(
            request, f"{words}: state {status.state}, head version {status.head_version}", back
        )

    return [
        ("/", overview, ["GET"]),
        ("/live/overview", overview_live, ["GET"]),
        ("/sites/{site}", site_page, ["GET"]),
        ("/live/sites/{site}", site_live, ["GET"]),
        ("/live/sites/{site}/rollout", rollout_live, ["GET"]),
        ("/sites/{site}/rollout/{action}", rollout_action, ["POST"]),
    ]
