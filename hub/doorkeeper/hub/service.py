"""Thin gRPC servicers: authenticate (interceptor), call the domain, map errors.

Domain exceptions become gRPC status codes here and nowhere else. Blocking
store work runs in worker threads so a slow disk never stalls the event loop
that holds every device's watch stream: unary calls and auth checks on the
hub's bounded call pool (the loop's default executor, set by `server.serve`),
bundle builds on a pool of their own. Fetches waiting for a site's build wait
on the event loop, holding no thread, so a big snapshot build never starves
the calls of other devices and operators.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from doorkeeper.hub import auth as hub_auth
from doorkeeper.hub.audit import AuditedChanges, Done
from doorkeeper.hub.decisions import Decisions
from doorkeeper.hub.devices import BadManifest, Devices, RegistrationRefused
from doorkeeper.hub.doormodes import DoorModes, mode_name
from doorkeeper.hub.edge import Refusals
from doorkeeper.hub.hubkeys import SealError
from doorkeeper.hub.lane import StoreLane
from doorkeeper.hub.logservice import LogService
from doorkeeper.hub.notify import SiteNotifier, Watcher
from doorkeeper.hub.operators import Operators
from doorkeeper.hub.operators import info as operator_info
from doorkeeper.hub.people import People, person_spec
from doorkeeper.hub.publisher import Publisher
from doorkeeper.hub.readiness import Readiness
from doorkeeper.hub.rollouts import LostRace, Rollouts, early_at, honours_effective_at, served
from doorkeeper.hub.store import (
    BundleMeta,
    Conflict,
    Device,
    HubStore,
    NotFound,
    Rollout,
    Site,
    StoreError,
    Unavailable,
)
from doorkeeper.hub.whitelist import InvalidRequest, PersonSpec, Whitelist
from doorkeeper.runtime.metrics import HubMetrics
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.v1 import doorkeeper_pb2_grpc as rpc
from doorkeeper.wire import templates as tmpl
from doorkeeper.wire.entrylog import BadLogBatch, seal_roster
from doorkeeper.wire.freshness import BadNonce, check_nonce
from doorkeeper.wire.limits import LIMITS

log = logging.getLogger("doorkeeper.hub")
# A device needs one watch stream; a second covers a reconnect racing the old one's teardown.
MAX_WATCHES_PER_DEVICE = 2
# A watch stream ends by itself (status OK) after a random age in this range, and the door
# reopens it from the version it holds (a delta, never a snapshot): after a deploy or a
# scale-out, connections spread over the replicas again within the longest age.
WATCH_MAX_AGE_S = (1800.0, 3600.0)
T = TypeVar("T")

# Domain exception -> status code and the reason it is counted under.
_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (RegistrationRefused, grpc.StatusCode.PERMISSION_DENIED, "registration_refused"),
    (hub_auth.AuthError, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
    (hub_auth.Forbidden, grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    (tmpl.TemplateError, grpc.StatusCode.INVALID_ARGUMENT, "bad_template"),
    (BadManifest, grpc.StatusCode.INVALID_ARGUMENT, "bad_manifest"),
    (BadLogBatch, grpc.StatusCode.INVALID_ARGUMENT, "bad_log_batch"),
    (BadNonce, grpc.StatusCode.INVALID_ARGUMENT, "bad_nonce"),
    (NotFound, grpc.StatusCode.NOT_FOUND, "not_found"),
    (Conflict, grpc.StatusCode.ALREADY_EXISTS, "conflict"),
    (LostRace, grpc.StatusCode.ABORTED, "lost_race"),
    (SealError, grpc.StatusCode.INTERNAL, "seal_error"),
    (Unavailable, grpc.StatusCode.UNAVAILABLE, "store_unavailable"),
)


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    for kind, code, reason in _STATUS:
        if isinstance(exc, kind):
            return code, reason
    return None


def mapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain exceptions from a unary servicer method into gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except Exception as exc:
            status = _status_for(exc)
            if status is None:
                raise
            await self.refusals.abort(context, f"/{self.SERVICE}/{fn.__name__}", *status, str(exc))

    return wrapper


async def run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def run_in(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """`run` on a given executor (None: the loop's default), with this task's context."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(context.run, fn, *args)
    )


SiteRead = tuple[Site, Rollout | None]


