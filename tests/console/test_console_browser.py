"""The console in headless Chromium, end to end, against a real hub and a real agent on loopback.

Log in through the one-time URL (a wrong or reused one is refused); add a person with a real photo
and watch the door converge live after the agent syncs; add a door (token and QR code) and revoke
it; start, promote and abort a rollout; set a door's mode; read the readiness report; and find each
action in the audit trail. Any console error or page error fails the test (`shots`). The rollout,
mode and readiness tests skip, with the reason, only when the hub answers UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest

from doorkeeper.tools.console.command import Running, start_in_thread
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.console.kit import console_for
from tests.harness import Agent, Operator, register_agent, wait_for


@dataclass
class Env:
    operator: Operator
    agent: Agent
    running: Running
    context: Any
    page: Any

    def go(self, path: str) -> Any:
        self.page.goto(self.running.base_url + path)
        return self.page


@pytest.fixture
def env(hub, operator, chromium, shots, tmp_path: Path) -> Iterator[Env]:  # type: ignore[no-untyped-def]
    operator.add_site("alpha")
    agent = register_agent(operator, "alpha", "front", tmp_path / "front")
    assert agent.syncer.sync_once().ok
    running = start_in_thread(console_for(hub.address, hub.data_dir / "operator.key", poll_s=1.0))
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = shots.watch(context.new_page())
    page.on("dialog", lambda d: d.accept())  # the confirmations of revoke and abort
    page.goto(running.login_url())
    assert page.url.rstrip("/") == running.base_url
    try:
        yield Env(operator, agent, running, context, page)
    finally:
        context.close()
        running.stop()
        agent.close()


def not_served(operator: Operator, method: str, request: Any) -> bool:
    """Whether the hub answers `method` UNIMPLEMENTED (checked now, at run time)."""
    try:
        operator.call(method, request)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined,no-any-return]
    return False


def test_login_with_the_one_time_url_and_refusals(hub, operator, chromium, shots) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("alpha")
    running = start_in_thread(console_for(hub.address, hub.data_dir / "operator.key"))
    try:
        url = running.login_url()
        shots.allowed.append("status of 40")  # the refused pages below answer 401/403 on purpose
        stranger = shots.watch(chromium.new_context().new_page())
        stranger.goto(running.base_url + "/")
        assert "Not logged in" in stranger.content()
        shots.take(stranger, "not-logged-in")
        stranger.goto(url[:-3] + "abc")
        assert "not valid or was already used" in stranger.inner_text("main")
        shots.take(stranger, "wrong-token")
        page = shots.watch(chromium.new_context().new_page())
        page.goto(url)
        assert page.inner_text("h1") == "Fleet"
        assert "alpha" in page.inner_text("#overview")
        cookies = page.context.cookies()
        assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
        assert page.evaluate("document.cookie") == ""  # out of reach of the page's scripts
        assert page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
        shots.take(page, "overview")
        stranger.goto(url)  # the same link again
        assert "already used" in stranger.inner_text("main")
        shots.take(stranger, "reused-token")
        stranger.goto(running.base_url + "/")
        assert "Not logged in" in stranger.content()
    finally:
        running.stop()


@pytest.mark.faces
def test_add_a_person_with_a_photo_and_watch_the_door_converge(env: Env, faces_dir: Path, shots) -> None:  # type: ignore[no-untyped-def]
    photo = sorted((faces_dir / "obama").glob("*.jpg"))[0]
    page = env.go("/sites/alpha")
    shots.take(page, "site")
    before = env.operator.call("ListSites", pb.ListSitesRequest()).sites[0].version  # type: ignore[attr-defined]
    page = env.go("/sites/alpha/people")
    page.fill("#add-person input[name=name]", "Barack Obama")
    page.set_input_files("#add-person input[name=photo]", str(photo))
    page.fill("#add-person input[name=consent]", "resident, signed form R-17")
    page.fill("#add-person input[name=cards]", "00420042")
    shots.take(page, "people-form")
    page.click("#add-person button")
    assert "Barack Obama added" in page.inner_text(".flash")
    assert "face (1)" in page.inner_text("#people") and "card (1)" in page.inner_text("#people")
    shots.take(page, "people")
    version = env.operator.call("ListSites", pb.ListSitesRequest()).sites[0].version  # type: ignore[attr-defined]
    assert version == before + 1
    persons = env.operator.call("ListPersons", pb.ListPersonsRequest(site="alpha")).persons  # type: ignore[attr-defined]
    assert [(p.name, p.templates) for p in persons] == [("Barack Obama", 1)]

    page = env.go("/sites/alpha")
    row = page.locator("#site-doors tr[data-door=front]")
    row.locator("text=behind").wait_for(timeout=20_000)  # the poller saw the new version: door behind
    assert env.agent.syncer.sync_once().outcome == "applied"
    # No reload: the live fragment shows the door in sync at the new version.
    row.locator("text=in sync").wait_for(timeout=20_000)
    assert f"v{version}" in row.inner_text()
    shots.take(page, "site-converged")

    page = env.go(f"/people/{persons[0].person_id}")
    page.check("#edit-person input[name=set_validity]")
    page.fill("#edit-person input[name=valid_until]", "2099-12-31")
    page.click("#edit-person button")
    assert "person updated" in page.inner_text(".flash")
    assert "to 2100-01-01 00:00:00 UTC" in page.inner_text("dl.facts")  # the end of 2099-12-31
    shots.take(page, "person")
    page = env.go("/audit")
    assert "Chain intact" in page.inner_text("#chain")
    assert "person.add" in page.inner_text("#audit") and "person.update" in page.inner_text("#audit")
    shots.take(page, "audit")


def test_add_a_door_with_its_token_and_qr_then_revoke_it(env: Env, shots) -> None:  # type: ignore[no-untyped-def]
    page = env.go("/sites/alpha/doors")
    page.fill("#add-door input[name=name]", "side-gate")
    page.click("#add-door button")
    token = page.inner_text("#token")
    assert token.count(".") or len(token) > 40
    assert page.locator("#qr svg").count() == 1
    # The QR code as the browser draws it reads back as the token (OpenCV's QR decoder).
    png = np.frombuffer(page.locator("#qr svg").screenshot(), dtype=np.uint8)
    decoded, _, _ = cv2.QRCodeDetector().detectAndDecode(cv2.imdecode(png, cv2.IMREAD_COLOR))
    assert decoded == token
    shots.take(page, "door-token")
    page = env.go("/sites/alpha/doors")
    assert token not in page.content()  # shown once, kept nowhere
    page.locator("tr[data-door=side-gate] button:has-text('Revoke')").click()
    assert "door side-gate revoked" in page.inner_text(".flash")
    assert "revoked" in page.inner_text("tr[data-door=side-gate]")
    shots.take(page, "doors")
    fleet = env.operator.call("Fleet", pb.FleetRequest(site="alpha")).devices  # type: ignore[attr-defined]
    assert [bool(d.revoked_at) for d in fleet if d.name == "side-gate"] == [True]
    page = env.go("/audit?actor=admin")
    text = page.inner_text("#audit")
    assert "device.add" in text and "device.revoke" in text
    shots.take(page, "audit-filtered")


def test_start_promote_and_abort_a_rollout(env: Env, shots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not_served(env.operator, "GetRollout", pb.GetRolloutRequest(site="alpha")):
        pytest.skip("this hub answers GetRollout UNIMPLEMENTED: staged rollouts have not landed on it yet")
    back = register_agent(env.operator, "alpha", "back", tmp_path / "back")
    try:
        assert back.syncer.sync_once().ok
        base = site_version(env.operator)
        page = env.go("/sites/alpha")
        page.fill("#rollout input[name=canary]", "front")
        page.click("#rollout form[action$='/start'] button")
        assert "rollout started" in page.inner_text(".flash")
        shots.take(page, "rollout-started")
        env.operator.add_person("alpha", "Staged Resident", cards=["55556666"])  # a change in the stage
        head = site_version(env.operator)
        assert head > base
        assert env.agent.syncer.sync_once().outcome == "applied"  # the canary gets it
        back.syncer.sync_once()  # the other door is held at the base
        # No reload: the per-door progress follows by itself.
        rows = page.locator("#rollout-status tr")
        rows.filter(has_text="front").filter(has_text=f"v{head}").filter(has_text="applied").wait_for(
            timeout=20_000)
        assert f"v{base}" in rows.filter(has_text="back").inner_text()
        shots.take(page, "rollout-staged")
        page.click("#rollout form[action$='/promote'] button")  # no doors named: every door
        assert "rollout promoted" in page.inner_text(".flash")
        assert back.syncer.sync_once().outcome == "applied"
        shots.take(page, "rollout-promoted")
        # Promoted to every door, the rollout closes once all of them reported the head.
        assert wait_for(lambda: env.operator.call("GetRollout", pb.GetRolloutRequest(
            site="alpha")).state == "completed", timeout=60)  # type: ignore[attr-defined]
        assert "completed" in env.go("/sites/alpha").inner_text(".rollout-state")

        page = env.go("/sites/alpha")
        page.fill("#rollout input[name=canary]", "front")
        page.click("#rollout form[action$='/start'] button")
        assert "rollout started" in page.inner_text(".flash")
        env.operator.add_person("alpha", "Regretted Resident", cards=["77778888"])
        page = env.go("/sites/alpha")
        page.fill("#rollout input[name=reason]", "browser test")
        page.click("#rollout form[action$='/abort'] button")
        assert "rollout aborted" in page.inner_text(".flash")
        assert "aborted" in page.inner_text(".rollout-state")
        shots.take(page, "rollout-aborted")
        persons = env.operator.call("ListPersons", pb.ListPersonsRequest(site="alpha")).persons  # type: ignore[attr-defined]
        assert sorted(p.name for p in persons) == ["Staged Resident"]  # the abort restored the base
        page = env.go("/audit")
        trail = page.inner_text("#audit")
        assert "rollout" in trail and trail.count("rollout") >= 4  # two starts, a promote, an abort
        shots.take(page, "audit-rollouts")
    finally:
        back.close()


def site_version(operator: Operator) -> int:
    return int(operator.call("ListSites", pb.ListSitesRequest()).sites[0].version)  # type: ignore[attr-defined]


def test_set_a_door_to_shadow_mode(env: Env, shots) -> None:  # type: ignore[no-untyped-def]
    if not_served(env.operator, "SetDeviceMode", pb.SetDeviceModeRequest(site="alpha", device="front",
                                                                        mode=pb.DOOR_MODE_ENFORCE)):
        pytest.skip("this hub answers SetDeviceMode UNIMPLEMENTED: door modes have not landed on it yet")
    page = env.go("/sites/alpha/doors")
    page.locator("tr[data-door=front] select[name=mode]").select_option("shadow")
    page.locator("tr[data-door=front] button:has-text('Set mode')").click()
    assert "door front set to shadow" in page.inner_text(".flash")
    assert "shadow" in page.inner_text("tr[data-door=front]")
    shots.take(page, "door-shadow")
    fleet = env.operator.call("Fleet", pb.FleetRequest(site="alpha")).devices  # type: ignore[attr-defined]
    assert [d.mode for d in fleet if d.name == "front"] == [pb.DOOR_MODE_SHADOW]


def test_readiness_report(env: Env, shots) -> None:  # type: ignore[no-untyped-def]
    if not_served(env.operator, "SiteReadiness", pb.SiteReadinessRequest(site="alpha")):
        pytest.skip("this hub answers SiteReadiness UNIMPLEMENTED: the readiness report has not landed yet")
    env.operator.add_person("alpha", "Card Holder", cards=["12345678"])
    assert env.agent.syncer.sync_once().outcome == "applied"
    page = env.go("/sites/alpha")
    text = page.inner_text("#readiness")
    assert "Ready to enforce" in text or "Not ready" in text
    assert "front" in page.inner_text("#readiness table")
    shots.take(page, "readiness")


@pytest.mark.faces
def test_bulk_import_from_a_csv_and_a_folder_of_photos(env: Env, faces_dir: Path, shots,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    photos = {"obama.jpg": sorted((faces_dir / "obama").glob("*.jpg"))[0],
              "biden.jpg": sorted((faces_dir / "biden").glob("*.jpg"))[0]}
    for name, source in photos.items():  # the folder a person would pick (in the test's tmp only)
        (folder / name).write_bytes(source.read_bytes())
    csv_file = tmp_path / "residents.csv"
    csv_file.write_text("name,photo,card,consent\n"
                        "Barack Obama,obama.jpg,,signed form R-1\n"
                        "Joe Biden,biden.jpg,11112222,signed form R-2\n"
                        "Card Only,,33334444,\n"
                        "No Photo File,missing.jpg,,signed form R-4\n")
    page = env.go("/sites/alpha/import")
    shots.take(page, "import-form")
    page.set_input_files("#import input[name=csv]", str(csv_file))
    page.set_input_files("#import input[name=photos]", str(folder))
    page.click("#import button")
    page.locator("#job-result").wait_for(timeout=120_000)  # the page follows the job by itself
    result = page.inner_text("#job-result")
    assert "3 imported, 0 skipped, 1 refused" in result, page.inner_text("#job table")
    assert "was not among the uploaded files" in page.inner_text("#job table")
    assert page.locator("#job progress").get_attribute("value") == "4"
    shots.take(page, "import-done")
    persons = env.operator.call("ListPersons", pb.ListPersonsRequest(site="alpha")).persons  # type: ignore[attr-defined]
    assert sorted((p.name, p.templates, p.cards) for p in persons) == [
        ("Barack Obama", 1, 0), ("Card Only", 0, 1), ("Joe Biden", 1, 1)]
