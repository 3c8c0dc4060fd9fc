"""Attacks on the hub -> agent channel: every refusal leaves the whitelist exactly as it was.

The real hub builds and signs real bundles; an attacker between it and the
agent (or a hub signing something wrong) rewrites the Fetch stream. Each test
checks the refusal's kind and that version, digest and every stored record
are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from nacl.public import PrivateKey, SealedBox
from nacl.signing import SigningKey

from doorkeeper.hub.publisher import sign_header
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.harness import Agent, random_template, register_agent

Parts = list[pb.BundlePart]


class Intercept:
    """Between the agent and the real hub: records and rewrites Fetch streams."""

    def __init__(self, agent: Agent) -> None:
        self.real = agent.syncer.client.stream
        self.rewrite: Callable[[Parts], Parts] | None = None
        self.seen: list[Parts] = []
        agent.syncer.client.stream = self  # type: ignore[method-assign]

    def __call__(self, method: str, request: object, timeout: float):  # type: ignore[no-untyped-def]
        parts = list(self.real(method, request, timeout))
        if method.endswith("/Fetch"):
            self.seen.append(parts)
            if self.rewrite is not None:
                parts = self.rewrite(parts)
        return iter(parts)


def snapshot_state(agent: Agent) -> tuple[int, bytes, list[bytes], bytes]:
    wl = agent.whitelist
    return (wl.version, wl.state_digest, sorted(r.SerializeToString() for r in wl.records()),
            wl.compute_digest())


def header_of(parts: Parts) -> pb.BundleHeader:
    return pb.BundleHeader.FromString(parts[0].header.header)


def with_header(parts: Parts, signed: pb.SignedBundleHeader) -> Parts:
    return [pb.BundlePart(header=signed), *parts[1:]]


def hub_resigned(hub, parts: Parts, edit: Callable[[pb.BundleHeader], None]) -> Parts:  # type: ignore[no-untyped-def]
    """What a hub (or a stolen hub key) signing something wrong would send."""
    h = header_of(parts)
    edit(h)
    return with_header(parts, sign_header(hub.hub.keys, h))


@pytest.fixture
def setup(hub, operator, tmp_path: Path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    operator.add_site("oak")
    operator.add_person("oak", templates=[random_template(rng)], cards=["CARD0001"])
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    assert agent.syncer.sync_once().outcome == "applied"
    operator.add_person("oak", templates=[random_template(rng)])  # the hub now has something new
    intercept = Intercept(agent)
    yield agent, intercept, rng
    agent.close()


def refused(agent: Agent, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    before = snapshot_state(agent)
    with caplog.at_level(logging.ERROR, logger="doorkeeper.agent.sync.syncer"):
        result = agent.syncer.sync_once()
    assert result.outcome == "refused", result
    assert result.detail.startswith(kind), result.detail
    assert snapshot_state(agent) == before
    assert agent.syncer.state.refused.get(kind) == 1
    assert any(kind in r.getMessage() and "unchanged" in r.getMessage() for r in caplog.records)
    assert not agent.syncer.staging.payload_path.exists()


def test_signature_by_another_key_is_refused(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup
    attacker = SigningKey.generate()
    intercept.rewrite = lambda parts: with_header(parts, pb.SignedBundleHeader(
        header=parts[0].header.header,
        signature=keys.sign(attacker, keys.CTX_BUNDLE_HEADER, parts[0].header.header)))
    refused(agent, "Forged", caplog)


def test_tampered_header_is_refused(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def tamper(parts: Parts) -> Parts:
        h = header_of(parts)
        h.to_version += 5
        return with_header(parts, pb.SignedBundleHeader(
            header=h.SerializeToString(), signature=parts[0].header.signature))

    intercept.rewrite = tamper
    refused(agent, "Forged", caplog)


def test_bundle_for_another_device_is_refused(setup, hub, operator, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup
    other = register_agent(operator, "oak", "back", tmp_path / "back")
    try:
        device = hub.hub.store.get_device(other.syncer.identity.device_id)
        meta = hub.hub.publisher.bundle_for(device.site_id, agent.whitelist.version)
        intercept.rewrite = lambda parts: with_header(parts, hub.hub.publisher.issue(meta, device))
        refused(agent, "WrongDevice", caplog)
    finally:
        other.close()


def test_bundle_for_another_site_is_refused(setup, hub, operator, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, rng = setup
    operator.add_site("elm")
    operator.add_person("elm", templates=[random_template(rng)])
    other = register_agent(operator, "elm", "gate", tmp_path / "elm")
    try:
        device = hub.hub.store.get_device(other.syncer.identity.device_id)
        meta = hub.hub.publisher.bundle_for(device.site_id, 0)
        chunks = list(hub.hub.publisher.chunks(meta))
        intercept.rewrite = lambda parts: [pb.BundlePart(header=hub.hub.publisher.issue(meta, device)),
                                           *[pb.BundlePart(chunk=c) for c in chunks]]
        refused(agent, "WrongDevice", caplog)
    finally:
        other.close()


def test_rollback_to_an_older_snapshot_is_refused(hub, operator, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(8)
    operator.add_site("oak")
    operator.add_person("oak", templates=[random_template(rng)])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        intercept = Intercept(agent)
        assert agent.syncer.sync_once().outcome == "applied"
        old_snapshot = intercept.seen[-1]
        operator.remove_person(operator.add_person("oak", templates=[random_template(rng)]).person_id)
        assert agent.syncer.sync_once().outcome == "applied"
        operator.add_person("oak", templates=[random_template(rng)])
        intercept.rewrite = lambda parts: old_snapshot
        refused(agent, "Rollback", caplog)
    finally:
        agent.close()


def test_replayed_delta_is_refused(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup
    assert agent.syncer.sync_once().outcome == "applied"
    captured = intercept.seen[-1]
    assert header_of(captured).kind == pb.BUNDLE_KIND_DELTA
    intercept.rewrite = lambda parts: captured
    refused(agent, "NothingNew", caplog)


def test_expired_bundle_is_refused(setup, hub, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def expire(h: pb.BundleHeader) -> None:
        h.issued_at -= 3 * 86400
        h.expires_at = h.issued_at + 86400

    intercept.rewrite = lambda parts: hub_resigned(hub, parts, expire)
    refused(agent, "Expired", caplog)


def test_truncated_chunk_is_refused(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def cut(parts: Parts) -> Parts:
        last = parts[-1].chunk
        return [*parts[:-1], pb.BundlePart(chunk=pb.Chunk(index=last.index, data=last.data[:-7]))]

    intercept.rewrite = cut
    refused(agent, "Truncated", caplog)


def test_corrupted_chunk_is_refused(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def flip(parts: Parts) -> Parts:
        data = bytearray(parts[1].chunk.data)
        data[len(data) // 2] ^= 0x01
        return [parts[0], pb.BundlePart(chunk=pb.Chunk(index=0, data=bytes(data))), *parts[2:]]

    intercept.rewrite = flip
    refused(agent, "Truncated", caplog)


def test_oversized_header_is_refused_before_its_signature_is_checked(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup
    intercept.rewrite = lambda parts: with_header(parts, pb.SignedBundleHeader(
        header=parts[0].header.header + b"\x00" * 70_000, signature=parts[0].header.signature))
    refused(agent, "Oversized", caplog)


def test_oversized_declared_chunks_are_refused(setup, hub, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def inflate(h: pb.BundleHeader) -> None:
        h.chunk_length[0] = 512 * 1024 * 1024
        h.payload_length = sum(h.chunk_length)

    intercept.rewrite = lambda parts: hub_resigned(hub, parts, inflate)
    refused(agent, "Oversized", caplog)


def test_key_sealed_to_another_device_is_undecryptable(setup, hub, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def rewrap(h: pb.BundleHeader) -> None:
        h.wrapped_key = SealedBox(PrivateKey.generate().public_key).encrypt(b"k" * 32)

    intercept.rewrite = lambda parts: hub_resigned(hub, parts, rewrap)
    refused(agent, "Undecryptable", caplog)


def test_wrong_state_digest_is_refused_and_a_snapshot_repairs(setup, hub, caplog) -> None:  # type: ignore[no-untyped-def]
    agent, intercept, _ = setup

    def lie(h: pb.BundleHeader) -> None:
        h.state_digest = b"\x11" * 32

    intercept.rewrite = lambda parts: hub_resigned(hub, parts, lie)
    refused(agent, "DigestMismatch", caplog)
    assert agent.syncer.state.resync_wanted
    intercept.rewrite = None
    assert agent.syncer.sync_once().outcome == "applied"
    assert header_of(intercept.seen[-1]).kind == pb.BUNDLE_KIND_SNAPSHOT
    site = hub.hub.store.get_site("oak")
    assert (agent.whitelist.version, agent.whitelist.state_digest) == (site.version, site.state_digest)


def test_interrupted_download_resumes_from_the_last_whole_chunk(hub, operator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from doorkeeper.wire.limits import LIMITS

    rng = np.random.default_rng(9)
    hub.hub.publisher.limits = replace(LIMITS, target_chunk_bytes=4096)  # several chunks
    operator.add_site("oak")
    for _ in range(20):
        operator.add_person("oak", templates=[random_template(rng)])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        intercept = Intercept(agent)
        intercept.rewrite = lambda parts: parts[:3]  # header + 2 chunks, then the link drops
        before = snapshot_state(agent)
        assert agent.syncer.sync_once().outcome == "unreachable"
        assert snapshot_state(agent) == before
        assert agent.syncer.staging.payload_path.stat().st_size > 0
        requests: list[pb.FetchRequest] = []
        real = intercept.real

        def spy(method, request, timeout):  # type: ignore[no-untyped-def]
            requests.append(request)
            return real(method, request, timeout)

        intercept.real = spy
        intercept.rewrite = None
        assert agent.syncer.sync_once().outcome == "applied"
        assert requests[0].resume_from_chunk == 2 and requests[0].resume_ciphertext_sha256
        first_chunk = next(p.chunk.index for p in intercept.seen[-1] if p.WhichOneof("part") == "chunk")
        assert first_chunk == 2
        assert agent.whitelist.state_digest == hub.hub.store.get_site("oak").state_digest
    finally:
        agent.close()
