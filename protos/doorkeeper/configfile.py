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
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

Role = Literal["hub", "agent"]
ROLES: tuple[Role, ...] = ("hub", "agent")
MAX_CONFIG_BYTES = 1024 * 1024  # a config file is small; anything larger is a mistake
# Keys whose values `redacted` masks when a config is shown (paths to key files are not masked).
_SECRET_KEY = re.compile(r"pass|secret|token|authorization|cookie|headers|private", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem.

    ``str(error)`` is a readable multi-line message: a heading and one indented line per
    problem, each naming the source, the full key path and what is allowed.
    """

    def __init__(self, problems: list[str], heading: str = "invalid configuration") -> None:
        self.problems = list(problems)
        self.heading = heading
        super().__init__(heading + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class Section(BaseModel):
    """Base of every config table: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ------------------------------------------------------------------ values


def redact(text: str) -> str:
    """``text`` with URL user-info (``rtsp://user:pass@host``) replaced by ``***@``."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def parse_listen(listen: str, *, allow_port_zero: bool = True) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:9108`` for IPv6) into host and port; ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    low = 0 if allow_port_zero else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) <= 65535 or len(listen) > 300:
        raise ValueError(f"must be HOST:PORT with a port in {low}..65535")
    if any(c.isspace() for c in host) or "/" in host:
        raise ValueError("must be HOST:PORT; the host may not contain spaces or '/'")
    return host, int(port)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals. Names are not resolved (no DNS at
    config time), so any other name counts as not loopback."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def data_path(value: str | os.PathLike[str], data_dir: Path) -> Path:
    """``value`` as an absolute path: kept if absolute, else joined to ``data_dir``.

    Raises ValueError when a relative path leaves the data directory (``..``).
    """
    raw = os.fspath(value)
    if not raw or "\x00" in raw:
        raise ValueError("must be a non-empty path")
    path = Path(raw).expanduser()
    if path.is_absolute():
        return Path(os.path.normpath(path))
    root = os.path.normpath(data_dir)
    joined = os.path.normpath(os.path.join(root, path))
    if os.path.commonpath([root, joined]) != root:
        raise ValueError(f"relative path {raw!r} leaves the data directory {root}; "
                         "use a path inside it or an absolute path")
    return Path(joined)


def context_path(value: Any, info: ValidationInfo, *, must_be: str | None = None) -> Any:
    """Field-validator helper: resolve ``value`` against ``info.context['data_dir']``.

    ``must_be`` "file" or "dir" also requires the path to exist as that. Without a context
    (a model built directly rather than through ``load``) the path is returned unchanged.
    """
    if value is None:
        return None
    context = info.context or {}
    data_dir = context.get("data_dir")
    path = data_path(value, data_dir) if data_dir is not None else Path(value)
    if must_be == "file" and not path.is_file():
        raise ValueError(f"file {path} does not exist (or is not a regular file)")
    if must_be == "dir" and not path.is_dir():
        raise ValueError(f"directory {path} does not exist")
    return path


def _text_path(value: Any) -> Any:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a path string (got {_got(value)})")
    if not value.strip():
        raise ValueError("must be a non-empty path")
    return value


def _optional_text_path(value: Any) -> Any:
    """An empty string means "not set" (TOML has no null)."""
    if isinstance(value, str) and not value.strip():
        return None
    return value if value is None else _text_path(value)


def _resolve(value: Any, info: ValidationInfo) -> Any:
    return context_path(value, info)


def _resolve_file(value: Any, info: ValidationInfo) -> Any:
    return context_path(value, info, must_be="file")


def _resolve_dir(value: Any, info: ValidationInfo) -> Any:
    return context_path(value, info, must_be="dir")


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _optional_listen(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("", "off"):
        return None
    return value


# A path in the data directory (relative -> joined and checked; see module doc).
DataPath = Annotated[Path, Field(strict=False), BeforeValidator(_text_path), AfterValidator(_resolve)]
# Optional files and directories that must exist when given ("" = not set).
OptionalFile = Annotated[Path | None, Field(strict=False), BeforeValidator(_optional_text_path),
                         AfterValidator(_resolve_file)]
OptionalDir = Annotated[Path | None, Field(strict=False), BeforeValidator(_optional_text_path),
                        AfterValidator(_resolve_dir)]
# HOST:PORT; the optional form takes "off" (or "") for None.
Listen = Annotated[str, AfterValidator(_listen)]
OptionalListen = Annotated[str | None, BeforeValidator(_optional_listen),
                           AfterValidator(lambda v: v if v is None else _listen(v))]
LogFormat = Literal["text", "json"]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"],
                     BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class LogSection(Section):
    """``[log]``: ``format`` text (human-readable) or json (one object per line), ``level``."""

    format: LogFormat = "text"
    level: LogLevel = "info"


def metrics_section(default_listen: str) -> type[Section]:
    """The ``[metrics]`` table for a role whose default endpoint is ``default_listen``."""

    class MetricsSection(Section):
        """``[metrics]``: Prometheus endpoint ``listen`` (HOST:PORT or "off"). The endpoint has
        no authentication and its counters reveal when doors are used, so an address other than
        loopback is refused unless ``allow_remote = true`` (e.g. a Kubernetes pod scraped by
        Prometheus)."""

        allow_remote: bool = False
        listen: OptionalListen = default_listen

        @field_validator("listen")
        @classmethod
        def _loopback_unless_allowed(cls, value: str | None, info: ValidationInfo) -> str | None:
            if value is not None and not info.data.get("allow_remote", False):
                host, _ = parse_listen(value)
                if not is_loopback_host(host):
                    raise ValueError(
                        f"{value!r} is not a loopback address; metrics are unauthenticated and show "
                        "when doors are used: set metrics.allow_remote = true to serve them there")
            return value

    return MetricsSection


# ------------------------------------------------------------------ reading


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """Parse one config file; ConfigError (naming the file) when unreadable or invalid."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{label}: file {path} does not exist"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read {path}: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{label}: larger than {MAX_CONFIG_BYTES} bytes; not a config file"])
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: not valid TOML: {exc}"]) from None


def env_prefix(role: Role) -> str:
    return f"DOORKEEPER_{role.upper()}__"


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of ``X | None`` / ``Optional[X]`` / ``Annotated[X, ...]``."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in get_args(annotation) for t in _unwrap(a) if t is not type(None)]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for t in _unwrap(annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def field_at(model: type[BaseModel], path: tuple[str, ...]) -> tuple[str, Any]:
    """Where ``path`` lands in ``model``: ("model", cls), ("field", annotation), ("dict", None)
    for a key inside a free-form table, or ("unknown", cls) for a key ``cls`` does not have."""
    current: type[BaseModel] = model
    for i, key in enumerate(path):
        field = current.model_fields.get(key)
        if field is None:
            return "unknown", current
        inner = _model_in(field.annotation)
        if inner is not None:
            current = inner
            continue
        if any(get_origin(t) in (dict, Mapping) or t is dict for t in _unwrap(field.annotation)):
            return ("dict", None) if i + 1 < len(path) else ("field", field.annotation)
        return ("field", field.annotation) if i + 1 == len(path) else ("unknown", current)
    return "model", current


def _wants_text(annotation: Any) -> bool:
    members = _unwrap(annotation)
    return any(t in (str, Path) for t in members) and not any(t in (int, float, bool) for t in members)


def env_value(raw: str, annotation: Any | None) -> Any:
    """An environment value as a TOML scalar or inline array, or the raw text (see module doc)."""
    if annotation is not None and _wants_text(annotation):
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


# ------------------------------------------------------------------ errors


def _annotation_bounds(annotation: Any, found: dict[str, Any]) -> None:
    if get_origin(annotation) is typing.Annotated:
        inner, *metadata = get_args(annotation)
        _metadata_bounds(metadata, found)
        _annotation_bounds(inner, found)
    elif get_origin(annotation) in (typing.Union, types.UnionType):
        for member in get_args(annotation):
            _annotation_bounds(member, found)


def _metadata_bounds(metadata: Any, found: dict[str, Any]) -> None:
    for meta in metadata:
        if isinstance(getattr(meta, "metadata", None), list):  # a FieldInfo inside Annotated
            _metadata_bounds(meta.metadata, found)
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                found.setdefault(name, getattr(meta, name))


def _constraints(model: type[BaseModel], loc: tuple[str, ...]) -> dict[str, Any]:
    """The numeric bounds (ge/gt/le/lt) declared for the field at ``loc``."""
    owner: Any = model
    if len(loc) > 1:
        where, owner = field_at(model, loc[:-1])
        if where != "model":
            return {}
    field = owner.model_fields.get(loc[-1])
    found: dict[str, Any] = {}
    if field is not None:
        _metadata_bounds(field.metadata, found)
        _annotation_bounds(field.annotation, found)
    return found


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    text = redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _explain(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    loc = tuple(str(p) for p in error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        where, owner = field_at(model, loc[:-1]) if len(loc) > 1 else ("model", model)
        allowed = ", ".join(owner.model_fields) if where == "model" else "?"
        return f"unknown key; allowed keys: {allowed}"
    if kind == "missing":
        return "is required"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')} (got {_got(value)})"
    c = _constraints(model, loc)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") and c:
        low, high = c.get("ge", c.get("gt")), c.get("le", c.get("lt"))
        got = f"(got {_got(value)})"
        if low is not None and high is not None and "gt" not in c and "lt" not in c:
            return f"must be between {_num(low)} and {_num(high)} {got}"
        parts = []
        if low is not None:
            parts.append(f"{'>' if 'gt' in c else '>='} {_num(low)}")
        if high is not None:
            parts.append(f"{'<' if 'lt' in c else '<='} {_num(high)}")
        return f"must be {' and '.join(parts)} {got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"must be one of {expected} (got {_got(value)})"
    simple = {
        "int_type": "must be an integer", "float_type": "must be a number",
        "bool_type": "must be true or false", "string_type": "must be a string",
        "model_type": "must be a table", "dict_type": "must be a table",
        "model_attributes_type": "must be a table", "list_type": "must be an array",
        "finite_number": "must be a finite number",
    }
    if kind in simple:
        return f"{simple[kind]} (got {_got(value)})"
    message = str(error.get("msg", "invalid"))
    if kind == "value_error":  # our validators word their own message
        return message.removeprefix("Value error, ")
    return f"{message} (got {_got(value)})"


def problems_of(exc: ValidationError, model: type[BaseModel], sources: Mapping[tuple[str, ...], str],
                default_source: str) -> list[str]:
    """One readable line per pydantic error: ``source: key.path: what is allowed (got x)``."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(p) for p in error["loc"])
        source = default_source
        for n in range(len(loc), 0, -1):
            if loc[:n] in sources:
                source = sources[loc[:n]]
                break
        explanation = _explain(model, error)
        if not loc:  # a model-level rule: its message starts with the key it is about
            head = explanation.split(":", 1)[0]
            loc = tuple(head.split(".")) if re.fullmatch(r"[a-z_.]+", head) else ()
            for n in range(len(loc), 0, -1):
                if loc[:n] in sources:
                    source = sources[loc[:n]]
                    break
            lines.append(f"{source}: {explanation}")
            continue
        named = re.match(r"([a-z_]+(?:\.[a-z0-9_]+)+): ", explanation)
        if named and named.group(1).split(".")[0] == loc[0]:  # the validator named the key itself
            lines.append(f"{source}: {explanation}")
        else:
            lines.append(f"{source}: {'.'.join(loc)}: {explanation}")
    return lines


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
