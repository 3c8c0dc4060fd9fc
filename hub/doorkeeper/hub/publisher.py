"""Building and issuing bundles.

A bundle for (site, from, to) is built once: its changes are serialised into
chunks of about `target_chunk_bytes`, each chunk is encrypted with one fresh
random content key (XSalsa20-Poly1305), and the ciphertext is cached in the
store, named by its version range. Issuing it to a device is cheap: the
content key is sealed to that device's X25519 key and a small header is
signed. Wrapping uses crypto_box with a shared key precomputed once per
device (the DESIGN's per-device SealedBox costs a fresh X25519 per wrap,
which alone made 1,000 doors cost 4x one door). That is what makes
publishing to 1,000 doors cost little more than publishing to one
(`doorkeeper bench sync` measures it).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nacl.public import Box, PublicKey
from nacl.secret import SecretBox
from nacl.utils import random as random_bytes

from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.store import (
    BasePerson,
    BundleMeta,
    Changed,
    Device,
    HubStore,
    Rollout,
    Site,
    StateView,
)
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from doorkeeper.wire.limits import LIMITS, Limits

log = logging.getLogger("doorkeeper.hub")
BUNDLE_FORMAT = 1
DEFAULT_BUNDLE_TTL_S = 24 * 3600
# Shared keys kept for the most recently served devices (about 200 bytes each); a device
# beyond the cap costs one X25519 (~60 us) when it next fetches.
DEVICE_KEY_CACHE = 10_000


def wrap_key(box: Box, content_key: bytes, nonce: bytes) -> bytes:
    """BundleHeader.wrapped_key: nonce (24) || crypto_box MAC (16) || boxed content key (32)."""
    return bytes(box.encrypt(content_key, nonce))


def sign_header(hub_keys: HubKeys, header: pb.BundleHeader) -> pb.SignedBundleHeader:
    raw = header.SerializeToString(deterministic=True)
    return pb.SignedBundleHeader(
        header=raw, signature=keys.sign(hub_keys.pair.sign_key, keys.CTX_BUNDLE_HEADER, raw)
    )


def sign_beacon(hub_keys: HubKeys, beacon: pb.Beacon) -> pb.SignedBeacon:
    raw = beacon.SerializeToString(deterministic=True)
    return pb.SignedBeacon(beacon=raw, signature=keys.sign(hub_keys.pair.sign_key, keys.CTX_BEACON, raw))


@dataclass
class _ChunkWriter:
    """Accumulates serialised changes into encrypted chunks spooled to a temp file."""

    box: SecretBox
    target: int
    spool: tempfile.SpooledTemporaryFile  # type: ignore[type-arg]
    pending: bytearray
    hashes: list[bytes]
    lengths: list[int]
    total: hashlib._Hash
    random: Callable[[int], bytes] = random_bytes  # chunk nonces (seeded by the vector tool)

    def add(self, change: pb.Change) -> None:
        # A ChangeBatch is field 1 repeated: appending encoded fields concatenates messages.
        self.pending += pb.ChangeBatch(changes=[change]).SerializeToString(deterministic=True)
        if len(self.pending) >= self.target:
            self.flush()

    def flush(self) -> None:
        if not self.pending and self.hashes:
            return
        ct = bytes(self.box.encrypt(bytes(self.pending), self.random(SecretBox.NONCE_SIZE)))
        self.spool.write(ct)
        self.hashes.append(hashlib.sha256(ct).digest())
        self.lengths.append(len(ct))
        self.total.update(ct)
        self.pending = bytearray()


class Publisher:
    """Builds, caches and issues bundles for devices."""

    def __init__(
        self,
        store: HubStore,
        hub_keys: HubKeys,
        limits: Limits = LIMITS,
        clock: Callable[[], float] = time.time,
        bundle_ttl_s: int = DEFAULT_BUNDLE_TTL_S,
        metrics: Any = None,
        device_key_cache: int = DEVICE_KEY_CACHE,
        random: Callable[[int], bytes] = random_bytes,
    ) -> None:
        """`random` makes content keys and nonces; only the vector tool passes a seeded one."""
        self.random = random
        self.store = store
        self.keys = hub_keys
        self.limits = limits
        self.clock = clock
        self.bundle_ttl_s = bundle_ttl_s
        self.metrics = metrics
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Precomputed crypto_box shared keys per device (one X25519 each, then ~3 us per wrap)
        # and unsealed content keys per bundle.
        self._boxes: OrderedDict[tuple[str, bytes], Box] = OrderedDict()
        self._boxes_cap = device_key_cache
        self._boxes_guard = threading.Lock()
        self._content_keys: dict[str, bytes] = {}
        # One long-lived thread prunes old bundles off the fetch path (a thread per bundle
        # would open a store connection per bundle).
        self._pruner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="doorkeeper-prune")

    def close(self) -> None:
        self._pruner.shutdown(wait=True)

    def _lock(self, site_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(site_id, threading.Lock())

    def bundle_for(
        self, site_id: str, current_version: int, want_snapshot: bool = False
    ) -> BundleMeta | None:
        """The bundle that takes a device from `current_version` to the site's version.

        None when the device is already current (and not asking for a resync).
        A device behind the compaction horizon, ahead of the hub, or whose delta
        would touch more than half the site gets a snapshot.
        """
        # One build per site in this hub (threads), then among all replicas (the store).
        with self._lock(site_id), self.store.building(site_id):
            with self.store.reading(site_id) as view:
                site = view.site
                if current_version == site.version and not want_snapshot:
                    return None
                snapshot = want_snapshot or current_version == 0 or current_version > site.version
                changed = None if snapshot else view.changed_since(current_version)
                if changed is None or len(changed.person_ids) > max(64, site.person_count // 2):
                    snapshot = True
                kind = pb.BUNDLE_KIND_SNAPSHOT if snapshot else pb.BUNDLE_KIND_DELTA
                from_version = 0 if snapshot else current_version
                cached = self.store.find_bundle(site_id, kind, from_version, site.version)
                if cached is not None:
                    return cached
                meta, spool = self._build(view, kind, from_version, None if snapshot else changed)
                if self.metrics is not None:
                    self.metrics.bundle_built("snapshot" if snapshot else "delta")
            with spool:
                spool.seek(0)
                stored = self.store.put_bundle(meta, _read_chunks(spool, meta.chunk_length))
            # Older bundles are useless now; drop them off the fetch path.
            self._pruner.submit(self.store.prune_bundles, site_id, site.version).add_done_callback(
                _log_prune_failure)
            return stored

    def base_snapshot(self, rollout: Rollout) -> BundleMeta:
        """A snapshot of a staged rollout's base, for the doors held there (built once).

        Stored as (site, snapshot, 0, base version): the site held exactly the base at that
        version (versions only grow, each names one state), so this is the very bundle a
        snapshot of the head at that version would be, never a different one under the same
        name; a cached one whose digest is not the base digest is refused. While the rollout
        is staged, pruning keeps it (`HubStore.prune_bundles`)."""
        site_id = rollout.site_id
        with self._lock(site_id), self.store.building(site_id):
            cached = self.store.find_bundle(site_id, pb.BUNDLE_KIND_SNAPSHOT, 0, rollout.base_version)
            if cached is None:
                view = _BaseView(rollout, self.store.rollout_persons(rollout.rollout_id))
                meta, spool = self._build(view, pb.BUNDLE_KIND_SNAPSHOT, 0, None)
                if self.metrics is not None:
                    self.metrics.bundle_built("snapshot")
                with spool:
                    spool.seek(0)
                    cached = self.store.put_bundle(meta, _read_chunks(spool, meta.chunk_length))
        if cached.state_digest != rollout.base_digest:
            raise RuntimeError(f"bundle {cached.bundle_id} for v{rollout.base_version} does not hold the "
                               "rollout's base")
        return cached

    def _build(  # type: ignore[no-untyped-def]
        self, view: StateView, kind: int, from_version: int, changed: Changed | None
    ) -> tuple[BundleMeta, tempfile.SpooledTemporaryFile]:  # type: ignore[type-arg]
        site = view.site
        content_key = self.random(SecretBox.KEY_SIZE)
        spool = tempfile.SpooledTemporaryFile(max_size=8 * self.limits.target_chunk_bytes)  # noqa: SIM115
        writer = _ChunkWriter(
            box=SecretBox(content_key),
            target=self.limits.target_chunk_bytes,
            spool=spool,
            pending=bytearray(),
            hashes=[],
            lengths=[],
            total=hashlib.sha256(),
            random=self.random,
        )
        if changed is None or changed.config:
            writer.add(pb.Change(site_config=self.keys.unseal(site.config_sealed)))
        ids = None if changed is None else changed.person_ids
        for person_id, sealed in view.records(ids):
            if sealed is None:
                writer.add(pb.Change(remove_person_id=person_id))
            else:
                writer.add(pb.Change(upsert_record=self.keys.unseal(sealed)))
        writer.flush()
        meta = BundleMeta(
            bundle_id=uuid.uuid4().hex,
            site_id=site.site_id,
            kind=kind,
            from_version=from_version,
            to_version=site.version,
            ciphertext_sha256=writer.total.digest(),
            chunk_sha256=tuple(writer.hashes),
            chunk_length=tuple(writer.lengths),
            content_key_sealed=self.keys.seal(content_key),
            state_digest=site.state_digest,
            person_count=site.person_count,
            created_at=int(self.clock()),
        )
        return meta, spool

    def issue(self, meta: BundleMeta, device: Device, nonce: bytes = b"",
              effective_at: int = 0) -> pb.SignedBundleHeader:
        """The signed header for one device: content key sealed to its X25519 key, and the
        door's fetch nonce (the bundle then proves the site was at its version since).
        `effective_at` (a promotion delivered early, `rollouts.early_at`) is this door's own:
        the cached bundle is shared and carries no time."""
        if device.box_public is None or device.site_id != meta.site_id:
            raise ValueError("device is not registered for this site")
        content_key = self._content_keys.get(meta.bundle_id)
        if content_key is None:
            content_key = self.keys.unseal(meta.content_key_sealed)
            if len(self._content_keys) > 64:
                self._content_keys.clear()
            self._content_keys[meta.bundle_id] = content_key
        box = self._box(device.device_id, device.box_public)
        now = int(self.clock())
        header = pb.BundleHeader(
            format=BUNDLE_FORMAT,
            kind=meta.kind,  # type: ignore[arg-type]
            site_id=meta.site_id,
            device_id=device.device_id,
            from_version=meta.from_version,
            to_version=meta.to_version,
            issued_at=now,
            expires_at=now + self.bundle_ttl_s,
            key_id=self.keys.key_id,
            payload_length=sum(meta.chunk_length),
            ciphertext_sha256=meta.ciphertext_sha256,
            chunk_sha256=list(meta.chunk_sha256),
            chunk_length=list(meta.chunk_length),
            wrapped_key=wrap_key(box, content_key, self.random(Box.NONCE_SIZE)),
            state_digest=meta.state_digest,
            person_count=meta.person_count,
            nonce=nonce,
            effective_at=effective_at,
        )
        return sign_header(self.keys, header)

    def _box(self, device_id: str, box_public: bytes) -> Box:
        """The device's precomputed shared key; least recently used ones beyond the cap go."""
        key = (device_id, box_public)
        with self._boxes_guard:
            box = self._boxes.get(key)
            if box is not None:
                self._boxes.move_to_end(key)
                return box
        box = Box(self.keys.pair.box_key, PublicKey(box_public))
        with self._boxes_guard:
            self._boxes[key] = box
            while len(self._boxes) > self._boxes_cap:
                self._boxes.popitem(last=False)
        return box

    @property
    def cached_device_keys(self) -> int:
        return len(self._boxes)

    def warm(self, devices: Iterable[Device]) -> int:
        """Precompute the crypto_box shared key of every registered device (one X25519 each),
        so the first publish after a hub start costs what later ones do. Returns how many."""
        n = 0
        for device in devices:
            if device.box_public is not None:
                self._box(device.device_id, device.box_public)
                n += 1
        return n

    def chunks(self, meta: BundleMeta, start: int = 0) -> Iterator[pb.Chunk]:
        for index in range(start, len(meta.chunk_length)):
            yield pb.Chunk(index=index, data=self.store.read_chunk(meta.bundle_id, index))

    def beacon(self, site_id: str, nonce: bytes = b"") -> pb.SignedBeacon:
        return self.beacon_of(self.store.get_site(site_id), nonce)

    def beacon_of(self, site: Site, nonce: bytes = b"") -> pb.SignedBeacon:
        """A beacon for `site` as read: no store access (one Ed25519 signature, tens of us),
        cheap enough for the event loop."""
        site_id = site.site_id
        return sign_beacon(
            self.keys,
            pb.Beacon(
                site_id=site_id,
                version=site.version,
                hub_time=int(self.clock()),
                nonce=nonce,
                key_id=self.keys.key_id,
                state_digest=site.state_digest,
            ),
        )


class _BaseView:
    """A `StateView` of a rollout's base (its copied records), for `Publisher._build`."""

    def __init__(self, rollout: Rollout, persons: list[BasePerson]) -> None:
        self.site = Site(site_id=rollout.site_id, name="", version=rollout.base_version,
                         state_digest=rollout.base_digest, person_count=rollout.base_person_count,
                         config_sealed=rollout.base_config_sealed, config_hash=rollout.base_config_hash,
                         created_at=rollout.started_at)
        self._persons = persons

    def changed_since(self, version: int) -> Changed | None:
        return None  # a base is only ever served whole

    def records(self, person_ids: Iterable[str] | None = None) -> Iterator[tuple[str, bytes | None]]:
        for p in self._persons:
            yield p.person_id, p.record_sealed


def _log_prune_failure(done: Future[int]) -> None:
    exc = done.exception()
    if exc is not None:  # old bundles stay until the next build prunes them
        log.warning("pruning old bundles failed: %s", exc)


def _read_chunks(spool, lengths: tuple[int, ...]) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    for n in lengths:
        yield spool.read(n)
