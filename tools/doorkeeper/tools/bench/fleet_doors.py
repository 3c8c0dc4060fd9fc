"""Simulated doors for `doorkeeper bench fleet`: many light doors in one asyncio process.

Each door does what an agent does on the wire, for real: registration with a one-time token
(the hub proves its key first, the token secret travels sealed), its own Ed25519/X25519 keys,
its own gRPC channel (own TCP connection), a signed watch stream, deltas taken from the watch
stream (`--delivery watch`) or signed fetches, verified with the agent's own I/O-free core
(`doorkeeper.agent.sync.bundle`), apply into memory with the state digest checked against the
signed header, signed reports, and signed entry-log uploads of sealed, hash-chained records.
It leaves out what is not the hub's load: disk staging,
the SQLite whitelist, the face model.

Run as ``python -m doorkeeper.tools.bench.fleet_doors ARGS_FILE`` (JSON, with the doors' one-time
tokens, so not on the command line); the parent then drives it
with one JSON command per stdin line and reads one JSON answer per stdout line:
``{"cmd": "start"}`` (register, watch, first sync), ``{"cmd": "wait", "version": V}`` (when each
door's report of V was answered), ``{"cmd": "upload", ...}``, ``{"cmd": "stop"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from nacl.public import PublicKey, SealedBox

from doorkeeper.agent.sync import bundle as core
from doorkeeper.agent.sync.hubclient import CLIENT_OPTIONS, SYNC
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth, digest, entrylog, keys
from doorkeeper.wire import token as tokens
from doorkeeper.wire.freshness import new_nonce

CALL_TIMEOUT_S = 30.0
# A call nonce handed out on a stream is used only while surely unexpired (the hub's TTL is 120 s).
STREAM_NONCE_MAX_AGE_S = 60.0
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Stats:
    errors: Counter[str] = field(default_factory=Counter)  # "Method:CODE"
    # "Method:CODE" -> details and gRPC's debug string of its first few occurrences (where
    # a status came from: the hub's trailers, an RST_STREAM, the transport)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def failed(self, name: str, exc: grpc.aio.AioRpcError) -> None:
        key = f"{name}:{exc.code().name}"
        self.errors[key] += 1
        seen = self.samples.setdefault(key, [])
        if len(seen) < 3:
            seen.append(f"{exc.details()} | {exc.debug_error_string()}"[:600])
    rpcs: Counter[str] = field(default_factory=Counter)
    challenges: int = 0


def day_of_decisions(hours: int, rng: random.Random) -> list[pb.DecisionHour]:
    """The hourly decision counts a busy residential door reports (every manifest carries the
    last hours with any decision): `hours` hours up to now, a few dozen decisions each."""
    now = int(time.time()) // 3600 * 3600
    return [pb.DecisionHour(hour=now - 3600 * i, granted_face=rng.randint(5, 40),
                            granted_card=rng.randint(0, 5), refused_unknown_face=rng.randint(0, 3),
                            refused_other=rng.randint(0, 2))
            for i in reversed(range(hours))]


class Door:
    """One simulated door: keys, channel, in-memory whitelist, and its sync loop."""

    def __init__(self, address: str, token: str, stats: Stats, stream_nonces: bool,
                 inline_bytes: int = 0, decision_hours: int = 0) -> None:
        self.address = address
        self.token = tokens.Token.parse(token)
        self.stats = stats
        self.stream_nonces = stream_nonces
        self.inline_bytes = inline_bytes  # WatchRequest.inline_bundle_bytes (0: always fetch)
        self.decisions = day_of_decisions(decision_hours, random.Random(token))
        self.pair = keys.KeyPair.generate()
        self.channel = grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
        self.device_id = ""
        self.site_id = ""
        self.trust: core.Trust | None = None
        self.version = 0
        self.digest = b""
        self.persons: dict[str, bytes] = {}  # person_id -> record hash
        self.config_hash = digest.EMPTY_CONFIG
        self.owner_key: bytes = b""
        self.target = 0
        self.wake = asyncio.Event()
        self.spare: tuple[bytes, float] | None = None  # call nonce from a stream, and when
        self.reported: dict[int, float] = {}  # version -> wall time the hub answered its report
        self.bytes: dict[int, int] = {}  # version -> protobuf bytes in and out for it
        self.seq = 0
        self.chain = b"\0" * entrylog.HASH_BYTES
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    # ------------------------------------------------------------ calls
    async def _unary(self, method: str, raw: bytes, response: Any, metadata: Any = None) -> Any:
        name = method.rsplit("/", 1)[1]
        self.stats.rpcs[name] += 1
        call = self.channel.unary_unary(method, response_deserializer=response.FromString)
        try:
            return await call(raw, timeout=CALL_TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            self.stats.failed(name, exc)
            raise

    async def _signed_metadata(self, method: str, raw: bytes) -> Any:
        nonce = b""
        if self.spare is not None and time.monotonic() - self.spare[1] < STREAM_NONCE_MAX_AGE_S:
            nonce = self.spare[0]
        self.spare = None  # single use, whatever happens to the call
        if not nonce:
            self.stats.challenges += 1
            answer = await self._unary(SYNC + "Challenge",
                                       pb.ChallengeRequest(principal=self.device_id).SerializeToString(),
                                       pb.ChallengeResponse)
            nonce = answer.nonce
        sig = callauth.call_signature(self.pair.sign_key, method, self.device_id, nonce, raw)
        return callauth.metadata(self.device_id, nonce, sig)

    async def signed(self, method: str, request: Any, response: Any) -> Any:
        raw = request.SerializeToString()
        return await self._unary(method, raw, response, await self._signed_metadata(method, raw))

    # ------------------------------------------------------------ registration
    async def register(self) -> None:
        challenge = new_nonce()
        hello = await self._unary(SYNC + "Challenge",
                                  pb.ChallengeRequest(hub_challenge=challenge).SerializeToString(),
                                  pb.ChallengeResponse)
        hub_sign, hub_box = bytes(hello.hub_sign_key), bytes(hello.hub_box_key)
        if keys.fingerprint(hub_sign) != self.token.hub_fingerprint or not keys.verify(
                hub_sign, hello.hub_proof, keys.CTX_HUB_PROOF, challenge, hub_sign, hub_box):
            raise RuntimeError("the hub did not prove the key the token names")
        proof = keys.sign(self.pair.sign_key, keys.CTX_REGISTER, self.token.token_id,
                          self.pair.sign_public, self.pair.box_public)
        request = pb.RegisterRequest(
            token_id=self.token.token_id, sealed_token_secret=SealedBox(PublicKey(hub_box)).encrypt(
                self.token.secret), device_sign_key=self.pair.sign_public,
            device_box_key=self.pair.box_public, proof=proof)
        answer = await self._unary(SYNC + "Register", request.SerializeToString(), pb.RegisterResponse)
        if not keys.verify(hub_sign, answer.hub_signature, keys.CTX_REGISTERED, answer.device_id,
                           self.pair.sign_public, self.pair.box_public, answer.hub_box_key):
            raise RuntimeError("registration answer not signed by the pinned key")
        self.device_id, self.site_id = answer.device_id, answer.site_id
        self.trust = core.Trust(hub_sign, answer.site_id, answer.device_id, self.pair.box_key, hub_box)
        await self.report(b"")  # the first signed call completes the registration

    # ------------------------------------------------------------ sync
    async def watch(self) -> None:
        """Follow the watch stream; reconnect with the agent's backoff shape when it ends."""
        failures = 0
        while True:
            nonce = new_nonce()
            request = pb.WatchRequest(current_version=self.version, nonce=nonce,
                                      call_nonces=self.stream_nonces, inline_bundle_bytes=self.inline_bytes)
            raw = request.SerializeToString()
            try:
                metadata = await self._signed_metadata(SYNC + "Watch", raw)
                self.stats.rpcs["Watch"] += 1
                call = self.channel.unary_stream(SYNC + "Watch",
                                                 response_deserializer=pb.WatchEvent.FromString)
                async for event in call(raw, metadata=metadata, timeout=86400):
                    failures = 0
                    assert self.trust is not None
                    beacon = core.verify_beacon(event.beacon, self.trust)
                    if bytes(beacon.nonce) != nonce:
                        raise RuntimeError("watch beacon does not echo our nonce")
                    if event.call_nonce:
                        self.spare = (bytes(event.call_nonce), time.monotonic())
                    if beacon.version > self.version:
                        self.bytes[beacon.version] = self.bytes.get(beacon.version, 0) + event.ByteSize()
                        self.target = max(self.target, beacon.version)
                        if event.HasField("header"):
                            self._apply_pushed(event)
                        self.wake.set()  # report what was applied, or fetch
            except grpc.aio.AioRpcError as exc:
                self.stats.failed("Watch", exc)
            except asyncio.CancelledError:
                if self.stopping:
                    raise
                # grpc.aio raises this (not an AioRpcError) for a call it counts as locally
                # cancelled; the agent's (sync) client sees CANCELLED and reconnects: so do we.
                self.stats.errors["Watch:CancelledError"] += 1
            failures += 1
            step = min(10.0, 0.5 * 2 ** min(failures, 10))
            await asyncio.sleep(step * (0.5 + 0.5 * random.random()))

    async def sync_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            failures = 0
            while self.version < self.target or self.version not in self.reported:
                try:
                    nonce = await self.fetch() if self.version < self.target else b""
                    await self.report(nonce)
                    failures = 0
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in TRANSIENT:
                        raise
                    failures += 1
                except asyncio.CancelledError:  # as in `watch`
                    if self.stopping:
                        raise
                    self.stats.errors["Sync:CancelledError"] += 1
                    failures += 1
                    await asyncio.sleep(min(10.0, 0.5 * 2 ** failures) * (0.5 + 0.5 * random.random()))

    async def fetch(self) -> bytes:
        """Fetch, verify and apply whatever takes us to the hub's version; the report nonce."""
        assert self.trust is not None
        nonce = new_nonce()
        request = pb.FetchRequest(current_version=self.version, nonce=nonce, call_nonce=self.stream_nonces)
        raw = request.SerializeToString()
        metadata = await self._signed_metadata(SYNC + "Fetch", raw)
        self.stats.rpcs["Fetch"] += 1
        call = self.channel.unary_stream(SYNC + "Fetch", response_deserializer=pb.BundlePart.FromString)
        vh: core.VerifiedHeader | None = None
        chunks: list[bytes] = []
        wire = len(raw)
        try:
            async for part in call(raw, metadata=metadata, timeout=CALL_TIMEOUT_S * 4):
                wire += part.ByteSize()
                if part.call_nonce:
                    self.spare = (bytes(part.call_nonce), time.monotonic())
                which = part.WhichOneof("part")
                if which == "up_to_date":
                    beacon = core.verify_beacon(part.up_to_date, self.trust)
                    if bytes(beacon.nonce) != nonce:
                        raise core.Unproven("up_to_date does not echo our nonce")
                    self.target = max(self.target, beacon.version) if beacon.version > self.version else \
                        self.version
                    return nonce
                if which == "header":
                    vh = core.verify_header(part.header, self.trust, self.version, time.time())
                elif which == "chunk":
                    if vh is None or part.chunk.index != len(chunks):
                        raise core.Truncated("chunk out of order")
                    core.check_chunk(vh, part.chunk.index, part.chunk.data)
                    chunks.append(bytes(part.chunk.data))
        except grpc.aio.AioRpcError as exc:
            self.stats.failed("Fetch", exc)
            raise
        if vh is None or len(chunks) != vh.chunk_count:
            raise core.Truncated("fetch ended early")
        self._apply(vh, chunks)
        self.bytes[self.version] = self.bytes.get(self.version, 0) + wire
        return nonce

    def _apply_pushed(self, event: pb.WatchEvent) -> None:
        """Apply the delta a watch event carried, as the agent does; one that does not verify
        or start here is left to the fetch that follows (counted, never fatal)."""
        assert self.trust is not None
        try:
            vh = core.verify_header(event.header, self.trust, self.version, time.time())
            if len(event.chunks) != vh.chunk_count:
                raise core.Truncated("watch event without all chunks")
            for i, chunk in enumerate(event.chunks):
                if chunk.index != i:
                    raise core.Truncated("chunk out of order")
                core.check_chunk(vh, i, chunk.data)
            self._apply(vh, [bytes(c.data) for c in event.chunks])
            self.stats.rpcs["pushed"] += 1
        except core.BadBundle as exc:
            self.stats.errors[f"pushed:{type(exc).__name__}"] += 1

    def _apply(self, vh: core.VerifiedHeader, chunks: list[bytes]) -> None:
        assert self.trust is not None
        if not vh.is_snapshot and vh.header.from_version != self.version:
            return  # the watch stream and a fetch raced: this one starts at an older version
        key = core.open_content_key(vh, self.trust)
        persons = {} if vh.is_snapshot else dict(self.persons)
        config_hash = digest.EMPTY_CONFIG if vh.is_snapshot else self.config_hash
        owner = self.owner_key
        for data in chunks:
            for change in core.decrypt_chunk(key, data):
                which = change.WhichOneof("change")
                if which == "upsert_record":
                    record = core.parse_record(change.upsert_record)
                    persons[record.person_id] = digest.record_hash(change.upsert_record)
                elif which == "remove_person_id":
                    persons.pop(change.remove_person_id, None)
                elif which == "site_config":
                    config_hash = digest.record_hash(change.site_config)
                    owner = bytes(pb.SiteConfig.FromString(change.site_config).log_owner_public_key)
        state = digest.state_digest(config_hash, sorted(persons.items()))
        h = vh.header
        if state != h.state_digest or len(persons) != h.person_count:
            raise core.DigestMismatch(f"state after version {h.to_version} differs from the hub's")
        self.persons, self.config_hash, self.owner_key = persons, config_hash, owner
        self.version, self.digest = h.to_version, state

    async def report(self, _fetch_nonce: bytes) -> None:
        nonce = new_nonce()
        manifest = pb.Manifest(site_id=self.site_id, device_id=self.device_id, version=self.version,
                               state_digest=self.digest, person_count=len(self.persons),
                               device_time=int(time.time()), agent_version="bench-fleet",
                               beacon_nonce=nonce, decisions=self.decisions)
        raw = manifest.SerializeToString()
        signature = keys.sign(self.pair.sign_key, keys.CTX_MANIFEST, raw)
        signed = pb.SignedManifest(manifest=raw, signature=signature)
        answer = await self.signed(SYNC + "Report", signed, pb.ReportResponse)
        self.reported.setdefault(self.version, time.time())
        self.bytes[self.version] = self.bytes.get(self.version, 0) + signed.ByteSize() + answer.ByteSize()
        if answer.HasField("beacon") and self.trust is not None:
            beacon = core.verify_beacon(answer.beacon, self.trust)
            if bytes(beacon.nonce) != nonce:
                raise core.Unproven("report beacon does not echo our nonce")
            if beacon.version > self.version:
                self.target = max(self.target, beacon.version)
                self.wake.set()

    # ------------------------------------------------------------ entry logs
    async def upload(self, batches: int, per_batch: int) -> int:
        """Upload `batches` batches of `per_batch` sealed, chained records; records stored."""
        if not self.owner_key:
            raise RuntimeError("no log-owner key reached this door")
        owner = entrylog.OwnerKey.from_public(self.owner_key)
        stored = 0
        for _ in range(batches):
            records = []
            for _ in range(per_batch):
                self.seq += 1
                entry = entrylog.Entry(door="front", decision="granted", credential="face",
                                       person_id="p", similarity=0.7, whitelist_version=self.version)
                raw = entrylog.seal_entry(entry, self.device_id, self.seq, self.chain, owner)
                self.chain = entrylog.chain_value(raw)
                records.append(raw)
            batch = entrylog.sign_batch(self.pair.sign_key, site_id=self.site_id, device_id=self.device_id,
                                        records=records, sent_at_ms=int(time.time() * 1000))
            while True:
                try:
                    ack = await self.signed(SYNC + "UploadLogs", batch, pb.LogAck)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in TRANSIENT:
                        raise
                    await asyncio.sleep(0.5 * (0.5 + random.random()))
            stored += per_batch - ack.duplicates
        return stored


