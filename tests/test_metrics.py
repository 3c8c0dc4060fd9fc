"""The Prometheus metrics of hub and agent: named series, registries, labels, the endpoint."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from doorkeeper.runtime import metrics as obs
from doorkeeper.runtime.metrics import (
    AGENT_METRICS,
    HUB_METRICS,
    AgentMetrics,
    HubMetrics,
    SiteRollout,
    scrape_time,
    seconds_since,
    start_metrics_server,
)


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in the scrape"
    return float(match.group(1))


def test_metrics_server_serves_every_named_metric() -> None:
    agent, hub = AgentMetrics(), HubMetrics()
    hub.set_site(SiteRollout("site-a", version=3, registered=2, at_version=1, in_sync=1))
    hub.record_rpc_error("/doorkeeper.v1.DeviceSync/Fetch", "UNAVAILABLE")
    servers = [start_metrics_server("127.0.0.1:0", m.registry) for m in (agent, hub)]
    try:
        for server, names in zip(servers, (AGENT_METRICS, HUB_METRICS), strict=True):
            with urllib.request.urlopen(server.url, timeout=5) as response:
                assert response.status == 200
                body = response.read().decode()
            declared = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
            assert set(names) <= declared, set(names) - declared
            assert all(name.startswith("doorkeeper_") for name in names)
        agent_body = urllib.request.urlopen(servers[0].url, timeout=5).read().decode()
        assert "doorkeeper_connected_devices" not in agent_body  # each role serves its own registry
        assert "_created" not in agent_body
    finally:
        for server in servers:
            server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(servers[0].url, timeout=2)  # stopped: nothing listens


def test_registries_do_not_collide() -> None:
    first, second = AgentMetrics(), AgentMetrics()  # no "Duplicated timeseries" error
    first.record_decision("granted", "face", 0.03)
    assert sample(scrape(first.registry), "doorkeeper_decisions_total",
                  '{credential="face",result="granted"}') == 1
    assert sample(scrape(second.registry), "doorkeeper_decisions_total",
                  '{credential="face",result="granted"}') == 0
    HubMetrics(), HubMetrics()


def test_metrics_endpoint_refuses_remote_addresses_unless_allowed() -> None:
    registry = AgentMetrics(process=False).registry
    with pytest.raises(ValueError, match="not loopback"):
        start_metrics_server("0.0.0.0:0", registry)
    server = start_metrics_server("0.0.0.0:0", registry, allow_remote=True)
    try:
        assert server.port > 0
    finally:
        server.stop()
    with pytest.raises(ValueError, match="HOST:PORT"):
        start_metrics_server("9108", registry)


def test_hostile_label_values_cannot_create_series() -> None:
    agent, hub = AgentMetrics(process=False), HubMetrics(process=False)
    agent.record_decision("granted'; DROP TABLE", "qr-" + "x" * 500, 0.02)
    agent.count_bad_frames({"new reason": 3})
    hub.record_rpc_error("/evil.Service/" + "A" * 1000, "NOT_A_CODE")
    hub.bundle_built("weird")
    text = scrape(agent.registry) + scrape(hub.registry)
    assert "DROP" not in text and "xxxx" not in text and "AAAA" not in text and "NOT_A_CODE" not in text
    assert sample(scrape(hub.registry), "doorkeeper_rpc_errors_total",
                  '{code="other",method="other",reason="other"}') == 1
    assert sample(scrape(agent.registry), "doorkeeper_bad_frames_total", '{reason="other"}') == 3


def test_decisions_latency_and_bad_frame_deltas() -> None:
    agent = AgentMetrics(process=False)
    agent.record_decision("granted", "face", 0.028)
    agent.record_decision("denied", "card", 0.004)
    agent.record_decision("unknown", "face", None)
    agent.count_bad_frames({"empty": 2, "too_large": 1})
    agent.count_bad_frames({"empty": 5, "too_large": 1})  # cumulative counts from the camera
    text = scrape(agent.registry)
    assert sample(text, "doorkeeper_decision_latency_seconds_count") == 2
    assert sample(text, "doorkeeper_decision_latency_seconds_bucket", '{le="0.03"}') == 2
    assert sample(text, "doorkeeper_decision_latency_seconds_bucket", '{le="0.025"}') == 1
    assert sample(text, "doorkeeper_bad_frames_total", '{reason="empty"}') == 5
    assert sample(text, "doorkeeper_bad_frames_total", '{reason="too_large"}') == 1
    assert sample(text, "doorkeeper_decisions_total", '{credential="pin",result="shadow"}') == 0


def test_latency_buckets_suit_10_to_200_ms() -> None:
    inside = [b for b in obs.DECISION_LATENCY_BUCKETS if 0.01 <= b <= 0.2]
    assert len(inside) >= 10 and 0.2 in inside and 0.01 in inside


def test_scrape_time_gauges_and_broken_callbacks() -> None:
    agent = AgentMetrics(process=False)
    last_ok: list[float | None] = [None]
    scrape_time(agent.sync_lag_seconds, seconds_since(lambda: last_ok[0], clock=lambda: 1000.0))
    assert sample(scrape(agent.registry), "doorkeeper_sync_lag_seconds") == math.inf
    last_ok[0] = 990.0
    assert sample(scrape(agent.registry), "doorkeeper_sync_lag_seconds") == 10.0

    def broken() -> float:
        raise RuntimeError("store closed")

    scrape_time(agent.outbox_backlog_records, broken)
    text = scrape(agent.registry)  # the scrape still works; only this gauge is NaN
    assert math.isnan(sample(text, "doorkeeper_outbox_backlog_records"))
    assert sample(text, "doorkeeper_sync_lag_seconds") == 10.0


def test_rollout_progress_and_site_series() -> None:
    hub = HubMetrics(process=False)
    hub.set_site(SiteRollout("north", version=9, registered=4, at_version=3, in_sync=2))
    hub.set_site(SiteRollout("empty", version=1, registered=0, at_version=0, in_sync=0))
    with hub.watching():
        assert sample(scrape(hub.registry), "doorkeeper_connected_devices") == 1
    text = scrape(hub.registry)
    assert sample(text, "doorkeeper_connected_devices") == 0
    assert sample(text, "doorkeeper_rollout_progress", '{site="north"}') == 0.75
    assert sample(text, "doorkeeper_rollout_progress", '{site="empty"}') == 1.0
    assert sample(text, "doorkeeper_site_version", '{site="north"}') == 9
    assert sample(text, "doorkeeper_devices_in_sync", '{site="north"}') == 2
    hub.forget_site("north")
    hub.forget_site("never-existed")
    assert 'site="north"' not in scrape(hub.registry)


def test_rpc_method_names_come_from_the_contract() -> None:
    methods = HubMetrics(process=False).methods()
    assert "/doorkeeper.v1.DeviceSync/Watch" in methods and "/doorkeeper.v1.Admin/Fleet" in methods


def test_label_sets_match_the_agent_enums() -> None:
    from doorkeeper.agent.camera import BadFrame
    from doorkeeper.agent.doorloop.policy import Credential, Result

    assert set(obs.DECISION_RESULTS) == {r.value for r in Result}
    assert set(obs.CREDENTIALS) == {c.value for c in Credential}
    assert set(obs.BAD_FRAME_REASONS) == {b.value for b in BadFrame}
