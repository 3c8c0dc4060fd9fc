"""Log lines: text or JSON, no secrets, and bounded whatever a caller passes (issue 9 item 6)."""

from __future__ import annotations

import io
import json
import logging
import re
import re._constants as sre_constants  # the parser re itself uses
import re._parser as sre_parse
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from doorkeeper.runtime import logs
from doorkeeper.runtime.logs import MASK, MAX_EXCEPTION_CHARS, MAX_FIELD_CHARS, clip, redact, setup_logging

MB = 1024 * 1024


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield stream
    for handler in [h for h in root.handlers if getattr(h, "_doorkeeper_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ------------------------------------------------------------------ formats


def test_json_lines_parse_and_carry_extra_fields(log_stream: io.StringIO) -> None:
    setup_logging("json", "debug", stream=log_stream)
    logging.getLogger("doorkeeper.agent").info("decided %s", "granted", extra={"door": "front", "version": 7})
    logging.getLogger("doorkeeper.agent").debug("details")
    records = [json.loads(line) for line in lines(log_stream)]
    assert len(records) == 2
    first = records[0]
    assert first["message"] == "decided granted" and first["level"] == "info"
    assert first["logger"] == "doorkeeper.agent"
    assert first["door"] == "front" and first["version"] == 7
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])
    assert list(first)[:4] == ["timestamp", "level", "logger", "message"]


def test_json_exception_and_clashing_fields(log_stream: io.StringIO) -> None:
    setup_logging("json", stream=log_stream)
    try:
        raise RuntimeError("broken")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"level_hint": 1, "timestamp": "mine"})
    record = json.loads(log_stream.getvalue())
    assert "RuntimeError: broken" in record["exception"]
    assert record["level"] == "error" and record["level_hint"] == 1
    assert record["timestamp_"] == "mine" and record["timestamp"] != "mine"


def test_text_format_is_one_readable_line_with_extras(log_stream: io.StringIO) -> None:
    setup_logging("text", "info", stream=log_stream)
    logging.getLogger("doorkeeper.hub").info("hub listening", extra={"port": 50051, "token": "t"})
    logging.getLogger("doorkeeper.hub").debug("not shown at info")
    [line] = lines(log_stream)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    doorkeeper\.hub: hub listening ", line)
    assert "port=50051" in line and 'token="[redacted]"' in line


def test_auto_is_text_on_a_terminal_and_json_otherwise(log_stream: io.StringIO) -> None:
    terminal = Terminal()
    setup_logging("auto", stream=terminal)
    logging.getLogger("doorkeeper.agent").info("on a terminal")
    assert " INFO    doorkeeper.agent: on a terminal" in terminal.getvalue()
    setup_logging("auto", stream=log_stream)
    logging.getLogger("doorkeeper.agent").info("to a collector")
    assert json.loads(log_stream.getvalue())["message"] == "to a collector"


def test_structlog_loggers_go_through_the_same_chain(log_stream: io.StringIO) -> None:
    setup_logging("json", stream=log_stream)
    structlog.get_logger("doorkeeper.hub.service").info("site added", site="north", device_token="tok-1")
    record = json.loads(log_stream.getvalue())
    assert record["logger"] == "doorkeeper.hub.service" and record["message"] == "site added"
    assert record["site"] == "north" and record["device_token"] == MASK


def test_setup_logging_replaces_only_its_own_handler(log_stream: io.StringIO) -> None:
    root = logging.getLogger()
    before = [h for h in root.handlers if not getattr(h, "_doorkeeper_handler", False)]
    setup_logging("text", stream=log_stream)
    setup_logging("json", stream=log_stream)
    ours = [h for h in root.handlers if getattr(h, "_doorkeeper_handler", False)]
    assert len(ours) == 1
    logging.getLogger("x").warning("once")
    assert json.loads(log_stream.getvalue())["message"] == "once"  # one line, from the json handler
    assert [h for h in root.handlers if not getattr(h, "_doorkeeper_handler", False)] == before
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml")
    with pytest.raises(ValueError, match="log level"):
        setup_logging("text", "loud")


# ------------------------------------------------------------------ secrets


SECRETS = ("hunter2", "c2VjcmV0a2V5", "tok-123", "4711", "0xDEAD", "0.123456", "s3cret", "pa55")


