"""The door's side of staged rollouts (issue 14), against a real hub on loopback.

Door modes set at the hub reach the door in its signed site config; a bundle with a later
effective time is held and applied by the door's clock, hub or no hub; decisions are counted
per hour without identities; refused bundles are reported. Hub-side inputs the hub RPCs do
not make yet are built with the hub's own classes (`Whitelist.config`, the store's
`apply_changes`, `publisher.sign_header`).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from doorkeeper.agent.app import CARD_ONLY, AgentRuntime, DoorOptions
from doorkeeper.agent.doorloop.policy import Result
from doorkeeper.agent.sync.service import SyncOptions
from doorkeeper.agent.sync.state import AgentState, HubClock
from doorkeeper.hub.publisher import sign_header
from doorkeeper.hub.store import ChangeSet
from doorkeeper.runtime.metrics import AgentMetrics
from doorkeeper.tools.cli.human import local_time
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import digest
from tests.harness import HubThread, Operator, doorkeeper_cmd, open_agent, register_agent, wait_for

SLOW_POLL = SyncOptions(poll_interval_s=3600, heartbeat_interval_s=3600, upload_interval_s=3600)
NAMES = ("Ann Example", "Bob Example", "Carl Example")
CARDS = ("04A2B19C", "04A2B19D", "04A2B19E")


class DoorClock:
    """The door's wall and monotonic clocks, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def hub_clock(self) -> HubClock:
        return HubClock(wall=lambda: time.time() + self.offset,
                        monotonic=lambda: time.monotonic() + self.offset)


def set_door_mode(hub: HubThread, site_id: str, device_id: str, mode: int) -> int:
    """What the hub's `device mode` does: the site config's door modes, sorted by device id,
    as one new site version. Returns that version."""
    h = hub.hub
    site = h.store.get_site(site_id)
    config = h.whitelist.config(site)
    entries = {e.device_id: e.mode for e in config.door_modes}
    entries[device_id] = mode  # type: ignore[assignment]
    del config.door_modes[:]
    config.door_modes.extend(pb.DoorModeEntry(device_id=d, mode=m) for d, m in sorted(entries.items()))  # type: ignore[arg-type]
    raw = config.SerializeToString(deterministic=True)
    changes = ChangeSet(config_sealed=h.keys.seal(raw), config_hash=digest.record_hash(raw))
    return h.store.apply_changes(site.site_id, changes, int(time.time())).version


def rewrite_headers(hub: HubThread, edit: Callable[[pb.BundleHeader], None]) -> Callable[[], None]:
    """Make the hub sign every header it issues after `edit` (e.g. an effective time);
    returns the undo."""
    publisher = hub.hub.publisher
    real = publisher.issue

    def issue(meta, device, nonce=b"", effective_at=0):  # type: ignore[no-untyped-def]
        header = pb.BundleHeader.FromString(real(meta, device, nonce, effective_at).header)
        edit(header)
        return sign_header(publisher.keys, header)

    publisher.issue = issue  # type: ignore[method-assign]
    return lambda: setattr(publisher, "issue", real)


@pytest.fixture
def door(hub: HubThread, operator: Operator, tmp_path: Path) -> Iterator[dict]:  # type: ignore[type-arg]
    """A card door of site oak (residents Ann and Bob by card), synced, not yet running."""
    site = operator.add_site("oak")
    ids = [operator.add_person("oak", name=NAMES[i], cards=[CARDS[i]]).person_id for i in range(2)]
    agent = register_agent(operator, "oak", "front", tmp_path / "door")
    assert agent.syncer.sync_once().outcome == "applied"
    device_id = agent.syncer.identity.device_id
    agent.close()
    yield {"site_id": site.site_id, "device_id": device_id, "data": tmp_path / "door", "person_ids": ids}


def start(data: Path, clock: DoorClock | None = None,
          metrics: AgentMetrics | None = None, shadow: bool = False) -> AgentRuntime:
    options = DoorOptions(camera=CARD_ONLY, door={"type": "sim"}, shadow=shadow)
    runtime = AgentRuntime(data, SLOW_POLL, options, metrics=metrics,
                           clock=clock.hub_clock() if clock else None)
    runtime.service.start()
    return runtime


def present(runtime: AgentRuntime, card: str) -> Result:
    """Present a card; returns the decision's result once it is recorded (counted)."""
    before = runtime.service.counts.hours()
    decision = runtime.loop.present_card(card)
    assert wait_for(lambda: runtime.service.counts.hours() != before)
    return decision.result  # type: ignore[no-any-return]


