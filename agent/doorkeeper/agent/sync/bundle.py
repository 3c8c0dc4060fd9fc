"""The agent's bundle-verification core: bytes in, verdicts out, no I/O.

Order (as python-tuf's trusted metadata set): size caps, signature with the
pinned hub key, device and site binding, version chain, expiry, declared
lengths; only then is anything decrypted. Every refusal is a `BadBundle`
subclass naming what was wrong; `resync` tells the sync loop to ask for a
snapshot instead of retrying the same delta. Transport failures are not
`BadBundle`s: they are the fetcher's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox

from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from doorkeeper.wire.limits import LIMITS, Limits

SUPPORTED_FORMAT = 1


class BadBundle(Exception):
    """The hub (or someone pretending to be it) sent data we refuse.

    ``code`` is a short stable name for the refusal (it goes into signed manifests as
    ``refused_reason`` and into fleet status: never rename one); the message may say more
    but stays on the door."""

    resync = False
    code = "refused"


class Oversized(BadBundle):
    code = "oversized"


class Forged(BadBundle):
    """Signature does not verify with the pinned hub key (or names another key)."""
    code = "forged"


class WrongDevice(BadBundle):
    """Bundle bound to another device or site."""
    code = "wrong_device"


class NothingNew(BadBundle):
    """Bundle would take us to the version we already hold."""
    code = "nothing_new"


class Rollback(BadBundle):
    """Bundle would take us to an older version."""
    code = "rollback"


class VersionGap(BadBundle):
    """Delta starts from a version we do not hold."""
    code = "version_gap"

    resync = True


class Expired(BadBundle):
    code = "expired"


class Truncated(BadBundle):
    """Declared lengths or chunk hashes do not match what arrived."""
    code = "truncated"


class Undecryptable(BadBundle):
    code = "undecryptable"


class Malformed(BadBundle):
    """Decrypted payload does not parse, or breaks a limit."""
    code = "malformed"

    resync = True


class Unproven(BadBundle):
    """An answer that must prove freshness does not echo the door's nonce (a replay?)."""
    code = "unproven"


class DigestMismatch(BadBundle):
    """Applying the bundle did not produce the state the hub signed."""
    code = "digest_mismatch"

    resync = True


@dataclass(frozen=True)
class Trust:
    """What the agent pinned at registration."""

    hub_sign_key: bytes
    site_id: str
    device_id: str
    device_box_key: PrivateKey
    hub_box_key: bytes

    @property
    def hub_key_id(self) -> str:
        return keys.key_id(self.hub_sign_key)


@dataclass(frozen=True)
class VerifiedHeader:
    header: pb.BundleHeader
    raw: bytes

    @property
    def chunk_count(self) -> int:
        return len(self.header.chunk_length)

    @property
    def is_snapshot(self) -> bool:
        return self.header.kind == pb.BUNDLE_KIND_SNAPSHOT

    def due(self, now: float) -> bool:
        """Whether the bundle takes effect at ``now`` (effective_at 0 = on receipt)."""
        return self.header.effective_at <= now


def claimed_version(signed: pb.SignedBundleHeader) -> int:
    """The to_version a header claims, verified or not (0 when it does not parse): what a
    door reports as the version it refused."""
    try:
        return pb.BundleHeader.FromString(signed.header).to_version
    except DecodeError:
        return 0


def _signed(trust: Trust, raw: bytes, signature: bytes, context: str, limits: Limits) -> None:
    if len(raw) > limits.max_header_bytes:
        raise Oversized(f"header is {len(raw)} bytes, cap {limits.max_header_bytes}")
    if not keys.verify(trust.hub_sign_key, signature, context, raw):
        raise Forged("signature does not verify with the pinned hub key")


def verify_header(
    signed: pb.SignedBundleHeader,
    trust: Trust,
    current_version: int,
    now: float,
    limits: Limits = LIMITS,
    resync: bool = False,
    held: bool = False,
) -> VerifiedHeader:
    """Check a signed header against the pinned key and our state; refuse with a `BadBundle`.

    `resync=True` accepts a snapshot of the version we already hold (used after a
    digest mismatch), never an older one. `held=True` checks a bundle the door verified
    on receipt and kept for its effective time: everything again but expiry, which was
    checked when it arrived (a bundle delivered a week before it takes effect must still
    take effect).
    """
    _signed(trust, signed.header, signed.signature, keys.CTX_BUNDLE_HEADER, limits)
    try:
        h = pb.BundleHeader.FromString(signed.header)
    except DecodeError:
        raise Forged("signed header does not parse") from None
    if h.key_id != trust.hub_key_id:
        raise Forged(f"header names hub key {h.key_id[:32]!r}, pinned {trust.hub_key_id}")
    if h.format != SUPPORTED_FORMAT:
        raise Malformed(f"bundle format {h.format} is not supported")
    if h.device_id != trust.device_id or h.site_id != trust.site_id:
        raise WrongDevice("bundle is for another device or site")
    if h.kind == pb.BUNDLE_KIND_SNAPSHOT:
        if h.from_version != 0:
            raise Malformed("snapshot must start from version 0")
        if h.to_version < current_version:
            raise Rollback(f"snapshot to version {h.to_version} is older than ours ({current_version})")
        if h.to_version == current_version and not resync:
            raise NothingNew(f"already at version {current_version}")
    elif h.kind == pb.BUNDLE_KIND_DELTA:
        if h.to_version <= h.from_version:
            raise Malformed("delta must move forward")
        if h.from_version != current_version:
            if h.to_version < current_version:
                raise Rollback(f"delta to version {h.to_version} is older than ours ({current_version})")
            if h.to_version == current_version:
                raise NothingNew(f"already at version {current_version}")
            raise VersionGap(f"delta starts at {h.from_version}, we hold {current_version}")
    else:
        raise Malformed(f"unknown bundle kind {h.kind}")
    if not held and now > h.expires_at:
        raise Expired(f"bundle expired at {h.expires_at} (now {int(now)})")
    n = len(h.chunk_length)
    if n == 0 or n != len(h.chunk_sha256) or n > limits.max_chunks:
        raise Oversized(f"bundle declares {n} chunks (cap {limits.max_chunks})")
    if any(length > limits.max_chunk_bytes or length < 40 for length in h.chunk_length):
        raise Oversized(f"a chunk exceeds {limits.max_chunk_bytes} bytes or is impossibly small")
    if sum(h.chunk_length) != h.payload_length or h.payload_length > limits.max_payload_bytes:
        raise Oversized("declared payload length does not add up or exceeds the cap")
    if h.person_count > limits.max_persons:
        raise Oversized(f"bundle declares {h.person_count} persons (cap {limits.max_persons})")
    if len(h.state_digest) != 32 or len(h.ciphertext_sha256) != 32:
        raise Malformed("digest fields have the wrong size")
    return VerifiedHeader(h, bytes(signed.header))