def _log_secrets() -> None:
    try:
        raise ValueError("cannot reach rtsp://cam:pa55@10.0.0.7/live")
    except ValueError:
        logging.getLogger("x").warning(
            "camera rtsp://admin:hunter2@10.0.0.5/stream lost",
            exc_info=True,
            extra={"data_key": "c2VjcmV0a2V5", "device_token": "tok-123", "pin": "4711", "card": "0xDEAD",
                   "template": [0.123456, 0.2], "sealed": b"\x00" * 32, "key_id": "ab12",
                   "password_hint": "x", "source": "http://u:s3cret@cam/", "door": {"pin": "4711"}})


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_a_log_line(log_stream: io.StringIO, fmt: str) -> None:
    setup_logging(fmt, stream=log_stream)
    _log_secrets()
    text = log_stream.getvalue()
    for secret in SECRETS:
        assert secret not in text, (secret, text)
    assert "rtsp://***@10.0.0.5/stream" in text and "rtsp://***@10.0.0.7/live" in text
    if fmt == "json":
        record = json.loads(text)
        assert record["key_id"] == "ab12"  # a public key id is not a secret
        assert record["sealed"] == "<32 bytes>" and record["source"] == "http://***@cam/"
        assert record["data_key"] == MASK and record["password_hint"] == MASK
        assert record["door"] == {"pin": MASK}
    else:
        assert 'key_id="ab12"' in text and 'sealed="<32 bytes>"' in text


def test_redact_masks_url_user_info_only() -> None:
    assert redact("rtsp://admin:hunter2@cam/stream and http://h/x@y") == "rtsp://***@cam/stream and http://h/x@y"
    assert redact("a://u@b c://d@e") == "a://***@b c://***@e"
    assert redact("plain text, no url; mail me@example.com") == "plain text, no url; mail me@example.com"
    assert redact("http://host:8080/path") == "http://host:8080/path"
    assert redact("http://user:pa55") == "http://user:pa55"  # no @: not user-info
    assert redact("http://user:pa55", cut=True) == "http://***"  # its @ may have been cut off


def test_a_url_cut_inside_its_user_info_stays_masked(log_stream: io.StringIO) -> None:
    setup_logging("json", stream=log_stream)
    message = "x" * (MAX_FIELD_CHARS - 12) + " rtsp://admin:hunter2@cam/stream"
    logging.getLogger("x").warning(message, extra={"source": message})
    record = json.loads(log_stream.getvalue())
    for value in (record["message"], record["source"]):
        assert "admin" not in value and "hunt" not in value and value.endswith("more characters cut]")


# ------------------------------------------------------------------ hostile sizes


def test_a_1mb_message_field_and_exception_are_cut_with_a_marker(log_stream: io.StringIO) -> None:
    setup_logging("json", stream=log_stream)
    hostile = "n" * MB
    try:
        raise ValueError(f"no site named {hostile}")
    except ValueError:
        logging.getLogger("doorkeeper.hub.service").exception(
            "refused site %s", hostile, extra={"site": hostile, "names": [hostile] * 1000})
    text = log_stream.getvalue()
    assert len(text) < MAX_EXCEPTION_CHARS + 60 * MAX_FIELD_CHARS
    record = json.loads(text)
    cut = len("refused site ") + MB - MAX_FIELD_CHARS
    assert record["message"] == ("refused site " + "n" * (MAX_FIELD_CHARS - 13)
                                 + f"...[{cut} more characters cut]")
    assert record["site"] == "n" * MAX_FIELD_CHARS + f"...[{MB - MAX_FIELD_CHARS} more characters cut]"
    assert len(record["names"]) == logs.MAX_ITEMS
    assert len(record["exception"]) < MAX_EXCEPTION_CHARS + 50
    assert record["exception"].startswith("Traceback")
    assert record["exception"].endswith("more characters cut]")


def test_hostile_structures_are_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(10_000):
        deep = [deep]
    assert logs.safe_value(deep) == [[[["<list of 1>"]]]]
    assert logs.safe_value(10**5000) == "<16610-bit integer>"
    assert len(logs.safe_value({str(i): i for i in range(10_000)})) == logs.MAX_ITEMS
    assert logs.safe_value(float("nan")) == "nan"