def synced(runtime: AgentRuntime, version: int) -> None:
    """Sync now (the background loop may have been first) and wait for the view."""
    assert runtime.service.syncer.sync_once().ok
    assert runtime.service.whitelist.version == version
    assert wait_for(lambda: runtime.loop.gallery.view.version == version)


def status(data: Path) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(doorkeeper_cmd("agent", "status", "--data", str(data), "--json"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ door modes
def test_a_long_error_in_any_script_fits_its_bytes(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`last_error` is cut to 500 UTF-8 bytes, not 500 characters (2,000 bytes of emoji or
    CJK would crowd the decision hours out of the 4,096-byte manifest)."""
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "door")
    try:
        assert agent.syncer.sync_once().outcome == "applied"
        agent.syncer.state.last_error = "门" * 400 + "😀" * 100
        error = agent.syncer.manifest().last_error
        assert len(error.encode()) <= 500 and error == "门" * 166  # whole characters only
        agent.syncer.state.last_error = "e" * 600
        assert agent.syncer.manifest().last_error == "e" * 500
        assert agent.syncer.heartbeat()  # the hub takes the signed manifest
    finally:
        agent.close()


def test_a_door_the_hub_puts_in_shadow_stops_actuating_and_says_so(hub, door) -> None:  # type: ignore[no-untyped-def]
    metrics = AgentMetrics(process=False)
    runtime = start(door["data"], metrics=metrics)
    try:
        sim = runtime.loop.door
        assert present(runtime, CARDS[0]) is Result.GRANTED
        assert wait_for(lambda: sim.unlocks == 1)

        synced(runtime, set_door_mode(hub, door["site_id"], door["device_id"], pb.DOOR_MODE_SHADOW))
        assert present(runtime, CARDS[0]) is Result.SHADOW
        assert present(runtime, "FFFF0000") is Result.DENIED
        runtime._sample_metrics()
        assert sim.unlocks == 1 and runtime.loop.actuations == 1  # the shadow grant did not actuate
        assert runtime.service.syncer.manifest().mode == pb.DOOR_MODE_SHADOW
        assert metrics.registry.get_sample_value("doorkeeper_door_mode", {"mode": "shadow"}) == 1
        assert metrics.registry.get_sample_value("doorkeeper_door_mode", {"mode": "enforce"}) == 0
        shown = status(door["data"])
        assert shown["mode"] == "shadow" and shown["mode_set_by"] == "hub"
        assert shown["decisions"] == {"granted_card": 1, "shadow_would_grant": 1, "shadow_would_refuse": 1}

        synced(runtime, set_door_mode(hub, door["site_id"], door["device_id"], pb.DOOR_MODE_ENFORCE))
        assert present(runtime, CARDS[0]) is Result.GRANTED
        assert wait_for(lambda: sim.unlocks == 2)
        assert runtime.service.syncer.manifest().mode == pb.DOOR_MODE_ENFORCE
        runtime._sample_metrics()
        assert metrics.registry.get_sample_value("doorkeeper_door_mode", {"mode": "enforce"}) == 1
        assert status(door["data"])["mode"] == "enforce"
    finally:
        runtime.loop.close()
        runtime.service.close()


def test_the_installer_flag_forces_shadow_whatever_the_hub_says(hub, door) -> None:  # type: ignore[no-untyped-def]
    version = set_door_mode(hub, door["site_id"], door["device_id"], pb.DOOR_MODE_ENFORCE)
    runtime = start(door["data"], shadow=True)
    try:
        synced(runtime, version)
        assert present(runtime, CARDS[0]) is Result.SHADOW
        assert runtime.loop.door.unlocks == 0
        assert runtime.service.syncer.manifest().mode == pb.DOOR_MODE_SHADOW
        shown = status(door["data"])  # another process: the running agent's flag is on record
        assert (shown["mode"], shown["mode_set_by"], shown["hub_mode"]) == ("shadow", "installer", "enforce")
        text = subprocess.run(doorkeeper_cmd("agent", "status", "--data", str(door["data"])),
                              capture_output=True, text=True, timeout=60)
        assert text.returncode == 0, text.stderr[-2000:]
        lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
                 for line in text.stderr.splitlines() if ":" in line}  # (the table goes to stderr)
        assert lines["mode"] == "SHADOW" and lines["mode set by"] == "installer", text.stderr
        assert lines["decisions"] == "shadow_would_grant 1"
        hour = shown["decisions_hour"]  # unix seconds in the JSON, a local time for people
        assert hour % 3600 == 0 and lines["decisions hour"] == local_time(hour), text.stderr
    finally:
        runtime.loop.close()
        runtime.service.close()


def test_another_doors_shadow_entry_leaves_this_door_enforcing(hub, door) -> None:  # type: ignore[no-untyped-def]
    version = set_door_mode(hub, door["site_id"], "0" * 32, pb.DOOR_MODE_SHADOW)
    runtime = start(door["data"])
    try:
        synced(runtime, version)
        assert present(runtime, CARDS[0]) is Result.GRANTED
        assert runtime.service.syncer.manifest().mode == pb.DOOR_MODE_ENFORCE
    finally:
        runtime.loop.close()
        runtime.service.close()


# ------------------------------------------------------------------ decision counts
def test_hourly_counts_carry_no_identity_and_survive_a_restart(hub, operator, door) -> None:  # type: ignore[no-untyped-def]
    runtime = start(door["data"])
    try:
        assert present(runtime, CARDS[0]) is Result.GRANTED
        assert present(runtime, CARDS[1]) is Result.GRANTED
        assert present(runtime, "FFFF0000") is Result.DENIED
        manifest = runtime.service.syncer.manifest()
        assert runtime.service.syncer.heartbeat()  # the hub takes the signed manifest
    finally:
        runtime.loop.close()
        runtime.service.close()
    [hour] = manifest.decisions
    stored = operator.call("DecisionCounts", pb.DecisionCountsRequest(site="oak"))
    assert [list(d.hours) for d in stored.doors] == [[hour]]  # what the hub keeps, as sent
    assert (hour.granted_card, hour.refused_credential) == (2, 1)
    assert hour.hour % 3600 == 0 and hour.hour <= time.time() < hour.hour + 3600
    raw = manifest.SerializeToString()
    for secret in (*door["person_ids"], *NAMES, *CARDS, "FFFF0000"):
        assert secret.encode() not in raw and secret.encode().hex().encode() not in raw
    counts_db = (door["data"] / "counts.db").read_bytes()
    for pid in door["person_ids"]:
        assert pid.encode() not in counts_db

    again = start(door["data"])
    try:
        assert list(again.service.syncer.manifest().decisions) == [hour]  # survived the restart
        assert present(again, CARDS[0]) is Result.GRANTED
        [after] = again.service.syncer.manifest().decisions
        assert after.granted_card == 3
    finally:
        again.loop.close()
        again.service.close()


# ------------------------------------------------------------------ effective times
def test_a_bundle_for_later_is_held_and_applied_at_its_time_with_the_hub_gone(  # type: ignore[no-untyped-def]
        hub, operator, door) -> None:
    clock = DoorClock()
    runtime = start(door["data"], clock)
    effective = int(time.time()) + 6 * 3600
    undo = rewrite_headers(hub, lambda h: setattr(h, "effective_at", effective))
    try:
        assert runtime.service.syncer.sync_once().ok  # anchors the door's clock to hub time
        operator.add_person("oak", name=NAMES[2], cards=[CARDS[2]])
        syncer = runtime.service.syncer
        result = syncer.sync_once()
        assert result.outcome == "held", result
        assert syncer.whitelist.version == 3 and syncer.holding_version == 4
        assert not syncer.behind  # holding the site's version is not behind
        m = syncer.manifest()
        assert (m.pending_version, m.pending_effective_at, m.version) == (4, effective, 3)
        assert present(runtime, CARDS[2]) is Result.DENIED  # decides on the current view meanwhile
        fetched: list[object] = []
        real_stream = syncer.client.stream
        syncer.client.stream = lambda *a: fetched.append(a) or real_stream(*a)  # type: ignore[method-assign]
        assert syncer.sync_once().outcome == "held"  # offered again: not newer, not downloaded
        syncer.client.stream = real_stream  # type: ignore[method-assign]
        assert fetched
        syncer.heartbeat()  # not "in sync" (the hub's version is held, not applied), but taken
        assert syncer.state.hub_reachable and not syncer.state.last_error
    finally:
        runtime.loop.close()
        runtime.service.close()
        undo()
    hub.stop()  # from here on the door is on its own

    again = start(door["data"], clock)
    try:
        syncer = again.service.syncer
        assert syncer.whitelist.version == 3 and syncer.pending is not None  # kept across the restart
        assert present(again, CARDS[2]) is Result.DENIED
        clock.offset = effective - time.time() - 60  # a minute before: still held
        assert not again.service.apply_due() and syncer.whitelist.version == 3
        clock.offset = effective - time.time() + 60
        assert wait_for(lambda: syncer.whitelist.version == 4)  # the scheduler's check applied it
        assert wait_for(lambda: again.loop.gallery.view.version == 4)
        assert present(again, CARDS[2]) is Result.GRANTED
        m = syncer.manifest()
        assert (m.version, m.pending_version, m.pending_effective_at) == (4, 0, 0)
        assert not (door["data"] / "held").exists() or not list((door["data"] / "held").iterdir())
    finally:
        again.loop.close()
        again.service.close()


def hold_one(hub: HubThread, operator: Operator, runtime: AgentRuntime, effective: int) -> None:
    """Carl's card at `effective`: verified and held by the door (version 4 over 3)."""
    undo = rewrite_headers(hub, lambda h: setattr(h, "effective_at", effective))
    try:
        operator.add_person("oak", name=NAMES[2], cards=[CARDS[2]])
        assert runtime.service.syncer.sync_once().outcome == "held"
        assert runtime.service.syncer.holding_version == 4
    finally:
        undo()


def test_a_door_started_after_the_effective_time_applies_the_held_bundle_at_once(  # type: ignore[no-untyped-def]
        hub, operator, door) -> None:
    clock = DoorClock()
    effective = int(time.time()) + 3600
    runtime = start(door["data"], clock)
    try:
        hold_one(hub, operator, runtime, effective)
    finally:
        runtime.loop.close()
        runtime.service.close()
    hub.stop()
    clock.offset = effective - time.time() + 600  # the door was off when the time came
    again = start(door["data"], clock)
    try:
        assert again.service.whitelist.version == 4  # applied by start(), before any timer
        assert again.service.syncer.manifest().pending_version == 0
    finally:
        again.loop.close()
        again.service.close()


def test_a_held_bundle_changed_on_disk_is_refused_at_its_time(hub, operator, door) -> None:  # type: ignore[no-untyped-def]
    clock = DoorClock()
    effective = int(time.time()) + 3600
    runtime = start(door["data"], clock)
    syncer = runtime.service.syncer
    try:
        hold_one(hub, operator, runtime, effective)
        hub.stop()  # offline: nothing can fetch the bundle again once this copy is refused
        before = (syncer.whitelist.version, syncer.whitelist.state_digest)
        [payload] = (door["data"] / "held").glob("*.payload")
        data = bytearray(payload.read_bytes())
        data[-1] ^= 1  # the disk, or someone with it, changed one byte
        payload.write_bytes(bytes(data))
        clock.offset = effective - time.time() + 60  # (hub time is whole seconds, and delivery takes a while)
        assert not runtime.service.apply_due()  # refused here, or just before by the scheduler's check
        assert (syncer.whitelist.version, syncer.whitelist.state_digest) == before
        m = syncer.manifest()
        assert (m.pending_version, m.refused_version, m.refused_reason) == (0, 4, "truncated")
        assert not list((door["data"] / "held").glob("*.header"))
        assert present(runtime, CARDS[2]) is Result.DENIED  # still deciding, on version 3
    finally:
        runtime.loop.close()
        runtime.service.close()


def test_beacons_naming_the_held_version_do_not_wake_the_door(hub, operator, door) -> None:  # type: ignore[no-untyped-def]
    """The site is at the version the door holds for later: nothing to fetch (every beacon
    on the watch stream would otherwise start a fetch that finds the same bundle)."""
    agent = open_agent(door["data"])
    syncer = agent.syncer
    undo = rewrite_headers(hub, lambda h: setattr(h, "effective_at", int(time.time()) + 3600))
    stop = threading.Event()
    try:
        operator.add_person("oak", name=NAMES[2], cards=[CARDS[2]])
        assert syncer.sync_once().outcome == "held"
        woken: list[int] = []
        beacons: list[object] = []
        real_observe = syncer.observe_beacon

        def observe(signed):  # type: ignore[no-untyped-def]
            beacons.append(signed)
            return real_observe(signed)

        syncer.observe_beacon = observe  # type: ignore[method-assign]
        watcher = threading.Thread(target=syncer.watch, args=(stop, woken.append), daemon=True)
        watcher.start()
        assert wait_for(lambda: len(beacons) >= 3)  # the hub beacons every second
        assert woken == [] and not syncer.behind
        operator.add_person("oak", name="Dora Example", cards=["04A2B1A0"])  # and news still wakes it
        assert wait_for(lambda: 5 in woken) and set(woken) == {5}
    finally:
        stop.set()
        undo()
        agent.close()


def test_a_newer_bundle_replaces_the_held_one_and_an_immediate_one_applies_now(  # type: ignore[no-untyped-def]
        hub, operator, door) -> None:
    clock = DoorClock()
    runtime = start(door["data"], clock)
    later = int(time.time()) + 3600
    when = {"at": later}
    undo = rewrite_headers(hub, lambda h: setattr(h, "effective_at", when["at"]))
    try:
        syncer = runtime.service.syncer
        operator.add_person("oak", name=NAMES[2], cards=[CARDS[2]])
        assert syncer.sync_once().outcome == "held" and syncer.holding_version == 4
        when["at"] = later + 3600
        operator.remove_person(door["person_ids"][1])
        assert syncer.sync_once().outcome == "held" and syncer.holding_version == 5
        assert syncer.manifest().pending_effective_at == later + 3600
        assert len(list((door["data"] / "held").glob("*.header"))) == 1
        clock.offset = later - time.time() + 1
        assert not runtime.service.apply_due()  # the replaced bundle's time means nothing now
        when["at"] = 0
        operator.add_person("oak", name="Dora Example", cards=["04A2B1A0"])
        assert syncer.sync_once().ok  # applied now (by this pass or the background one)
        assert syncer.whitelist.version == 6 and syncer.pending is None
        assert syncer.manifest().pending_version == 0
    finally:
        runtime.loop.close()
        runtime.service.close()
        undo()


# ------------------------------------------------------------------ refusals
def test_refused_bundles_are_reported_and_cleared_by_the_next_apply(hub, operator, door) -> None:  # type: ignore[no-untyped-def]
    agent = open_agent(door["data"])  # the sync loop alone: no background pass races this one
    syncer = agent.syncer
    try:
        before = (syncer.whitelist.version, syncer.whitelist.state_digest)
        undo = rewrite_headers(hub, lambda h: setattr(h, "expires_at", h.issued_at - 1))
        operator.add_person("oak", name=NAMES[2], cards=[CARDS[2]])
        assert syncer.sync_once().outcome == "refused"
        assert (syncer.whitelist.version, syncer.whitelist.state_digest) == before
        m = syncer.manifest()
        assert (m.refused_version, m.refused_reason) == (4, "expired")
        assert abs(m.refused_at - time.time()) < 600
        assert not syncer.heartbeat() and syncer.state.hub_reachable  # reported; behind, so not in sync
        shown = status(door["data"])
        assert (shown["refused_version"], shown["refused_reason"]) == (4, "expired")
        undo()

        undo = rewrite_headers(hub, lambda h: setattr(h, "state_digest", b"\x01" * 32))
        assert syncer.sync_once().outcome == "refused"
        undo()
        assert (syncer.whitelist.version, syncer.whitelist.state_digest) == before
        assert syncer.manifest().refused_reason == "digest_mismatch"

        assert syncer.sync_once().outcome == "applied"
        m = syncer.manifest()
        assert (m.refused_version, m.refused_reason, m.refused_at) == (0, "", 0)
        assert AgentState.load(door["data"] / "state.json").refused_reason == ""
    finally:
        agent.close()


def test_a_bundle_for_later_that_does_not_add_up_is_refused_on_receipt(hub, operator, door) -> None:  # type: ignore[no-untyped-def]
    agent = open_agent(door["data"])
    syncer = agent.syncer
    effective = int(time.time()) + 3600
    try:
        def bad(h: pb.BundleHeader) -> None:
            h.effective_at = effective
            h.state_digest = b"\x02" * 32

        undo = rewrite_headers(hub, bad)
        operator.add_person("oak", name=NAMES[2], cards=[CARDS[2]])
        assert syncer.sync_once().outcome == "refused"
        undo()
        assert syncer.whitelist.version == 3 and syncer.pending is None
        m = syncer.manifest()
        assert (m.pending_version, m.refused_version, m.refused_reason) == (0, 4, "digest_mismatch")
        assert not list((door["data"] / "held").glob("*")) if (door["data"] / "held").exists() else True
    finally:
        agent.close()
