"""The bundle-verification core on bytes: every refusal, no gRPC, no agent database.

Bundles come from the hub's own publisher code in this process (real SQLite store, real keys);
an attacker, or a hub signing something wrong, then edits the bytes. Each refusal is checked by
its class (and the sync loop's `resync` hint); `verify_header` is pure, so "state did not move"
is the caller's job (tests/attacks/test_bundle_refusals.py checks it end to end).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from nacl.public import Box, PrivateKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from doorkeeper.agent.sync import bundle as core
from doorkeeper.hub.devices import Devices
from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.publisher import Publisher, sign_beacon, sign_header
from doorkeeper.hub.server import init_hub
from doorkeeper.hub.sqlite_store import SqliteHubStore
from doorkeeper.hub.whitelist import PersonSpec, Whitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from doorkeeper.wire import templates as tmpl
from doorkeeper.wire import token as tokens
from doorkeeper.wire.limits import LIMITS

MODEL = "w600k_mbf.onnx:" + "0" * 64


@dataclass
class Hub:
    """The hub's domain in-process: store, keys, whitelist, publisher; one site, two devices."""

    store: SqliteHubStore
    keys: HubKeys
    whitelist: Whitelist
    publisher: Publisher
    site_id: str
    devices: list[tuple[object, keys.KeyPair]]

    def trust(self, which: int = 0) -> core.Trust:
        device, pair = self.devices[which]
        return core.Trust(self.keys.pair.sign_public, self.site_id, device.device_id,  # type: ignore[attr-defined]
                          pair.box_key, self.keys.pair.box_public)

    def add(self, n: int, seed: int) -> int:
        rng = np.random.default_rng(seed)
        specs = [PersonSpec(name=f"Resident {seed}-{i}", templates=[tmpl.encode(v, MODEL)])
                 for i, v in enumerate(rng.standard_normal((n, 512), dtype=np.float32))]
        return self.whitelist.add_persons(self.site_id, specs)[1].version

    def bundle(self, current: int, which: int = 0) -> tuple[pb.SignedBundleHeader, list[bytes]]:
        """What the hub sends device ``which`` holding ``current``: signed header and chunks."""
        meta = self.publisher.bundle_for(self.site_id, current)
        assert meta is not None
        signed = self.publisher.issue(meta, self.devices[which][0])  # type: ignore[arg-type]
        chunks = [self.store.read_chunk(meta.bundle_id, i) for i in range(len(meta.chunk_length))]
        return signed, chunks


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    init_hub(tmp_path / "hub")
    store = SqliteHubStore(tmp_path / "hub" / "hub.db")
    hub_keys = HubKeys.load(tmp_path / "hub" / "keys")
    whitelist = Whitelist(store, hub_keys)
    site = whitelist.add_site("oak")
    registry = Devices(store, hub_keys)
    devices = []
    for name in ("front", "back"):
        issued = registry.add(site.site_id, name)
        pair = keys.KeyPair.generate()
        token_id = tokens.Token.parse(issued.token).token_id
        device = store.bind_token_keys(token_id, pair.sign_public, pair.box_public, int(time.time()))
        assert store.complete_registration(device.device_id, int(time.time()))
        devices.append((device, pair))
    h = Hub(store, hub_keys, whitelist, Publisher(store, hub_keys), site.site_id, devices)
    h.add(3, seed=1)
    yield h
    # The publisher prunes old bundles on a worker of its own: let it finish before closing
    # the store under it.
    h.publisher.close()
    store.close()


Edit = Callable[[pb.BundleHeader], None]


def resigned(h: Hub, signed: pb.SignedBundleHeader, edit: Edit) -> pb.SignedBundleHeader:
    """The header edited and signed again with the real hub key (a hub signing something wrong)."""
    header = pb.BundleHeader.FromString(signed.header)
    edit(header)
    return sign_header(h.keys, header)


def refuse(kind: type[core.BadBundle], signed: pb.SignedBundleHeader, trust: core.Trust, current: int,
           now: float | None = None, **kw: object) -> core.BadBundle:
    with pytest.raises(kind) as caught:
        core.verify_header(signed, trust, current, time.time() if now is None else now, **kw)  # type: ignore[arg-type]
    return caught.value


# ------------------------------------------------------------------ the honest path


