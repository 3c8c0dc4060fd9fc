"""`doorkeeper bench store` on both backends: every figure present and positive (no thresholds)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from doorkeeper.tools.bench.store import store

FIGURES = ("spend_nonce_p50_ms", "get_site_p50_ms", "audited_change_p50_ms",
           "changes_per_s_2_threads_one_site")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_figure_is_present_and_positive(backend: str) -> None:
    if backend == "postgresql":
        from tests.pg import ADMIN_URL, require_server

        require_server()
        backend = ADMIN_URL
    result = CliRunner().invoke(store, ["--store", backend, "--ops", "5", "--threads", "2", "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    figures = json.loads(result.output)
    assert figures["store"] in ("sqlite", "postgresql")
    for key in FIGURES:
        assert figures[key] > 0, key


def test_an_unknown_store_is_refused() -> None:
    result = CliRunner().invoke(store, ["--store", "mysql://x"])
    assert result.exit_code == 2 and "postgresql://" in result.output
