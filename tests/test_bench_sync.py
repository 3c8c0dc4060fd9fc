"""`doorkeeper bench sync --quick`: every figure is present and sane (no timing thresholds)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from doorkeeper.tools.bench.sync import PeakRss, sync

REQUIRED_POSITIVE = (
    "delta_apply_s", "delta_bytes",
    "snapshot_sync_rss_growth_mb", "snapshot_s", "snapshot_bytes", "snapshot_chunks",
    "publish_build_and_sign_cpu_ratio_n_vs_one_device", "publish_build_and_sign_one_device_cpu_s",
    "publish_build_and_sign_n_devices_cpu_s", "publish_issue_per_device_us",
    "template_wire_bytes", "template_f32_wire_bytes", "f16_max_cosine_delta",
)


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    result = CliRunner().invoke(sync, ["--quick", "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_every_figure_is_present_and_positive(figures: dict[str, Any]) -> None:
    for key in REQUIRED_POSITIVE:
        assert key in figures, key
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures[key])
    assert figures["command"] == "doorkeeper bench sync --quick --json"
    assert figures["python"].count(".") == 2
    assert dt.datetime.fromisoformat(figures["date"]).tzinfo is not None
    assert figures["machine"]["cpu"] and figures["machine"]["cores"] >= 1


def test_template_on_the_wire_is_float16(figures: dict[str, Any]) -> None:
    # 512 float16 values are 1 KiB; model id, dim and encoding add a little.
    assert 1024 < figures["template_wire_bytes"] <= 1024 + 256
    assert 2048 < figures["template_f32_wire_bytes"] <= 2048 + 256
    assert figures["f16_max_cosine_delta"] < 1e-3
    lo, hi = figures["f16_near_pairs_cos_range"]
    assert lo < 0.5 < hi  # the near pairs do cover the regime around a match threshold


def test_bundle_sizes_match_what_was_sent(figures: dict[str, Any]) -> None:
    sizes = figures["sizes"]
    # Every person carries one 1 KiB template, encrypted: no room for a float32 copy or a photo.
    assert figures["delta_persons"] == sizes["persons_delta"]
    assert figures["snapshot_persons"] == sizes["persons_snapshot"]
    assert figures["publish_devices"] == sizes["devices"]
    assert 1024 * sizes["persons_delta"] < figures["delta_bytes"] < 1600 * sizes["persons_delta"]
    assert 1024 * sizes["persons_snapshot"] < figures["snapshot_bytes"] < 1600 * sizes["persons_snapshot"]
    assert figures["snapshot_payload_bytes"] <= figures["snapshot_bytes"]
    assert figures["snapshot_chunks"] >= 1
    assert figures["delta_base_persons"] >= sizes["persons_delta"]  # so the hub sent a delta


def test_peak_rss_sees_an_allocation(tmp_path: Path) -> None:
    """Both ways of measuring peak RSS catch 64 MiB that is touched and then freed."""
    unwritable = tmp_path / "no-such-dir" / "clear_refs"
    for peak in (PeakRss(), PeakRss(clear_refs=unwritable)):
        baseline = peak.start()
        block = b"x" * (64 * 2**20)
        time.sleep(0.1)  # long enough for the 20 ms sampler
        del block
        growth = peak.stop() - baseline
        assert growth >= 60 * 2**20, (peak.method, growth)
    assert "sampled" in peak.method


def test_human_table_names_every_figure(figures: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from doorkeeper.tools.bench.kit import emit

    emit(figures, as_json=False, title="doorkeeper bench sync")
    out = capsys.readouterr().out
    assert "publish_build_and_sign_cpu_ratio_n_vs_one_device" in out and "snapshot_sync_rss_growth_mb" in out
