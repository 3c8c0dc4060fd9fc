"""The door loop end to end with real parts.

Real: the face models and photos (../shared/faces, resized copies in tmp_path), a hub on a
loopback port, operator calls, device registration and bundle sync into the agent's SQLite
whitelist, the image-directory camera, the sim door with its state file. The only stand-in
is ``on_decision``: a list instead of the outbox (the wiring maps Decision -> Entry).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from doorkeeper.agent.camera import BadFrame, Frame, open_source
from doorkeeper.agent.doorloop.loop import SUCCESS, DoorLoop, DoorLoopConfig, LoopClosed, card_source
from doorkeeper.agent.doorloop.policy import Credential, Decision, Reason, Result
from doorkeeper.agent.doors import open_door, read_door_state
from doorkeeper.agent.doors.sim import SimDoor
from doorkeeper.agent.face.engine import FaceEngine
from doorkeeper.agent.face.quality import enrol
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import templates as tmpl
from tests.harness import Agent, HubThread, Operator, random_template, register_agent, wait_for

pytestmark = pytest.mark.faces

OBAMA_FRAMES = ["obama/obama2.jpg", "obama/obama3.jpg", "obama/obama4.jpg", "obama/obama-720p.jpg"]
STRANGER_FRAMES = ["biden/biden1.jpg", "biden/biden2.jpg", "kit_harington/kit1.jpg",
                   "kit_harington/kit2.jpg", "kit_harington/kit3.jpg",
                   "rose_leslie/rose1.jpg", "rose_leslie/rose2.jpg"]
INJECTIONS: list[object] = [
    "1' OR '1'='1", "A1B2C3D4' --", "'; DROP TABLE persons; --", "A1B2C3D4\x00",
    "../../etc/passwd", "$(reboot)", "A" * 10_000, "", " ", "A1B2 C3D4",
    "\uff21\uff11\uff22\uff12\uff23\uff13\uff24\uff14",  # full-width A1B2C3D4
    None, b"A1B2C3D4", 12345678, ["A1B2C3D4"],
]
DOORLOOP_LOG = "doorkeeper.agent.doorloop.loop"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="module")
def obama_template(engine: FaceEngine, faces_dir: Path) -> pb.Template:
    """Enrolled the way the operator tool does: quality-gated, only the template travels."""
    (template,) = enrol(engine, [faces_dir / "obama" / "obama1.jpg"])
    return tmpl.encode(template.embedding, engine.model_id)


@pytest.fixture(scope="module")
def module_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubThread]:
    hub = HubThread(tmp_path_factory.mktemp("hub")).start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def op(module_hub: HubThread) -> Operator:
    return Operator(module_hub.address, module_hub.data_dir / "operator.key")


@dataclass
class Site:
    agent: Agent
    person_id: str
    records: list[Decision] = field(default_factory=list)


def enrolled_site(op: Operator, tmp_path: Path, name: str, *, site_kw: dict[str, object] | None = None,
                  **person_kw: object) -> Site:
    """A site at the hub with one resident, and a door agent that has synced it."""
    op.add_site(name, **(site_kw or {}))
    for door in person_kw.get("doors", ()):  # type: ignore[attr-defined]
        op.add_device(name, door)  # the hub refuses doors the site does not have
    person = op.add_person(name, "Resident", **person_kw)
    agent = register_agent(op, name, "front", tmp_path / "agent")
    assert agent.syncer.sync_once().outcome == "applied"
    assert agent.whitelist.person(person.person_id) is not None
    return Site(agent, person.person_id)


def frames_dir(tmp_path: Path, faces_dir: Path, names: list[str], folder: str = "frames") -> Path:
    """Copies of shared photos, longest side at most 1280 px, named in play order."""
    directory = tmp_path / folder
    directory.mkdir()
    for i, name in enumerate(names):
        cv2.imwrite(str(directory / f"{i:03d}.jpg"), load(faces_dir / name))
    return directory


def load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    scale = 1280 / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def blank() -> np.ndarray:
    """A real frame with nothing in it (an empty porch)."""
    return np.full((480, 640, 3), 128, np.uint8)


def make_loop(site: Site, engine: FaceEngine, tmp_path: Path, camera_dir: Path, *,
              clock: Callable[[], float] = time.time, last_fresh: Callable[[], float | None] | None = None,
              loop_camera: bool = False, on_decision: Callable[[Decision], None] | None = None,
              **config: object) -> tuple[DoorLoop, SimDoor]:
    door = open_door({"name": "front", "type": "sim"}, state_dir=tmp_path / "doors")
    assert isinstance(door, SimDoor)
    # Exact record counts: every face stays one episode however slow the machine is.
    settings: dict[str, object] = {"episode_gap_s": None, "redecide_after_s": None, **config}
    loop = DoorLoop(
        DoorLoopConfig(door="front", **settings),  # type: ignore[arg-type]
        engine=engine, camera=open_source(str(camera_dir), loop=loop_camera), door=door,
        whitelist=site.agent.whitelist, on_decision=on_decision or site.records.append,
        clock=clock, last_fresh=last_fresh if last_fresh is not None else (lambda: 0.0),
    )
    return loop, door


def empty_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "no-camera"
    directory.mkdir()
    return directory


def frame(image: np.ndarray, seq: int) -> Frame:
    return Frame(image=image, monotonic=time.monotonic(), wall=time.time(), source="test", seq=seq)


# ---------------------------------------------------------------------------- tests
def test_enrolled_resident_is_verified_and_door_unlocks(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger=DOORLOOP_LOG)
    site = enrolled_site(op, tmp_path, "oak", templates=[obama_template])
    loop, door = make_loop(site, engine, tmp_path, frames_dir(tmp_path, faces_dir, OBAMA_FRAMES))
    try:
        loop.run(threading.Event())
        (decision,) = site.records  # two frames confirm; the rest of the episode is not re-decided
        assert decision.granted and decision.actuate and decision.result is Result.GRANTED
        assert decision.person_id == site.person_id and decision.credential.value == "face"
        assert decision.similarity is not None and decision.similarity >= 0.4
        assert door.unlocks == 1
        # Fail secure: run() returned, so the door is locked and closed.
        assert door.state().locked and read_door_state(tmp_path / "doors", "front").locked
        out = capsys.readouterr().out
        success = [line for line in out.splitlines() if line.startswith(SUCCESS)]
        assert success == [f"{SUCCESS}: door front, person {site.person_id}, face; door UNLOCKED for 3.0s"]
        assert "door front: UNLOCKED for 3.0s" in out and out.rstrip().endswith("door front: LOCKED")
        assert any(SUCCESS in r.getMessage() and site.person_id in r.getMessage() for r in caplog.records)
        stats = loop.stats()
        assert stats.frames == len(OBAMA_FRAMES) and stats.decisions == {"granted": 1}
        assert stats.actuations == 1 and stats.frame_errors == 0
        assert stats.p50_ms is not None and stats.p99_ms is not None and stats.p50_ms <= stats.p99_ms
        assert stats.latency_samples == len(OBAMA_FRAMES)
    finally:
        site.agent.close()


def test_strangers_are_refused_and_recorded_once_per_face(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=DOORLOOP_LOG)
    site = enrolled_site(op, tmp_path, "elm", templates=[obama_template])
    loop, door = make_loop(site, engine, tmp_path, frames_dir(tmp_path, faces_dir, STRANGER_FRAMES))
    try:
        loop.run(threading.Event())
        assert door.unlocks == 0
        assert site.records and not any(d.granted or d.actuate for d in site.records)
        assert all(d.result is Result.UNKNOWN and d.person_id is None for d in site.records)
        assert {d.reason for d in site.records} <= {Reason.LOW_SIMILARITY, Reason.AMBIGUOUS_MATCH}
        # Seven frames of three strangers: one record per face, not one per frame.
        assert len(site.records) == 3
        assert loop.stats().frames == len(STRANGER_FRAMES)
        assert not any(SUCCESS in r.getMessage() for r in caplog.records)
        assert sum("unknown (low_similarity)" in r.getMessage() for r in caplog.records) == 3
    finally:
        site.agent.close()


def test_shadow_mode_names_the_nearest_resident_of_an_unknown_face(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
) -> None:
    """For the data owner's cut-over list: in shadow mode an unrecognised face's entry names
    the nearest enrolled person (here the only one) with the similarity, result still unknown."""
    site = enrolled_site(op, tmp_path, "rowan", templates=[obama_template])
    loop, door = make_loop(site, engine, tmp_path, frames_dir(tmp_path, faces_dir, STRANGER_FRAMES),
                           shadow=True)
    try:
        loop.run(threading.Event())
    finally:
        site.agent.close()
    assert len(site.records) == 3 and door.unlocks == 0
    assert all(d.result is Result.UNKNOWN and d.shadow and not d.granted for d in site.records)
    assert {d.person_id for d in site.records} == {site.person_id}
    assert all(d.similarity is not None and d.similarity < 0.4 for d in site.records)


def test_person_removed_by_sync_is_refused_at_the_next_frame(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    site = enrolled_site(op, tmp_path, "ash", templates=[obama_template])
    # A template of another model is never compared, and the agent says so once.
    op.add_person("ash", templates=[random_template(np.random.default_rng(5))])
    assert site.agent.syncer.sync_once().outcome == "applied"
    loop, door = make_loop(site, engine, tmp_path, empty_dir(tmp_path))
    site.agent.syncer.on_applied = loop.refresh  # what the wiring does
    a, b, c = (load(faces_dir / name) for name in OBAMA_FRAMES[:3])
    try:
        # Control: these frames confirm Obama and open the door.
        assert loop.process_frame(frame(a, 1)).decision is None
        assert loop.process_frame(frame(b, 2)).decision.granted  # type: ignore[union-attr]
        assert loop.process_frame(frame(blank(), 3)).reason == "no_face"  # he walks away
        first = loop.process_frame(frame(a, 4))  # ... comes back: one frame towards a grant
        assert first.match is not None and first.match.person_id == site.person_id
        assert first.decision is None
        op.remove_person(site.person_id)
        assert site.agent.syncer.sync_once().outcome == "applied"  # on_applied -> refresh -> swap
        assert loop.stats().whitelist_version == site.agent.whitelist.version
        after = loop.process_frame(frame(b, 5))  # would have confirmed the grant before the swap
        assert after.match is not None and not after.match.accepted and after.decision is None
        refused = loop.process_frame(frame(c, 6)).decision
        assert refused is not None and not refused.granted and refused.result is Result.UNKNOWN
        loop.close(drain=True)
        assert door.unlocks == 1
        assert [d.result for d in site.records] == [Result.GRANTED, Result.UNKNOWN]
        foreign = [r for r in caplog.records if "are not comparable with" in r.getMessage()]
        assert len(foreign) == 1  # logged at the first build, not again at the refresh
    finally:
        loop.close()
        site.agent.close()


def test_expired_resident_is_refused_offline(
    engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
) -> None:
    hub = HubThread(tmp_path / "hub").start()
    hub_running = True
    try:
        op = Operator(hub.address, hub.data_dir / "operator.key")
        until = int(time.time()) + 3600
        site = enrolled_site(op, tmp_path, "fir", templates=[obama_template], valid_until=until)
        hub.stop()  # from here on the door is offline
        hub_running = False
        frames = frames_dir(tmp_path, faces_dir, OBAMA_FRAMES[:2])
        # Within the window (device clock): admitted without any network.
        loop, door = make_loop(site, engine, tmp_path, frames)
        loop.run(threading.Event())
        assert [d.result for d in site.records] == [Result.GRANTED] and door.unlocks == 1
        # Two hours later by the device clock: the same face is refused, offline.
        site.records.clear()
        loop, door = make_loop(site, engine, tmp_path, frames, clock=lambda: time.time() + 7200)
        loop.run(threading.Event())
        (decision,) = site.records
        assert not decision.granted and decision.reason is Reason.EXPIRED
        assert decision.person_id == site.person_id and door.unlocks == 0
        site.agent.close()
    finally:
        if hub_running:
            hub.stop()


def test_pin_guessing_locks_the_keypad_out_for_a_while(
    op: Operator, engine: FaceEngine, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "fir", pins=["482913"])
    loop, door = make_loop(site, engine, tmp_path, empty_dir(tmp_path))
    now = [1000.0]
    loop._throttles[Credential.PIN].clock = lambda: now[0]
    try:
        for guess in ("000001", "000002", "000003", "000004", "000005"):
            assert loop.present_pin(guess).reason is Reason.REVOKED_OR_UNKNOWN
        # Locked out: even the right PIN is refused, without a lookup, and recorded.
        locked = loop.present_pin("482913")
        assert locked.reason is Reason.RATE_LIMITED and not locked.granted and not locked.actuate
        assert loop.present_card("A1B2C3D4").reason is Reason.REVOKED_OR_UNKNOWN  # cards count apart
        now[0] += 61.0
        assert loop.present_pin("482913").granted
        loop.close(drain=True)
        assert door.unlocks == 1
    finally:
        loop.close()
        site.agent.close()


def test_card_and_pin_fallback_refuse_injection_strings(
    op: Operator, engine: FaceEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # A resident who declined face scanning: a card and a PIN, no template.
    site = enrolled_site(op, tmp_path, "pine", cards=["A1B2C3D4"], pins=["482913"])
    persons = site.agent.whitelist.person_count
    loop, door = make_loop(site, engine, tmp_path, empty_dir(tmp_path))
    try:
        granted = loop.present_card("a1b2c3d4")  # card numbers are case-insensitive
        assert granted.granted and granted.actuate and granted.person_id == site.person_id
        for text in INJECTIONS:
            decision = loop.present_card(text)
            assert not decision.granted and not decision.actuate
            assert decision.reason is Reason.BAD_CREDENTIAL_FORMAT, text
            assert loop.present_pin(text).reason is Reason.BAD_CREDENTIAL_FORMAT
        assert loop.present_card("A1B2C3D5").reason is Reason.REVOKED_OR_UNKNOWN
        assert loop.present_pin("482913").granted
        assert loop.present_pin("000000").reason is Reason.REVOKED_OR_UNKNOWN
        # A reader that writes one card number per line into a file or FIFO.
        lines = tmp_path / "cards.txt"
        lines.write_bytes(b"A1B2C3D4\r\n1' OR '1'='1\n\n\xff\xfe\n" + b"9" * 5000 + b"\n")
        assert card_source(lines, loop.present_card, threading.Event()) == 4
        loop.close(drain=True)
        assert door.unlocks == 3  # the valid card twice and the PIN; nothing else moved the door
        assert read_door_state(tmp_path / "doors", "front").locked
        results = [d.result for d in site.records]
        assert results.count(Result.GRANTED) == 3 and len(results) == 2 * len(INJECTIONS) + 8
        assert site.agent.whitelist.person_count == persons  # the whitelist is untouched
        logged = caplog.text
        for text in ("1' OR '1'='1", "DROP TABLE", "etc/passwd", "A1B2C3D4", "a1b2c3d4", "482913"):
            assert text not in logged  # hostile input and secrets never reach a log line
        with pytest.raises(LoopClosed):
            loop.present_card("A1B2C3D4")
    finally:
        loop.close()
        site.agent.close()


def test_door_scope_and_a_failing_record_sink_do_not_stop_the_door(
    op: Operator, engine: FaceEngine, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "spruce", cards=["51DE0001"], doors=["side"])
    op.add_person("spruce", "Resident", cards=["F0F0F0F0"])  # every door of the site
    assert site.agent.syncer.sync_once().outcome == "applied"
    calls: list[Decision] = []

    def flaky_sink(decision: Decision) -> None:  # the wiring's outbox append, failing once
        calls.append(decision)
        if len(calls) == 1:
            raise OSError("outbox went away")
        site.records.append(decision)

    loop, door = make_loop(site, engine, tmp_path, empty_dir(tmp_path), on_decision=flaky_sink)
    try:
        scoped = loop.present_card("51DE0001")
        assert not scoped.granted and scoped.reason is Reason.DOOR_NOT_ALLOWED
        assert scoped.person_id == site.person_id
        assert loop.present_card("F0F0F0F0").granted
        loop.close(drain=True)
        assert len(calls) == 2 and [d.granted for d in site.records] == [True]
        assert loop.stats().records_failed == 1 and door.unlocks == 1
    finally:
        loop.close()
        site.agent.close()


def test_card_source_reads_a_fifo_across_writers(tmp_path: Path) -> None:
    fifo = tmp_path / "reader.fifo"
    os.mkfifo(fifo)
    seen: list[str] = []
    stop = threading.Event()

    def present(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            stop.set()

    reader = threading.Thread(target=card_source, args=(fifo, present, stop))
    reader.start()
    try:
        for payload in (b"CARD0001\nCARD0002\n", b"  CARD0003  \n"):  # two writers, one after another
            with open(fifo, "wb") as writer:
                writer.write(payload)
        reader.join(60)  # safety net only
        assert not reader.is_alive()
        assert seen == ["CARD0001", "CARD0002", "CARD0003"]
    finally:
        stop.set()
        reader.join(60)


def test_shadow_mode_never_actuates_even_when_granted(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = enrolled_site(op, tmp_path, "birch", templates=[obama_template], cards=["C0FFEE01"])
    loop, door = make_loop(site, engine, tmp_path, frames_dir(tmp_path, faces_dir, OBAMA_FRAMES),
                           shadow=True)
    seen: list[str] = []
    done = threading.Event()

    def watch_state_file() -> None:
        path = tmp_path / "doors" / "door-front.json"
        while not done.wait(0.001):
            seen.append(path.read_text() if path.exists() else "")
            seen.append("locked" if read_door_state(tmp_path / "doors", "front").locked else "UNLOCKED")

    watcher = threading.Thread(target=watch_state_file)
    watcher.start()
    try:
        assert loop.present_card("C0FFEE01").result is Result.SHADOW
        loop.run(threading.Event())
    finally:
        done.set()
        watcher.join()
        site.agent.close()
    assert [d.result for d in site.records] == [Result.SHADOW, Result.SHADOW]
    assert all(d.granted and d.shadow and not d.actuate for d in site.records)
    assert door.unlocks == 0
    assert seen and "UNLOCKED" not in seen and not any('"locked": false' in s for s in seen)
    out = capsys.readouterr().out
    assert "UNLOCKED" not in out
    assert out.count(f"{SUCCESS}: door front, person {site.person_id}") == 2
    assert out.count("shadow mode: door not actuated") == 2


def test_bad_frames_are_skipped_and_the_loop_decides_on_good_ones(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "yew", templates=[obama_template])
    directory = tmp_path / "frames"
    directory.mkdir()
    good = [load(faces_dir / name) for name in OBAMA_FRAMES[:2]]
    jpeg = cv2.imencode(".jpg", good[0])[1].tobytes()
    cv2.imwrite(str(directory / "00_good.jpg"), good[0])
    (directory / "01_empty.jpg").write_bytes(b"")
    cv2.imwrite(str(directory / "02_grey.png"), cv2.cvtColor(good[0], cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(directory / "03_bgra.png"), cv2.cvtColor(good[0], cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(directory / "04_enormous.png"), np.zeros((8, 5000, 3), np.uint8))
    cv2.imwrite(str(directory / "05_16bit.png"), good[0].astype(np.uint16) * 257)
    (directory / "06_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (directory / "07_not_an_image.jpg").write_text("GET / HTTP/1.1\r\n")
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(jpeg)
    (directory / "08_escape.jpg").symlink_to(outside)
    cv2.imwrite(str(directory / "09_good.jpg"), good[1])
    loop, door = make_loop(site, engine, tmp_path, directory)
    try:
        loop.run(threading.Event())
        stats = loop.stats()
        assert stats.bad_frames == {
            BadFrame.EMPTY: 1, BadFrame.GRAYSCALE: 1, BadFrame.FOUR_CHANNEL: 1, BadFrame.TOO_LARGE: 1,
            BadFrame.WRONG_DTYPE: 1, BadFrame.TRUNCATED: 1, BadFrame.NOT_IMAGE: 1,
            BadFrame.OUTSIDE_DIR: 1,
        }
        # The loop went on past every bad file and confirmed on the two good frames around them.
        assert stats.frames == 2 and stats.frame_errors == 0
        assert [d.result for d in site.records] == [Result.GRANTED] and door.unlocks == 1
    finally:
        site.agent.close()


def test_max_frames_stops_the_loop_on_an_endless_camera(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "oakmoss", templates=[obama_template])
    loop, door = make_loop(site, engine, tmp_path, frames_dir(tmp_path, faces_dir, OBAMA_FRAMES[:2]),
                           loop_camera=True, max_frames=5)
    runner = threading.Thread(target=loop.run, args=(threading.Event(),))
    runner.start()
    runner.join(120)  # a safety net against a hang, not a speed check
    try:
        assert not runner.is_alive()
        stats = loop.stats()
        assert stats.frames == 5 and stats.decisions == {"granted": 1}
        assert door.state().locked and loop.camera.finished
    finally:
        site.agent.close()


def test_stop_event_ends_the_loop_and_locks_the_door(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "cedar", templates=[obama_template])
    loop, door = make_loop(site, engine, tmp_path, frames_dir(tmp_path, faces_dir, OBAMA_FRAMES[:2]),
                           loop_camera=True, unlock_seconds=30.0)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while door.unlocks == 0 and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert door.unlocks == 1 and not door.state().locked  # unlocked for 30 s ...
        stop.set()  # ... what a signal handler does
        runner.join(120)
        assert not runner.is_alive()
        assert door.state().locked and read_door_state(tmp_path / "doors", "front").locked
    finally:
        stop.set()
        site.agent.close()


def test_stale_whitelist_follows_the_site_policy(
    op: Operator, engine: FaceEngine, obama_template: pb.Template, faces_dir: Path, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "larch", site_kw={"offline_validity_s": 600,
                                                         "stale_policy": pb.STALE_POLICY_CARDS_ONLY},
                         templates=[obama_template], cards=["FEED0001"])
    frames = frames_dir(tmp_path, faces_dir, OBAMA_FRAMES[:2])
    # The last verified hub beacon is an hour old: cards only.
    loop, door = make_loop(site, engine, tmp_path, frames, last_fresh=lambda: 3600.0)
    assert loop.present_card("FEED0001").granted
    loop.run(threading.Event())
    card, face = site.records
    assert card.stale and face.stale and not face.granted and face.reason is Reason.STALE_CARDS_ONLY
    assert face.person_id == site.person_id and door.unlocks == 1
    # A beacon a minute ago: fresh, the face opens the door again.
    site.records.clear()
    loop, door = make_loop(site, engine, tmp_path, frames, last_fresh=lambda: 60.0)
    loop.run(threading.Event())
    (face,) = site.records
    assert face.granted and not face.stale and door.unlocks == 1
    site.agent.close()


def test_a_grant_whose_unlock_is_discarded_at_stop_is_recorded_as_not_carried_out(
    op: Operator, engine: FaceEngine, tmp_path: Path,
) -> None:
    site = enrolled_site(op, tmp_path, "hazel", cards=["CAFE0001"])
    loop, door = make_loop(site, engine, tmp_path, empty_dir(tmp_path))
    busy, release = threading.Event(), threading.Event()
    unlock = door.unlock

    def slow_unlock(seconds: float):  # type: ignore[no-untyped-def]
        busy.set()
        release.wait(60)
        return unlock(seconds)

    door.unlock = slow_unlock  # type: ignore[method-assign]
    closer = threading.Thread(target=loop.close, kwargs={"drain": False})
    try:
        first = loop.present_card("CAFE0001")
        assert busy.wait(30)  # the door is busy with the first grant
        second = loop.present_card("CAFE0001")  # queued behind it
        assert first.granted and second.granted
        closer.start()  # stop: the queued unlock is thrown away
        assert wait_for(lambda: len(site.records) == 1)
        release.set()
        closer.join(60)
        assert door.unlocks == 1
        assert [(d.result, d.reason, d.granted, d.person_id) for d in site.records] == [
            (Result.DENIED, Reason.NOT_ACTUATED, False, site.person_id),  # what really happened
            (Result.GRANTED, Reason.OK, True, site.person_id),
        ]
    finally:
        release.set()
        if closer.is_alive():
            closer.join(60)
        loop.close()
        site.agent.close()
