"""The console's refusals over HTTP, against a real hub: no session, a forged cookie, a wrong or
reused login token, a missing or wrong CSRF token, an auditor's key trying an operator's change,
a listen address off loopback without TLS. Each refusal leaves the hub's state as it was."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from doorkeeper.hub import auth as hub_auth
from doorkeeper.tools.cli import cli
from doorkeeper.tools.console.app import CSP, asgi
from doorkeeper.tools.console.command import ListenRefused, parse_listen
from doorkeeper.tools.console.sessions import COOKIE
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.console.kit import CSRF, add_operator_key, audit_actions, console_for, door_names
from tests.harness import free_port, wait_for


@pytest.fixture
def site(operator):  # type: ignore[no-untyped-def]
    operator.add_site("alpha")
    operator.add_device("alpha", "front")
    return "alpha"


@pytest.fixture
def console(hub, site):  # type: ignore[no-untyped-def]
    c = console_for(hub.address, hub.data_dir / "operator.key")
    c.watch.start()
    yield c
    c.watch.stop()
    c.api.close()


@pytest.fixture
def client(console):  # type: ignore[no-untyped-def]
    with TestClient(asgi(console), follow_redirects=False) as http:
        yield http


def logged_in(client: TestClient, console) -> str:  # type: ignore[no-untyped-def]
    """Log in through the one-time URL; returns the session's CSRF token."""
    r = client.get(f"/login?token={console.sessions.login_token()}")
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/sites/alpha/doors")
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found
    return found.group(1)


def test_every_page_needs_a_session(client, operator) -> None:  # type: ignore[no-untyped-def]
    pages = ("/", "/live/overview", "/sites/alpha", "/sites/alpha/people", "/sites/alpha/doors", "/audit")
    for path in pages:
        r = client.get(path)
        assert r.status_code == 401, path
        assert "one-time login link" in r.text
        assert "front" not in r.text  # nothing of the fleet without a session
    before = door_names(operator, "alpha")
    r = client.post("/sites/alpha/doors", data={"name": "sneaky", "ttl": "1h"})
    assert r.status_code == 401
    assert door_names(operator, "alpha") == before


def test_a_forged_cookie_is_refused(client, console, operator) -> None:  # type: ignore[no-untyped-def]
    logged_in(client, console)  # a real session exists; a made-up id is still nobody's
    client.cookies.clear()
    client.cookies.set(COOKIE, "A" * 43)
    assert client.get("/").status_code == 401
    before = door_names(operator, "alpha")
    r = client.post("/sites/alpha/doors", data={"name": "sneaky", "ttl": "1h", "csrf": "x"})
    assert r.status_code == 401
    assert door_names(operator, "alpha") == before


def test_a_wrong_login_token_is_refused_and_the_right_one_works_once(client, console) -> None:  # type: ignore[no-untyped-def]
    token = console.sessions.login_token()
    r = client.get("/login?token=" + token[:-2] + "xx")
    assert r.status_code == 403
    assert COOKIE not in r.headers.get("set-cookie", "")
    assert client.get("/login").status_code == 403  # no token at all
    assert client.get(f"/login?token={token}").status_code == 303
    other = TestClient(client.app, follow_redirects=False)
    again = other.get(f"/login?token={token}")
    assert again.status_code == 403
    assert "already used" in again.text
    assert COOKIE not in again.headers.get("set-cookie", "")
    assert other.get("/").status_code == 401
    assert len(console.sessions) == 1


def test_a_change_without_the_csrf_token_is_refused(client, console, operator) -> None:  # type: ignore[no-untyped-def]
    csrf = logged_in(client, console)
    before = door_names(operator, "alpha")
    missing = client.post("/sites/alpha/doors", data={"name": "side", "ttl": "1h"})
    assert missing.status_code == 403
    assert "CSRF" in missing.text
    wrong = client.post("/sites/alpha/doors", data={"name": "side", "ttl": "1h", "csrf": csrf[:-1] + "A"})
    assert wrong.status_code == 403
    header = client.post("/sites/alpha/doors/front/revoke", headers={"x-csrf-token": "nope"})
    assert header.status_code == 403
    assert door_names(operator, "alpha") == before
    assert "device.revoke" not in audit_actions(operator)
    made = client.post("/sites/alpha/doors", data={"name": "side", "ttl": "1h", "csrf": csrf})
    assert made.status_code == 200 and "side" in made.text
    assert door_names(operator, "alpha") == sorted([*before, "side"])