class Fleet:
    def __init__(self, args: dict[str, Any]) -> None:
        self.stats = Stats()
        self.doors = [Door(args["address"], t, self.stats, args["stream_nonces"], args.get("inline_bytes", 0),
                           args.get("decision_hours", 0)) for t in args["tokens"]]
        self.concurrency = args.get("concurrency", 64)

    async def start(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(door: Door) -> None:
            async with gate:
                for attempt in range(5):
                    try:
                        await door.register()
                        break
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() not in TRANSIENT or attempt == 4:
                            raise
                        await asyncio.sleep(1 + random.random())
                door.tasks = [asyncio.create_task(door.watch()), asyncio.create_task(door.sync_loop())]

        start = time.monotonic()
        await asyncio.gather(*(one(d) for d in self.doors))
        return {"registered": len(self.doors), "s": time.monotonic() - start}

    async def wait(self, version: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(version in d.reported for d in self.doors):
                break
            for task in (t for d in self.doors for t in d.tasks if t.done()):
                if task.cancelled():
                    raise RuntimeError("a door's loop was cancelled")
                task.result()  # a door's loop died: say why
                raise RuntimeError("a door's loop ended")
            await asyncio.sleep(0.05)
        times = [d.reported[version] for d in self.doors if version in d.reported]
        return {"times": times, "missing": len(self.doors) - len(times),
                "bytes": sum(d.bytes.get(version, 0) for d in self.doors), **self.counters()}

    async def upload(self, batches: int, per_batch: int) -> dict[str, Any]:
        start = time.monotonic()
        stored = await asyncio.gather(*(d.upload(batches, per_batch) for d in self.doors))
        return {"records": sum(stored), "s": time.monotonic() - start, **self.counters()}

    def counters(self) -> dict[str, Any]:
        return {"errors": dict(self.stats.errors), "error_samples": self.stats.samples,
                "rpcs": dict(self.stats.rpcs),
                "challenges": self.stats.challenges, "cpu_s": time.process_time()}

    async def stop(self) -> None:
        for d in self.doors:
            d.stopping = True
            for t in d.tasks:
                t.cancel()
        await asyncio.gather(*(d.channel.close() for d in self.doors), return_exceptions=True)


async def main(args: dict[str, Any]) -> None:
    raise_fd_limit()
    if args.get("core") is not None:
        os.sched_setaffinity(0, {args["core"]})
    fleet = Fleet(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        cmd = command["cmd"]
        try:
            if cmd == "start":
                answer = await fleet.start()
            elif cmd == "wait":
                answer = await fleet.wait(command["version"], command.get("timeout", 120.0))
            elif cmd == "upload":
                answer = await fleet.upload(command["batches"], command["records"])
            elif cmd == "stop":
                await fleet.stop()
                print(json.dumps({"stopped": True}), flush=True)
                return
            else:
                answer = {"error": f"unknown command {cmd}"}
        except Exception as exc:  # reported to the parent, which fails the run with it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
