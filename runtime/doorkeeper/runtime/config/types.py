"""The pieces the hub's and the agent's config models are built from, and how to look a key up.

- ``Section``: the base of every table (strict types, unknown keys refused, immutable).
- Value checks shared with the rest of the code: ``parse_listen``, ``is_loopback_host``,
  ``data_path`` (relative paths stay inside the data directory).
- Annotated field types that validate as they parse: ``DataPath``, ``OptionalFile``,
  ``OptionalDir``, ``Listen``, ``OptionalListen``, ``LogLevel``; the shared ``[log]`` and
  ``[metrics]`` tables.
- ``field_at``: where a key path lands in a model, for environment overrides and error messages.

The file format, the environment variables and the precedence are described in
:mod:`doorkeeper.runtime.config.loader`, which re-exports every public name here.
"""

from __future__ import annotations

import ipaddress
import os
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
    ValidationInfo,
    field_validator,
)

from doorkeeper.runtime.logs import clip


class Section(BaseModel):
    """Base of every config table: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ------------------------------------------------------------------ values


def describe_value(value: Any) -> str:
    """``value`` as an error message shows it: redacted, at most 80 characters."""
    if isinstance(value, Mapping):
        return "a table"
    return clip(repr(value), 80)


MAX_HUB_ADDRESSES = 16  # hub replicas one agent may be given (`hub_address`, `--hub`)


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
        raise ValueError(f"must be a path string (got {describe_value(value)})")
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
LogFormat = Literal["auto", "text", "json"]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"],
                     BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class LogSection(Section):
    """``[log]``: how the process writes its log (to stderr)."""

    format: LogFormat = Field(default="auto", description=(
        '"text" (human-readable), "json" (one object per line, for log collectors) or "auto" (text '
        "on a terminal, json otherwise)."))
    level: LogLevel = Field(default="info", description="debug, info, warning or error")


def metrics_section(default_listen: str) -> type[Section]:
    """The ``[metrics]`` table for a role whose default endpoint is ``default_listen``."""

    class MetricsSection(Section):
        """``[metrics]``: the Prometheus endpoint ``listen`` (HOST:PORT, or "off"). It is
        unauthenticated and its counters reveal when doors are used: an address other than
        loopback needs ``allow_remote = true`` (e.g. a Kubernetes pod scraped over the pod
        network)."""

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


# ------------------------------------------------------------------ key paths


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of ``X | None`` / ``Optional[X]`` / ``Annotated[X, ...]``."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in get_args(annotation) for t in _unwrap(a) if t is not type(None)]
    return [annotation]


def model_in(annotation: Any) -> type[BaseModel] | None:
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
        inner = model_in(field.annotation)
        if inner is not None:
            current = inner
            continue
        if any(get_origin(t) in (dict, Mapping) or t is dict for t in _unwrap(field.annotation)):
            return ("dict", None) if i + 1 < len(path) else ("field", field.annotation)
        return ("field", field.annotation) if i + 1 == len(path) else ("unknown", current)
    return "model", current


def wants_text(annotation: Any) -> bool:
    """True when a field takes a string or a path and no number or bool."""
    members = _unwrap(annotation)
    return any(t in (str, Path) for t in members) and not any(t in (int, float, bool) for t in members)
