"""`doorkeeper bench console` on a few doors: the store it builds holds what it says."""

from __future__ import annotations

import json
import subprocess

from tests.harness import doorkeeper_cmd


def test_bench_console_builds_registered_reporting_doors_and_measures_the_overview() -> None:
    done = subprocess.run(doorkeeper_cmd("bench", "console", "--doors", "60", "--runs", "1", "--json"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["fleet_devices"] == 60 and r["site_page"]["door_rows"] == 60
    assert r["door_kinds"] == {"in_sync": 54, "behind": 3, "digest_mismatch": 1, "unheard_for_an_hour": 2}
    weight = r["page_weight_bytes"]
    assert weight["total"] == weight["html"] + weight["css"] + weight["js"] and weight["js"] > 0
    # the overview lists the doors needing attention: 3 behind, 1 wrong digest, 2 offline
    assert r["overview_attention_rows"] == 6
    assert "load_avg" in r["machine"]
