"""Doors of a site: add (the one-time token shown once, also as a QR code), revoke, replace,
set mode. The token is shown on the answer to the POST and kept nowhere by the console."""

from __future__ import annotations

from typing import Any

import segno
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from doorkeeper.tools.console.app import Console
from doorkeeper.tools.console.fleetpages import MODES
from doorkeeper.tools.console.hubapi import HubError
from doorkeeper.tools.console.peoplepages import FormError, text
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import token as tokens

MODE_VALUES = {"enforce": pb.DOOR_MODE_ENFORCE, "shadow": pb.DOOR_MODE_SHADOW}
TTLS = {"1h": 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}


def qr_svg(data: str) -> Markup:
    """The token as an inline SVG QR code (segno: no style attributes, so the CSP holds). A
    viewBox and no fixed size: the style sheet gives it a size a phone camera reads easily."""
    svg = segno.make(data, error="m").svg_inline(scale=1, border=4, dark="#000", light="#fff", omitsize=True)
    return Markup(svg)  # noqa: S704 - segno's own SVG of our token, no user markup in it


def routes(console: Console) -> list[tuple[str, Any, list[str]]]:
    async def doors(request: Request) -> Response:
        site_ref = request.path_params["site"]

        def load() -> dict[str, Any]:
            site = console.api.site(site_ref)
            return {"site": site, "devices": console.api.fleet(site.site_id), "modes": MODES, "ttls": TTLS}

        return await console.page(request, "doors.html", load)

    def token_page(
        request: Request, site: str, name: str, r: pb.AddDeviceResponse, replaced: bool
    ) -> Response:
        console.watch.poke()
        return console.render(
            request,
            "door_token.html",
            {
                "site": site,
                "name": name,
                "r": r,
                "replaced": replaced,
                "qr": qr_svg(r.token),
                "pinned": tokens.Token.parse(r.token).hub_fingerprint_text,
            },
        )

    async def door_add(request: Request) -> Response:
        site = request.path_params["site"]
        form = await request.form()
        name = text(form, "name")
        try:
            if not name:
                raise FormError("a door needs a name")
            r = await run_in_threadpool(
                console.api.change,
                "AddDevice",
                pb.AddDeviceRequest(site=site, name=name, token_ttl_s=TTLS.get(text(form, "ttl"), 24 * 3600)),
            )
        except HubError as exc:
            return console.refused(request, exc, f"/sites/{site}/doors")
        return token_page(request, site, name, r, replaced=False)

    async def door_replace(request: Request) -> Response:
        site, name = request.path_params["site"], request.path_params["door"]
        form = await request.form()
        try:
            r = await run_in_threadpool(
                console.api.change,
                "ReplaceDevice",
                pb.ReplaceDeviceRequest(
                    site=site, name=name, token_ttl_s=TTLS.get(text(form, "ttl"), 24 * 3600)
                ),
            )
        except HubError as exc:
            return console.refused(request, exc, f"/sites/{site}/doors")
        return token_page(request, site, name, r, replaced=True)

    async def door_revoke(request: Request) -> Response:
        site, door = request.path_params["site"], request.path_params["door"]
        shown = text(await request.form(), "door_name") or door  # the name, for the message only
        try:
            r = await run_in_threadpool(
                console.api.change, "RevokeDevice", pb.RevokeDeviceRequest(site=site, device=door)
            )
        except HubError as exc:
            return console.refused(request, exc, f"/sites/{site}/doors")
        return console.done(request, f"door {shown} revoked ({r.device_id})", f"/sites/{site}/doors")

    async def door_mode(request: Request) -> Response:
        site, door = request.path_params["site"], request.path_params["door"]
        form = await request.form()
        shown = text(form, "door_name") or door
        try:
            mode = MODE_VALUES.get(text(form, "mode"))
            if mode is None:
                raise FormError("mode must be enforce or shadow")
            r = await run_in_threadpool(
                console.api.change,
                "SetDeviceMode",
                pb.SetDeviceModeRequest(site=site, device=door, mode=mode),
            )
        except HubError as exc:
            return console.refused(request, exc, f"/sites/{site}/doors")
        return console.done(
            request, f"door {shown} set to {MODES[r.mode]} (site version {r.version})", f"/sites/{site}/doors"
        )

    return [
        ("/sites/{site}/doors", doors, ["GET"]),
        ("/sites/{site}/doors", door_add, ["POST"]),
        ("/sites/{site}/doors/{door}/replace", door_replace, ["POST"]),
        ("/sites/{site}/doors/{door}/revoke", door_revoke, ["POST"]),
        ("/sites/{site}/doors/{door}/mode", door_mode, ["POST"]),
    ]
