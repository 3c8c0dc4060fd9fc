"""The agent's sync loop: fetch, stage, verify, apply, acknowledge.

A download is staged on disk chunk by chunk, each chunk checked against the
signed header as it arrives, so memory stays bounded and a cut download
resumes from the last whole chunk. Only when every chunk is in is anything
decrypted and applied, in one transaction (`LocalWhitelist.apply`). A refused
bundle leaves the whitelist as it was; one whose refusal says `resync` makes
the next pass ask for a snapshot.

Time: device clocks can be hours wrong after a power cut, so expiry checks use
the hub's signed beacon time advanced by the monotonic clock when we have one.

Freshness is proven, never assumed (`doorkeeper.agent.sync.freshness`): every
watch, fetch and report carries a nonce the door chose, and only a beacon that
echoes one counts; an answer that should prove freshness and does not (an
`up_to_date` with a replayed beacon) is refused as `Unproven`. A door that a
fresh beacon told of a newer version is *behind*: it says so in its manifest
and keeps fetching until it holds that version.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from doorkeeper.agent.sync import bundle as core
from doorkeeper.agent.sync.freshness import FreshnessTracker, Verdict
from doorkeeper.agent.sync.hubclient import SYNC, HubClient, describe, transient
from doorkeeper.agent.sync.identity import AgentFiles, Identity, write_json_atomic
from doorkeeper.agent.sync.whitelist import LocalWhitelist, StorageError
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import durable, keys

log = logging.getLogger("doorkeeper.agent.sync.syncer")
FETCH_TIMEOUT_S = 600.0
WATCH_TIMEOUT_S = 3600.0
MAX_NONCE_RENEWAL_S = 300.0


@dataclass
class AgentState:
    """Small status file other processes (`agent status`) can read."""

    last_sync_ok: float = 0.0
    last_attempt: float = 0.0
    last_error: str = ""
    hub_reachable: bool = False
    # Hub time when the hub last vouched for our whitelist (at the nonce the proof echoed):
    # after a restart, the best (wall-clock) bound on the age of that proof.
    last_beacon_hub_time: int = 0
    hub_version: int = 0  # the newest version a verified beacon named
    behind: bool = False  # a fresh beacon named a version we do not hold yet
    resync_wanted: bool = False
    refused: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (FileNotFoundError, ValueError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))


@dataclass(frozen=True)
class SyncResult:
    outcome: str  # "up_to_date", "applied", "refused", "unreachable"
    version: int
    detail: str = ""
    behind: bool = False  # the hub has a newer version than `version` (keep fetching)

    @property
    def ok(self) -> bool:
        return self.outcome in ("up_to_date", "applied")


class HubClock:
    """Hub time estimated from the last fresh beacon plus monotonic time since.

    Only beacons proven fresh move it: a replayed one would turn it back and let
    an expired bundle pass."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._anchor: tuple[int, float] | None = None

    def observe(self, hub_time: int) -> None:
        self._anchor = (hub_time, time.monotonic())

    def now(self) -> float:
        if self._anchor is None:
            return self._wall()
        hub_time, mono = self._anchor
        return hub_time + (time.monotonic() - mono)