def check_chunk(vh: VerifiedHeader, index: int, data: bytes) -> None:
    """Refuse a chunk whose index, length or hash differs from the signed header."""
    h = vh.header
    if not 0 <= index < len(h.chunk_length):
        raise Truncated(f"chunk index {index} outside 0..{len(h.chunk_length) - 1}")
    if len(data) != h.chunk_length[index]:
        raise Truncated(f"chunk {index} is {len(data)} bytes, header says {h.chunk_length[index]}")
    if hashlib.sha256(data).digest() != h.chunk_sha256[index]:
        raise Truncated(f"chunk {index} does not match its signed hash")


def open_content_key(vh: VerifiedHeader, trust: Trust) -> bytes:
    try:
        key = Box(trust.device_box_key, PublicKey(trust.hub_box_key)).decrypt(vh.header.wrapped_key)
    except (CryptoError, ValueError):
        raise Undecryptable("content key was not boxed from the pinned hub key to this device") from None
    if len(key) != SecretBox.KEY_SIZE:
        raise Undecryptable("content key has the wrong size")
    return key


def decrypt_chunk(content_key: bytes, data: bytes, limits: Limits = LIMITS) -> Iterator[pb.Change]:
    """Decrypt and parse one chunk; yields its changes."""
    try:
        plain = SecretBox(content_key).decrypt(data)
    except CryptoError:
        raise Undecryptable("chunk does not decrypt with the bundle's content key") from None
    try:
        batch = pb.ChangeBatch.FromString(plain)
    except DecodeError:
        raise Malformed("decrypted chunk does not parse") from None
    yield from batch.changes


def parse_record(raw: bytes, limits: Limits = LIMITS) -> pb.PersonRecord:
    """Parse and bound one person record from a verified, decrypted chunk."""
    if len(raw) > limits.max_record_bytes:
        raise Malformed(f"person record of {len(raw)} bytes exceeds {limits.max_record_bytes}")
    try:
        rec = pb.PersonRecord.FromString(raw)
    except DecodeError:
        raise Malformed("person record does not parse") from None
    if not rec.person_id or len(rec.person_id) > limits.max_id_chars:
        raise Malformed("person record has a bad id")
    if len(rec.templates) > limits.max_templates_per_person:
        raise Malformed("person record has too many templates")
    return rec


def verify_beacon(signed: pb.SignedBeacon, trust: Trust, limits: Limits = LIMITS) -> pb.Beacon:
    """A hub-signed statement of time and version for our site."""
    _signed(trust, signed.beacon, signed.signature, keys.CTX_BEACON, limits)
    try:
        beacon = pb.Beacon.FromString(signed.beacon)
    except DecodeError:
        raise Forged("signed beacon does not parse") from None
    if beacon.site_id != trust.site_id:
        raise WrongDevice("beacon is for another site")
    return beacon


def follow_rotation(signed: pb.SignedKeyRotation, trust: Trust, limits: Limits = LIMITS) -> Trust | None:
    """The trust after a hub key rotation, or None if it does not start at our pinned key.

    Only the pinned key can vouch for its successor: a rotation from any other
    key is not ours to follow (an old link we already followed, or a forgery).
    """
    if len(signed.rotation) > limits.max_header_bytes:
        raise Oversized("key rotation statement too large")
    try:
        rotation = pb.KeyRotation.FromString(signed.rotation)
    except DecodeError:
        raise Forged("key rotation does not parse") from None
    if rotation.old_key_id != trust.hub_key_id:
        return None
    if not keys.verify(trust.hub_sign_key, signed.signature, keys.CTX_KEY_ROTATION, signed.rotation):
        raise Forged("key rotation is not signed by the pinned hub key")
    new_key = bytes(rotation.new_sign_key)
    if len(new_key) != keys.KEY_BYTES or rotation.new_key_id != keys.key_id(new_key):
        raise Forged("key rotation names a malformed key")
    return Trust(new_key, trust.site_id, trust.device_id, trust.device_box_key, trust.hub_box_key)