def test_a_real_snapshot_and_delta_verify_decrypt_and_parse(hub: Hub) -> None:
    signed, chunks = hub.bundle(0)
    vh = core.verify_header(signed, hub.trust(), 0, time.time())
    assert vh.is_snapshot and vh.header.to_version >= 1
    key = core.open_content_key(vh, hub.trust())
    changes = []
    for i, data in enumerate(chunks):
        core.check_chunk(vh, i, data)
        changes += list(core.decrypt_chunk(key, data))
    records = [core.parse_record(c.upsert_record) for c in changes
               if c.WhichOneof("change") == "upsert_record"]
    assert len(records) == 3 == vh.header.person_count
    held = vh.header.to_version
    hub.add(1, seed=2)
    signed, chunks = hub.bundle(held)
    delta = core.verify_header(signed, hub.trust(), held, time.time())
    assert delta.header.kind == pb.BUNDLE_KIND_DELTA and delta.header.from_version == held


# ------------------------------------------------------------------ size caps, before anything else


def test_oversized_header_is_refused_before_its_signature_is_checked(hub: Hub) -> None:
    big = pb.SignedBundleHeader(header=b"\x00" * (LIMITS.max_header_bytes + 1), signature=b"x" * 64)
    refuse(core.Oversized, big, hub.trust(), 0)


@pytest.mark.parametrize("edit", [
    lambda h: h.ClearField("chunk_length"),  # no chunks at all
    lambda h: h.chunk_sha256.append(b"\x00" * 32),  # hashes and lengths disagree
    lambda h: h.chunk_length.__setitem__(0, LIMITS.max_chunk_bytes + 1),  # one chunk over the cap
    lambda h: h.chunk_length.__setitem__(0, 39),  # impossibly small (under a box's overhead)
    lambda h: setattr(h, "payload_length", h.payload_length + 1),  # lengths do not add up
    lambda h: setattr(h, "person_count", LIMITS.max_persons + 1),
], ids=["no-chunks", "hash-count", "chunk-too-big", "chunk-too-small", "payload-sum", "persons"])
def test_declared_sizes_over_the_caps_are_refused(hub: Hub, edit: Edit) -> None:
    signed, _ = hub.bundle(0)
    refuse(core.Oversized, resigned(hub, signed, edit), hub.trust(), 0)


def test_more_chunks_than_the_cap_are_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    n = len(pb.BundleHeader.FromString(signed.header).chunk_length)
    refuse(core.Oversized, signed, hub.trust(), 0, limits=dataclasses.replace(LIMITS, max_chunks=n - 1)
           if n > 1 else dataclasses.replace(LIMITS, max_chunks=0))


# ------------------------------------------------------------------ signature and key


def test_signature_by_another_key_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    other = SigningKey.generate()
    forged = pb.SignedBundleHeader(header=signed.header,
                                   signature=keys.sign(other, keys.CTX_BUNDLE_HEADER, signed.header))
    refuse(core.Forged, forged, hub.trust(), 0)


def test_a_flipped_header_byte_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    raw = bytearray(signed.header)
    raw[len(raw) // 2] ^= 0x01
    refuse(core.Forged, pb.SignedBundleHeader(header=bytes(raw), signature=signed.signature), hub.trust(), 0)


def test_signature_in_another_context_is_refused(hub: Hub) -> None:
    """A beacon signature (same key, other context) cannot stand in for a header's."""
    signed, _ = hub.bundle(0)
    wrong = keys.sign(hub.keys.pair.sign_key, keys.CTX_BEACON, signed.header)
    refuse(core.Forged, pb.SignedBundleHeader(header=signed.header, signature=wrong), hub.trust(), 0)


def test_signed_garbage_is_refused(hub: Hub) -> None:
    garbage = b"\xff\xff\xff\xff"
    signature = keys.sign(hub.keys.pair.sign_key, keys.CTX_BUNDLE_HEADER, garbage)
    signed = pb.SignedBundleHeader(header=garbage, signature=signature)
    refuse(core.Forged, signed, hub.trust(), 0)


def test_header_naming_another_hub_key_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    refuse(core.Forged, resigned(hub, signed, lambda h: setattr(h, "key_id", "another-key")), hub.trust(), 0)


# ------------------------------------------------------------------ binding


def test_bundle_for_another_device_of_the_site_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0, which=1)  # issued to "back"
    refuse(core.WrongDevice, signed, hub.trust(0), 0)


