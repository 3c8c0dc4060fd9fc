"""Strict TOML configuration shared by the hub and the agent (as Frigate validates its config).

One file per role (``hub.toml``, ``agent.toml``), read with :mod:`tomllib`, overridden by
environment variables, validated by pydantic v2 models that refuse unknown keys. Every problem
is reported at once, each line naming where the value came from, the full key path, what is
allowed and what was given::

    agent.toml: door.unlock_seconds: must be between 0.5 and 60 (got 120)
    DOORKEEPER_AGENT__FACE__DET_SIZE: face.det_size: must be an integer (got 'big')

Precedence, highest first: the ``data_dir`` argument of ``load`` (the CLI's ``--data``),
environment variables, the file, the model defaults.

Environment variables: ``DOORKEEPER_<ROLE>__<KEY>[__<SUBKEY>...]`` (double underscore = one
level of nesting, names case-insensitive). A value is read as a TOML scalar or inline array
(``5``, ``true``, ``0.4``, ``["a", "b"]``); where the key takes a string or a path, or the value
is not valid TOML, the raw text is used, so ``DOORKEEPER_AGENT__DOOR__TYPE=gpio`` and
``DOORKEEPER_AGENT__CAMERA__SOURCE=0`` both work.

Paths: absolute paths are used as given; relative ones are relative to the data directory and
are refused when they leave it (``../x``, ``keys/../../x``). The check is lexical: a symlink an
administrator placed inside the data directory is trusted.

The value types and sections live in :mod:`doorkeeper.runtime.config.types`, the wording of validation
problems in :mod:`doorkeeper.runtime.config.problems`; every public name of both is importable from here.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from doorkeeper.runtime.config.problems import problems_of
from doorkeeper.runtime.config.types import (
    DataPath,
    Listen,
    LogFormat,
    LogLevel,
    LogSection,
    OptionalDir,
    OptionalFile,
    OptionalListen,
    Section,
    context_path,
    data_path,
    field_at,
    is_loopback_host,
    metrics_section,
    parse_listen,
    redact,
    wants_text,
)
from doorkeeper.wire.capped import TooLarge, read_capped

__all__ = [
    "MAX_CONFIG_BYTES", "ConfigError", "DataPath", "Listen", "LogFormat", "LogLevel", "LogSection",
    "OptionalDir", "OptionalFile", "OptionalListen", "Role", "Section", "context_path", "data_path",
    "env_overrides", "env_prefix", "env_value", "field_at", "is_loopback_host", "load_config", "merge",
    "metrics_section", "parse_listen", "problems_of", "read_toml", "redact", "redacted", "to_toml",
]

Role = Literal["hub", "agent"]
MAX_CONFIG_BYTES = 1024 * 1024  # a config file is small; anything larger is a mistake
# Keys whose values `redacted` masks when a config is shown (paths to key files are not masked).
_SECRET_KEY = re.compile(r"pass|secret|token|authorization|cookie|headers|private", re.I)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem.

    ``str(error)`` is a readable multi-line message: a heading and one indented line per
    problem, each naming the source, the full key path and what is allowed.
    """

    def __init__(self, problems: list[str], heading: str = "invalid configuration") -> None:
        self.problems = list(problems)
        self.heading = heading
        super().__init__(heading + ":\n" + "\n".join(f"  {p}" for p in self.problems))


# ------------------------------------------------------------------ reading


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """Parse one config file; ConfigError (naming the file) when unreadable or invalid."""
    try:
        raw = read_capped(path, MAX_CONFIG_BYTES, "config file")
    except TooLarge:
        raise ConfigError([f"{label}: larger than {MAX_CONFIG_BYTES} bytes; not a config file"]) from None
    except FileNotFoundError:
        raise ConfigError([f"{label}: file {path} does not exist"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read {path}: {exc.strerror or exc}"]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: not valid TOML: {exc}"]) from None


def env_prefix(role: Role) -> str:
    return f"DOORKEEPER_{role.upper()}__"



