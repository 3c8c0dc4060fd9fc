"""The console's I/O-free parts on plain values: door states, site counts, the SVG plots, sessions."""

from __future__ import annotations

import re

import pytest

from doorkeeper.tools.console import plots
from doorkeeper.tools.console.fleetwatch import STATES, door_state, summarise
from doorkeeper.tools.console.sessions import LoginRefused, Sessions, csrf_ok
from doorkeeper.v1 import doorkeeper_pb2 as pb

NOW = 1_800_000_000.0


def door(**kw: object) -> pb.DeviceStatus:
    base: dict[str, object] = {"site_id": "s", "name": "d", "registered": True, "last_seen": int(NOW) - 10,
                               "reported_version": 5, "site_version": 5, "in_sync": True}
    base.update(kw)
    return pb.DeviceStatus(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "state"), [
    ({}, "in sync"),
    ({"revoked_at": 1, "digest_mismatch": True}, "revoked"),
    ({"registered": False, "last_seen": 0}, "waiting"),
    ({"last_seen": int(NOW) - 601}, "offline"),
    ({"last_seen": 0}, "offline"),
    ({"digest_mismatch": True, "stale": True}, "digest mismatch"),
    ({"stale": True, "reported_version": 4}, "stale"),
    ({"reported_version": 4}, "behind"),
    ({"behind": True}, "behind"),
    ({"target_version": 3, "reported_version": 3}, "in sync"),  # held at a rollout's base: not behind
    ({"target_version": 5, "reported_version": 4}, "behind"),
])
def test_each_door_gets_one_state(kw: dict[str, object], state: str) -> None:
    assert door_state(door(**kw), NOW, offline_after_s=600) == state


def test_site_counts_add_up_and_list_attention_first() -> None:
    site = pb.SiteInfo(site_id="s", name="oak", version=5)
    doors = [door(name="a"), door(name="b", reported_version=4), door(name="c", revoked_at=1),
             door(name="d", last_seen=0), door(name="e", site_id="other")]
    [summary] = summarise([site], doors, NOW, 600)
    assert sum(summary.counts.values()) == 4 and set(summary.counts) == set(STATES)
    assert summary.counts["in sync"] == 1 and summary.counts["behind"] == 1
    assert [d.name for d, _ in summary.doors] == ["d", "b", "a", "c"]
    assert [d.name for d, _ in summary.attention] == ["d", "b"]


def test_decisions_chart_stacks_granted_refused_and_shadow_and_escapes_names() -> None:
    hours = [pb.DecisionHour(hour=1_800_000_000 - 3600 * i, granted_face=3, granted_card=1, refused_expired=2,
                             shadow_would_grant=1) for i in range(3)]
    svg = str(plots.decisions_chart(pb.DoorDecisions(name="<gate & co>", hours=hours)))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<gate" not in svg and "&lt;gate &amp; co&gt;" in svg
    assert len(re.findall(r'<rect class="granted"', svg)) == 3
    assert len(re.findall(r'<rect class="refused"', svg)) == 3
    assert "4 granted, 2 refused, 1 shadow decisions" in svg
    assert "style=" not in svg  # the CSP forbids inline styles: colours come from classes


def test_convergence_chart_says_when_nothing_converged_yet() -> None:
    assert "nothing to draw yet" in str(plots.convergence_chart([(3, None)]))
    svg = str(plots.convergence_chart([(3, 2.0), (4, None), (5, 8.0)]))
    assert svg.count('<rect class="converged"') == 2 and "not every door yet" in svg


def test_the_login_token_works_once_and_a_wrong_one_does_not_spend_it() -> None:
    sessions = Sessions()
    token = sessions.login_token()
    with pytest.raises(LoginRefused):
        sessions.redeem(token + "x")
    with pytest.raises(LoginRefused):
        sessions.redeem("")
    session = sessions.redeem(token)
    assert sessions.get(session.session_id) is session
    with pytest.raises(LoginRefused):
        sessions.redeem(token)
    with pytest.raises(LoginRefused):
        sessions.login_token()
    assert len(sessions) == 1
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, "") and not csrf_ok(session, None)
    assert not csrf_ok(session, session.csrf[:-1])


def test_sessions_expire() -> None:
    now = [100.0]
    sessions = Sessions(clock=lambda: now[0], ttl_s=60)
    session = sessions.redeem(sessions.login_token())
    now[0] += 61
    assert sessions.get(session.session_id) is None
    assert sessions.get("made-up") is None and sessions.get(None) is None


def test_every_template_and_asset_ships_in_a_non_editable_install() -> None:
    """pyproject's package-data names every file the console serves (a wheel would lack the rest)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    package = root / "tools" / "doorkeeper" / "tools" / "console"
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "doorkeeper.tools.console"]
    files = [p.relative_to(package).as_posix() for p in package.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files
