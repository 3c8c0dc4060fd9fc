"""The door's watch stream: the hub wakes the door when its site moves (see `follow`).

Push is an optimisation over polling: a beacon on the stream wakes the sync loop, which
then fetches; a small delta comes on the stream itself (`WatchRequest.inline_bundle_bytes`)
and the loop applies it without a Fetch. The stream is reopened with a new nonce every
`Syncer.nonce_renewal_s()` and after any failure, with `ReconnectBackoff`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from doorkeeper.agent.sync.hubclient import SYNC, describe
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.limits import LIMITS

if TYPE_CHECKING:
    from doorkeeper.agent.sync.syncer import Syncer

log = logging.getLogger("doorkeeper.agent.sync.syncer")
WATCH_TIMEOUT_S = 3600.0
# Deltas up to this many chunk bytes come on the watch stream itself (a one-person change is
# about 2 KB; larger ones are fetched, resumably).
INLINE_BUNDLE_BYTES = LIMITS.max_inline_bundle_bytes


def follow(syncer: Syncer, stop: threading.Event, on_version: Callable[[int], None]) -> None:
    """Follow the hub's watch stream until `stop`; calls `on_version` when the site moves.

    Reconnects with capped exponential backoff and jitter (`ReconnectBackoff`); never raises.

    Freshness on a long-lived stream: every beacon on a stream echoes the nonce the
    door opened it with, and proves only that the hub was alive since the door chose
    that nonce. So the door renews its nonce by reopening the stream every
    `Syncer.nonce_renewal_s()` (a third of the site's offline validity, at most 5 minutes):
    on a healthy link the hub's last proof is never much older than that, and beacons
    recorded on an earlier stream prove nothing once it is replaced. We chose
    reconnecting over a per-beacon challenge on the stream because that needs a
    bidirectional stream, which the signed-call interceptor does not take and every
    proxy in front of the hub would have to pass; a renewal costs one signed call per
    period (signed with the call nonce of the last beacon, `WatchRequest.call_nonces`;
    a Challenge only when that is missing, older than 60 s or refused), and the new
    stream's first beacon comes at once.

    The hub also ends every stream by itself, with OK, after a jittered maximum age
    (`watch_max_age_s`): the loop then reopens it from the version the door holds after
    the backoff's first, jittered step (under half a second), so doors spread over
    replicas.
    """
    backoff = ReconnectBackoff()
    current: list[Any] = []

    def cancel_on_stop() -> None:
        stop.wait()
        for call in current:
            call.cancel()

    threading.Thread(target=cancel_on_stop, name="doorkeeper-watch-stop", daemon=True).start()
    while not stop.is_set():
        nonce = syncer.freshness.new_nonce()
        renewing, ended = threading.Event(), threading.Event()
        try:
            stream = syncer.client.stream(
                SYNC + "Watch", pb.WatchRequest(current_version=syncer.whitelist.version, nonce=nonce,
                                                call_nonces=True, inline_bundle_bytes=INLINE_BUNDLE_BYTES),
                WATCH_TIMEOUT_S,
            )
            current[:] = [stream]
            if stop.is_set():
                return
            threading.Thread(target=_renew_when_due, args=(syncer.nonce_renewal_s, stream, renewing, ended),
                             name="doorkeeper-watch-renew", daemon=True).start()
            for event in stream:
                syncer.client.offer_nonce(event.call_nonce)  # for the fetch this beacon may start
                beacon, _verdict = syncer.observe_beacon(event.beacon)
                backoff.healthy()
                if event.HasField("header") and \
                        sum(len(c.data) for c in event.chunks) <= INLINE_BUNDLE_BYTES:
                    syncer.offer_pushed(event.header, event.chunks)  # the pass applies it, no Fetch
                if beacon is None:
                    on_version(-1)  # unverifiable (e.g. the hub rotated its key): fetch follows the chain
                elif beacon.version != syncer.holding_version:
                    on_version(beacon.version)  # the version of a held bundle is no news
        except grpc.RpcError as exc:
            if stop.is_set():
                return
            if renewing.is_set():
                continue  # our own renewal: reopen at once with a new nonce
            delay = backoff.next()
            log.info("watch stream ended (%s); reconnecting in %.1fs", describe(exc), delay)
        else:
            delay = backoff.next()
        finally:
            ended.set()
            syncer.freshness.retire(nonce)
        if stop.wait(delay):
            return


def _renew_when_due(renewal_s: Callable[[], float], stream: Any, renewing: threading.Event,
                    ended: threading.Event) -> None:
    """Cancel `stream` once it is `renewal_s()` old (re-read: a sync may change it)."""
    opened = time.monotonic()
    while True:
        remaining = renewal_s() - (time.monotonic() - opened)
        if remaining <= 0:
            renewing.set()
            stream.cancel()
            return
        if ended.wait(min(remaining, 1.0)):
            return


class ReconnectBackoff:
    """How long to wait before reconnecting a dropped watch stream.

    Exponential from ``base_s`` with full jitter: uniform between zero and the step, so a
    fleet that lost its hub together does not come back together. The step is capped at
    ``healthy_cap_s`` for the first ``outage_s`` seconds after the link was last healthy and
    at ``outage_cap_s`` after that. Two goals pull apart here: a door should find a restored
    link soon (the old 30 s cap made it wait up to 30 s), and 10,000 doors of one hub that
    restarts should not all come back in the same second. With 10 s / 15 s caps, a hub back
    after a 20 s outage sees at most about 1,900 reconnects a second, all within 10 s, and
    after a long outage about 1,300 a second, all within 15 s (with jitter over only the upper
    half of a 2 s cap, as once, every door was back within one second: 10,000 a second).
    `tests/test_watch_rebalance.py` computes it.
    """

    def __init__(self, base_s: float = 0.5, healthy_cap_s: float = 10.0, outage_cap_s: float = 15.0,
                 outage_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] | None = None) -> None:
        self.base_s = base_s
        self.healthy_cap_s = healthy_cap_s
        self.outage_cap_s = outage_cap_s
        self.outage_s = outage_s
        self.clock = clock
        self.jitter = jitter or _jitter
        self._failures = 0
        self._healthy_at = clock()

    def healthy(self) -> None:
        """The link carried an event: start over from the base delay."""
        self._failures = 0
        self._healthy_at = self.clock()

    def next(self) -> float:
        """The wait before the next attempt (and count this failure)."""
        in_outage = self.clock() - self._healthy_at > self.outage_s
        cap = self.outage_cap_s if in_outage else self.healthy_cap_s
        step = min(cap, self.base_s * 2 ** min(self._failures, 32))
        self._failures += 1
        return step * self.jitter()


def _jitter() -> float:
    return int.from_bytes(os.urandom(2), "big") / 65535
