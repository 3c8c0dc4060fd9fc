"""Log lines of the hub and the agent: the standard library collects them, structlog renders them.

Code logs through :mod:`logging` (``logging.getLogger(__name__)``, fields with ``extra=``) or
through ``structlog.get_logger(name)`` (fields as keyword arguments). :func:`setup_logging`
installs one handler on the root logger whose structlog processor chain renders either kind
as text (``2026-01-02 10:00:00,123 INFO    doorkeeper.hub: message key=value``) or as one JSON
object per line (``timestamp``, ``level``, ``logger``, ``message``, the fields, ``exception``).
Format ``auto`` (the default) is text on a terminal and JSON otherwise.

Whatever a caller passes, a log line carries no secret and costs no time proportional to it:

- a field whose name ends in a secret word (``key``, ``token``, ``nonce``, ``pin``, ``card``,
  ``template``, ...) is masked; bytes are shown only by their length;
- every value, the message and the exception included, is cut to a bounded length *before*
  anything else reads it, with a marker saying how many characters were cut;
- URL user-info (``rtsp://user:pass@host``) is masked by :func:`redact`, one left-to-right pass
  with no backtracking (a regex with nested repetition here once took 26 s on a 150,000
  character site name and froze the hub's event loop).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LOG_FORMATS = ("auto", "text", "json")
MASK = "[redacted]"
# The longest rendering of any one value (message, field) and of a traceback, in characters.
MAX_FIELD_CHARS = 2000
MAX_EXCEPTION_CHARS = 16_000
# Items shown of a list or mapping, and how deep nested ones are followed.
MAX_ITEMS = 50
MAX_DEPTH = 4
# An extra field is masked when the last word of its name is one of these (``data_key``,
# ``device_token``, ``pin``), or its name contains password/secret. ``key_id`` is not masked.
_SECRET_WORDS = frozenset({
    "key", "keys", "token", "nonce", "secret", "password", "passwd", "pin", "card", "signature",
    "authorization", "cookie", "template", "templates", "embedding", "embeddings", "credential",
})
_OURS = "_doorkeeper_handler"
# The first character that ends a URL's user-info. A single character class: the engine tests
# each position once, so a search costs the distance it scans.
_USERINFO_END = re.compile(r"[/@\s]")


# ------------------------------------------------------------------ masking


def redact(text: str, *, cut: bool = False) -> str:
    """``text`` with the user-info of every URL (``rtsp://user:pass@host``) replaced by ``***``.

    Linear in ``len(text)`` whatever it holds: ``://`` is found with ``str.find``; the user-info
    after it ends at the first ``/``, ``@`` or white space, and only an ``@`` there makes it
    user-info. Each character is read at most twice. ``cut`` says ``text`` was truncated: a
    user-info still open at its end is masked too (its ``@`` was cut off).
    """
    pos = text.find("://")
    if pos < 0:
        return text
    parts: list[str] = []
    done = 0
    while pos >= 0:
        start = pos + 3
        end = _USERINFO_END.search(text, start)
        if end is None:
            if cut and start < len(text):
                parts += [text[done:start], "***"]
                done = len(text)
            break
        if end.group() == "@":
            parts += [text[done:start], "***"]
            done = end.start()
        pos = text.find("://", end.start())
    parts.append(text[done:])
    return "".join(parts)


def clip(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` as safe to echo: URL user-info masked, at most ``limit`` of its characters and,
    when longer, a marker saying how many were cut. Costs O(limit), not O(len(text))."""
    if len(text) <= limit:
        return redact(text)
    return f"{redact(text[:limit], cut=True)}...[{len(text) - limit} more characters cut]"


def is_secret_field(name: str) -> bool:
    """True when a field of this name is masked in log output."""
    lowered = name.lower()
    return lowered.rsplit("_", 1)[-1] in _SECRET_WORDS or "password" in lowered or "secret" in lowered


def safe_value(value: Any, depth: int = 0) -> Any:
    """A JSON-friendly, bounded, secret-free rendering of one field value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # str() of a huge int is refused (or quadratic): show its size
        return value if abs(value) < 1 << 63 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping | list | tuple | set | frozenset) and depth >= MAX_DEPTH:
        return f"<{type(value).__name__} of {len(value)}>"
    if isinstance(value, Mapping):
        return {clip(str(k), 100): (MASK if is_secret_field(str(k)) else safe_value(v, depth + 1))
                for k, v in itertools.islice(value.items(), MAX_ITEMS)}
    if isinstance(value, list | tuple | set | frozenset):
        return [safe_value(v, depth + 1) for v in itertools.islice(value, MAX_ITEMS)]
    return clip(str(value))


# ------------------------------------------------------------------ the processor chain

_STANDARD = ("timestamp", "level", "logger", "message")
# Not caller fields: ours, or what another handler's formatter caches on a shared record.
_NOT_FIELDS = frozenset({"event", "exception", "stack_info", "exc_info", "message", "asctime"})


def _bounded(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The final event: standard keys first, every value masked and bounded; a field whose
    name clashes with a standard key gets a trailing ``_``; internal ``_`` keys dropped."""
    record: logging.LogRecord = event["_record"]
    out: dict[str, Any] = {
        "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": clip(str(event.get("event", ""))),
    }
    exception, stack = event.get("exception"), event.get("stack_info")
    for key, value in event.items():
        if key in _NOT_FIELDS or key.startswith("_"):
            continue
        out[key + "_" if key in _STANDARD else key] = MASK if is_secret_field(key) else safe_value(value)
    if exception:
        out["exception"] = clip(str(exception), MAX_EXCEPTION_CHARS)
    if isinstance(stack, str):
        out["stack"] = clip(stack, MAX_EXCEPTION_CHARS)
    out["_record"] = record  # for the text renderer's local time; dropped before output
    return out


def _render_text(_logger: WrappedLogger, _method: str, event: EventDict) -> str:
    """``2026-01-02 10:00:00,123 INFO    doorkeeper.hub: message key=value`` (+ traceback)."""
    record: logging.LogRecord = event.pop("_record")
    when = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S") + f",{int(record.msecs):03d}"
    del event["timestamp"]
    line = f"{when} {event.pop('level').upper():<7} {event.pop('logger')}: {event.pop('message')}"
    trailer = [event.pop(k) for k in ("exception", "stack") if k in event]
    if event:
        line += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in event.items())
    return "\n".join([line, *trailer])


def _drop_record(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    del event["_record"]
    return event


def formatter(format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter for ``text`` or ``json`` lines (records from logging and from structlog)."""
    renderers: list[Processor] = [_render_text]
    if format == "json":
        renderers = [_drop_record, structlog.processors.JSONRenderer(ensure_ascii=False)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
        processors=[structlog.processors.format_exc_info, _bounded, *renderers],
    )


def setup_logging(format: str = "auto", level: str | int = "info", *,
                  stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (default stderr) as text or JSON; returns the handler.

    ``format`` is text, json or auto (text when ``stream`` is a terminal, else JSON). Idempotent:
    a handler installed by an earlier call is replaced, other handlers (e.g. pytest's) are left
    alone. ``level`` is a name (debug/info/warning/error) or a number. Chatty libraries
    (apscheduler's per-run lines) are held at WARNING. structlog loggers are routed through the
    same handler. Raises ValueError for an unknown format or level.
    """
    if format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {format!r}")
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"log level must be debug, info, warning or error, got {level!r}")
        level = numeric
    out = stream if stream is not None else sys.stderr
    if format == "auto":
        format = "text" if out.isatty() else "json"
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(format))
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler
