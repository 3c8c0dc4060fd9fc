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

Effective times: a bundle whose header says it takes effect later
(`BundleHeader.effective_at` after the door's `HubClock`) is verified in full on
receipt (signature, chunk hashes, decryption, and a trial apply that checks the
state digest and is rolled back), then held on disk (`staging.HeldBundles`) and
applied by `apply_due` once the clock reaches that time, hub or no hub. The door
decides with its current whitelist until then. While a bundle is held, the door
still fetches from the version it has applied (the hub serves from there): an
offered bundle no newer than the held one is not downloaded; a newer one replaces
it (and is applied at once if it takes effect now). A door holding the site's
version is not behind, and a fresh beacon naming that version and digest vouches
for it as for an applied one.

The door's disk (`staging`), its status file and clock (`state`) and its watch
stream (`watch`) live in their own modules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from doorkeeper.agent.doorloop.policy import door_mode
from doorkeeper.agent.sync import bundle as core
from doorkeeper.agent.sync.freshness import FreshnessTracker, Verdict
from doorkeeper.agent.sync.hubclient import SYNC, HubClient, describe, transient
from doorkeeper.agent.sync.identity import AgentFiles, Identity, write_json_atomic
from doorkeeper.agent.sync.staging import HeldBundles, Staging
from doorkeeper.agent.sync.state import AgentState, HubClock
from doorkeeper.agent.sync.watch import follow
from doorkeeper.agent.sync.whitelist import LocalWhitelist, StorageError
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from doorkeeper.wire.limits import REQUEST_FIELD_CAPS

# Callers import these from here; `state` and `staging` are this module's parts.
__all__ = ["AgentState", "HubClock", "Staging", "SyncResult", "Syncer", "grpc_unavailable"]

log = logging.getLogger("doorkeeper.agent.sync.syncer")
FETCH_TIMEOUT_S = 600.0
MAX_NONCE_RENEWAL_S = 300.0
MAX_MANIFEST_BYTES = REQUEST_FIELD_CAPS["SignedManifest.manifest"]
MAX_LAST_ERROR_BYTES = 500  # a manifest's last_error, in UTF-8 bytes (bench manifest's largest)


@dataclass(frozen=True)
class SyncResult:
    outcome: str  # "up_to_date", "applied", "held", "refused", "unreachable"
    version: int
    detail: str = ""
    behind: bool = False  # the hub has a newer version than `version` (keep fetching)

    @property
    def ok(self) -> bool:
        return self.outcome in ("up_to_date", "applied", "held")


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
        clock: HubClock | None = None,
    ) -> None:
        """``hub_address`` and ``tls_ca`` (from the configuration) win over those recorded at
        registration (`Identity.endpoint`). ``clock`` (a test's, to move time) is the door's
        time for expiry and effective times."""
        self.files = files
        self.identity: Identity = files.load_identity()
        self.device_keys = files.device_keys()
        self.trust = files.trust()
        self.whitelist = whitelist
        address, ca = self.identity.endpoint(hub_address, tls_ca)
        self.client = client or HubClient(address, self.identity.device_id, self.device_keys.sign_key, ca)
        self.freshness = FreshnessTracker()
        self.staging = Staging(files.staging)
        self.state = AgentState.load(files.state)
        self.clock = clock or HubClock()
        self.clock.floor = max(self.clock.floor, self.state.last_beacon_hub_time)
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
        self.held = HeldBundles(files.held)
        self._held: tuple[core.VerifiedHeader, Path] | None = None
        self._offered = 0  # to_version of the header being fetched (for refusal reports)
        self._pushed: list[pb.BundlePart] | None = None  # `offer_pushed`, as Fetch parts
        with self._lock:
            self._load_held()

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
        verdict = self.freshness.observe(beacon, *self._held_for(beacon.version))
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
        return self.freshness.behind(self.holding_version)

    @property
    def holding_version(self) -> int:
        """The newest version this door holds: a verified bundle held for its effective
        time, else the applied whitelist."""
        held = self._held
        return held[0].header.to_version if held is not None else self.whitelist.version

    @property
    def pending(self) -> pb.BundleHeader | None:
        """The header of the bundle held for its effective time, if any."""
        held = self._held
        return held[0].header if held is not None else None

    def _held_for(self, version: int) -> tuple[int, bytes]:
        """(version, digest) a fresh statement about ``version`` is judged against: the held
        bundle's for anything newer than the applied whitelist, else the applied one's."""
        held = self._held
        if held is not None and version > self.whitelist.version:
            return held[0].header.to_version, bytes(held[0].header.state_digest)
        return self.whitelist.version, self.whitelist.state_digest

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
        self._apply_due_locked()
        try:
            result = self._fetch_and_apply()
        except grpc.RpcError as exc:
            self._note(False, describe(exc), reachable=not transient(exc))
            return SyncResult("unreachable" if transient(exc) else "refused", self.whitelist.version,
                              describe(exc))
        except core.BadBundle as exc:
            kind = self._refused(exc, self._offered)
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

    def _refused(self, exc: core.BadBundle, version: int) -> str:
        """Count and report a refused bundle (the whitelist did not move); its class name."""
        kind = type(exc).__name__
        self.state.refused[kind] = self.state.refused.get(kind, 0) + 1
        self.state.note_refused(version, exc.code, time.time())
        if exc.resync:
            self.state.resync_wanted = True
        log.error("refused bundle (%s): %s; whitelist unchanged at version %d",
                  kind, exc, self.whitelist.version)
        return kind

    def offer_pushed(self, header: pb.SignedBundleHeader, chunks: Iterable[pb.Chunk]) -> None:
        """A bundle the watch stream carried (`WatchEvent.header` and `.chunks`): the next pass
        applies it instead of fetching, if it verifies and starts at the version held then.
        Only the newest offer is kept; called from the watch thread."""
        parts = [pb.BundlePart(header=header)]
        parts.extend(pb.BundlePart(chunk=chunk) for chunk in chunks)
        self._pushed = parts

    def _fetch_and_apply(self) -> SyncResult:
        self._offered = 0
        pushed, self._pushed = self._pushed, None
        if pushed is not None and not self.state.resync_wanted and self._news(pushed[0].header):
            try:
                return self._receive(pushed, self.whitelist.version, None)
            except (core.BadBundle, _Unavailable) as exc:
                # Not refused: the fetch that follows gets the hub's answer for our version
                # (and the key rotations a header by a new key needs), and refuses for real.
                log.info("the bundle on the watch stream does not apply here (%s); fetching", exc)
                self.staging.clear()  # nothing of it is kept to resume from: it was whole or nothing
                self._offered = 0
        nonce = self.freshness.new_nonce()
        try:
            return self._fetch_with(nonce)
        finally:
            self.freshness.retire(nonce)

    def _news(self, signed: pb.SignedBundleHeader) -> bool:
        """Whether a pushed bundle is worth verifying: a delta (the stream carries nothing else)
        to a version newer than the door holds. One no newer (a pass fetched it first) says
        nothing about where the hub is now, so the door asks."""
        try:
            h = pb.BundleHeader.FromString(signed.header)
        except DecodeError:
            return False
        return h.kind == pb.BUNDLE_KIND_DELTA and h.to_version > self.holding_version

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
        return self._receive(stream, current, staged)

    def _receive(self, stream: Iterable[pb.BundlePart], current: int,
                 staged: tuple[core.VerifiedHeader, int] | None) -> SyncResult:
        """Verify, stage and apply (or hold) the bundle in `stream`: a Fetch's parts, or a
        bundle from the watch stream as the parts a Fetch would have sent."""
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
                    self._offered = core.claimed_version(part.header)
                    vh = core.verify_header(part.header, self.trust, current, self.clock.now(),
                                            resync=self.state.resync_wanted)
                    if (self._held is not None and not self.state.resync_wanted
                            and vh.header.to_version <= self.holding_version):
                        getattr(stream, "cancel", lambda: None)()  # nothing newer than held: no download
                        self._vouched_by(vh)
                        return SyncResult("held", current, f"holding version {self.holding_version}")
                    signed = part.header
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
            if not vh.due(self.clock.now()):
                self._hold(vh, signed)
                return SyncResult("held", self.whitelist.version,
                                  f"version {vh.header.to_version} takes effect at {vh.header.effective_at}")
            self._apply(vh, self.staging.chunks)
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

    def _changes(self, vh: core.VerifiedHeader, chunks: ChunkSource) -> Iterator[pb.Change]:
        key = core.open_content_key(vh, self.trust)
        for index, data in chunks(vh):
            core.check_chunk(vh, index, data)  # the file could have changed under us
            yield from core.decrypt_chunk(key, data)

    def _apply(self, vh: core.VerifiedHeader, chunks: ChunkSource) -> None:
        before = self.whitelist.version
        self.whitelist.apply(vh, self._changes(vh, chunks))
        self.state.resync_wanted = False
        self.state.clear_refused()
        self._validity_s = self._offline_validity_s()
        self._recheck_held()
        self._vouched_by(vh)
        log.info("applied %s %d -> %d (%d persons)", "snapshot" if vh.is_snapshot else "delta",
                 before, vh.header.to_version, vh.header.person_count)
        if self.on_applied is not None:
            self.on_applied(vh.header.to_version)

    def _vouched_by(self, vh: core.VerifiedHeader) -> None:
        """A header echoing our fetch nonce proves the site was at to_version since we chose
        it (for a bundle applied or held, as for a beacon)."""
        h, age_before = vh.header, self.freshness.age_s()
        held_version, held_digest = self._held_for(h.to_version)
        self.freshness.observe(pb.Beacon(version=h.to_version, state_digest=h.state_digest, nonce=h.nonce),
                               held_version, held_digest)
        self.freshness.caught_up(held_version, held_digest)
        self.freshness.known_version = max(self.freshness.known_version, h.to_version)
        self._freshness_noted(age_before, h.issued_at)

    # ------------------------------------------------------------ effective times
    def _hold(self, vh: core.VerifiedHeader, signed: pb.SignedBundleHeader) -> None:
        """Prove a complete staged bundle whole (trial apply, rolled back) and keep it on
        disk until its effective time; it replaces any older held bundle."""
        self.whitelist.apply(vh, self._changes(vh, self.staging.chunks), trial=True)
        self._held = (vh, self.held.keep(self.staging, vh, signed))
        self.state.resync_wanted = False
        self.state.clear_refused()
        self._note_pending()
        self._vouched_by(vh)
        log.warning("holding version %d until %d (its effective time); deciding on version %d "
                    "until then", vh.header.to_version, vh.header.effective_at, self.whitelist.version)

    def _load_held(self) -> None:
        """At start: the bundle held before a restart, checked again with today's trust and
        whitelist (everything but expiry); dropped if it no longer applies."""
        found = self.held.load()
        if found is not None:
            signed, payload = found
            try:
                vh = core.verify_header(signed, self.trust, self.whitelist.version, self.clock.now(),
                                        held=True)
            except core.BadBundle as exc:
                log.warning("held bundle dropped: it no longer applies (%s)", exc)
                self.held.clear()
            else:
                self._held = (vh, payload)
        self._note_pending()

    def _recheck_held(self) -> None:
        """After an apply: a held bundle that no longer starts at our version is dropped."""
        held = self._held
        if held is None:
            return
        h, version = held[0].header, self.whitelist.version
        applies = h.to_version > version and (held[0].is_snapshot or h.from_version == version)
        if not applies:
            log.info("held version %d superseded at version %d", h.to_version, version)
            self._held = None
            self.held.clear()
        self._note_pending()

    def _note_pending(self) -> None:
        h = self.pending
        self.state.pending_version = h.to_version if h is not None else 0
        self.state.pending_effective_at = h.effective_at if h is not None else 0
        self._save_state()

    def apply_due(self) -> bool:
        """Apply the held bundle if the door's clock has reached its effective time (no
        network); True if it was applied. Cheap when nothing is held or due (the scheduler
        calls it every second); never raises for a refused bundle or a full disk."""
        held = self._held
        if held is None or not held[0].due(self.clock.now()):
            return False
        with self._lock:
            return self._apply_due_locked()

    def _apply_due_locked(self) -> bool:
        held = self._held
        if held is None or not held[0].due(self.clock.now()):
            return False
        vh, payload = held
        log.warning("version %d takes effect now (its effective time %d); applying it",
                    vh.header.to_version, vh.header.effective_at)
        try:
            self._apply(vh, lambda v: HeldBundles.chunks(payload, v))
        except core.BadBundle as exc:
            self._held = None
            self.held.clear()
            self._note_pending()
            kind = self._refused(exc, vh.header.to_version)
            self._note(False, f"{kind}: {exc}", reachable=self.state.hub_reachable)
            return False
        except (OSError, StorageError) as exc:  # kept: the next check tries again
            log.warning("held version %d not applied (local storage: %s)", vh.header.to_version, exc)
            return False
        self._save_state()
        return True

    # ------------------------------------------------------------ report
    def stale(self) -> bool:
        """Whether the hub has not vouched for our whitelist within the site's offline validity."""
        if self._validity_s <= 0:
            return False
        age = self.fresh_age_s()
        return age is None or age > self._validity_s

    def manifest(self, beacon_nonce: bytes = b"") -> pb.Manifest:
        """What this door reports (signed by `_report`); always within MAX_MANIFEST_BYTES."""
        extra = self.status_extra() if self.status_extra else {}
        manifest = pb.Manifest(
            site_id=self.identity.site_id,
            device_id=self.identity.device_id,
            version=self.whitelist.version,
            state_digest=self.whitelist.state_digest,
            person_count=self.whitelist.person_count,
            device_time=int(time.time()),
            agent_version=_agent_version(),
            last_error=clip_utf8(self.state.last_error, MAX_LAST_ERROR_BYTES),
            stale=self.stale(),
            behind=self.behind,
            known_version=self.freshness.known_version,
            beacon_nonce=beacon_nonce,
            pending_version=self.state.pending_version,
            pending_effective_at=self.state.pending_effective_at,
            refused_version=self.state.refused_version,
            refused_reason=self.state.refused_reason,
            refused_at=self.state.refused_at,
            # The hub's word for this door; the service adds the installer's flag (`extra`).
            mode=door_mode(self.whitelist.site_config(), self.identity.device_id),
        )
        for key, value in extra.items():
            if key == "decisions":
                manifest.decisions.extend(value)
            else:
                setattr(manifest, key, value)
        return within_cap(manifest)

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

    # ------------------------------------------------------------ watch
    def nonce_renewal_s(self) -> float:
        """How long one watch stream (and its nonce) lives: a third of the site's offline
        validity, between 1 s and MAX_NONCE_RENEWAL_S."""
        validity = self._validity_s
        if validity <= 0:
            return MAX_NONCE_RENEWAL_S
        return max(1.0, min(MAX_NONCE_RENEWAL_S, validity / 3))

    def watch(self, stop: threading.Event, on_version: Callable[[int], None]) -> None:
        """Follow the hub's watch stream until `stop` (`doorkeeper.agent.sync.watch.follow`)."""
        follow(self, stop, on_version)

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


ChunkSource = Callable[[core.VerifiedHeader], Iterator[tuple[int, bytes]]]


def clip_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character (an error message
    may carry names or paths in any script: 500 characters could be 2,000 bytes)."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def within_cap(manifest: pb.Manifest, cap: int = MAX_MANIFEST_BYTES) -> pb.Manifest:
    """The manifest with its oldest decision hours dropped until it serialises within ``cap``.

    Every realistic manifest carries all its hours (a day of counts is a few hundred
    bytes); only absurd counts next to a long ``last_error`` need the trim, and the hub
    already holds the dropped hours from earlier reports (a door reports every minute).
    The newest hour is never dropped; ``last_error`` is shortened if even that is over."""
    while manifest.ByteSize() > cap and len(manifest.decisions) > 1:
        del manifest.decisions[0]
    while manifest.ByteSize() > cap and manifest.last_error:
        manifest.last_error = manifest.last_error[: len(manifest.last_error) // 2]
    return manifest


def _agent_version() -> str:
    from doorkeeper.runtime import __version__

    return __version__
