"""The auto-stop rules on their own: strict parsing, canonical text, and when each trips
(no hub, no I/O: the figures are given)."""

from __future__ import annotations

import pytest

from doorkeeper.hub.rollout_rules import Figures, Rules, parse_rules, render, tripped, windows
from doorkeeper.hub.whitelist import InvalidRequest
from doorkeeper.v1 import doorkeeper_pb2 as pb


def figures(stage: pb.DecisionTotals | None = None, base: pb.DecisionTotals | None = None,
            mismatch: int = 0, refused: int = 0, offline: int = 0) -> Figures:
    return Figures(stage or pb.DecisionTotals(), base or pb.DecisionTotals(), mismatch, refused, offline)


def test_parse_and_render_round_trip() -> None:
    rules = parse_rules(" refusal_rate>0.25 , min_attempts=50,digest_mismatch>0,offline>3 ")
    assert rules == Rules(refusal_rate=0.25, digest_mismatch=0, offline=3, min_attempts=50)
    assert render(rules) == "refusal_rate>0.25,min_attempts=50,digest_mismatch>0,offline>3"
    assert parse_rules(render(rules)) == rules
    assert parse_rules("") == Rules() and parse_rules("").empty
    assert render(parse_rules("refusal_rate>0.0000001")) == "refusal_rate>0"


@pytest.mark.parametrize("text", ["refusal_rate>1", "refusal_rate>=0.2", "offline>1.5", "offline=1",
                                  "min_attempts=0", ",", "refused_bundle>99999999", "REFUSAL_RATE>0.1"])
def test_bad_rules_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_rules(text)


def test_refusal_rate_needs_enough_attempts_and_compares_with_before() -> None:
    rules = parse_rules("refusal_rate>0.2")  # min_attempts 20
    one = pb.DecisionTotals(refused_unknown_face=1)
    assert tripped(rules, figures(one)) is None  # one refusal at a quiet door: 100 %, 1 attempt
    nineteen = pb.DecisionTotals(granted_face=9, refused_unknown_face=10)
    assert tripped(rules, figures(nineteen)) is None
    twenty = pb.DecisionTotals(granted_face=10, refused_unknown_face=10)
    assert tripped(rules, figures(twenty)).startswith("refusal_rate>0.2: stage doors refused 0.500 of 20")  # type: ignore[union-attr]
    # The same doors refused 40 % before the stage: +10 points is under the rule.
    before = pb.DecisionTotals(granted_face=60, refused_expired=40)
    assert tripped(rules, figures(twenty, before)) is None
    # Card refusals and grants are not face attempts.
    cards = pb.DecisionTotals(granted_face=10, refused_unknown_face=2, refused_credential=50, granted_card=9)
    assert tripped(rules, figures(cards)) is None


def test_count_rules_trip_above_their_limit() -> None:
    rules = parse_rules("digest_mismatch>0,refused_bundle>1,offline>2")
    assert tripped(rules, figures(refused=1, offline=2)) is None
    assert tripped(rules, figures(mismatch=1)) == \
        "digest_mismatch>0: 1 stage door(s) reported a digest other than the hub's for their version"
    assert tripped(rules, figures(refused=2)).startswith("refused_bundle>1: 2 stage door(s)")  # type: ignore[union-attr]
    assert tripped(rules, figures(offline=3)).startswith("offline>2: 3 stage door(s) are offline")  # type: ignore[union-attr]
    assert tripped(Rules(), figures(mismatch=5, refused=5, offline=5)) is None  # no rules: never


def test_windows_are_whole_hours_of_equal_length() -> None:
    start = 10 * 3600 + 1800  # half past ten
    assert windows(start, start + 60) == ((36000, 39600), (32400, 36000))
    assert windows(start, start + 2 * 3600) == ((36000, 46800), (25200, 36000))
