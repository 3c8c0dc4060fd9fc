"""`doorkeeper bench durability` in its quick form: every figure is there, with the sizes it ran."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from doorkeeper.tools.bench.durability import STORES, durability


def test_bench_durability_prints_each_store_with_its_parameters(disk: Path) -> None:
    result = CliRunner().invoke(durability, ["--cuts", "1", "--records", "3", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["command"] == "doorkeeper bench durability --cuts 1 --records 3 --seed 0 --torn --json"
    assert figures["cuts"] == {store: 1 for store in STORES}
    for store in STORES:
        assert figures[store]["cuts"] == 1 and figures[store]["records"] == 3
        assert figures[store]["acknowledged"] > 0, figures[store]
    assert figures["acknowledged"] == sum(figures[s]["acknowledged"] for s in STORES)
    assert (figures["lost"], figures["duplicated"], figures["reissued_versions"]) == (0, 0, 0)
    control = figures["control_sqlite_synchronous_off"]
    assert control["lost"] > 0, "the harness must lose what SQLite never synced"
