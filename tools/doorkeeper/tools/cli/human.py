"""What operators type and read: times as dates, enums as words, tables with rich.

Time flags accept ISO 8601 dates and times (`2026-12-31`, `2026-12-31T18:00`,
`2026-12-31T18:00+08:00`) as well as unix seconds; a date or time without an offset is
read in this machine's local time zone. Tables show local times and plain words; `--json`
keeps the machine values (unix seconds, ids, enum names).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.table import Table

_UNIX = re.compile(r"\d{1,12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_when(text: str, *, end_of_day: bool = False) -> int:
    """Unix seconds for `text` (unix seconds or ISO 8601). Raises ValueError with the allowed forms.

    With `end_of_day`, a bare date means the end of that day (the next local midnight): a
    person "valid until 2026-12-31" may still enter on the 31st."""
    text = text.strip()
    if _UNIX.fullmatch(text):
        return int(text)
    try:
        if _DATE.fullmatch(text):
            day = dt.date.fromisoformat(text)
            if end_of_day:
                day += dt.timedelta(days=1)
            return int(dt.datetime(day.year, day.month, day.day).astimezone().timestamp())
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time: use 2026-12-31, 2026-12-31T18:00, "
                         "2026-12-31T18:00+08:00 or unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # this machine's local time
    return int(moment.timestamp())


class When(click.ParamType):
    """A time flag: ISO 8601 or unix seconds, as unix seconds. `future` refuses the past."""

    name = "when"

    def __init__(self, *, future: bool = False, end_of_day: bool = False) -> None:
        self.future = future
        self.end_of_day = end_of_day

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            seconds = value
        else:
            try:
                seconds = parse_when(str(value), end_of_day=self.end_of_day)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if self.future and seconds and seconds <= time.time():
            self.fail(f"{value} ({local_time(seconds)}) is in the past; give a later date or time",
                      param, ctx)
        return seconds

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DATE|TIME|UNIX"


def local_time(seconds: float | int | None, tz: dt.tzinfo | None = None) -> str:
    """`2026-12-31 18:00 +08:00` in `tz` (default: this machine's zone); `-` for none (0)."""
    if not seconds:
        return "-"
    moment = dt.datetime.fromtimestamp(seconds, tz or dt.datetime.now().astimezone().tzinfo)
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}"


def ago(seconds: float | int | None, now: float | None = None) -> str:
    """`12 s ago`, `5 min ago`, `3 h ago`, `2 days ago`; `never` for none (0)."""
    if not seconds:
        return "never"
    delta = int((now if now is not None else time.time()) - seconds)
    future = delta < 0
    delta = abs(delta)
    if delta < 120:
        text = f"{delta} s"
    elif delta < 7200:
        text = f"{delta // 60} min"
    elif delta < 2 * 86400:
        text = f"{delta // 3600} h"
    else:
        text = f"{delta // 86400} days"
    return f"in {text}" if future else f"{text} ago"


def seen(seconds: float | int | None) -> str:
    """A last-seen cell: local time and how long ago."""
    return "never" if not seconds else f"{local_time(seconds)} ({ago(seconds)})"


def site_zone(utc_offset_minutes: int) -> dt.tzinfo:
    return dt.timezone(dt.timedelta(minutes=utc_offset_minutes))


def words(enum_name: str, prefix: str = "") -> str:
    """`STALE_POLICY_KEEP_WORKING` -> `keep working` (with prefix `STALE_POLICY_`)."""
    name = enum_name.removeprefix(prefix) if prefix else enum_name
    return name.lower().replace("_", " ")


def duration(seconds: int) -> str:
    """`7 days`, `3 h`, `90 s`: a length of time in the largest whole unit."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> Table:
    """A rich table of plain strings (no markup interpretation of hostile text)."""
    out = Table(*columns, title=title)
    for row in rows:
        out.add_row(*(_cell(v) for v in row))
    return out


def _cell(value: object) -> Any:
    from rich.text import Text

    return Text("-" if value is None or value == "" else str(value))
