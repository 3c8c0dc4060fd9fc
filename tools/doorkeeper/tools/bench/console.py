"""`doorkeeper bench console`: the fleet overview with many doors, as a browser gets it.

A real hub store with one site and N doors, each registered with its own keys (the hub's
registration code, a real proof of key possession) and each having reported a manifest signed
with its own key (the hub's report code): most doors hold the site's version, some are behind,
some have a wrong digest, some have not been heard from for an hour. Then `doorkeeper hub serve`
in its own process, and the console in this one (its fleet poller calling Fleet over gRPC).

Figures: the server's time to answer the overview (HTML fully rendered, median of the runs), the
browser's first contentful paint of the overview in headless Chromium (when /usr/bin/chromium
and Playwright are there), and the page weight: bytes of HTML + CSS + JS of that page.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench import kit

CHROMIUM = "/usr/bin/chromium"
# The page's first contentful paint (ms since navigation start), from the browser's own paint
# timing; the observer is buffered, so an entry recorded before the call is seen too.
_FCP = """() => new Promise((resolve, reject) => {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { if (e.name === 'first-contentful-paint') resolve(e.startTime); }
  }).observe({type: 'paint', buffered: true});
  setTimeout(() => reject(new Error('no first-contentful-paint within 10 s')), 10000);
})"""


def populate(data: Path, doors: int) -> dict[str, int]:
    """One site with `doors` registered doors that have reported; returns how many of each kind."""
    import numpy as np
    from nacl.public import PublicKey, SealedBox

    from doorkeeper.hub.devices import Devices
    from doorkeeper.hub.hubkeys import HubKeys
    from doorkeeper.hub.server import init_hub, open_store
    from doorkeeper.hub.whitelist import Whitelist
    from doorkeeper.tools.bench.sync_workers import person_specs
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import keys
    from doorkeeper.wire import token as tokens
    from doorkeeper.wire.freshness import new_nonce

    init_hub(data, None)
    store = open_store(data, None, pool_size=2)
    try:
        hub_keys = HubKeys.load(data / "keys")
        whitelist = Whitelist(store, hub_keys)
        site = whitelist.add_site("estate")
        whitelist.add_persons(site.site_id, person_specs(np.random.default_rng(1), 50, "base"))
        old = store.get_site(site.site_id)
        whitelist.add_persons(site.site_id, person_specs(np.random.default_rng(2), 10, "new"))
        current = store.get_site(site.site_id)
        devices = Devices(store, hub_keys)
        hub_box = PublicKey(hub_keys.pair.box_public)
        kinds = {"in_sync": 0, "behind": 0, "digest_mismatch": 0, "unheard_for_an_hour": 0}
        for i in range(doors):
            token = tokens.Token.parse(devices.add(site.site_id, f"door-{i:05d}", 7200).token)
            pair = keys.KeyPair.generate()
            registered = devices.register(pb.RegisterRequest(
                token_id=token.token_id, sealed_token_secret=SealedBox(hub_box).encrypt(token.secret),
                device_sign_key=pair.sign_public, device_box_key=pair.box_public,
                proof=keys.sign(pair.sign_key, keys.CTX_REGISTER, token.token_id, pair.sign_public,
                                pair.box_public)))
            store.complete_registration(registered.device_id, int(time.time()))
            kind = ("behind" if i % 20 == 1 else "digest_mismatch" if i % 100 == 2
                    else "unheard_for_an_hour" if i % 50 == 3 else "in_sync")
            kinds[kind] += 1
            held = old if kind == "behind" else current
            manifest = pb.Manifest(
                site_id=site.site_id, device_id=registered.device_id, version=held.version,
                state_digest=b"\x00" * 32 if kind == "digest_mismatch" else held.state_digest,
                person_count=60, device_time=int(time.time()), beacon_nonce=new_nonce(),
                behind=kind == "behind", known_version=current.version if kind == "behind" else 0,
                outbox_backlog=i % 7).SerializeToString()
            devices.clock = (lambda: time.time() - 3600) if kind == "unheard_for_an_hour" else time.time
            devices.report(store.get_device(registered.device_id), pb.SignedManifest(
                manifest=manifest, signature=keys.sign(pair.sign_key, keys.CTX_MANIFEST, manifest)))
        return kinds
    finally:
        store.close()


class _Browserless:
    """GETs with the session cookie, through the standard library (the bench runs on a plain
    install: httpx is only a test dependency)."""

    def __init__(self, base_url: str) -> None:
        import http.cookiejar
        import urllib.request

        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, url: str) -> bytes:
        with self.opener.open(url if "://" in url else self.base_url + url, timeout=60) as r:
            return bytes(r.read())


def run(doors: int, runs: int) -> dict[str, Any]:
    from doorkeeper.tools.console.app import make_console
    from doorkeeper.tools.console.command import start_in_thread
    from doorkeeper.tools.console.hubapi import HubAPI

    result: dict[str, Any] = {"doors": doors, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="dk-bench-console-") as tmp:
        data = Path(tmp) / "hub"
        started = time.perf_counter()
        result["door_kinds"] = populate(data, doors)
        result["populate_s"] = round(time.perf_counter() - started, 2)
        port = kit.free_port()
        hub = subprocess.Popen([sys.executable, "-m", "doorkeeper", "hub", "serve", "--data", str(data),
                                "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        running = None
        try:
            for _ in range(600):
                if kit.port_open(port) or hub.poll() is not None:
                    break
                time.sleep(0.05)
            if hub.poll() is not None:
                raise click.ClickException("the hub did not start")
            console = make_console(HubAPI(f"127.0.0.1:{port}", data / "operator.key"), poll_s=5.0)
            running = start_in_thread(console)
            started = time.perf_counter()
            fleet = console.api.fleet()
            result["fleet_rpc_ms"] = round((time.perf_counter() - started) * 1000, 1)
            result["fleet_devices"] = len(fleet)
            console.watch.snapshot(wait_s=60)
            login = running.login_url()
            http = _Browserless(running.base_url)
            http.get(login)
            times, html = [], ""
            for _ in range(runs):
                t0 = time.perf_counter()
                html = http.get("/").decode()
                times.append((time.perf_counter() - t0) * 1000)
            site_times, site_html = [], ""
            for _ in range(runs):
                t0 = time.perf_counter()
                site_html = http.get(f"/sites/{fleet[0].site_id}").decode()
                site_times.append((time.perf_counter() - t0) * 1000)
            css = http.get("/static/console.css")
            js = http.get("/static/console.js")
            result["overview_attention_rows"] = html.count("<tr data-door=")
            result["server_render_ms_median"] = round(statistics.median(times), 1)
            result["server_render_ms_max"] = round(max(times), 1)
            weight = len(html.encode()) + len(css) + len(js)
            result["page_weight_bytes"] = {"html": len(html.encode()), "css": len(css), "js": len(js),
                                           "total": weight}
            result["site_page"] = {"server_render_ms_median": round(statistics.median(site_times), 1),
                                   "html_bytes": len(site_html.encode()),
                                   "door_rows": site_html.count("<tr data-door=")}
            result["browser"] = paint(running.base_url, running.console.sessions, runs)
        finally:
            if running is not None:
                running.stop()
            kit.stop_process(hub)
    return {**result, **kit.stamp()}


def paint(base_url: str, sessions: Any, runs: int) -> dict[str, Any]:
    """First contentful paint of the overview in headless Chromium (median of `runs` loads)."""
    if not Path(CHROMIUM).is_file():
        return {"skipped": f"no {CHROMIUM}"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "Playwright for Python is not installed"}
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
    fcp, loaded = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/login?token={sessions.new_login_token()}")
            for _ in range(runs):
                page.goto(base_url + "/", wait_until="load")
                fcp.append(page.evaluate(_FCP))
                loaded.append(page.evaluate(
                    "performance.getEntriesByType('navigation')[0].loadEventEnd"))
        finally:
            browser.close()
    return {"first_contentful_paint_ms_median": round(statistics.median(fcp), 1),
            "first_contentful_paint_ms_max": round(max(fcp), 1),
            "load_event_ms_median": round(statistics.median(loaded), 1), "chromium": CHROMIUM}


@click.command("console")
@click.option("--doors", default=2000, show_default=True, type=click.IntRange(1, 20_000))
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option("--json", "as_json", is_flag=True)
def console_command(doors: int, runs: int, as_json: bool) -> None:
    """Time to first render of the console's fleet overview with N doors, and its page weight."""
    kit.emit(run(doors, runs), as_json, "bench console")