def test_masking_reads_a_bounded_prefix_of_any_input(log_stream: io.StringIO,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the size of a message, a field or an exception, the masking step is only ever
    given a bounded slice of it (the hub once masked a whole 1 MB site name, for minutes)."""
    seen: list[int] = []
    real = logs.redact

    def spy(text: str, *, cut: bool = False) -> str:
        seen.append(len(text))
        return real(text, cut=cut)

    monkeypatch.setattr(logs, "redact", spy)
    hostile = "a" * MB
    for fmt in ("json", "text"):
        setup_logging(fmt, stream=log_stream)
        try:
            raise ValueError(hostile)
        except ValueError:
            logging.getLogger("x").exception("site %s", hostile,
                                             extra={"site": hostile, "nested": {"n": hostile}})
    assert seen and max(seen) <= MAX_EXCEPTION_CHARS
    assert sorted(seen)[-3] <= MAX_FIELD_CHARS  # message and fields; only tracebacks get the larger cap


def _repeats(pattern: str) -> list[Any]:
    """The repetition operators (``*``, ``+``, ``{m,n}``) anywhere in ``pattern``."""
    found: list[Any] = []

    def walk(items: Any) -> None:
        for op, arg in items:
            if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
                found.append((op, arg[:2]))
                walk(arg[2])
            elif op in (sre_constants.SUBPATTERN,):
                walk(arg[-1])
            elif op == sre_constants.BRANCH:
                for branch in arg[1]:
                    walk(branch)

    walk(sre_parse.parse(pattern))
    return found


def test_masking_uses_no_regex_that_can_backtrack() -> None:
    """Masking is linear by construction: no pattern in the log module repeats anything, so the
    regex engine tests each position once. The pattern that froze the hub repeated twice and
    is caught by the same check."""
    old = r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@"
    assert len(_repeats(old)) == 2
    patterns = [v for v in vars(logs).values() if isinstance(v, re.Pattern)]
    assert patterns, "the check must see the module's patterns"
    for compiled in patterns:
        assert _repeats(compiled.pattern) == [], compiled.pattern


class CountingText(str):
    """A string that counts the characters ``find`` scans."""

    scanned = 0

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        at = str.find(self, sub, start or 0)
        CountingText.scanned += (len(self) if at < 0 else at + len(sub)) - (start or 0)
        return at


class CountingPattern:
    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.scanned = pattern, 0

    def search(self, text: str, pos: int = 0) -> re.Match[str] | None:
        match = self.pattern.search(text, pos)
        self.scanned += (match.end() if match else len(text)) - pos
        return match


@pytest.mark.parametrize("hostile", [
    "a" * 200_000, "a://" * 50_000, "://@" * 50_000, ":" * 200_000, "a:/" * 70_000,
    "a://" + "b" * 200_000, "a://b@" * 40_000, "x://y " * 40_000, "http://" + "u:p" * 70_000 + "@h",
])
def test_redact_reads_each_character_at_most_twice(hostile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingPattern(logs._USERINFO_END)
    monkeypatch.setattr(logs, "_USERINFO_END", counting)
    CountingText.scanned = 0
    for cut in (False, True):
        redact(CountingText(hostile), cut=cut)
    assert CountingText.scanned + counting.scanned <= 2 * (2 * len(hostile) + 8)


def test_clip_marks_what_it_cut() -> None:
    assert clip("short") == "short"
    assert clip("abcdef", 4) == "abcd...[2 more characters cut]"


def test_bench_logmask_reports_each_shape_and_a_bounded_line(log_stream: io.StringIO) -> None:
    from click.testing import CliRunner

    from doorkeeper.tools.bench.logmask import logmask

    result = CliRunner().invoke(logmask, ["--json", "--size", "100000", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    for shape in ("letters", "schemes", "userinfo"):
        assert figures[f"redact_{shape}_100000_ms"] >= 0 and figures[f"log_call_{shape}_100000_ms"] >= 0
    assert figures["log_line_bytes_100000"] < MAX_EXCEPTION_CHARS + 2 * MAX_FIELD_CHARS + 1000


def test_a_record_another_handler_formatted_first_is_not_echoed_twice(log_stream: io.StringIO) -> None:
    setup_logging("json", stream=log_stream)
    other = logging.StreamHandler(io.StringIO())
    other.setFormatter(logging.Formatter("%(asctime)s %(message)s"))  # caches message/asctime on the record
    logger = logging.getLogger("doorkeeper.test.other")
    logger.addHandler(other)
    try:
        logger.warning("site %s", "n" * 100_000)
    finally:
        logger.removeHandler(other)
    record = json.loads(log_stream.getvalue())
    assert "message_" not in record and "asctime" not in record
    assert len(log_stream.getvalue()) < 2 * MAX_FIELD_CHARS