class SharedSiteReads:
    """One store read of a site (its row and rollout) shared by every watch stream and fetch
    that needs it at once.

    A change wakes every watcher of its site together; without this each would read the
    site row in a worker thread of its own (2,000 reads and thread hops per change at 2,000
    doors). A read is shared only while it is at most `max_age_s` old, was started after the
    site's latest notification (`SiteNotifier.generation`), so a woken watcher never gets a
    version from before the change that woke it, and was started no earlier than the caller's
    `not_before`: a beacon echoing a door's nonce says the site was at its version *after* the
    door chose that nonce, so the read behind it must start after the request arrived (a
    change committed through another replica or straight into the store is seen at once).
    Event-loop only.
    """

    def __init__(self, store: HubStore, notifier: SiteNotifier, max_age_s: float = 0.2,
                 lane: StoreLane | None = None) -> None:
        """``lane``: reads run there, batched with other requests' store calls (after a
        change, fetches arriving one by one each need a read started after they arrived:
        one thread hop per batch instead of one per read)."""
        self.store = store
        self.notifier = notifier
        self.max_age_s = max_age_s
        self.lane = lane
        self._reads: dict[str, tuple[int, float, asyncio.Future[SiteRead]]] = {}

    def _read(self, site_id: str) -> SiteRead:
        return self.store.site_and_rollout(site_id)

    async def get(self, site_id: str, not_before: float) -> SiteRead:
        """The site as read by a read started at or after `not_before` (time.monotonic())."""
        generation = self.notifier.generation(site_id)
        now = time.monotonic()
        entry = self._reads.get(site_id)
        if entry is not None and entry[0] == generation and not_before <= entry[1] and \
                now - entry[1] <= self.max_age_s and not (entry[2].done() and entry[2].exception()):
            return entry[2].result() if entry[2].done() else await asyncio.shield(entry[2])
        read = self.lane.run(self._read, site_id) if self.lane is not None else run(self._read, site_id)
        future = asyncio.ensure_future(read)
        self._reads[site_id] = (generation, now, future)
        return await asyncio.shield(future)


class ChunkCache:
    """Ciphertext chunks of recent bundles in memory (at most `max_bytes`, oldest out first):
    a change fans the same chunks out to every door of the site, read once from the store."""

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._chunks: collections.OrderedDict[tuple[str, int], bytes] = collections.OrderedDict()
        self._bytes = 0

    def get(self, bundle_id: str, index: int) -> bytes | None:
        return self._chunks.get((bundle_id, index))

    def put(self, bundle_id: str, index: int, data: bytes) -> None:
        if len(data) > self.max_bytes or (bundle_id, index) in self._chunks:
            return
        self._chunks[(bundle_id, index)] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, old = self._chunks.popitem(last=False)
            self._bytes -= len(old)


@dataclasses.dataclass
class Inline:
    """One watch stream's inline bundles: for whom, the version the stream last named to the
    door (at first the door's own, WatchRequest.current_version), and the most chunk bytes
    to inline (0: none)."""

    device: Device
    version: int
    max_bytes: int


