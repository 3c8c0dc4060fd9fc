"""Automatic-stop rules of a staged rollout: parsed strictly, evaluated on figures, no I/O.

A rule string is comma separated: ``refusal_rate>0.2,digest_mismatch>0,refused_bundle>0,
offline>2,min_attempts=50``. Anything else (an unknown name, another operator, a number that
does not parse or is out of range, a rule twice) is refused with `InvalidRequest` naming the
part, so a typo never starts a rollout that would not stop.

`refusal_rate` compares the stage doors' face refusals among face attempts
(`doorkeeper.hub.decisions.face_attempts`) since the stage began with the same doors' rate
over an equal window before it, and trips only when the stage window holds at least
`min_attempts` attempts (default 20), so one refusal at a quiet door cannot abort a rollout.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from doorkeeper.hub.decisions import face_attempts
from doorkeeper.hub.whitelist import InvalidRequest
from doorkeeper.v1 import doorkeeper_pb2 as pb

DEFAULT_MIN_ATTEMPTS = 20
MAX_COUNT = 1_000_000
_PART = re.compile(r"([a-z_]{1,32})\s*([>=])\s*([0-9.]{1,16})")
_COUNT_RULES = ("digest_mismatch", "refused_bundle", "offline")
HOUR = 3600


@dataclass(frozen=True)
class Rules:
    refusal_rate: float | None = None
    digest_mismatch: int | None = None
    refused_bundle: int | None = None
    offline: int | None = None
    min_attempts: int = DEFAULT_MIN_ATTEMPTS

    @property
    def empty(self) -> bool:
        return all(getattr(self, n) is None for n in ("refusal_rate", *_COUNT_RULES))


def parse_rules(text: str) -> Rules:
    """The rules of `text` ("" = none). Raises InvalidRequest on anything it does not know."""
    values: dict[str, float | int] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part and not text.strip():
            continue
        m = _PART.fullmatch(part)
        if m is None:
            raise InvalidRequest(f"auto-stop rule {part[:40]!r}: expected NAME>NUMBER (refusal_rate>0.2, "
                                 "digest_mismatch>0, refused_bundle>0, offline>N) or min_attempts=N")
        name, op, number = m.groups()
        if name in values:
            raise InvalidRequest(f"auto-stop rule {name} given twice")
        if name == "min_attempts":
            if op != "=":
                raise InvalidRequest("auto-stop: min_attempts takes '=', e.g. min_attempts=50")
            values[name] = _count(name, number, low=1)
        elif name == "refusal_rate":
            if op != ">":
                raise InvalidRequest("auto-stop: refusal_rate takes '>', e.g. refusal_rate>0.2")
            try:
                rate = float(number)
            except ValueError:
                raise InvalidRequest(f"auto-stop: refusal_rate {number!r} is not a number") from None
            if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
                raise InvalidRequest("auto-stop: refusal_rate must be at least 0 and below 1")
            values[name] = rate
        elif name in _COUNT_RULES:
            if op != ">":
                raise InvalidRequest(f"auto-stop: {name} takes '>', e.g. {name}>0")
            values[name] = _count(name, number, low=0)
        else:
            raise InvalidRequest(f"unknown auto-stop rule {name!r} (known: refusal_rate, digest_mismatch, "
                                 "refused_bundle, offline, min_attempts)")
    rules = Rules(**values)  # type: ignore[arg-type]
    if "min_attempts" in values and rules.refusal_rate is None:
        raise InvalidRequest("auto-stop: min_attempts only applies to a refusal_rate rule")
    return rules


def _decimal(x: float) -> str:
    """A rate as `parse_rules` reads it back (no exponent)."""
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def _count(name: str, number: str, low: int) -> int:
    if not number.isdigit():
        raise InvalidRequest(f"auto-stop: {name} needs a whole number, got {number!r}")
    value = int(number)
    if not low <= value <= MAX_COUNT:
        raise InvalidRequest(f"auto-stop: {name} must be {low} to {MAX_COUNT}")
    return value


def render(rules: Rules) -> str:
    """The canonical text of `rules` (what the rollout stores and shows)."""
    parts = []
    if rules.refusal_rate is not None:
        parts.append(f"refusal_rate>{_decimal(rules.refusal_rate)}")
        if rules.min_attempts != DEFAULT_MIN_ATTEMPTS:
            parts.append(f"min_attempts={rules.min_attempts}")
    parts += [f"{n}>{getattr(rules, n)}" for n in _COUNT_RULES if getattr(rules, n) is not None]
    return ",".join(parts)


# ---------------------------------------------------------------- decision counts

def windows(stage_started_at: int, now: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """([since, until) of the stage window, [since, until) of the baseline just before it).

    Counts come per whole hour, so the stage window is the hours from the one the stage
    began in up to the current one, and the baseline as many hours before it (at least one)."""
    first = stage_started_at - stage_started_at % HOUR
    until = now - now % HOUR + HOUR
    span = max(HOUR, until - first)
    return (first, until), (first - span, first)


@dataclass(frozen=True)
class Figures:
    """What the rules are evaluated on: stage doors only."""

    stage: pb.DecisionTotals
    baseline: pb.DecisionTotals
    digest_mismatch: int
    refused_bundle: int
    offline: int


def _rate(t: pb.DecisionTotals) -> tuple[int, float]:
    refused, attempts = face_attempts(t)
    return attempts, (refused / attempts if attempts else 0.0)


def tripped(rules: Rules, f: Figures) -> str | None:
    """The first rule that trips, with its figures (RolloutStatus.stop_reason); None if none."""
    if rules.refusal_rate is not None:
        attempts, rate = _rate(f.stage)
        base_attempts, base_rate = _rate(f.baseline)
        if attempts >= rules.min_attempts and rate - base_rate > rules.refusal_rate:
            return (f"refusal_rate>{rules.refusal_rate:g}: stage doors refused {rate:.3f} of {attempts} face "
                    f"attempts since the stage began, {base_rate:.3f} of {base_attempts} before "
                    f"(+{rate - base_rate:.3f})")
    for name in _COUNT_RULES:
        limit = getattr(rules, name)
        value = getattr(f, name)
        if limit is not None and value > limit:
            what = {"digest_mismatch": "reported a digest other than the hub's for their version",
                    "refused_bundle": "refused a bundle of this rollout",
                    "offline": "are offline"}[name]
            return f"{name}>{limit}: {value} stage door(s) {what}"
    return None