def test_bundle_for_another_site_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    refuse(core.WrongDevice, resigned(hub, signed, lambda h: setattr(h, "site_id", "elm")), hub.trust(), 0)


# ------------------------------------------------------------------ format and kind


@pytest.mark.parametrize("edit", [
    lambda h: setattr(h, "format", core.SUPPORTED_FORMAT + 1),
    lambda h: setattr(h, "from_version", 1),  # a snapshot starting anywhere but 0
    lambda h: setattr(h, "kind", 99),
    lambda h: setattr(h, "state_digest", b"\x00" * 31),
    lambda h: setattr(h, "ciphertext_sha256", b""),
], ids=["format", "snapshot-from", "kind", "digest-size", "ciphertext-hash-size"])
def test_malformed_headers_are_refused_with_a_resync(hub: Hub, edit: Edit) -> None:
    signed, _ = hub.bundle(0)
    assert refuse(core.Malformed, resigned(hub, signed, edit), hub.trust(), 0).resync


def test_a_delta_that_does_not_move_forward_is_refused(hub: Hub) -> None:
    held = hub.store.get_site(hub.site_id).version
    hub.add(1, seed=3)
    signed, _ = hub.bundle(held)
    bad = resigned(hub, signed, lambda h: setattr(h, "to_version", h.from_version))
    refuse(core.Malformed, bad, hub.trust(), held)


# ------------------------------------------------------------------ version chain