class DeviceSyncService(rpc.DeviceSyncServicer):
    SERVICE = "doorkeeper.v1.DeviceSync"

    def __init__(
        self,
        store: HubStore,
        authenticator: hub_auth.Authenticator,
        devices: Devices,
        publisher: Publisher,
        notifier: SiteNotifier,
        logs: LogService | None = None,
        beacon_interval_s: float = 15.0,
        metrics: HubMetrics | None = None,
        refusals: Refusals | None = None,
        builds: Executor | None = None,
        watch_max_age_s: tuple[float, float] = WATCH_MAX_AGE_S,
        lane: StoreLane | None = None,
    ) -> None:
        """``watch_max_age_s``: (shortest, longest) life of one watch stream; each stream draws
        its own uniformly in between, so streams opened together do not end together."""
        self.store = store
        self.auth = authenticator
        self.devices = devices
        self.publisher = publisher
        self.notifier = notifier
        self.logs = logs
        self.beacon_interval_s = beacon_interval_s
        self.metrics = metrics
        self.refusals = refusals or Refusals(metrics)
        # Per replica: with several replicas a device may hold this many streams on each.
        self._watchers: collections.Counter[str] = collections.Counter()
        self.builds = builds
        self._build_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.watch_max_age_s = watch_max_age_s
        self.lane = lane  # short store calls of reports, batched (`doorkeeper.hub.lane`)
        self.sites = SharedSiteReads(store, notifier, lane=lane)
        self.chunk_cache = ChunkCache()
        # (site, from version, site version) -> the bundle built for it: the fetches that
        # follow a change skip the build lock and the store lookups (see `_bundle_for`).
        self._bundles: dict[tuple[str, int, int], BundleMeta] = {}

    @mapped
    async def Register(self, request, context):  # type: ignore[no-untyped-def]
        response = await run(self.devices.register, request)
        log.info("device %s registered for site %s", response.device_id, response.site_name)
        return response

    @mapped
    async def Challenge(self, request, context):  # type: ignore[no-untyped-def]
        """A call nonce, alike for every principal; with `hub_challenge`, the hub's proof of its keys."""
        nonce, ttl = self.auth.challenge(request.principal)  # a MAC, no store: no thread needed
        response = pb.ChallengeResponse(nonce=nonce, hub_time=int(time.time()), expires_in_s=ttl)
        if request.hub_challenge:
            proof = await run(self.devices.hub_proof, check_nonce(request.hub_challenge, optional=False))
            response.hub_sign_key, response.hub_box_key, response.hub_proof = proof
        return response

    async def Watch(self, request, context) -> AsyncIterator[pb.WatchEvent]:  # type: ignore[no-untyped-def,override]
        device = hub_auth.CURRENT.get().device
        assert device is not None
        try:
            nonce = check_nonce(request.nonce)
        except BadNonce as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self._watchers[device.device_id] >= MAX_WATCHES_PER_DEVICE:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"at most {MAX_WATCHES_PER_DEVICE} watch streams per device")
        self._watchers[device.device_id] += 1
        watcher = self.notifier.watch(device.site_id, device.device_id, device.sign_public)
        watching = self.metrics.watching() if self.metrics is not None else contextlib.nullcontext()
        principal = device.device_id if request.call_nonces else None
        inline = Inline(device, request.current_version,
                        min(request.inline_bundle_bytes, LIMITS.max_inline_bundle_bytes))
        with watching:
            try:
                async for item in self._watch(watcher, nonce, principal, inline):
                    yield item
            finally:
                self.notifier.unwatch(watcher)
                self._watchers[device.device_id] -= 1
                if not self._watchers[device.device_id]:
                    del self._watchers[device.device_id]

    async def _watch(self, watcher: Watcher, nonce: bytes, call_nonces_for: str | None = None,
                     inline: Inline | None = None) -> AsyncIterator[pb.WatchEvent]:
        """Beacons for one watcher: at once, on every site change, and every beacon interval,
        until the stream's drawn maximum age (then it ends with OK and the door reopens it),
        or until the door is revoked or replaced (the notifier says so: no store read here).

        Each echoes the watcher's nonce: they prove the hub was alive after the door chose it
        (the door renews it by reconnecting, see `Syncer.watch`). With `call_nonces_for`
        (WatchRequest.call_nonces) each also carries a call nonce for that device's next
        signed call: a door woken by a change fetches at once, without a Challenge first.
        With `inline` (WatchRequest.inline_bundle_bytes) a beacon naming a new version also
        carries the small delta to it (`_inline_bundle`): the door needs no Fetch at all."""
        last_version = -1
        last_sent = 0.0
        low, high = self.watch_max_age_s
        opened = time.monotonic()
        ends_at = opened + random.uniform(low, high)
        site_id, event = watcher.site_id, watcher.event
        # Once per stream: a revocation committed between the interceptor's read and
        # `notifier.watch` ended no stream of this one's; from here on the notifier does.
        stored = await run(self.store.get_device, watcher.device_id)
        if stored.revoked_at is not None or stored.sign_public != watcher.sign_public:
            return
        honours: bool | None = None  # read once per stream, only while it matters
        while not self.notifier.closed:
            if watcher.ended:
                return  # revoked or replaced while watching
            # What this door is served: the head, or a staged rollout's base (a staged change
            # wakes this stream but sends a held door nothing: its target did not move), or
            # the head early while a promotion with early delivery is scheduled.
            head, rollout = await self.sites.get(site_id, opened)
            if honours is None and early_at(rollout, watcher.device_id):
                honours = await self._honours_of(watcher.device_id)
            site = served(head, rollout, watcher.device_id, bool(honours))
            now = time.monotonic()
            if now >= ends_at or watcher.ended:
                return
            if site.version != last_version or now - last_sent >= self.beacon_interval_s:
                item = pb.WatchEvent(beacon=self.publisher.beacon_of(site, nonce))
                if call_nonces_for is not None:
                    item.call_nonce = self.auth.challenge(call_nonces_for)[0]
                if inline is not None and inline.max_bytes and site.version != inline.version:
                    await self._inline_bundle(item, inline, site, nonce, opened)
                    if watcher.ended:
                        return  # revoked or replaced while the bundle was built: not for it
                yield item
                last_version, last_sent = site.version, now
            event.clear()
            # Wake on a change, or after the interval for a freshness beacon and a
            # store re-check (another replica may have committed the change).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(self.beacon_interval_s, ends_at - now))

    async def _inline_bundle(self, item: pb.WatchEvent, inline: Inline, site: Site, nonce: bytes,
                             not_before: float) -> None:
        """Put on `item` the delta from the version this stream last named to `site.version`,
        if it is one a Fetch from there would serve (`_target`, rollouts included), due now
        and small; then count the door as told of `site.version` whether it fits or not (a
        door told without a bundle fetches to it). Whatever goes wrong here costs the door a
        Fetch, never the beacon."""
        device, start = inline.device, inline.version
        inline.version = site.version
        try:
            target, meta, _, effective_at = await self._target(
                device, pb.FetchRequest(current_version=start), not_before)
            # meta.to_version too: the build reads the head again, later than `target` was
            # read; a change committed meanwhile (perhaps staged by a rollout begun meanwhile,
            # which holds this door) is not what this door is served (Fetch re-reads then).
            if (meta is None or effective_at or target.version != site.version
                    or meta.to_version != site.version
                    or meta.kind != pb.BUNDLE_KIND_DELTA or meta.from_version != start
                    or sum(meta.chunk_length) > inline.max_bytes):
                return
            chunks = [pb.Chunk(index=i, data=await self._chunk(meta, i))
                      for i in range(len(meta.chunk_length))]
            item.header.CopyFrom(self.publisher.issue(meta, device, nonce))
            item.chunks.extend(chunks)
        except (StoreError, ValueError, SealError) as exc:  # a pruned chunk, the database away
            log.warning("watch of %s: version %d not inlined (%s); the door fetches it",
                        device.device_id, site.version, exc)
            return
        except Exception:  # a failed build (a full disk, a bug) must not end the stream
            log.exception("watch of %s: version %d not inlined; the door fetches it",
                          device.device_id, site.version)
            return
        if self.metrics is not None:
            self.metrics.bundle_pushed()

    async def _chunk(self, meta: BundleMeta, index: int) -> bytes:
        """One ciphertext chunk of a bundle, from the cache or the store (NotFound if gone)."""
        data = self.chunk_cache.get(meta.bundle_id, index)
        if data is None:
            data = await run(self.store.read_chunk, meta.bundle_id, index)
            self.chunk_cache.put(meta.bundle_id, index, data)
        return data

    async def Fetch(self, request, context) -> AsyncIterator[pb.BundlePart]:  # type: ignore[no-untyped-def,override]
        arrived = time.monotonic()
        device = hub_auth.CURRENT.get().device
        assert device is not None
        try:
            nonce = check_nonce(request.nonce)
        except BadNonce as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        for rotation in self.publisher.keys.rotations:
            yield pb.BundlePart(rotation=rotation)
        not_before = arrived
        for _ in range(3):
            site, meta, start, effective_at = await self._target(device, request, not_before)
            if meta is None or meta.to_version == site.version:
                break
            # The site moved while the bundle was built: what is this door's target now (a
            # rollout may have begun that holds it)? Serve only a bundle to that.
            not_before = time.monotonic()
        else:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the site is changing fast; retry the fetch")
        # With FetchRequest.call_nonce, the first part after the rotations carries a call
        # nonce for the Report that follows (no Challenge round trip for it).
        call_nonce = self.auth.challenge(device.device_id)[0] if request.call_nonce else b""
        if meta is None:
            yield pb.BundlePart(up_to_date=self.publisher.beacon_of(site, nonce), call_nonce=call_nonce)
            return
        # Signing one header is one box wrap with a cached shared key and one Ed25519
        # signature: cheaper on the loop than a thread hop.
        yield pb.BundlePart(header=self.publisher.issue(meta, device, nonce, effective_at),
                            call_nonce=call_nonce)
        for index in range(start, len(meta.chunk_length)):
            try:
                data = await self._chunk(meta, index)
            except NotFound as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; retry the fetch")
                raise  # abort raises; this line only tells the type checker
            yield pb.BundlePart(chunk=pb.Chunk(index=index, data=data))

    async def _bundle_for(self, site_id: str, current_version: int, want_snapshot: bool,
                          site_version: int) -> BundleMeta | None:
        """`Publisher.bundle_for`, remembered per (site, from version, site version) for deltas:
        after a change every door asks for the same one, and only the first waits for the
        build (one build per site at a time, waiting on the loop, not in a worker thread)."""
        key = (site_id, current_version, site_version)
        if not want_snapshot and (meta := self._bundles.get(key)) is not None:
            return meta
        async with self._build_locks[site_id]:
            if not want_snapshot and (meta := self._bundles.get(key)) is not None:
                return meta
            meta = await run_in(self.builds, self.publisher.bundle_for, site_id, current_version,
                                want_snapshot)
        if meta is not None and not want_snapshot:
            if len(self._bundles) >= 1024:
                self._bundles.clear()
            self._bundles[(site_id, current_version, meta.to_version)] = meta
        return meta

    async def _target(self, device: Device, request: pb.FetchRequest,
                      not_before: float) -> tuple[Site, BundleMeta | None, int, int]:
        """(the site as this door is served it, the bundle that takes it there or None when it
        is up to date, the chunk to resume from, the bundle's effective time for this door).
        The site row and its rollout are read in one snapshot (`HubStore.site_and_rollout`),
        so a door outside a staged rollout's stage is never served a version past the
        rollout's base, except early (with an effective time) to a door that honours it."""
        head, rollout = await self.sites.get(device.site_id, not_before)
        at = early_at(rollout, device.device_id)
        # Early only on top of the base: a door below it (new, or back from far behind) or
        # asking for a snapshot (a digest mismatch) gets the base first, as any held door.
        if at and (request.want_snapshot or rollout is None
                   or request.current_version < rollout.base_version
                   or not await self._honours_of(device.device_id)):
            at = 0
        site = served(head, rollout, device.device_id, at > 0)
        if request.resume_ciphertext_sha256:
            meta = await run(self.store.find_bundle_by_hash, device.site_id, request.resume_ciphertext_sha256)
            if meta is not None and meta.to_version == site.version and (
                meta.kind == pb.BUNDLE_KIND_SNAPSHOT or meta.from_version == request.current_version
            ):
                return site, meta, min(request.resume_from_chunk, len(meta.chunk_length)), at
        if not request.want_snapshot and request.current_version == site.version:
            return site, None, 0, 0
        if site is not head:  # held outside a staged rollout's stage: its base
            assert rollout is not None
            return site, await self._base_snapshot(rollout), 0, 0
        return site, await self._bundle_for(device.site_id, request.current_version, request.want_snapshot,
                                            site.version), 0, at

    async def _honours_of(self, device_id: str) -> bool:
        """Whether the door's latest report declares it honours effective times: a store read,
        made only while a promotion with early delivery is scheduled (on the store lane when
        there is one: a promotion wakes every watch stream of the site at once)."""
        def honours() -> bool:
            r = self.store.latest_report(device_id)
            return r is not None and honours_effective_at(pb.Manifest.FromString(r.manifest))

        return await (self.lane.run(honours) if self.lane is not None else run(honours))

    async def _base_snapshot(self, rollout: Rollout) -> BundleMeta:
        """The snapshot of a staged rollout's base, for held doors below it (built once)."""
        async with self._build_locks[rollout.site_id]:
            return await run_in(self.builds, self.publisher.base_snapshot, rollout)

    @mapped
    async def Report(self, request, context):  # type: ignore[no-untyped-def]
        arrived = time.monotonic()
        device = hub_auth.CURRENT.get().device
        assert device is not None
        record = functools.partial(self.devices.report, device, request)
        manifest = await (self.lane.run(record) if self.lane is not None else run(record))
        # The site as read after this report arrived (the beacon echoes the door's nonce), one
        # read shared by every report of a change (`SharedSiteReads`), not one each.
        head, rollout = await self.sites.get(device.site_id, arrived)
        site = served(head, rollout, device.device_id, honours_effective_at(manifest))
        nonce = manifest.beacon_nonce  # size-checked by `report`
        in_sync = manifest.version == site.version and manifest.state_digest == site.state_digest
        mismatch = manifest.version == site.version and manifest.state_digest != site.state_digest
        if mismatch:
            log.warning("device %s holds version %d with a wrong digest: asking for a snapshot",
                        device.device_id, manifest.version)
        return pb.ReportResponse(
            in_sync=in_sync,
            hub_version=site.version,
            resync=mismatch,
            beacon=self.publisher.beacon_of(site, nonce),
        )

    @mapped
    async def UploadLogs(self, request, context):  # type: ignore[no-untyped-def]
        if self.logs is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "entry-log ingest is not configured")
        device = hub_auth.CURRENT.get().device
        assert device is not None
        return await run(self.logs.ingest_device, device, request)


