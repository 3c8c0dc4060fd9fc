"""A door without a camera: `agent run --card-reader` decides from cards and PINs alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from doorkeeper.agent.doorloop.cardreader import credential_dispatch
from tests.harness import both_stores, doorkeeper_cmd, register_agent


def test_reader_lines_say_card_or_pin_and_plain_numbers_stay_cards() -> None:
    seen: list[tuple[str, str]] = []
    present = credential_dispatch(lambda c: seen.append(("card", c)), lambda p: seen.append(("pin", p)))
    for line in ("card:04A2B19C", "PIN: 482913", "04A2B19C", "Card:0011", "qr:../../x"):
        present(line)
    assert seen == [("card", "04A2B19C"), ("pin", "482913"), ("card", "04A2B19C"), ("card", "0011"),
                    ("card", "qr:../../x")]  # an unknown prefix is a malformed card: refused by policy


def _stopped_line(stderr: str) -> str:
    for line in stderr.splitlines():
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            message = line
        if "loop stopped after" in message:
            return str(message)
    raise AssertionError(f"no loop-stopped line in: {stderr[-2000:]}")


@both_stores
def test_a_card_only_door_grants_and_refuses(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    operator.add_person("oak", name="Ann", cards=["04A2B19C"])
    operator.add_person("oak", name="Bob", pins=["482913"])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    assert agent.syncer.sync_once().ok  # the door holds its whitelist before the first card
    agent.close()
    reader = tmp_path / "reader.txt"
    reader.write_text("card:04A2B19C\npin:482913\n04A2B19C\ncard:DEADBEEF\npin:000000\n")
    done = subprocess.run(doorkeeper_cmd("agent", "run", "--data", str(tmp_path / "a"), "--card-reader",
                                         str(reader), "--metrics-listen", "off", "--duration", "8"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    stopped = _stopped_line(done.stderr)
    assert "'granted': 3" in stopped and "'denied': 2" in stopped, stopped
    assert "cards and PINs only" in done.stderr


def test_a_face_option_without_a_camera_says_it_needs_one(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    register_agent(operator, "oak", "front", tmp_path / "a").close()
    reader = tmp_path / "reader.txt"
    reader.write_text("card:04A2B19C\n")
    done = subprocess.run(doorkeeper_cmd("agent", "run", "--data", str(tmp_path / "a"), "--card-reader",
                                         str(reader), "--confirm-frames", "3", "--metrics-listen", "off"),
                          capture_output=True, text=True, timeout=60)
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--confirm-frames needs a camera" in lines[0]
