"""`doorkeeper bench logmask`: what masking and logging cost on hostile input sizes.

Times :func:`~doorkeeper.runtime.logs.redact` on inputs shaped to hurt a backtracking
pattern (one long run of scheme letters; ``a://`` repeated), and one whole log call (JSON
formatter, the input as the message argument, an ``extra`` field and an exception message),
for each size. The log call should stay flat as the input grows: values are cut first.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable

import click

from doorkeeper.runtime.logs import redact, setup_logging
from doorkeeper.tools.bench.kit import emit

SHAPES: dict[str, Callable[[int], str]] = {  # log_line_bytes is measured on the last one
    "schemes": lambda n: ("a://" * (n // 4 + 1))[:n],
    "userinfo": lambda n: "rtsp://" + "u" * (n - 7),  # no @, no /: one long scan
    "letters": lambda n: "a" * n,  # the old pattern's worst case: a scheme that never ends
}


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(sizes: list[int], repeat: int) -> dict[str, object]:
    out: dict[str, object] = {}
    stream = io.StringIO()
    handler = setup_logging("json", stream=stream)
    log = logging.getLogger("doorkeeper.bench.logmask")

    def log_call(text: str) -> None:
        stream.seek(0)
        stream.truncate()
        try:
            raise ValueError(text)
        except ValueError:
            log.exception("refused site %s", text, extra={"site": text})

    try:
        for size in sizes:
            for shape, make in SHAPES.items():
                text = make(size)
                calls: dict[str, Callable[[str], object]] = {"redact": redact, "log_call": log_call}
                for name, fn in calls.items():
                    seconds = _best_of(functools.partial(fn, text), repeat)
                    out[f"{name}_{shape}_{size}_ms"] = round(seconds * 1e3, 3)
            out[f"log_line_bytes_{size}"] = len(stream.getvalue())
    finally:
        logging.getLogger().removeHandler(handler)
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--size", "sizes", type=int, multiple=True, default=(150_000, 1_048_576), show_default=True,
              help="Input size in characters (repeatable).")
@click.option("--repeat", default=5, show_default=True, help="Runs per figure; the best is shown.")
def logmask(as_json: bool, sizes: tuple[int, ...], repeat: int) -> None:
    """Masking and log-call time on hostile input sizes (redact_*_ms, log_call_*_ms)."""
    emit(run(list(sizes), repeat), as_json, title="doorkeeper bench logmask")
