"""`doorkeeper bench rollout` runs end to end (real hub process, three real agents) and says
what it measured. No timing is asserted: the machine is shared."""

from __future__ import annotations

import json
import subprocess

from tests.harness import doorkeeper_cmd


def test_bench_rollout_measures_every_repeat() -> None:
    done = subprocess.run(doorkeeper_cmd("bench", "rollout", "--repeats", "2", "--json"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["repeats"] == 2 and result["doors"] == 3 and result["store"] == "sqlite"
    assert len(result["all_s"]) == 2 and all(t > 0 for t in result["all_s"])
    assert result["promote_to_all_applied_max_s"] == max(result["all_s"])
    # The hub-side figure is timed from the same promotion, after the doors applied it.
    assert result["promote_to_all_reported_median_s"] >= result["promote_to_all_applied_min_s"]
    assert "load_avg" in result["machine"]


def test_bench_rollout_deliver_early_measures_holding_and_the_abort() -> None:
    done = subprocess.run(doorkeeper_cmd("bench", "rollout", "--repeats", "2", "--deliver-early", "--json"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["deliver_early"] and len(result["all_s"]) == 2 and len(result["abort_all_s"]) == 2
    assert result["promote_early_to_held_doors_holding_max_s"] == max(result["all_s"])
    assert result["abort_to_all_applied_max_s"] == max(result["abort_all_s"])
