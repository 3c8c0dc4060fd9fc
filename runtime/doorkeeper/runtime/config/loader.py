"""Strict TOML configuration shared by the hub and the agent (as Frigate validates its config).

One file per role (``hub.toml``, ``agent.toml``) and ``DOORKEEPER_<ROLE>__*`` environment
variables, read by pydantic-settings sources (:class:`TomlConfigSettingsSource`,
:class:`EnvSettingsSource` with ``__`` as the nesting delimiter), validated by pydantic v2
models that refuse unknown keys. Every problem is reported at once, each line naming where the
value came from, the full key path, what is allowed and what was given::

    agent.toml: door.unlock_seconds: must be between 0.5 and 60 (got 120)
    DOORKEEPER_AGENT__FACE__DET_SIZE: face.det_size: must be an integer (got 'big')

Precedence, highest first: the ``data_dir`` argument of ``load`` (the CLI's ``--data``; the
CLI applies its other options over the loaded config), environment variables, the file, the
model defaults.

Environment variables: ``DOORKEEPER_<ROLE>__<KEY>[__<SUBKEY>...]`` (double underscore = one
level of nesting, names case-insensitive; the prefix is the model's ``env_prefix``). A value is
read as a TOML scalar or inline array (``5``, ``true``, ``0.4``, ``["a", "b"]``); where the key
takes a string or a path, or the value is not valid TOML, the raw text is used, so
``DOORKEEPER_AGENT__DOOR__TYPE=gpio`` and ``DOORKEEPER_AGENT__CAMERA__SOURCE=0`` both work.

Paths: absolute paths are used as given; relative ones are relative to the data directory and
are refused when they leave it (``../x``, ``keys/../../x``). The check is lexical: a symlink an
administrator placed inside the data directory is trusted.

The value types and sections live in :mod:`doorkeeper.runtime.config.types`, the wording of
validation problems in :mod:`doorkeeper.runtime.config.problems`; every public name of both is
importable from here.
"""

from __future__ import annotations

import os
import re
import textwrap
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource, TomlConfigSettingsSource

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
    model_in,
    parse_listen,
    wants_text,
)
from doorkeeper.runtime.logs import redact
from doorkeeper.wire.capped import TooLarge, read_capped