def test_replayed_snapshot_of_our_version_is_nothing_new_unless_resyncing(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    version = pb.BundleHeader.FromString(signed.header).to_version
    refuse(core.NothingNew, signed, hub.trust(), version)
    assert core.verify_header(signed, hub.trust(), version, time.time(), resync=True).is_snapshot


def test_rollback_to_an_older_snapshot_is_refused_even_when_resyncing(hub: Hub) -> None:
    old, _ = hub.bundle(0)
    newer = hub.add(2, seed=4)
    refuse(core.Rollback, old, hub.trust(), newer)
    refuse(core.Rollback, old, hub.trust(), newer, resync=True)


def test_replayed_old_delta_is_a_rollback_or_nothing_new(hub: Hub) -> None:
    v1 = hub.store.get_site(hub.site_id).version
    v2 = hub.add(1, seed=5)
    delta, _ = hub.bundle(v1)
    refuse(core.NothingNew, delta, hub.trust(), v2)  # we already hold where it leads
    v3 = hub.add(1, seed=6)
    refuse(core.Rollback, delta, hub.trust(), v3)  # it leads below what we hold


def test_delta_from_a_version_we_do_not_hold_asks_for_a_snapshot(hub: Hub) -> None:
    v1 = hub.store.get_site(hub.site_id).version
    v2 = hub.add(1, seed=7)
    hub.add(1, seed=8)
    delta, _ = hub.bundle(v2)
    assert refuse(core.VersionGap, delta, hub.trust(), v1).resync


def test_expired_bundle_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    expires = pb.BundleHeader.FromString(signed.header).expires_at
    refuse(core.Expired, signed, hub.trust(), 0, now=expires + 1)
    assert core.verify_header(signed, hub.trust(), 0, expires)  # up to the second it names


# ------------------------------------------------------------------ chunks and decryption


def test_chunks_with_a_wrong_index_length_or_hash_are_refused(hub: Hub) -> None:
    signed, chunks = hub.bundle(0)
    vh = core.verify_header(signed, hub.trust(), 0, time.time())
    with pytest.raises(core.Truncated):
        core.check_chunk(vh, len(chunks), chunks[0])
    with pytest.raises(core.Truncated):
        core.check_chunk(vh, -1, chunks[0])
    with pytest.raises(core.Truncated):
        core.check_chunk(vh, 0, chunks[0][:-1])
    flipped = bytearray(chunks[0])
    flipped[-1] ^= 0x01
    with pytest.raises(core.Truncated):
        core.check_chunk(vh, 0, bytes(flipped))


def test_a_chunk_of_another_length_than_signed_is_refused_even_with_its_hash(hub: Hub) -> None:
    """The length is checked on its own: a header declaring one byte more for chunk 0 (the
    total adjusted to match) refuses the real chunk though its hash is right."""
    signed, chunks = hub.bundle(0)

    def longer(h: pb.BundleHeader) -> None:
        h.chunk_length[0] += 1
        h.payload_length += 1

    vh = core.verify_header(resigned(hub, signed, longer), hub.trust(), 0, time.time())
    with pytest.raises(core.Truncated, match="bytes, header says"):
        core.check_chunk(vh, 0, chunks[0])


def test_content_key_boxed_for_another_device_does_not_open(hub: Hub) -> None:
    signed, _ = hub.bundle(0, which=1)
    # "back"'s header, presented as if it were ours (binding re-signed to front): the key is boxed
    # to back's X25519 key, so front cannot open it.
    front = hub.trust(0)
    moved = resigned(hub, signed, lambda h: setattr(h, "device_id", front.device_id))
    vh = core.verify_header(moved, front, 0, time.time())
    with pytest.raises(core.Undecryptable):
        core.open_content_key(vh, front)


def test_content_key_not_from_the_pinned_hub_box_key_does_not_open(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    trust = hub.trust()
    stranger = PrivateKey.generate()
    boxed = Box(stranger, trust.device_box_key.public_key).encrypt(b"k" * SecretBox.KEY_SIZE)
    bad = resigned(hub, signed, lambda h: setattr(h, "wrapped_key", bytes(boxed)))
    with pytest.raises(core.Undecryptable):
        core.open_content_key(core.verify_header(bad, trust, 0, time.time()), trust)


def test_content_key_of_the_wrong_size_is_refused(hub: Hub) -> None:
    signed, _ = hub.bundle(0)
    trust = hub.trust()
    boxed = Box(hub.keys.pair.box_key, trust.device_box_key.public_key).encrypt(b"short")
    bad = resigned(hub, signed, lambda h: setattr(h, "wrapped_key", bytes(boxed)))
    with pytest.raises(core.Undecryptable):
        core.open_content_key(core.verify_header(bad, trust, 0, time.time()), trust)


def test_chunk_under_another_key_or_not_a_change_batch_is_refused(hub: Hub) -> None:
    _, chunks = hub.bundle(0)
    with pytest.raises(core.Undecryptable):
        list(core.decrypt_chunk(b"\x01" * SecretBox.KEY_SIZE, chunks[0]))
    key = b"\x02" * SecretBox.KEY_SIZE
    not_a_batch = bytes(SecretBox(key).encrypt(b"\xff\xff\xff\xff"))
    with pytest.raises(core.Malformed) as caught:
        list(core.decrypt_chunk(key, not_a_batch))
    assert caught.value.resync


# ------------------------------------------------------------------ records


@pytest.mark.parametrize("raw", [
    b"\x00" * (LIMITS.max_record_bytes + 1),
    b"\xff\xff\xff",
    pb.PersonRecord(person_id="").SerializeToString(),
    pb.PersonRecord(person_id="p" * (LIMITS.max_id_chars + 1)).SerializeToString(),
    pb.PersonRecord(person_id="p1", templates=[pb.Template()] * (LIMITS.max_templates_per_person + 1))
    .SerializeToString(),
], ids=["oversized", "garbage", "no-id", "long-id", "too-many-templates"])
def test_bad_person_records_are_refused(raw: bytes) -> None:
    with pytest.raises(core.Malformed):
        core.parse_record(raw)


# ------------------------------------------------------------------ beacons and key rotation


def test_beacons_forged_for_another_site_or_garbage_are_refused(hub: Hub) -> None:
    trust = hub.trust()
    good = sign_beacon(hub.keys, pb.Beacon(site_id=hub.site_id, version=3, hub_time=int(time.time())))
    assert core.verify_beacon(good, trust).version == 3
    with pytest.raises(core.Forged):
        core.verify_beacon(pb.SignedBeacon(beacon=good.beacon, signature=b"\x00" * 64), trust)
    with pytest.raises(core.WrongDevice):
        core.verify_beacon(sign_beacon(hub.keys, pb.Beacon(site_id="elm", version=3)), trust)
    garbage = b"\xff\xff"
    with pytest.raises(core.Forged):
        core.verify_beacon(pb.SignedBeacon(beacon=garbage, signature=keys.sign(
            hub.keys.pair.sign_key, keys.CTX_BEACON, garbage)), trust)
    with pytest.raises(core.Oversized):
        core.verify_beacon(pb.SignedBeacon(beacon=b"\x00" * (LIMITS.max_header_bytes + 1)), trust)


def _rotation(old: SigningKey, new_key: bytes, old_key_id: str,
              new_key_id: str | None = None) -> pb.SignedKeyRotation:
    raw = pb.KeyRotation(old_key_id=old_key_id, new_key_id=new_key_id or keys.key_id(new_key),
                         new_sign_key=new_key).SerializeToString()
    return pb.SignedKeyRotation(rotation=raw, signature=keys.sign(old, keys.CTX_KEY_ROTATION, raw))


def test_key_rotations_only_from_the_pinned_key_to_a_well_formed_key(hub: Hub) -> None:
    trust = hub.trust()
    pinned = hub.keys.pair.sign_key
    successor = bytes(SigningKey.generate().verify_key)
    followed = core.follow_rotation(_rotation(pinned, successor, trust.hub_key_id), trust)
    assert followed is not None and followed.hub_sign_key == successor
    other = SigningKey.generate()
    # A statement starting at another key is not ours to follow.
    assert core.follow_rotation(_rotation(other, successor, "someone-else"), trust) is None
    with pytest.raises(core.Forged):  # claims our key but is signed by another
        core.follow_rotation(_rotation(other, successor, trust.hub_key_id), trust)
    with pytest.raises(core.Forged):  # names a key that is not 32 bytes
        core.follow_rotation(_rotation(pinned, b"\x01" * 31, trust.hub_key_id, "x"), trust)
    with pytest.raises(core.Forged):  # key id does not belong to the key
        core.follow_rotation(_rotation(pinned, successor, trust.hub_key_id, "not-its-id"), trust)
    with pytest.raises(core.Forged):
        core.follow_rotation(pb.SignedKeyRotation(rotation=b"\xff\xff"), trust)
    with pytest.raises(core.Oversized):
        core.follow_rotation(pb.SignedKeyRotation(rotation=b"\x00" * (LIMITS.max_header_bytes + 1)), trust)


# ------------------------------------------------------------------ held for an effective time


def test_a_held_bundle_skips_only_the_expiry_check(hub: Hub) -> None:
    """A bundle kept for its effective time was checked for expiry on receipt; everything
    else is checked again when it is applied (a forged or misbound one is still refused)."""
    expired = resigned(hub, hub.bundle(0)[0], lambda h: setattr(h, "expires_at", int(time.time()) - 10))
    refuse(core.Expired, expired, hub.trust(), 0)
    vh = core.verify_header(expired, hub.trust(), 0, time.time(), held=True)
    assert vh.header.to_version >= 1
    flipped = pb.SignedBundleHeader(header=expired.header, signature=bytes(64))
    refuse(core.Forged, flipped, hub.trust(), 0, held=True)
    refuse(core.WrongDevice, expired, hub.trust(1), 0, held=True)
    refuse(core.Rollback, expired, hub.trust(), vh.header.to_version + 1, held=True)


def test_effective_time_decides_when_a_bundle_is_due(hub: Hub) -> None:
    at = int(time.time()) + 3600
    vh = core.verify_header(resigned(hub, hub.bundle(0)[0], lambda h: setattr(h, "effective_at", at)),
                            hub.trust(), 0, time.time())
    assert not vh.due(at - 1) and vh.due(at) and vh.due(at + 1)
    assert core.verify_header(hub.bundle(0)[0], hub.trust(), 0, time.time()).due(0)  # 0 = on receipt


def test_refusal_codes_are_short_stable_and_distinct() -> None:
    kinds = [core.Oversized, core.Forged, core.WrongDevice, core.NothingNew, core.Rollback,
             core.VersionGap, core.Expired, core.Truncated, core.Undecryptable, core.Malformed,
             core.Unproven, core.DigestMismatch]
    codes = [k.code for k in kinds]
    assert len(set(codes)) == len(codes) and all(c.isidentifier() and len(c) <= 32 for c in codes)
    assert core.claimed_version(pb.SignedBundleHeader(header=b"\xff\xff")) == 0
    assert core.claimed_version(pb.SignedBundleHeader(
        header=pb.BundleHeader(to_version=7).SerializeToString())) == 7