class Staging:
    """A download in progress: the signed header and the chunks received so far."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.header_path = directory / "header.bin"
        self.payload_path = directory / "payload.part"

    def clear(self) -> None:
        for p in (self.header_path, self.payload_path):
            p.unlink(missing_ok=True)

    def load_header(self) -> pb.SignedBundleHeader | None:
        try:
            return pb.SignedBundleHeader.FromString(self.header_path.read_bytes())
        except (FileNotFoundError, DecodeError):
            return None

    def start(self, signed: pb.SignedBundleHeader, keep_payload: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not keep_payload:
            self.payload_path.unlink(missing_ok=True)
        durable.write_atomic(self.header_path, signed.SerializeToString())

    def complete_chunks(self, vh: core.VerifiedHeader) -> int:
        """How many whole chunks are on disk; truncates a torn last one."""
        try:
            size = self.payload_path.stat().st_size
        except FileNotFoundError:
            return 0
        total, n = 0, 0
        for length in vh.header.chunk_length:
            if total + length > size:
                break
            total += length
            n += 1
        if size != total:
            with open(self.payload_path, "r+b") as f:
                f.truncate(total)
        return n

    def append(self, data: bytes) -> None:
        with open(self.payload_path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def chunks(self, vh: core.VerifiedHeader) -> Iterator[tuple[int, bytes]]:
        with open(self.payload_path, "rb") as f:
            for index, length in enumerate(vh.header.chunk_length):
                yield index, f.read(length)


class Syncer:
    """Keeps one agent's whitelist in step with the hub. Thread-safe (one pass at a time)."""

    def __init__(
        self,
        files: AgentFiles,
        whitelist: LocalWhitelist,
        client: HubClient | None = None,
        on_applied: Callable[[int], None] | None = None,
        status_extra: Callable[[], dict] | None = None,  # type: ignore[type-arg]
        hub_address: str | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        """``hub_address`` and ``tls_ca`` (from the configuration) win over those recorded at
        registration (`Identity.endpoint`)."""
        self.files = files
        self.identity: Identity = files.load_identity()
        self.device_keys = files.device_keys()
        self.trust = files.trust()
        self.whitelist = whitelist
        address, ca = self.identity.endpoint(hub_address, tls_ca)
        self.client = client or HubClient(address, self.identity.device_id, self.device_keys.sign_key, ca)
        self.clock = HubClock()
        self.freshness = FreshnessTracker()
        self.staging = Staging(files.staging)
        self.state = AgentState.load(files.state)
        self.freshness.known_version = self.state.hub_version
        # After a restart the monotonic clock starts over: carry the proof's age by the wall
        # clock (the best we have offline) until the hub vouches again. A wall clock behind
        # the proof (reset by a power cut) says nothing: the age is unknown, never zero.
        self._started_mono = time.monotonic()
        carried = time.time() - self.state.last_beacon_hub_time
        self._carried_age = carried if self.state.last_beacon_hub_time and carried >= 0 else None
        self.on_applied = on_applied
        self.status_extra = status_extra
        self._lock = threading.Lock()
        self._validity_s = self._offline_validity_s()

    def _offline_validity_s(self) -> int:
        config = self.whitelist.site_config()
        return config.offline_validity_s if config is not None else 0

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------ beacons
    def observe_beacon(self, signed: pb.SignedBeacon) -> tuple[pb.Beacon | None, Verdict]:
        """Verify a beacon and record what it proves; (None, REPLAYED) when it does not verify."""
        try:
            beacon = core.verify_beacon(signed, self.trust)
        except core.BadBundle as exc:
            log.error("refused a beacon: %s", exc)
            return None, Verdict.REPLAYED
        before = self.freshness.age_s()
        verdict = self.freshness.observe(beacon, self.whitelist.version, self.whitelist.state_digest)
        if verdict.fresh:
            self.clock.observe(beacon.hub_time)
        if verdict is Verdict.MISMATCH:
            log.warning("a fresh hub beacon names our version %d with another digest: "
                        "next sync fetches a snapshot", beacon.version)
            self.state.resync_wanted = True
        self._freshness_noted(before, beacon.hub_time)
        return beacon, verdict

    def _freshness_noted(self, age_before: float | None, hub_time: int) -> None:
        age = self.freshness.age_s()
        if age is not None and (age_before is None or age < age_before):
            self.state.last_beacon_hub_time = int(hub_time - age)  # hub time at the vouched nonce
        self.state.hub_version = self.freshness.known_version
        self.state.behind = self.freshness.behind(self.whitelist.version)

    def fresh_age_s(self) -> float | None:
        """Seconds since the hub last vouched for our whitelist (monotonic), or None when unknown.

        Before the first proof in this process, the age carried over a restart by the wall
        clock (`AgentState.last_beacon_hub_time`), if any."""
        age = self.freshness.age_s()
        if age is not None:
            return age
        if self._carried_age is None:
            return None
        return self._carried_age + (time.monotonic() - self._started_mono)

    @property
    def behind(self) -> bool:
        return self.freshness.behind(self.whitelist.version)

    def _note(self, ok: bool, error: str = "", reachable: bool = True) -> None:
        now = time.time()
        self.state.last_attempt = now
        self.state.hub_reachable = reachable
        if ok:
            self.state.last_sync_ok = now
            self.state.last_error = ""
        else:
            self.state.last_error = error
        self._save_state()

    def _save_state(self) -> None:
        try:
            self.state.save(self.files.state)
        except OSError as exc:  # a full disk: the state lives on in memory, decisions go on
            log.warning("agent state not saved (%s); kept in memory", exc)

    # ------------------------------------------------------------ one pass
    def sync_once(self) -> SyncResult:
        """Fetch and apply whatever takes us to the hub's version, then report.

        `behind` in the result: a fresh beacon named a newer version than we hold."""
        with self._lock:
            result = self._pass()
            if self.behind:
                log.warning("behind: holding version %d, the hub has %d; fetching again",
                            self.whitelist.version, self.freshness.known_version)
            return replace(result, behind=self.behind)

    def _pass(self) -> SyncResult:
        try:
            result = self._fetch_and_apply()
        except grpc.RpcError as exc:
            self._note(False, describe(exc), reachable=not transient(exc))
            return SyncResult("unreachable" if transient(exc) else "refused", self.whitelist.version,
                              describe(exc))
        except core.BadBundle as exc:
            kind = type(exc).__name__
            self.state.refused[kind] = self.state.refused.get(kind, 0) + 1
            if exc.resync:
                self.state.resync_wanted = True
            log.error("refused bundle (%s): %s; whitelist unchanged at version %d",
                      kind, exc, self.whitelist.version)
            self._note(False, f"{kind}: {exc}")
            return SyncResult("refused", self.whitelist.version, f"{kind}: {exc}")
        except (OSError, StorageError) as exc:  # a full disk: decide on the current whitelist
            log.warning("sync not applied (local storage: %s); whitelist stays at version %d",
                        exc, self.whitelist.version)
            self._note(False, f"local storage: {exc}")
            return SyncResult("refused", self.whitelist.version, f"local storage: {exc}")
        try:
            self._report()
        except grpc.RpcError as exc:
            log.warning("report failed: %s", describe(exc))
        self._note(result.ok)
        return result

    def _fetch_and_apply(self) -> SyncResult:
        nonce = self.freshness.new_nonce()
        try:
            return self._fetch_with(nonce)
        finally:
            self.freshness.retire(nonce)

    def _fetch_with(self, nonce: bytes) -> SyncResult:
        current = self.whitelist.version
        request = pb.FetchRequest(current_version=current, want_snapshot=self.state.resync_wanted,
                                  nonce=nonce, call_nonce=True)
        staged = self._resumable(current)
        if staged is not None:
            staged_header, have = staged
            request.resume_ciphertext_sha256 = staged_header.header.ciphertext_sha256
            request.resume_from_chunk = have
        stream = self.client.stream(SYNC + "Fetch", request, FETCH_TIMEOUT_S)
        vh: core.VerifiedHeader | None = None
        expected = 0
        try:
            for part in stream:
                self.client.offer_nonce(part.call_nonce)  # for the report that follows
                which = part.WhichOneof("part")
                if which == "up_to_date":
                    beacon, verdict = self.observe_beacon(part.up_to_date)
                    if beacon is None or not verdict.fresh:
                        raise core.Unproven("'up to date' answer does not echo our nonce (a replay?)")
                    self.staging.clear()
                    return SyncResult("up_to_date", current)
                if which == "rotation":
                    self._follow(part.rotation)
                    continue
                if which == "header":
                    vh = core.verify_header(part.header, self.trust, current, self.clock.now(),
                                            resync=self.state.resync_wanted)
                    resuming = staged is not None and (
                        vh.header.ciphertext_sha256 == staged[0].header.ciphertext_sha256
                    )
                    self.staging.start(part.header, keep_payload=resuming)
                    expected = self.staging.complete_chunks(vh) if resuming else 0
                    continue
                if which == "chunk":
                    if vh is None:
                        raise core.Truncated("chunk before header")
                    if part.chunk.index != expected:
                        raise core.Truncated(f"chunk {part.chunk.index} arrived, expected {expected}")
                    core.check_chunk(vh, part.chunk.index, part.chunk.data)
                    self.staging.append(part.chunk.data)
                    expected += 1
        except core.BadBundle:
            self.staging.clear()
            raise
        if vh is None:
            raise core.Truncated("stream ended without a header")
        if expected != vh.chunk_count:
            # Cut short: keep what we have; the next pass resumes from here.
            raise grpc_unavailable(f"download stopped after {expected}/{vh.chunk_count} chunks")
        try:
            self._apply_staged(vh)
        finally:
            self.staging.clear()
        return SyncResult("applied", self.whitelist.version)

    def _follow(self, signed: pb.SignedKeyRotation) -> None:
        new = core.follow_rotation(signed, self.trust)
        if new is None:
            return
        old_id = self.trust.hub_key_id
        self.identity = replace(self.identity, hub_sign_key=new.hub_sign_key.hex())
        write_json_atomic(self.files.identity, asdict(self.identity))
        self.trust = new
        log.warning("hub signing key rotated %s -> %s; the old key is retired", old_id, new.hub_key_id)

    def _resumable(self, current: int) -> tuple[core.VerifiedHeader, int] | None:
        signed = self.staging.load_header()
        if signed is None:
            return None
        try:
            vh = core.verify_header(signed, self.trust, current, self.clock.now(),
                                    resync=self.state.resync_wanted)
        except core.BadBundle:
            self.staging.clear()
            return None
        return vh, self.staging.complete_chunks(vh)

    def _apply_staged(self, vh: core.VerifiedHeader) -> None:
        key = core.open_content_key(vh, self.trust)

        def changes() -> Iterator[pb.Change]:
            for index, data in self.staging.chunks(vh):
                core.check_chunk(vh, index, data)  # the file could have changed under us
                yield from core.decrypt_chunk(key, data)

        before, age_before = self.whitelist.version, self.freshness.age_s()
        self.whitelist.apply(vh, changes())
        self.state.resync_wanted = False
        self._validity_s = self._offline_validity_s()
        h = vh.header
        # A header echoing our fetch nonce proves the site was at to_version since we chose it.
        self.freshness.observe(pb.Beacon(version=h.to_version, state_digest=h.state_digest, nonce=h.nonce),
                               self.whitelist.version, self.whitelist.state_digest)
        self.freshness.caught_up(self.whitelist.version, self.whitelist.state_digest)
        self.freshness.known_version = max(self.freshness.known_version, h.to_version)
        self._freshness_noted(age_before, h.issued_at)
        log.info("applied %s %d -> %d (%d persons)", "snapshot" if vh.is_snapshot else "delta",
                 before, vh.header.to_version, vh.header.person_count)
        if self.on_applied is not None:
            self.on_applied(vh.header.to_version)

    # ------------------------------------------------------------ report
    def stale(self) -> bool:
        """Whether the hub has not vouched for our whitelist within the site's offline validity."""
        if self._validity_s <= 0:
            return False
        age = self.fresh_age_s()
        return age is None or age > self._validity_s

    def manifest(self, beacon_nonce: bytes = b"") -> pb.Manifest:
        extra = self.status_extra() if self.status_extra else {}
        return pb.Manifest(
            site_id=self.identity.site_id,
            device_id=self.identity.device_id,
            version=self.whitelist.version,
            state_digest=self.whitelist.state_digest,
            person_count=self.whitelist.person_count,
            device_time=int(time.time()),
            agent_version=_agent_version(),
            last_error=self.state.last_error[:500],
            stale=self.stale(),
            behind=self.behind,
            known_version=self.freshness.known_version,
            beacon_nonce=beacon_nonce,
            **extra,
        )

    def _report(self) -> pb.ReportResponse:
        nonce = self.freshness.new_nonce()
        try:
            raw = self.manifest(nonce).SerializeToString()
            signed = pb.SignedManifest(
                manifest=raw, signature=keys.sign(self.device_keys.sign_key, keys.CTX_MANIFEST, raw)
            )
            response = self.client.call(SYNC + "Report", signed)
            self.observe_beacon(response.beacon)
        finally:
            self.freshness.retire(nonce)
        if response.resync:
            log.warning("hub reports a state digest mismatch: next sync fetches a snapshot")
            self.state.resync_wanted = True
        return response

    def heartbeat(self) -> bool:
        """Report what we hold; True if the hub says we are in sync."""
        with self._lock:
            try:
                response = self._report()
            except grpc.RpcError as exc:
                self._note(False, describe(exc), reachable=not transient(exc))
                return False
            self.state.hub_reachable = True
            self._save_state()
        if response.resync or response.hub_version != self.whitelist.version:
            return False
        return bool(response.in_sync)

    def sync_with_retries(self, attempts: int = 5, max_wait_s: float = 30.0,
                          stop: threading.Event | None = None) -> SyncResult:
        """sync_once, retried with exponential backoff and jitter while the hub is unreachable
        or the door is behind (a fresh beacon named a version it does not hold yet); setting
        ``stop`` ends the waiting between attempts at once."""
        result = SyncResult("unreachable", self.whitelist.version)
        halt = stop or threading.Event()

        def sleep(seconds: float) -> None:
            halt.wait(seconds)

        for attempt in Retrying(
            stop=stop_after_attempt(attempts) | stop_when_event_set(halt),
            sleep=sleep,
            wait=wait_exponential_jitter(exp_base=2, max=max_wait_s, jitter=0.5),
            retry=retry_if_exception(lambda e: isinstance(e, _Unreachable)),
            reraise=False,
            retry_error_callback=lambda _state: None,  # out of attempts: return the last result
        ):
            with attempt:
                result = self.sync_once()
                if result.outcome == "unreachable" or result.behind:
                    raise _Unreachable(result.detail)
        return result

    # ------------------------------------------------------------ watch
    def nonce_renewal_s(self) -> float:
        """How long one watch stream (and its nonce) lives: a third of the site's offline
        validity, between 1 s and MAX_NONCE_RENEWAL_S."""
        validity = self._validity_s
        if validity <= 0:
            return MAX_NONCE_RENEWAL_S
        return max(1.0, min(MAX_NONCE_RENEWAL_S, validity / 3))

    def _renew_when_due(self, stream: Any, renewing: threading.Event, ended: threading.Event) -> None:
        """Cancel `stream` once it is `nonce_renewal_s()` old (re-read: a sync may change it)."""
        opened = time.monotonic()
        while True:
            remaining = self.nonce_renewal_s() - (time.monotonic() - opened)
            if remaining <= 0:
                renewing.set()
                stream.cancel()
                return
            if ended.wait(min(remaining, 1.0)):
                return

    def watch(self, stop: threading.Event, on_version: Callable[[int], None]) -> None:
        """Follow the hub's watch stream until `stop`; calls `on_version` when the site moves.

        Reconnects with capped exponential backoff and jitter (`ReconnectBackoff`); never raises.

        Freshness on a long-lived stream: every beacon on a stream echoes the nonce the
        door opened it with, and proves only that the hub was alive since the door chose
        that nonce. So the door renews its nonce by reopening the stream every
        `nonce_renewal_s()` (a third of the site's offline validity, at most 5 minutes):
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
            nonce = self.freshness.new_nonce()
            renewing, ended = threading.Event(), threading.Event()
            try:
                stream = self.client.stream(
                    SYNC + "Watch", pb.WatchRequest(current_version=self.whitelist.version, nonce=nonce,
                                                    call_nonces=True),
                    WATCH_TIMEOUT_S,
                )
                current[:] = [stream]
                if stop.is_set():
                    return
                threading.Thread(target=self._renew_when_due, args=(stream, renewing, ended),
                                 name="doorkeeper-watch-renew", daemon=True).start()
                for event in stream:
                    self.client.offer_nonce(event.call_nonce)  # for the fetch this beacon may start
                    beacon, _verdict = self.observe_beacon(event.beacon)
                    backoff.healthy()
                    if beacon is None:
                        on_version(-1)  # unverifiable (e.g. the hub rotated its key): fetch follows the chain
                    elif beacon.version != self.whitelist.version:
                        on_version(beacon.version)
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
                self.freshness.retire(nonce)
            if stop.wait(delay):
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


class _Unreachable(Exception):
    pass


class _Unavailable(grpc.RpcError):
    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def grpc_unavailable(details: str) -> grpc.RpcError:
    return _Unavailable(details)


def _jitter() -> float:
    return int.from_bytes(os.urandom(2), "big") / 65535


def _agent_version() -> str:
    from doorkeeper.runtime import __version__

    return __version__
