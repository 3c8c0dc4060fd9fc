"""hub.toml / agent.toml: strict validation with key paths, env overrides, paths, `config check`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from doorkeeper.agent import config as agent_config
from doorkeeper.agent.config import AgentConfig
from doorkeeper.hub import config as hub_config
from doorkeeper.hub.config import HubConfig
from doorkeeper.runtime.config.loader import ConfigError, env_value, to_toml
from doorkeeper.tools.cli.config import config as config_cli


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return exc.value.problems


# ------------------------------------------------------------------ defaults and files


def test_no_file_means_every_default(tmp_path: Path) -> None:
    cfg = agent_config.load(None, tmp_path, env={})
    assert cfg == AgentConfig.model_validate({"data_dir": str(tmp_path)}, context={"data_dir": tmp_path})
    assert cfg.data_dir == tmp_path
    assert cfg.door.type == "sim" and cfg.door.unlock_seconds == 3.0
    assert cfg.camera.source is None and cfg.door_options() is None  # a sync-only agent
    assert cfg.metrics.listen == "127.0.0.1:9109"
    hub = hub_config.load(None, tmp_path, env={})
    assert hub.listen == "127.0.0.1:50051"
    assert hub.data_key_path == tmp_path / "keys" / "data.key"
    assert hub.metrics.listen == "127.0.0.1:9108"


def test_file_in_data_dir_is_read_when_no_path_given(tmp_path: Path) -> None:
    write(tmp_path / "agent.toml", "shadow = true\n")
    assert agent_config.load(None, tmp_path, env={}).shadow is True


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        hub_config.load(tmp_path / "nope.toml", tmp_path, env={})
    assert "does not exist" in str(exc.value) and "nope.toml" in str(exc.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hub.toml", "listen = \n")
    with pytest.raises(ConfigError) as exc:
        hub_config.load(path, tmp_path, env={})
    assert problems(exc)[0].startswith(f"{path}: not valid TOML")


# ------------------------------------------------------------------ bad keys and values


def test_unknown_keys_are_refused_with_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", "shadw = true\n[face]\nthreshhold = 0.5\n")
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, tmp_path, env={})
    lines = problems(exc)
    assert any(line.startswith(f"{path}: shadw: unknown key; allowed keys: role, data_dir") for line in lines)
    face = next(line for line in lines if "face.threshhold" in line)
    assert "allowed keys: models_dir, det_size, threshold, margin" in face


def test_value_out_of_range_names_key_path_allowed_range_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", "[door]\nunlock_seconds = 120\n")
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, tmp_path, env={})
    assert problems(exc) == [f"{path}: door.unlock_seconds: must be between 0.5 and 60 (got 120)"]
    assert str(exc.value).startswith("invalid agent configuration:\n  ")


@pytest.mark.parametrize(("toml", "expected"), [
    ('[door]\ntype = "relay"', "door.type: must be one of 'sim', 'gpio', 'command', 'http' (got 'relay')"),
    ('[face]\nconfirm_frames = "two"', "face.confirm_frames: must be an integer (got 'two')"),
    ("[face]\nconfirm_frames = 2.5", "face.confirm_frames: must be an integer (got 2.5)"),
    ("shadow = 1", "shadow: must be true or false (got 1)"),
    ("[face]\ndet_size = 333", "face.det_size: must be a multiple of 32 (got 333)"),
    ("[camera]\nfps = 0", "camera.fps: must be > 0 and <= 120 (got 0)"),
    ("[outbox]\nmax_records = 5", "outbox.max_records: must be >= 100 (got 5)"),
    ('[log]\nformat = "xml"', "log.format: must be one of 'auto', 'text', 'json' (got 'xml')"),
    ("sync = 3", "sync: must be a table (got 3)"),
    ('hub_address = "hub"', "hub_address: must be HOST:PORT with a port in 1..65535"),
    ('[door]\nname = "front"', "door.name: unknown key; allowed keys: type, unlock_seconds, options"),
    ('[door.options]\nname = "front"', "door.options.name: the door is named after the device"),
    ('[camera]\nsource = "file:///etc/passwd"', "camera.source: unsupported URL scheme"),
    ('role = "hub"', "role: must be one of 'agent' (got 'hub')"),
])
def test_bad_agent_values(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path / "agent.toml", toml + "\n")
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, tmp_path, env={})
    assert len(problems(exc)) == 1
    assert problems(exc)[0].startswith(f"{path}: {expected}"), problems(exc)


def test_hub_address_takes_several_replicas_as_a_list_or_comma_separated(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", 'hub_address = ["hub1:50051", " hub2:7000"]\n')
    assert agent_config.load(path, tmp_path, env={}).hub_address == "hub1:50051,hub2:7000"
    env = {"DOORKEEPER_AGENT__HUB_ADDRESS": "hub1:50051,[::1]:7000"}
    cfg = agent_config.load(None, tmp_path, env=env)
    assert cfg.hub_address == "hub1:50051,[::1]:7000"
    assert cfg.sync_options().hub_address == "hub1:50051,[::1]:7000"
    for bad in ('["hub1:50051", "hub2"]', '"hub1:50051,,hub2:1"', "[]", "[1, 2]",
                repr(",".join(f"h{i}:1" for i in range(17)))):
        path.write_text(f"hub_address = {bad}\n".replace("'", '"'))
        with pytest.raises(ConfigError) as exc:
            agent_config.load(path, tmp_path, env={})
        assert problems(exc)[0].startswith(f"{path}: hub_address: "), (bad, problems(exc))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "hub.toml",
                 "beacon_interval_s = 0\nbogus = 1\n[log]\nlevel = \"loud\"\n[metrics]\nlisten = \"x\"\n")
    with pytest.raises(ConfigError) as exc:
        hub_config.load(path, tmp_path, env={})
    keys = [line.split(": ")[1] for line in problems(exc)]
    assert sorted(keys) == ["beacon_interval_s", "bogus", "log.level", "metrics.listen"]


def test_hub_refuses_plaintext_off_loopback(tmp_path: Path) -> None:
    path = write(tmp_path / "hub.toml", 'listen = "0.0.0.0:50051"\n')
    with pytest.raises(ConfigError) as exc:
        hub_config.load(path, tmp_path, env={})
    assert "listen: 0.0.0.0 is not a loopback address: serving there needs tls.cert" in problems(exc)[0]
    write(tmp_path / "tls" / "hub.crt", "cert")
    write(tmp_path / "tls" / "hub.key", "key")
    path.write_text('listen = "0.0.0.0:50051"\n[tls]\ncert = "tls/hub.crt"\nkey = "tls/hub.key"\n')
    cfg = hub_config.load(path, tmp_path, env={})
    assert cfg.tls.cert == tmp_path / "tls" / "hub.crt" and cfg.tls.key == tmp_path / "tls" / "hub.key"


def test_tls_needs_both_files_and_they_must_exist(tmp_path: Path) -> None:
    write(tmp_path / "hub.crt", "cert")
    path = write(tmp_path / "hub.toml", '[tls]\ncert = "hub.crt"\n')
    with pytest.raises(ConfigError) as exc:
        hub_config.load(path, tmp_path, env={})
    assert problems(exc) == [f"{path}: tls.key: give both tls.cert and tls.key, or neither"]
    path.write_text('[tls]\ncert = "hub.crt"\nkey = "missing.key"\n')
    with pytest.raises(ConfigError) as exc:
        hub_config.load(path, tmp_path, env={})
    assert problems(exc) == [f"{path}: tls.key: file {tmp_path / 'missing.key'} does not exist "
                             "(or is not a regular file)"]


def test_metrics_off_loopback_needs_allow_remote(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", '[metrics]\nlisten = "0.0.0.0:9109"\n')
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, tmp_path, env={})
    assert "metrics.listen" in problems(exc)[0] and "allow_remote" in problems(exc)[0]
    path.write_text('[metrics]\nlisten = "0.0.0.0:9109"\nallow_remote = true\n')
    assert agent_config.load(path, tmp_path, env={}).metrics.listen == "0.0.0.0:9109"
    path.write_text('[metrics]\nlisten = "off"\n')
    assert agent_config.load(path, tmp_path, env={}).metrics.listen is None


# ------------------------------------------------------------------ paths


def test_relative_paths_are_inside_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write(data / "tls" / "ca.pem", "ca")
    (data / "models").mkdir()
    (data / "frames").mkdir()
    path = write(tmp_path / "agent.toml",
                 'tls_ca = "tls/ca.pem"\n[face]\nmodels_dir = "models"\n[camera]\nsource = "frames"\n')
    cfg = agent_config.load(path, data, env={})
    assert cfg.tls_ca == data / "tls" / "ca.pem"
    assert cfg.face.models_dir == data / "models"
    assert cfg.camera.source == str(data / "frames")
    hot = write(tmp_path / "hot.toml", '[camera]\nsource = "hotfolder:frames"\n')
    assert agent_config.load(hot, data, env={}).camera.source == "hotfolder:" + str(data / "frames")


@pytest.mark.parametrize("toml", [
    'tls_ca = "../outside.pem"',
    '[face]\nliveness_model = "models/../../outside.onnx"',
    '[camera]\nsource = "../../etc"',
    '[camera]\nsource = "hotfolder:../../etc"',
])
def test_dotdot_escape_is_refused(tmp_path: Path, toml: str) -> None:
    data = tmp_path / "data"
    write(tmp_path / "outside.pem", "x")
    write(tmp_path / "outside.onnx", "x")
    path = write(tmp_path / "agent.toml", toml + "\n")
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, data, env={})
    assert "leaves the data directory" in problems(exc)[0]


def test_hub_data_key_escape_refused_and_absolute_path_allowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write(tmp_path / "hub.toml", 'data_key_file = "keys/../../data.key"\n')
    with pytest.raises(ConfigError) as exc:
        hub_config.load(path, data, env={})
    assert problems(exc)[0].startswith(f"{path}: data_key_file: relative path")
    key = write(tmp_path / "secrets" / "data.key", "k")
    path.write_text(f'data_key_file = "{key}"\n')
    assert hub_config.load(path, data, env={}).data_key_path == key


def test_relative_data_dir_in_file_is_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "etc" / "hub.toml", 'data_dir = "../var/hub"\n')
    assert hub_config.load(path, None, env={}).data_dir == tmp_path / "var" / "hub"


# ------------------------------------------------------------------ environment


def test_env_overrides_are_typed_and_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", "[door]\nunlock_seconds = 5\n[face]\nthreshold = 0.5\n")
    env = {
        "DOORKEEPER_AGENT__DOOR__TYPE": "gpio",
        "DOORKEEPER_AGENT__DOOR__UNLOCK_SECONDS": "7.5",
        "DOORKEEPER_AGENT__DOOR__OPTIONS__LINE": "17",
        "DOORKEEPER_AGENT__DOOR__OPTIONS__CHIP": "/dev/gpiochip0",
        "DOORKEEPER_AGENT__SHADOW": "true",
        "DOORKEEPER_AGENT__CAMERA__SOURCE": "0",
        "DOORKEEPER_AGENT__SYNC__POLL_INTERVAL_S": "5",
        "DOORKEEPER_AGENT__LOG__LEVEL": "DEBUG",
        "DOORKEEPER_AGENT__METRICS__LISTEN": "off",
        "DOORKEEPER_HUB__LISTEN": "ignored by the agent",
        "DOORKEEPER_HUB": "also ignored",
    }
    cfg = agent_config.load(path, tmp_path, env=env)
    assert cfg.door.type == "gpio" and cfg.door.unlock_seconds == 7.5
    assert cfg.door.options == {"line": 17, "chip": "/dev/gpiochip0"}
    assert cfg.shadow is True and cfg.camera.source == "0" and cfg.sync.poll_interval_s == 5.0
    assert cfg.face.threshold == 0.5  # from the file, untouched
    assert cfg.log.level == "debug" and cfg.metrics.listen is None


def test_env_errors_name_the_variable(tmp_path: Path) -> None:
    env = {"DOORKEEPER_HUB__BEACON_INTERVAL_S": "fast", "DOORKEEPER_HUB__NOPE": "1",
           "DOORKEEPER_HUB__TLS__EXTRA__DEEP": "1"}
    with pytest.raises(ConfigError) as exc:
        hub_config.load(None, tmp_path, env=env)
    assert sorted(problems(exc)) == sorted([
        "DOORKEEPER_HUB__BEACON_INTERVAL_S: beacon_interval_s: must be a number (got 'fast')",
        "DOORKEEPER_HUB__NOPE: nope: unknown key; allowed keys: role, data_dir, tls, listen, data_key_file, "
        "beacon_interval_s, watch_max_age_s, bundle_ttl_s, chunk_bytes, store, store_pool_size, "
        "reconcile_interval_s, shutdown_grace_s, metrics, log",
        "DOORKEEPER_HUB__TLS__EXTRA__DEEP: tls.extra: unknown key; allowed keys: cert, key",
    ])


def test_env_nested_values_that_do_not_convert_name_the_variable(tmp_path: Path) -> None:
    """pydantic-settings' own strict coercion raises SettingsError on these; ours leaves them
    to validation, which names the variable and the key."""
    env = {"DOORKEEPER_AGENT__FACE__THRESHOLD": "fast", "DOORKEEPER_AGENT__SYNC__POLL_INTERVAL_S": "[1, 2]"}
    with pytest.raises(ConfigError) as exc:
        agent_config.load(None, tmp_path, env=env)
    assert sorted(problems(exc)) == [
        "DOORKEEPER_AGENT__FACE__THRESHOLD: face.threshold: must be a number (got 'fast')",
        "DOORKEEPER_AGENT__SYNC__POLL_INTERVAL_S: sync.poll_interval_s: must be a number (got [1, 2])",
    ]


def test_env_table_as_toml_and_names_that_are_not_key_paths(tmp_path: Path) -> None:
    cfg = agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__SYNC": "{ poll_interval_s = 5 }"})
    assert cfg.sync.poll_interval_s == 5.0
    with pytest.raises(ConfigError) as exc:
        agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__SYNC": "often"})
    assert problems(exc) == ["DOORKEEPER_AGENT__SYNC: sync: must be a table (got 'often')"]
    with pytest.raises(ConfigError) as exc:
        hub_config.load(None, tmp_path, env={"DOORKEEPER_HUB__TLS__": "1"})
    assert problems(exc) == ["DOORKEEPER_HUB__TLS__: not a key path (use DOORKEEPER_HUB__SECTION__KEY)"]


def test_a_huge_value_is_echoed_bounded(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", f'[door]\ntype = "{"x" * 500_000}"\n')
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, tmp_path, env={})
    [line] = problems(exc)
    assert len(line) < len(str(path)) + 200 and "more characters cut]" in line


def test_data_dir_precedence_argument_env_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hub.toml", f'data_dir = "{tmp_path / "from-file"}"\n')
    env = {"DOORKEEPER_HUB__DATA_DIR": str(tmp_path / "from-env")}
    assert hub_config.load(path, None, env={}).data_dir == tmp_path / "from-file"
    assert hub_config.load(path, None, env=env).data_dir == tmp_path / "from-env"
    assert hub_config.load(path, tmp_path / "from-arg", env=env).data_dir == tmp_path / "from-arg"


def test_env_value_parsing() -> None:
    assert env_value("5", None) == 5
    assert env_value("0.4", None) == 0.4
    assert env_value("false", None) is False
    assert env_value('["a", "b"]', None) == ["a", "b"]
    assert env_value("gpio", None) == "gpio"
    assert env_value("1\nx = 2", None) == "1\nx = 2"  # no smuggling extra keys through a newline
    assert env_value("5", str) == "5"


def test_outbox_zero_means_no_cap_and_policy_maps(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", "[outbox]\nmax_records = 0\nmax_bytes = 2097152\n"
                 'when_full = "drop_newest"\n')
    cfg = agent_config.load(path, tmp_path, env={})
    policy = cfg.outbox_policy()
    assert policy.max_records is None and policy.max_bytes == 2097152
    assert policy.policy.value == "drop_newest"
    options = cfg.sync_options()
    assert options.outbox == policy and options.poll_interval_s == 30.0
    loop = cfg.door_loop_config("front")
    assert (loop.door, loop.unlock_seconds, loop.threshold, loop.confirm_frames) == ("front", 3.0, 0.40, 2)


def test_door_options_for_the_runtime(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    path = write(tmp_path / "agent.toml",
                 'shadow = true\n[camera]\nsource = "frames"\nfps = 5\nloop = true\n'
                 '[door]\ntype = "command"\n'
                 '[door.options]\nunlock = ["relay", "on"]\nlock = ["relay", "off"]\n'
                 "[face]\nthreshold = 0.45\ndet_size = 256\n")
    options = agent_config.load(path, tmp_path, env={}).door_options()
    assert options is not None
    assert options.camera == str(tmp_path / "frames") and options.shadow is True
    assert options.door == {"type": "command", "unlock": ["relay", "on"], "lock": ["relay", "off"]}
    assert (options.threshold, options.det_size, options.models) == (0.45, 256, None)
    assert options.camera_options["fps"] == 5.0 and options.camera_options["loop"] is True
    assert options.camera_options["limits"].max_width == 4096


def test_a_command_line_camera_keeps_the_configs_face_settings(tmp_path: Path) -> None:
    """`agent run --camera X` with no camera.source must not drop [face] (it once did)."""
    path = write(tmp_path / "agent.toml",
                 "[face]\nthreshold = 0.45\nintra_op_threads = 2\nliveness_threshold = 0.9\n")
    cfg = agent_config.load(path, tmp_path, env={})
    assert cfg.door_options() is None  # no camera anywhere: a sync-only agent
    options = cfg.door_options("rtsp://cam.local/stream")
    assert options is not None and options.camera == "rtsp://cam.local/stream"
    assert (options.threshold, options.intra_op_threads, options.liveness_threshold) == (0.45, 2, 0.9)


# ------------------------------------------------------------------ door and camera


def test_door_driver_errors_carry_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", "[door.options]\nbogus = 1\n")
    cfg = agent_config.load(path, tmp_path, env={})  # loading never touches the driver
    with pytest.raises(ConfigError) as exc:
        cfg.open_door("front")
    assert problems(exc) == ["door.options.bogus: unknown option"]
    cfg = agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__DOOR__TYPE": "gpio"})
    with pytest.raises(ConfigError) as exc:
        cfg.open_door("front")
    assert problems(exc) == ["door.options.chip: is required"]


def test_sim_door_opens_locked_in_the_data_dir(tmp_path: Path) -> None:
    cfg = agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__DOOR__OPTIONS__ECHO": "false"})
    door = cfg.open_door("front")
    try:
        assert door.state().locked and door.name == "front"
        assert (tmp_path / "doors").is_dir()
    finally:
        door.close()


def test_unlock_seconds_over_the_driver_maximum(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml",
                 "[door]\nunlock_seconds = 30\n[door.options]\nmax_unlock_seconds = 10\n")
    with pytest.raises(ConfigError) as exc:
        agent_config.load(path, tmp_path, env={})
    assert problems(exc) == [f"{path}: door.unlock_seconds: 30 is over door.options.max_unlock_seconds (10)"]


def test_camera_option_errors_carry_the_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        agent_config.load(None, tmp_path, env={}).open_camera()
    assert problems(exc)[0].startswith("camera.source: is not set")
    cfg = agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__CAMERA__FPS": "5",
                                                 "DOORKEEPER_AGENT__CAMERA__SOURCE": "0"})
    with pytest.raises(ConfigError) as exc:
        cfg.open_camera()
    assert problems(exc)[0].startswith("camera.fps: ")
    cfg = agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__CAMERA__SOURCE": "frames"})
    with pytest.raises(ConfigError) as exc:
        cfg.open_camera()
    assert problems(exc)[0].startswith("camera.source: ")
    (tmp_path / "frames").mkdir()
    source = cfg.open_camera()
    source.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ examples


@pytest.mark.parametrize(("module", "model"), [(hub_config, HubConfig), (agent_config, AgentConfig)])
def test_example_is_valid_and_documents_every_key(tmp_path: Path, module, model) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path / "example.toml", module.EXAMPLE)
    shown, defaults = module.load(path, tmp_path, env={}), module.load(None, tmp_path, env={})
    assert shown.model_dump(exclude={"role"}) == defaults.model_dump(exclude={"role"})  # values = defaults
    text = module.EXAMPLE

    def keys(m, prefix=""):  # type: ignore[no-untyped-def]
        for name, field in m.model_fields.items():
            inner = getattr(field.annotation, "model_fields", None)
            if inner is not None:
                assert f"[{prefix}{name}]" in text, f"[{prefix}{name}] missing from the example"
                yield from keys(field.annotation, f"{prefix}{name}.")
            else:
                yield name

    for key in keys(model):
        documented = f"\n{key} = " in text or f"\n# {key} = " in text or f"[door.{key}]" in text
        assert documented, f"{key} missing from the example"


def test_to_toml_round_trips(tmp_path: Path) -> None:
    cfg = agent_config.load(None, tmp_path, env={"DOORKEEPER_AGENT__DOOR__OPTIONS__UNLOCK": '["a", "b"]'})
    data = cfg.model_dump(mode="json")
    back = tomllib.loads(to_toml(data))
    assert back["door"]["options"]["unlock"] == ["a", "b"]
    assert agent_config.load(write(tmp_path / "agent.toml", to_toml(data)), tmp_path, env={}) == cfg


# ------------------------------------------------------------------ doorkeeper config ...


def test_check_ok_and_show(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.toml", '[camera]\nsource = "rtsp://admin:hunter2@cam.local/stream"\n'
                 '[door]\ntype = "http"\n[door.options]\nheaders = { Authorization = "Bearer s3cret" }\n')
    result = CliRunner().invoke(config_cli, ["check", str(path), "--data", str(tmp_path), "--show"], env={})
    assert result.exit_code == 0, result.output
    first, _, rest = result.output.partition("\n")
    assert first.startswith("ok: ")
    shown = tomllib.loads(rest)
    assert shown["door"]["type"] == "http"
    assert "hunter2" not in result.output and "s3cret" not in result.output
    result = CliRunner().invoke(config_cli, ["check", str(path), "--data", str(tmp_path), "--show", "--json"])
    assert json.loads(result.output.partition("\n")[2])["data_dir"] == str(tmp_path)


def test_check_bad_file_exits_1_with_every_error(tmp_path: Path) -> None:
    path = write(tmp_path / "hub.toml", "beacon_interval_s = 0\nbogus = 1\n")
    result = CliRunner().invoke(config_cli, ["check", str(path), "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{path}: beacon_interval_s: must be between 1 and 3600 (got 0)" in result.output
    assert f"{path}: bogus: unknown key" in result.output


def test_check_role_from_key_name_or_option(tmp_path: Path) -> None:
    runner = CliRunner()
    by_key = write(tmp_path / "site-a.toml", 'role = "agent"\nshadow = true\n')
    assert runner.invoke(config_cli, ["check", str(by_key), "--data", str(tmp_path)]).exit_code == 0
    by_name = write(tmp_path / "hub-prod.toml", "beacon_interval_s = 30\n")
    assert "valid hub" in runner.invoke(config_cli, ["check", str(by_name), "--data", str(tmp_path)]).output
    unknown = write(tmp_path / "door.toml", "shadow = true\n")
    result = runner.invoke(config_cli, ["check", str(unknown)])
    assert result.exit_code == 2 and "--role" in result.output
    result = runner.invoke(config_cli, ["check", str(unknown), "--role", "agent", "--data", str(tmp_path)])
    assert result.exit_code == 0
    # the hub refuses agent keys
    result = runner.invoke(config_cli, ["check", str(unknown), "--role", "hub", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "shadow: unknown key" in result.output


def test_check_missing_file_and_env(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(config_cli, ["check", str(tmp_path / "hub.toml")])
    assert result.exit_code == 1 and "does not exist" in result.output
    path = write(tmp_path / "hub.toml", "")
    env = {"DOORKEEPER_HUB__CHUNK_BYTES": "1"}
    result = runner.invoke(config_cli, ["check", str(path), "--data", str(tmp_path)], env=env)
    assert result.exit_code == 1 and "DOORKEEPER_HUB__CHUNK_BYTES: chunk_bytes" in result.output
    result = runner.invoke(config_cli, ["check", str(path), "--data", str(tmp_path), "--no-env"], env=env)
    assert result.exit_code == 0


def test_example_command(tmp_path: Path) -> None:
    for role in ("hub", "agent"):
        result = CliRunner().invoke(config_cli, ["example", "--role", role])
        assert result.exit_code == 0
        path = write(tmp_path / f"{role}.toml", result.output)
        check = CliRunner().invoke(config_cli, ["check", str(path), "--data", str(tmp_path)], env={})
        assert check.exit_code == 0, check.output


def test_hub_store_is_empty_for_sqlite_or_a_postgresql_url(tmp_path: Path) -> None:
    assert hub_config.load(None, tmp_path, env={}).store is None
    url = "postgresql://doorkeeper@db.example/doorkeeper"
    assert hub_config.load(None, tmp_path, env={"DOORKEEPER_HUB__STORE": url}).store == url
    with pytest.raises(ConfigError) as exc:
        hub_config.load(None, tmp_path, env={"DOORKEEPER_HUB__STORE": "/srv/dk/hub.db"})
    assert "postgresql://" in str(exc.value)
