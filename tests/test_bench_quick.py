"""Every `doorkeeper bench ...` command in its quick form: each key it prints names only sizes
it ran, and it says what it ran (sizes, pinning). No timing is asserted: the machine is shared."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import doorkeeper_cmd

# Digits in these words are names, not sizes.
NOT_SIZES = re.compile(r"f16|f32|p50|p99|int8|ed25519|x25519")

QUICK_SIZES: dict[str, dict[str, Any]] = {
    "sync": {"persons_delta": 200, "persons_snapshot": 2_000, "devices": 50},
    "verify": {"det_sizes": [320, 640], "frames": 5, "gallery": 1_000},
    "gallery": {"templates": 40_000, "persons": 1_000, "queries": 20},
    "logs": {"records": 2_000, "ingest_records": 2_000, "batches": [1, 10, 100, 1000], "kill_iterations": 5},
    "agent": {"persons": 2_000},
    "manifest": {"per_day": 200, "worst_hours": 48},
}


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)


def _numbers(value: Any) -> set[int]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_numbers(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_numbers(v) for v in value)) if value else set()
    return set()


def _pinned(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if "pinned" in str(key) and isinstance(inner, list):
                yield f"{path}{key}", inner
            else:
                yield from _pinned(inner, f"{path}{key}.")


def size_mismatches(figures: dict[str, Any]) -> list[str]:
    """Keys holding a number that is not one of the sizes the run reports in ``sizes``."""
    ran = _numbers(figures["sizes"])
    bad = []
    for key in _keys(figures):
        for token in re.findall(r"\d+", NOT_SIZES.sub("", key)):
            if int(token) not in ran:
                bad.append(key)
    return bad


def test_the_checker_catches_a_key_named_for_a_size_not_run() -> None:
    assert size_mismatches({"sizes": {"persons": 2000}, "upload_100k_s": 1.0}) == ["upload_100k_s"]
    assert size_mismatches({"sizes": {"persons": 2000}, "delta_1000_apply_s": 1.0}) == ["delta_1000_apply_s"]
    assert size_mismatches({"sizes": {"batches": [1, 10]}, "by_batch": {"1": 2, "10": 3}}) == []


NEEDS_FACES = {"verify", "gallery", "agent"}


@pytest.mark.parametrize("bench", sorted(QUICK_SIZES))
def test_quick_bench_keys_name_only_the_sizes_it_ran(bench: str, request: pytest.FixtureRequest) -> None:
    env = dict(os.environ)
    if bench in NEEDS_FACES:
        env["DOORKEEPER_FACES_DIR"] = str(request.getfixturevalue("faces_dir"))
    completed = subprocess.run(doorkeeper_cmd("bench", bench, "--quick", "--json"), capture_output=True,
                               text=True, timeout=900, check=False, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    figures = json.loads(completed.stdout)
    for key, expected in QUICK_SIZES[bench].items():
        assert figures["sizes"][key] == expected, (key, figures["sizes"])
    assert size_mismatches(figures) == []
    assert figures["date"] and figures["machine"]["cpu"] and "load_avg" in figures["machine"]
    pinned = dict(_pinned(figures))
    assert pinned, "every bench says which cores it ran on"
    if len(os.sched_getaffinity(0)) >= 2:
        for where, cores in pinned.items():
            assert len(cores) == 1, (where, cores)  # really pinned: one core, read back


def test_pin_moves_every_thread_not_only_the_caller() -> None:
    """sched_setaffinity(0) alone leaves threads started earlier free; pin() must not."""
    import threading

    from doorkeeper.tools.bench.kit import pin, process_affinity

    before = os.sched_getaffinity(0)
    stop = threading.Event()
    early = threading.Thread(target=stop.wait, daemon=True)
    early.start()  # started before pinning, as library thread pools are
    try:
        core = max(before)
        assert pin(core) == [core]
        assert process_affinity() == [core]
        assert os.sched_getaffinity(early.native_id) == {core}  # type: ignore[arg-type]
    finally:
        stop.set()
        early.join()
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), before)