def _credentials(spec: PersonSpec) -> str:
    """What the audit entry says about credentials: counts and consent, never values."""
    return (f"templates={len(spec.templates)} cards={len(spec.cards)} pins={len(spec.pins)} "
            f"consent={'yes' if spec.consent else 'no'}")


class AdminService(rpc.AdminServicer):
    SERVICE = "doorkeeper.v1.Admin"

    def __init__(
        self,
        store: HubStore,
        whitelist: Whitelist,
        devices: Devices,
        notifier: SiteNotifier,
        logs: LogService | None = None,
        metrics: HubMetrics | None = None,
        refusals: Refusals | None = None,
        rollouts: Rollouts | None = None,
    ) -> None:
        self.store = store
        self.whitelist = whitelist
        self.devices = devices
        self.notifier = notifier
        self.logs = logs
        self.metrics = metrics
        self.refusals = refusals or Refusals(metrics)
        self.changes = AuditedChanges(store, whitelist.keys)
        self.people = People(store, whitelist)
        self.operators = Operators(store)
        self.rollouts = rollouts or Rollouts(store, whitelist.keys, self.changes)
        self.decisions = Decisions(store, devices, whitelist.clock)
        self.modes = DoorModes(store, whitelist, devices)
        self.readiness = Readiness(store, whitelist, whitelist.clock)

    def _audit(self, action: str, detail: str) -> None:
        self.changes.record(hub_auth.CURRENT.get().label, action, detail)

    async def _change(self, request: Any, response_type: Any, change: Callable[[], Done]) -> Any:
        """Make `change` with its audit entry in one transaction (once per request id),
        then wake the site's watchers."""
        principal = hub_auth.CURRENT.get()
        done = await run(self.changes.run, principal.id, principal.label, request, response_type, change)
        if done.site_id:
            self.notifier.notify(done.site_id)
        return done.response

    def _site_info(self, site: Site) -> pb.SiteInfo:
        config = self.whitelist.config(site)
        return pb.SiteInfo(
            site_id=site.site_id, name=site.name, version=site.version,
            offline_validity_s=config.offline_validity_s, stale_policy=config.stale_policy,
            person_count=site.person_count, state_digest=site.state_digest,
            log_owner_key_id=config.log_owner_key_id,
        )

    @mapped
    async def AddSite(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            site = self.whitelist.add_site(
                request.name, request.offline_validity_s, request.stale_policy, request.utc_offset
            )
            return Done(self._site_info(site), "site.add", f"{site.site_id} {site.name}")

        return await self._change(request, pb.SiteInfo, change)

    @mapped
    async def ListSites(self, request, context):  # type: ignore[no-untyped-def]
        sites = await run(self.store.list_sites)
        return pb.ListSitesResponse(sites=[self._site_info(s) for s in sites])

    @mapped
    async def AddDevice(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            issued = self.devices.add(request.site, request.name, request.token_ttl_s)
            response = pb.AddDeviceResponse(
                device_id=issued.device.device_id, token=issued.token, expires_at=issued.expires_at
            )
            return Done(response, "device.add", f"{issued.device.device_id} {issued.device.name}")

        return await self._change(request, pb.AddDeviceResponse, change)

    @mapped
    async def AddPerson(self, request, context):  # type: ignore[no-untyped-def]
        spec = person_spec(request)

        def change() -> Done:
            person_id, site, dup = self.people.add(request.site, spec, request.allow_duplicate_face)
            detail = f"{person_id} site={site.site_id} v{site.version} {_credentials(spec)}"
            if dup is not None:
                detail += f" duplicate-face-allowed matches={dup.person_id} similarity={dup.similarity:.2f}"
            return Done(pb.AddPersonResponse(person_id=person_id, version=site.version), "person.add",
                        detail, site.site_id)

        return await self._change(request, pb.AddPersonResponse, change)

    @mapped
    async def ImportPersons(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            results, site = self.people.import_rows(request.site, list(request.persons))
            counts = collections.Counter(pb.ImportResult.Outcome.Name(r.outcome) for r in results)
            allowed = sum(1 for r, row in zip(results, request.persons, strict=True)
                          if row.allow_duplicate_face and r.outcome == pb.ImportResult.OUTCOME_IMPORTED)
            detail = (f"site={site.site_id} v{site.version} imported={counts['OUTCOME_IMPORTED']} "
                      f"skipped={counts['OUTCOME_SKIPPED']} refused={counts['OUTCOME_REFUSED']}")
            if allowed:
                detail += f" duplicate-face-allowed-rows={allowed}"
            return Done(pb.ImportPersonsResponse(results=results, version=site.version), "person.import",
                        detail, site.site_id)

        return await self._change(request, pb.ImportPersonsResponse, change)

    @mapped
    async def ListPersons(self, request, context):  # type: ignore[no-untyped-def]
        site, persons = await run(self.people.find, request.site, request.search)
        return pb.ListPersonsResponse(persons=persons, site_version=site.version)

    @mapped
    async def GetPerson(self, request, context):  # type: ignore[no-untyped-def]
        return await run(self.people.get, request.person_id)

    @mapped
    async def UpdatePerson(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            site, changed, dup = self.people.update(request)
            detail = f"{request.person_id} site={site.site_id} v{site.version} changed={','.join(changed)}"
            if dup is not None:
                detail += f" duplicate-face-allowed matches={dup.person_id} similarity={dup.similarity:.2f}"
            return Done(pb.UpdatePersonResponse(version=site.version), "person.update", detail, site.site_id)

        return await self._change(request, pb.UpdatePersonResponse, change)

    @mapped
    async def RevokeDevice(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            device = self.devices.revoke(request.site, request.device)
            response = pb.RevokeDeviceResponse(device_id=device.device_id, revoked_at=device.revoked_at or 0)
            return Done(response,
                        "device.revoke", f"{device.device_id} {device.name} site={device.site_id}",
                        device.site_id)

        response = await self._change(request, pb.RevokeDeviceResponse, change)
        self.notifier.end_device(response.device_id)  # its open streams on this replica end now
        return response

    @mapped
    async def ReplaceDevice(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            issued = self.devices.replace(request.site, request.name, request.token_ttl_s)
            response = pb.AddDeviceResponse(
                device_id=issued.device.device_id, token=issued.token, expires_at=issued.expires_at)
            return Done(response, "device.replace", f"{issued.device.device_id} {issued.device.name} "
                        "old keys revoked, new token issued", issued.device.site_id)

        response = await self._change(request, pb.AddDeviceResponse, change)
        self.notifier.end_device(response.device_id)  # the old keys' streams end now
        return response

    @mapped
    async def SetDeviceMode(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            c = self.modes.set(request.site, request.device, request.mode)
            response = pb.SetDeviceModeResponse(device_id=c.device.device_id, mode=c.new,  # type: ignore[arg-type]
                                                version=c.site.version)
            detail = (f"{c.device.device_id} {c.device.name} site={c.device.site_id} "
                      f"{mode_name(c.old)}->{mode_name(c.new)} "
                      + (f"v{c.site.version}" if c.changed else "unchanged"))
            return Done(response, "device.mode", detail, c.site.site_id if c.changed else "")

        return await self._change(request, pb.SetDeviceModeResponse, change)

    @mapped
    async def SiteReadiness(self, request, context):  # type: ignore[no-untyped-def]
        return await run(self.readiness.report, request.site, request.since)

    @mapped
    async def AddOperator(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            op = self.operators.add(request.name, request.role, request.public_key)
            return Done(operator_info(op), "operator.add", f"{op.key_id} {op.name} role={op.role}")

        return await self._change(request, pb.OperatorInfo, change)

    @mapped
    async def ListOperators(self, request, context):  # type: ignore[no-untyped-def]
        ops = await run(self.store.list_operators)
        return pb.ListOperatorsResponse(operators=[operator_info(o) for o in ops])

    @mapped
    async def RevokeOperator(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            op = self.operators.revoke(request.operator)
            return Done(operator_info(op), "operator.revoke", f"{op.key_id} {op.name} role={op.role}")

        return await self._change(request, pb.OperatorInfo, change)

    @mapped
    async def ListAudit(self, request, context):  # type: ignore[no-untyped-def]
        return await run(self._list_audit, request)

    def _list_audit(self, request: pb.ListAuditRequest) -> pb.ListAuditResponse:
        """A page of entries in seq order (filtered unless `all`), with the hub's public keys."""
        cap = LIMITS.max_audit_page
        limit = min(request.limit or cap, cap)
        hub_keys = self.whitelist.keys
        out = pb.ListAuditResponse(hub_keys=[pb.HubPublicKey(key_id=hub_keys.key_id,
                                                             sign_public_key=hub_keys.pair.sign_public)])
        for rotation in hub_keys.rotations:
            r = pb.KeyRotation.FromString(rotation.rotation)
            out.hub_keys.append(pb.HubPublicKey(key_id=r.new_key_id, sign_public_key=r.new_sign_key))
        for key_id, public in hub_keys.retired:
            out.hub_keys.append(pb.HubPublicKey(key_id=key_id, sign_public_key=public))
        after = request.after_seq
        while len(out.entries) < limit:
            page = self.store.audit_page(after, cap)
            if not page:
                return out
            for e in page:
                after = e.seq
                wanted = e.at >= request.since and request.actor.casefold() in e.principal.casefold()
                if request.all or wanted:
                    out.entries.append(pb.AuditRecord(
                        seq=e.seq, at=e.at, principal=e.principal, action=e.action, detail=e.detail,
                        prev_hash=e.prev_hash, entry_hash=e.entry_hash, key_id=e.key_id,
                        signature=e.signature))
                    if len(out.entries) >= limit:
                        break
        out.more = bool(self.store.audit_page(after, 1))
        return out

    @mapped
    async def RemovePerson(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            site = self.people.remove(request.person_id)
            return Done(pb.RemovePersonResponse(version=site.version), "person.remove",
                        f"{request.person_id} site={site.site_id} v{site.version}", site.site_id)

        return await self._change(request, pb.RemovePersonResponse, change)

    @mapped
    async def Fleet(self, request, context):  # type: ignore[no-untyped-def]
        devices = await run(self.devices.status, request.site)
        if self.logs is not None:
            for d in devices:
                await run(self.logs.annotate, d)
        return pb.FleetResponse(devices=devices)

    @mapped
    async def DecisionCounts(self, request, context):  # type: ignore[no-untyped-def]
        return await run(self.decisions.counts, request.site, request.device, request.since)

    @mapped
    async def VersionHistory(self, request, context):  # type: ignore[no-untyped-def]
        return await run(self.decisions.history, request.site, request.limit)

    @mapped
    async def SetOwnerKey(self, request, context):  # type: ignore[no-untyped-def]
        def change() -> Done:
            key_id, site = self.whitelist.set_owner_key(request.site, request.public_key)
            return Done(pb.SetOwnerKeyResponse(key_id=key_id, version=site.version), "site.owner_key",
                        f"{site.site_id} key={key_id} v{site.version}", site.site_id)

        return await self._change(request, pb.SetOwnerKeyResponse, change)

    @mapped
    async def StartRollout(self, request, context):  # type: ignore[no-untyped-def]
        label = hub_auth.CURRENT.get().label
        return await self._change(request, pb.RolloutStatus,
                                  lambda: self.rollouts.start(request, label))

    @mapped
    async def PromoteRollout(self, request, context):  # type: ignore[no-untyped-def]
        return await self._change(request, pb.RolloutStatus, lambda: self.rollouts.promote(request))

    @mapped
    async def AbortRollout(self, request, context):  # type: ignore[no-untyped-def]
        return await self._change(request, pb.RolloutStatus, lambda: self.rollouts.abort(request))

    @mapped
    async def GetRollout(self, request, context):  # type: ignore[no-untyped-def]
        return await run(self.rollouts.status, request.site)

    async def PullLogs(self, request, context):  # type: ignore[no-untyped-def,override]
        if self.logs is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "entry-log store is not configured")
        try:
            site = await run(self.store.get_site, request.site)
        except NotFound as exc:
            await self.refusals.abort(context, f"/{self.SERVICE}/PullLogs", grpc.StatusCode.NOT_FOUND,
                                      "not_found", str(exc))
        await run(self._audit, "logs.pull", f"site={site.site_id}")
        sealed = await run(self._sealed_roster, site)
        if sealed:
            yield pb.PullLogsResponse(sealed_roster=sealed)
        async for response in self.logs.pull(site.site_id, request.device_id, request.after_seq):
            yield response

    def _sealed_roster(self, site: Site) -> bytes:
        """Person id -> name for the site, sealed to its log-owner key (b"" without one), so
        the data owner's decrypted logs show names; the hub still cannot read the logs."""
        config = self.whitelist.config(site)
        if not config.log_owner_public_key:
            return b""
        roster = pb.Roster(site_id=site.site_id, site_name=site.name, made_at=int(time.time()),
                           utc_offset_minutes=config.utc_offset_minutes)
        for row in self.store.list_persons(site.site_id):
            roster.persons.add(person_id=row.person_id, name=self.whitelist.person_name(row.name_sealed))
        return seal_roster(roster, config.log_owner_public_key)