def test_an_auditor_key_is_refused_by_the_hub_with_a_readable_message(hub, operator, site, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = add_operator_key(operator, "ann-auditor", "auditor", tmp_path / "auditor.key")
    c = console_for(hub.address, key)
    try:
        with TestClient(asgi(c), follow_redirects=False) as client:
            csrf = logged_in(client, c)
            before = door_names(operator, "alpha")
            r = client.post("/sites/alpha/doors", data={"name": "side", "ttl": "1h", "csrf": csrf})
            assert r.status_code == 403
            assert "role may not do this" in r.text and "auditor" in r.text
            assert "Nothing was changed" in r.text
            assert door_names(operator, "alpha") == before
            people = client.get("/sites/alpha/people")  # an auditor may not list persons either
            assert people.status_code == 403 and "role may not" in people.text
            audit = client.get("/audit")  # but may read the trail
            assert audit.status_code == 200 and "Chain intact" in audit.text
    finally:
        c.api.close()


def test_pages_carry_a_csp_without_inline_scripts(client, console) -> None:  # type: ignore[no-untyped-def]
    logged_in(client, console)
    for path in ("/", "/sites/alpha", "/sites/alpha/people", "/sites/alpha/doors", "/sites/alpha/import",
                 "/audit"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
        scripts = re.findall(r"<script[^>]*>", r.text)
        assert scripts == ['<script src="/static/console.js" defer>'], path
        assert " style=" not in r.text and "<style" not in r.text, path
        assert not re.search(r"\son[a-z]+=", r.text), path  # no inline event handlers
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
            assert client.get(asset).status_code == 200, asset
        assert "http://" not in r.text.replace("http://testserver", "") and "https://" not in r.text


def test_a_door_token_is_shown_once_with_a_qr_code(client, console, operator) -> None:  # type: ignore[no-untyped-def]
    csrf = logged_in(client, console)
    r = client.post("/sites/alpha/doors", data={"name": "side", "ttl": "1h", "csrf": csrf})
    token = re.search(r'<code class="token" id="token">([^<]+)</code>', r.text)
    assert token and "<svg" in r.text
    assert token.group(1) not in client.get("/sites/alpha/doors").text  # kept nowhere


def test_a_photo_that_is_not_an_image_is_refused_and_nothing_is_added(client, console, operator) -> None:  # type: ignore[no-untyped-def]
    csrf = logged_in(client, console)
    r = client.post("/sites/alpha/people", data={"csrf": csrf, "name": "Eve", "consent": "form 1"},
                    files={"photo": ("eve.jpg", b"not a jpeg at all" * 100, "image/jpeg")})
    assert r.status_code == 400
    assert "photo refused" in r.text
    listed = operator.call("ListPersons", pb.ListPersonsRequest(site="alpha"))
    assert list(listed.persons) == []  # type: ignore[attr-defined]


def test_calls_the_hub_does_not_serve_show_not_available(hub, client, console, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A hub without the rollout calls (UNIMPLEMENTED) gives a clean 'not available' on the page."""
    for name in ("GetRollout", "SiteReadiness", "DecisionCounts", "VersionHistory", "StartRollout"):
        monkeypatch.delitem(hub_auth.ADMIN_METHODS, name, raising=False)
    csrf = logged_in(client, console)
    page = client.get("/sites/alpha")
    assert page.status_code == 200
    for part in ("Staged rollouts", "Readiness report", "Decision counts"):
        assert f"{part}: not available on this hub" in page.text
    r = client.post("/sites/alpha/rollout/start", data={"csrf": csrf, "canary": "front"})
    assert r.status_code == 501 and "not available on this hub" in r.text


def test_the_hub_answers_unimplemented_for_an_admin_method_it_lacks(hub, operator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delitem(hub_auth.ADMIN_METHODS, "ListSites")
    with pytest.raises(grpc.RpcError) as caught:
        operator.call("ListSites", pb.ListSitesRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_a_contract_method_without_a_handler_is_answered_unimplemented(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The generated servicer's default (NotImplementedError) becomes UNIMPLEMENTED, not INTERNAL."""
    from doorkeeper.hub.service import AdminService
    from doorkeeper.v1 import doorkeeper_pb2_grpc as rpc
    from tests.harness import HubThread, Operator

    monkeypatch.setattr(AdminService, "ListSites", rpc.AdminServicer.ListSites)
    h = HubThread(tmp_path / "hub").start()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            Operator(h.address, h.data_dir / "operator.key").call("ListSites", pb.ListSitesRequest())
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    finally:
        h.stop()


@pytest.mark.parametrize("listen", ["0.0.0.0:8700", "192.0.2.1:8700", "example.org:8700"])
def test_listening_off_loopback_without_tls_is_refused(listen: str, hub, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ListenRefused):
        parse_listen(listen, tls=False)
    assert parse_listen(listen, tls=True)[1] == 8700
    result = CliRunner().invoke(cli, ["console", "--hub", hub.address, "--operator-key",
                                      str(hub.data_dir / "operator.key"), "--listen", listen])
    assert result.exit_code == 2
    assert "only a loopback address" in result.output


@pytest.mark.parametrize("listen", ["127.0.0.1:8700", "[::1]:8700", "localhost:8700"])
def test_loopback_listen_needs_no_tls(listen: str) -> None:
    assert parse_listen(listen, tls=False)[1] == 8700


def _console_process(hub, port: int, *extra: str) -> tuple[subprocess.Popen, str]:  # type: ignore[no-untyped-def,type-arg]
    """`doorkeeper console` as an operator runs it; returns the process and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "doorkeeper", "console", "--hub", hub.address, "--operator-key",
         str(hub.data_dir / "operator.key"), "--listen", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    for _ in range(5):
        line = proc.stdout.readline()
        if "/login?token=" in line:
            return proc, line.strip()
    proc.terminate()
    raise AssertionError(f"no login URL printed: {proc.communicate(timeout=15)}")


def test_the_console_command_prints_a_login_url_that_works_once(hub, site) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc, url = _console_process(hub, port)
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/login?token="), url
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=30)
        with httpx.Client() as browser:
            first = browser.get(url)
            assert first.status_code == 303 and COOKIE in first.headers["set-cookie"]
            assert browser.get(f"http://127.0.0.1:{port}/").status_code == 200
        with httpx.Client() as someone_else:
            again = someone_else.get(url)
            assert again.status_code == 403
            assert someone_else.get(f"http://127.0.0.1:{port}/").status_code == 401
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_console_over_tls_sets_a_secure_cookie(hub, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_tls import _self_signed

    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    proc, url = _console_process(hub, port, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert url.startswith(f"https://127.0.0.1:{port}/login?token="), url
        assert wait_for(lambda: _answers(f"https://127.0.0.1:{port}/", verify=trust), timeout=30)
        with httpx.Client(verify=trust) as browser:
            first = browser.get(url)
            assert first.status_code == 303
            assert "Secure" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
            assert browser.get(f"https://127.0.0.1:{port}/").status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)


def _answers(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(url, verify=verify).status_code == 401
    except httpx.HTTPError:
        return False


def test_an_unreachable_hub_or_a_bad_key_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "k"
    bad.write_bytes(b"short")
    result = CliRunner().invoke(cli, ["console", "--hub", "127.0.0.1:1", "--operator-key", str(bad)])
    assert result.exit_code == 2


def test_the_site_page_plots_the_decisions_a_door_reported(hub, operator, client, console, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A door's signed manifest carries hourly decision counts; the site page draws them (SVG)."""
    import time

    from tests.harness import register_agent

    agent = register_agent(operator, "alpha", "side", tmp_path / "side")
    try:
        assert agent.syncer.sync_once().ok
        hour = int(time.time()) // 3600 * 3600
        agent.syncer.status_extra = lambda: {"decisions": [
            pb.DecisionHour(hour=hour - 3600, granted_face=7, refused_unknown_face=2),
            pb.DecisionHour(hour=hour, granted_card=3, shadow_would_refuse=1)]}
        agent.syncer.heartbeat()
        logged_in(client, console)
        page = client.get("/sites/alpha").text
        section = page[page.index('<section id="decisions">'):page.index('<section id="convergence">')]
        assert "<figcaption>side</figcaption>" in section
        assert section.count('<rect class="granted"') == 2 and section.count('<rect class="refused"') == 1
        assert "7 granted, 2 refused, 0 shadow decisions" in section
        assert "3 granted, 0 refused, 1 shadow decisions" in section
    finally:
        agent.close()


def test_after_logout_the_session_cookie_opens_nothing(client, console, operator) -> None:  # type: ignore[no-untyped-def]
    csrf = logged_in(client, console)
    old_cookie = client.cookies.get(COOKIE)
    assert client.post("/logout", data={"csrf": "wrong"}).status_code == 403  # a logout needs the token too
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    client.cookies.set(COOKIE, old_cookie)  # a copy of the cookie kept from before
    assert client.get("/").status_code == 401
    before = door_names(operator, "alpha")
    assert client.post("/sites/alpha/doors", data={"name": "x", "ttl": "1h", "csrf": csrf}).status_code == 401
    assert door_names(operator, "alpha") == before
    assert len(console.sessions) == 0


def test_people_search_lists_only_matching_names(client, console, operator) -> None:  # type: ignore[no-untyped-def]
    operator.add_person("alpha", "Alice Tan", cards=["10001000"])
    operator.add_person("alpha", "Bob Lim", pins=["482913"])
    logged_in(client, console)
    found = client.get("/sites/alpha/people", params={"q": "alic"}).text
    table = found[found.index('<table id="people">'):found.index("</table>")]
    assert "Alice Tan" in table and "Bob Lim" not in table and "card (1)" in table
    everyone = client.get("/sites/alpha/people").text
    assert "Alice Tan" in everyone and "Bob Lim" in everyone and "PIN (1)" in everyone
    assert "482913" not in everyone and "10001000" not in everyone  # credentials are never shown


def test_a_loopback_console_refuses_other_host_names(hub, site) -> None:  # type: ignore[no-untyped-def]
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 gets nothing, not even the login."""
    from doorkeeper.tools.console.command import start_in_thread
    from tests.console.kit import console_for

    running = start_in_thread(console_for(hub.address, hub.data_dir / "operator.key"))
    try:
        token = running.console.sessions.login_token()
        with httpx.Client() as http:
            rebound = http.get(f"{running.base_url}/login?token={token}", headers={"Host": "evil.example"})
            assert rebound.status_code == 400
            assert COOKIE not in rebound.headers.get("set-cookie", "")
            assert http.get(f"{running.base_url}/login?token={token}").status_code == 303  # still unspent
    finally:
        running.stop()