def env_value(raw: str, annotation: Any | None) -> Any:
    """An environment value as a TOML scalar or inline array, or the raw text (see module doc)."""
    if annotation is not None and wants_text(annotation):
        return raw
    if "\n" in raw or "\r" in raw:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(role: Role, model: type[BaseModel], env: Mapping[str, str],
                  ) -> tuple[dict[str, Any], dict[tuple[str, ...], str], list[str]]:
    """The overrides for ``role`` found in ``env``: (nested dict, key path -> variable name,
    problems with the variable names themselves)."""
    prefix = env_prefix(role)
    nested: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    problems: list[str] = []
    for name in sorted(env):
        if not name.upper().startswith(prefix):
            continue
        parts = tuple(name[len(prefix):].lower().split("__"))
        if not all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts):
            problems.append(f"{name}: not a key path (use {prefix}SECTION__KEY)")
            continue
        where, annotation = field_at(model, parts)
        value = env_value(env[name], annotation if where == "field" else None)
        table = nested
        for p in parts[:-1]:
            existing = table.get(p)
            if not isinstance(existing, dict):
                existing = table[p] = {}
            table = existing
        table[parts[-1]] = value
        sources[parts] = name
    return nested, sources, problems


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``over`` (tables merge, anything else replaces)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out



def _flatten_sources(data: Mapping[str, Any], label: str, prefix: tuple[str, ...] = ()
                     ) -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], str] = {}
    for key, value in data.items():
        out[(*prefix, key)] = label
        if isinstance(value, Mapping):
            out.update(_flatten_sources(value, label, (*prefix, key)))
    return out


# ------------------------------------------------------------------ the loader

M = typing.TypeVar("M", bound=BaseModel)


def load_config(model: type[M], role: Role, path: Path | None, data_dir: Path | None,
                env: Mapping[str, str], default_data_dir: Path) -> M:
    """Read, merge and validate one role's config; see the module docstring.

    ``path`` None means ``<data_dir>/<role>.toml`` when it exists, else all defaults; an
    explicit ``path`` that does not exist is an error. Raises ConfigError listing every problem.
    """
    file_name = f"{role}.toml"
    overrides, sources, problems = env_overrides(role, model, env)

    if data_dir is not None:
        base_dir = Path(data_dir).expanduser().absolute()
    elif isinstance(overrides.get("data_dir"), str) and overrides["data_dir"]:
        base_dir = Path(overrides["data_dir"]).expanduser().absolute()
    else:
        base_dir = None

    data: dict[str, Any] = {}
    label = f"{role} config (defaults)"
    if path is not None:
        label = str(path)
        data = read_toml(Path(path), label)
    else:
        candidate = (base_dir or default_data_dir) / file_name
        if candidate.is_file():
            label = str(candidate)
            data = read_toml(candidate, label)
    file_sources = _flatten_sources(data, label)

    if base_dir is None:
        in_file = data.get("data_dir")
        if isinstance(in_file, str) and in_file:
            anchor = Path(path).expanduser().absolute().parent if path is not None else Path.cwd()
            base_dir = (anchor / Path(in_file).expanduser()).absolute()
        else:
            base_dir = default_data_dir
    base_dir = Path(os.path.normpath(base_dir))

    merged = merge(data, overrides)
    merged["data_dir"] = str(base_dir)
    all_sources = {**file_sources, **sources}
    for parts, name in sources.items():  # a table that only the environment introduced
        for n in range(1, len(parts)):
            all_sources.setdefault(parts[:n], name)
    if data_dir is not None:
        all_sources[("data_dir",)] = "--data"
    try:
        config = model.model_validate(merged, context={"data_dir": base_dir})
    except ValidationError as exc:
        problems.extend(problems_of(exc, model, all_sources, label))
    if problems:
        raise ConfigError(problems, f"invalid {role} configuration")
    return config


# ------------------------------------------------------------------ output


def redacted(data: Any, key: str = "") -> Any:
    """A copy of a config dump safe to print: secret-looking keys masked, URL passwords removed."""
    if isinstance(data, Mapping):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "", {}) else redacted(v, str(k)))
                for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redacted(v, key) for v in data]
    if isinstance(data, str):
        return redact(data)
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    return _toml_value(str(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """A TOML document for a JSON-like mapping (None values are left out: TOML has no null)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, table in tables:
        name = f"{_prefix}{_toml_key(key)}"
        body = to_toml(table, name + ".")
        out += ("\n\n" if out else "") + f"[{name}]" + ("\n" + body if body else "")
    return out