__all__ = [
    "MAX_CONFIG_BYTES", "ConfigError", "DataPath", "EnvSource", "Listen", "LogFormat", "LogLevel",
    "LogSection", "OptionalDir", "OptionalFile", "OptionalListen", "Role", "Section", "TomlSource",
    "context_path", "data_path", "env_names", "env_value", "example_toml", "field_at", "is_loopback_host",
    "load_config", "merge", "metrics_section", "model_in", "parse_listen", "problems_of", "read_toml",
    "redact", "redacted", "to_toml",
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


class EnvSource(EnvSettingsSource):
    """``<prefix><KEY>[__<SUBKEY>...]`` from ``env`` (not only ``os.environ``), values read by
    :func:`env_value` against the type of the key they set.

    The config models are plain pydantic models, not ``BaseSettings``: validating a
    ``BaseSettings`` runs its ``__init__``, which would read ``os.environ`` again and drop the
    validation context that resolves paths against the data directory.
    """

    def __init__(self, model: type[BaseModel], prefix: str, env: Mapping[str, str]) -> None:
        super().__init__(typing.cast(Any, model), case_sensitive=False, env_prefix=prefix,
                         env_nested_delimiter="__")
        self.env_vars = {name.lower(): value for name, value in env.items()}
        # Values are decoded in __call__; the base class's strict-mode coercion raises on a value
        # it cannot convert instead of leaving it to validation, which names the key.
        self.config = {**self.config, "strict": False}

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        return env_value(value, None)  # a whole table given as TOML, not JSON

    def __call__(self) -> dict[str, Any]:
        return self._decoded(super().__call__(), ())

    def _decoded(self, data: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                out[key] = self._decoded(value, (*path, key))
            elif isinstance(value, str):
                where, annotation = field_at(self.settings_cls, (*path, key))
                out[key] = env_value(value, annotation if where == "field" else None)
            else:
                out[key] = value
        return out


class TomlSource(TomlConfigSettingsSource):
    """One config file, read with a size cap; ConfigError naming the file when it is unreadable."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]  # 2.16 widened it
        return read_toml(file_path, str(file_path))


def env_names(prefix: str, env: Mapping[str, str]) -> tuple[dict[tuple[str, ...], str], list[str]]:
    """Key path -> variable name for every variable with ``prefix``, and the problems with the
    names themselves."""
    sources: dict[tuple[str, ...], str] = {}
    problems: list[str] = []
    for name in sorted(env):
        if name.upper().startswith(prefix.upper()):
            parts = tuple(name[len(prefix):].lower().split("__"))
            if all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts):
                sources[parts] = name
            else:
                problems.append(f"{name}: not a key path (use {prefix.upper()}SECTION__KEY)")
    return sources, problems


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
    prefix = f"DOORKEEPER_{role.upper()}__"
    sources, problems = env_names(prefix, env)
    overrides = EnvSource(model, prefix, {name: env[name] for name in sources.values()})()
    for parts, name in sources.items():  # the source reads the model's keys only: keep the rest,
        if parts[0] not in model.model_fields:  # so that validation reports them as unknown
            overrides.setdefault(parts[0], env[name])

    if data_dir is not None:
        base_dir = Path(data_dir).expanduser().absolute()
    elif isinstance(overrides.get("data_dir"), str) and overrides["data_dir"]:
        base_dir = Path(overrides["data_dir"]).expanduser().absolute()
    else:
        base_dir = None

    file = Path(path) if path is not None else (base_dir or default_data_dir) / f"{role}.toml"
    if path is not None and not file.is_file():
        raise ConfigError([f"{file}: file {file} does not exist (or is not a regular file)"])
    label = str(file) if file.is_file() else f"{role} config (defaults)"
    data = TomlSource(typing.cast(Any, model), file)() if file.is_file() else {}

    if base_dir is None:
        in_file = data.get("data_dir")
        if isinstance(in_file, str) and in_file:
            anchor = file.expanduser().absolute().parent if path is not None else Path.cwd()
            base_dir = (anchor / Path(in_file).expanduser()).absolute()
        else:
            base_dir = default_data_dir
    base_dir = Path(os.path.normpath(base_dir))

    merged = {**merge(data, overrides), "data_dir": str(base_dir)}
    all_sources = {**_flatten_sources(data, label), **sources}
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


def to_toml(data: Mapping[str, Any]) -> str:
    """A TOML document for a JSON-like mapping (None values are left out: TOML has no null)."""

    def present(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: present(v) for k, v in value.items() if v is not None}
        return [present(v) for v in value] if isinstance(value, list | tuple) else value

    return tomlkit.dumps(present(data))


def example_toml(model: type[BaseModel], role: Role, header: str) -> str:
    """A commented ``<role>.toml`` with every key of ``model`` (written with tomlkit): ``header``
    as comments, then each key under its ``description`` at its default; a key whose default is
    None is shown commented out with its first example. A table opens with its field's
    description, else its model's docstring."""
    doc = tomlkit.document()
    for line in header.splitlines():
        doc.add(tomlkit.comment(line))
    doc.add("role", role)
    _example_keys(doc, model, started=True)
    return tomlkit.dumps(doc)


def _example_keys(container: Any, model: type[BaseModel], started: bool) -> None:
    tables = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        inner = model_in(field.annotation)
        if inner is not None or isinstance(default, dict):
            doc = re.sub(r"^``\[[a-z.]+\]``: ", "", " ".join((inner.__doc__ or "").split()) if inner else "")
            tables.append((name, field.description or doc[:1].upper() + doc[1:], inner))
        elif name != "role":
            if field.description and started:
                container.add(tomlkit.nl())
            started = True
            _example_comment(container, field.description)
            if default is None:
                shown = tomlkit.item(field.examples[0] if field.examples else "").as_string()
                container.add(tomlkit.comment(f"{name} = {shown}"))
            else:
                container.add(name, str(default) if isinstance(default, Path) else default)
    for name, description, inner in tables:
        table = tomlkit.table()
        _example_comment(table, description)
        if inner is not None:
            _example_keys(table, inner, started=bool(description))
        container.add(name, table)


def _example_comment(container: Any, text: str | None) -> None:
    """``text`` as comment lines: reST markup dropped, each line ("\\n") wrapped at 98."""
    for paragraph in re.sub(r":\w+:|`", "", text or "").split("\n"):
        for line in textwrap.wrap(paragraph, 98):
            container.add(tomlkit.comment(line))
