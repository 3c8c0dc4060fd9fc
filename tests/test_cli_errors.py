"""Bad input at the command line: one line naming the flag and what is allowed, exit code 2,
no traceback; times in as ISO 8601, out as local human times."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from doorkeeper.agent.sync.hubclient import DEFAULT_HUB_PORT, BadAddress, hub_addresses, hub_target
from doorkeeper.tools.cli import cli
from doorkeeper.tools.cli.human import ago, local_time, parse_when, words
from tests.harness import HubThread, doorkeeper_cmd
from tests.test_tls import _self_signed


def one_line_error(output: str, exit_code: int, *needles: str) -> str:
    """The refusal is one `error:` line (nothing else on stderr), exit 2, no traceback."""
    lines = [x for x in output.splitlines() if x.strip()]
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_time_flags_take_iso_dates_times_and_unix_seconds() -> None:
    assert parse_when("1798761600") == 1798761600
    assert parse_when("2026-12-31T18:00+08:00") == int(
        dt.datetime(2026, 12, 31, 10, 0, tzinfo=dt.UTC).timestamp())
    assert parse_when("2026-12-31T10:00Z") == parse_when("2026-12-31T18:00+08:00")
    local_midnight = int(dt.datetime(2026, 12, 31).astimezone().timestamp())
    assert parse_when("2026-12-31") == local_midnight
    assert parse_when("2026-12-31", end_of_day=True) == local_midnight + 86400
    for bad in ("tomorrow", "2026-13-01", "31/12/2026", ""):
        with pytest.raises(ValueError, match="2026-12-31T18:00"):
            parse_when(bad)


def test_times_and_enums_read_as_words() -> None:
    utc8 = dt.timezone(dt.timedelta(hours=8))
    assert local_time(parse_when("2026-12-31T18:00+08:00"), utc8) == "2026-12-31 18:00 +08:00"
    assert local_time(0) == "-"
    assert ago(1000, now=1012) == "12 s ago" and ago(1000, now=1000 + 3 * 3600) == "3 h ago"
    assert ago(0) == "never"
    assert words("STALE_POLICY_KEEP_WORKING", "STALE_POLICY_") == "keep working"


def test_hub_without_a_port_means_the_default_port_never_443() -> None:
    assert hub_target("localhost") == f"localhost:{DEFAULT_HUB_PORT}"
    assert hub_target("hub.example") == f"hub.example:{DEFAULT_HUB_PORT}"
    assert hub_target("10.0.0.5:7000") == "10.0.0.5:7000"
    assert hub_target("[::1]") == f"[::1]:{DEFAULT_HUB_PORT}"
    assert hub_target("[::1]:7000") == "[::1]:7000"
    for bad in ("localhost:0", "localhost:99999", "localhost:http", "https://hub", "", "a b"):
        with pytest.raises(BadAddress):
            hub_target(bad)


def test_several_hub_addresses_are_each_checked_and_kept_in_order() -> None:
    assert hub_addresses("hub1, hub2:7000,[::1]") == [
        f"hub1:{DEFAULT_HUB_PORT}", "hub2:7000", f"[::1]:{DEFAULT_HUB_PORT}"]
    assert hub_addresses("hub1,hub1:50051,hub2") == [f"hub1:{DEFAULT_HUB_PORT}", f"hub2:{DEFAULT_HUB_PORT}"]
    for bad in ("hub1,,hub2", "hub1,", "hub1,https://hub2", ",".join(["h"] * 17)):
        with pytest.raises(BadAddress):
            hub_addresses(bad)


@pytest.fixture
def tls_hub(tmp_path: Path):  # type: ignore[no-untyped-def]
    cert, key = _self_signed(tmp_path)
    h = HubThread(tmp_path / "tlshub", tls=(cert, key)).start()
    yield h, cert
    h.stop()


def test_every_bad_input_is_one_line_exit_2_and_no_traceback(hub, tls_hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    key = str(hub.data_dir / "operator.key")
    ops = ["--operator-key", key]

    def run(*args: str) -> tuple[str, int]:
        r = runner.invoke(cli, list(args), catch_exceptions=False)
        return r.output, r.exit_code

    one_line_error(*run("agent", "run", "--data", str(tmp_path / "nothing")), "agent init", "--data")
    one_line_error(*run("agent", "status", "--data", str(tmp_path / "nothing")), "agent init")
    one_line_error(*run("agent", "sync", "--data", str(tmp_path / "nothing")), "agent init")
    one_line_error(*run("hub", "serve", "--data", str(tmp_path / "nothing"), "--metrics-listen", "off"),
                   "hub init")
    one_line_error(*run("agent", "run", "--data", str(tmp_path / "a"), "--door", "gpoi"),
                   "--door", "'sim', 'gpio', 'command', 'http'")
    bad_config = tmp_path / "agent.toml"
    bad_config.write_text('[door]\ntype = "gpoi"\n')
    one_line_error(*run("agent", "run", "--data", str(tmp_path / "a"), "--config", str(bad_config)),
                   "door.type", "'sim', 'gpio', 'command', 'http'", "gpoi")
    hub_args = ["--hub", hub.address, *ops]
    assert run("site", "add", "oak", *hub_args)[1] == 0
    before = hub.hub.store.get_site("oak")
    one_line_error(*run("person", "add", "--site", "oak", "--name", "Ann", "--card", "1234",
                        "--valid-until", "2020-01-01", *hub_args), "--valid-until", "in the past")
    one_line_error(*run("person", "add", "--site", "oak", "--name", "Ann", "--card", "1234",
                        "--valid-from", "next week", *hub_args), "--valid-from", "2026-12-31")
    one_line_error(*run("device", "add", "--site", "oak", "--name", "front", "--ttl", "0", *hub_args),
                   "--ttl", "60")
    one_line_error(*run("device", "add", "--site", "oak", "--name", "front", "--ttl", "0", *hub_args),
                   "--ttl")
    assert hub.hub.store.get_site("oak") == before and hub.hub.store.list_devices() == []
    one_line_error(*run("site", "list", "--hub", "127.0.0.1:1", *ops), "127.0.0.1:1", "no hub answers")
    one_line_error(*run("site", "list", "--hub", "127.0.0.1:0", *ops), "--hub", "port")
    one_line_error(*run("device", "add", "--site", "nowhere", "--name", "x", *hub_args), "not found")
    one_line_error(*run("site", "list", "--hub", hub.address, "--operator-key", str(tmp_path / "no.key")),
                   "--operator-key")
    tls, cert = tls_hub
    bad_ca = tmp_path / "bad.pem"
    bad_ca.write_text("not a certificate\n")
    one_line_error(*run("site", "list", "--hub", tls.address, *ops), tls.address, "--tls-ca")
    one_line_error(*run("site", "list", "--hub", tls.address, "--tls-ca", str(bad_ca), *ops),
                   "--tls-ca", "no PEM certificate")
    one_line_error(*run("site", "list", "--hub", hub.address, "--tls-ca", str(cert), *ops),
                   hub.address, "does not speak TLS")
    (tmp_path / "other").mkdir()
    other, _ = _self_signed(tmp_path / "other")
    one_line_error(*run("site", "list", "--hub", tls.address, "--tls-ca", str(other), *ops),
                   "does not vouch")
    one_line_error(*run("agent", "init", "--data", str(tmp_path / "b"), "--hub", tls.address,
                        "--token", "dk1-nonsense"), "token")


def test_a_real_process_prints_no_grpc_internals(hub, tls_hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """gRPC's C core logs handshake failures itself: the command must still say one line."""
    tls, cert = tls_hub
    key = str(hub.data_dir / "operator.key")
    for hub_address, ca in ((tls.address, None), (hub.address, cert)):
        args = ["site", "list", "--hub", hub_address, "--operator-key", key]
        if ca is not None:
            args += ["--tls-ca", str(ca)]
        done = subprocess.run(doorkeeper_cmd(*args), capture_output=True, text=True, timeout=60)
        line = one_line_error(done.stderr, done.returncode)
        assert "WRONG_VERSION_NUMBER" not in line and "Socket closed" not in line
