"""`doorkeeper config ...`: check a hub or agent config file, print a commented example."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

ROLE_CHOICE = click.Choice(["hub", "agent"])


def _module(role: str) -> Any:
    import importlib

    return importlib.import_module("doorkeeper.hub.config" if role == "hub" else "doorkeeper.agent.config")


def guess_role(path: Path) -> str | None:
    """The role of a config file: its top-level ``role`` key, else its name (``hub*.toml``,
    ``agent*.toml``); None when neither says."""
    from doorkeeper.runtime.config.loader import ConfigError, read_toml

    try:
        role = read_toml(path, str(path)).get("role")
    except ConfigError:
        role = None  # `load` reports the real problem with the file
    if role in ("hub", "agent"):
        return str(role)
    name = path.name.lower()
    for candidate in ("hub", "agent"):
        if name.startswith(candidate):
            return candidate
    return None


@click.group()
def config() -> None:
    """Check configuration files and print examples."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--role", type=ROLE_CHOICE, help="hub or agent (default: the file's `role` key or name).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory, as `--data` would give it to the process.")
@click.option("--show", is_flag=True, help="Print the effective configuration (secrets masked).")
@click.option("--json", "as_json", is_flag=True, help="With --show: JSON instead of TOML.")
@click.option("--no-env", is_flag=True, help="Ignore DOORKEEPER_<ROLE>__* environment variables.")
def check(file: Path, role: str | None, data_dir: Path | None, show: bool, as_json: bool,
          no_env: bool) -> None:
    """Validate FILE as the hub or agent would at start; exit 1 listing every problem.

    Environment overrides apply (unless --no-env), and files the config names (TLS
    certificates, key files, model folders) must exist on this machine.
    """
    from doorkeeper.runtime.config.loader import ConfigError, redacted, to_toml

    if not file.is_file():
        click.echo(f"error: {file} does not exist (or is not a file)", err=True)
        raise SystemExit(1)
    role = role or guess_role(file)
    if role is None:
        raise click.UsageError(f"cannot tell whether {file} is a hub or an agent config: "
                               "pass --role, add `role = \"hub\"` (or \"agent\") to it, "
                               "or name it hub.toml / agent.toml")
    module = _module(role)
    try:
        cfg = module.load(file, data_dir, env={} if no_env else os.environ)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    click.echo(f"ok: {file} is a valid {role} configuration")
    if show:
        data = cfg.model_dump(mode="json")
        if role == "hub" and data.get("data_key_file") is None:
            data["data_key_file"] = str(cfg.data_key_path)
        data = redacted(data)
        click.echo(json.dumps(data, indent=2) if as_json else to_toml(data))


@config.command("example")
@click.option("--role", type=ROLE_CHOICE, required=True)
def example(role: str) -> None:
    """Print a commented example config (every key, with its default)."""
    click.echo(_module(role).EXAMPLE, nl=False)
