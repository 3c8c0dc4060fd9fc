"""Known-answer vectors of the wire contract (protos/PROTOCOL.md), from fixed seeds.

`python -m doorkeeper.tools.vectors` writes protos/vectors/*.json; `--check` exits 1 when
the committed files differ from what the code makes now (tests/test_vectors.py does the
same), so any change of a byte format is a deliberate diff.

Everything is made by the production code (keys.sign, callauth, token, digest, templates,
credentials, the hub's Publisher and Whitelist, entrylog) with every key and every nonce
seeded: where libsodium draws randomness itself (a SealedBox's ephemeral key, the nonce of
a SecretBox or Box) the seeded value is passed in, and the vector lists it, so a second
implementation can re-derive every byte, not only decrypt.

Conventions in the JSON: bytes are lower-case hex, integers are JSON numbers (all below
2^53), text is UTF-8 strings. Signature parts are {"str": ...}, {"hex": ...} or {"u64": n}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from nacl.bindings import crypto_box
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey

from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.publisher import Publisher, sign_beacon, wrap_key
from doorkeeper.hub.store import BundleMeta, Changed, Device, Site
from doorkeeper.hub.whitelist import PersonSpec, Whitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth, credentials, digest, entrylog, keys
from doorkeeper.wire import templates as tmpl
from doorkeeper.wire import token as tokens
from doorkeeper.wire.limits import LIMITS

VECTORS_DIR = Path(__file__).resolve().parents[3] / "protos" / "vectors"
T0 = 1_800_000_000  # the fixed "now" of every vector (unix seconds)
MODEL_ID = "w600k_mbf.onnx:" + hashlib.sha256(b"doorkeeper vectors model").hexdigest()
SITE_ID = "5173e0b1c0de4d00a11ce00000000001"
DEVICE_ID = "d00dfeed000000000000000000000001"
PERSONS = (
    "0aa0000000000000000000000000000a",
    "0bb0000000000000000000000000000b",
    "0cc0000000000000000000000000000c",
)


def seed(label: str) -> bytes:
    """32 bytes named by `label`: SHA-256("doorkeeper/v1/vectors\\0" || label)."""
    return hashlib.sha256(b"doorkeeper/v1/vectors\x00" + label.encode()).digest()


class Stream:
    """Seeded bytes: block i of label L is SHA-256(seed(L) || u32-BE i); read in order."""

    def __init__(self, label: str) -> None:
        self.key = seed(label)
        self.counter = 0
        self.drawn: list[str] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.key + self.counter.to_bytes(4, "big")).digest()
            self.counter += 1
        self.drawn.append(out[:n].hex())
        return out[:n]


def sealed_box(plaintext: bytes, recipient: bytes, ephemeral_secret: bytes) -> bytes:
    """libsodium crypto_box_seal with a chosen ephemeral key (byte-identical to what
    crypto_box_seal makes when it draws that key): epk || crypto_box_easy(m, nonce, pk, esk)
    with nonce = BLAKE2b-192(epk || pk)."""
    epk = bytes(PrivateKey(ephemeral_secret).public_key)
    nonce = hashlib.blake2b(epk + recipient, digest_size=24).digest()
    return epk + crypto_box(plaintext, nonce, recipient, ephemeral_secret)


def h(raw: bytes) -> str:
    return bytes(raw).hex()


@dataclass(frozen=True)
class Party:
    """A seeded key pair, as it sits in key files (Ed25519 seed, X25519 secret)."""

    name: str
    pair: keys.KeyPair

    @classmethod
    def make(cls, name: str) -> Party:
        return cls(name, keys.KeyPair(SigningKey(seed(name + ".sign")), PrivateKey(seed(name + ".box"))))

    def json(self) -> dict[str, Any]:
        return {
            "sign_seed": h(bytes(self.pair.sign_key)),
            "sign_public": h(self.pair.sign_public),
            "box_secret": h(bytes(self.pair.box_key)),
            "box_public": h(self.pair.box_public),
            "key_id": self.pair.key_id,
            "fingerprint": h(keys.fingerprint(self.pair.sign_public)),
            "fingerprint_text": keys.fingerprint_text(self.pair.sign_public),
        }


def _same(vector: dict[str, Any], signature: bytes) -> dict[str, Any]:
    """`vector`, after checking the production code signed the same bytes (Ed25519 is deterministic)."""
    if vector["signature"] != h(signature):
        raise AssertionError(f"context {vector['context']}: the production signature differs")
    return vector


def _part(p: bytes | str | int) -> dict[str, Any]:
    if isinstance(p, int):
        return {"u64": p}
    if isinstance(p, str):
        return {"str": p}
    return {"hex": h(p)}


def signature_vector(party: Party, context: str, *parts: bytes | str | int) -> dict[str, Any]:
    return {
        "context": context,
        "signer": party.name,
        "parts": [_part(p) for p in parts],
        "message": h(keys._message(context, parts)),
        "signature": h(keys.sign(party.pair.sign_key, context, *parts)),
    }


# ------------------------------------------------------------------ the parties

HUB, NEW_HUB, DEVICE, OPERATOR = (Party.make(n) for n in ("hub", "hub-rotated", "device", "operator"))
OWNER = PrivateKey(seed("owner.box"))


def keys_json() -> dict[str, Any]:
    tok = tokens.Token(
        tokens._b32(seed("token.id")[: tokens.ID_BYTES]),
        seed("token.secret")[: tokens.SECRET_BYTES],
        keys.fingerprint(HUB.pair.sign_public),
    )
    call_request = pb.FetchRequest(current_version=3, nonce=seed("fetch.nonce")).SerializeToString()
    call_nonce = seed("call.nonce")[: callauth.NONCE_BYTES]
    method = "/doorkeeper.v1.DeviceSync/Fetch"
    signature = callauth.call_signature(DEVICE.pair.sign_key, method, DEVICE_ID, call_nonce, call_request)
    return {
        "parties": {p.name: p.json() for p in (HUB, NEW_HUB, DEVICE, OPERATOR)}
        | {
            "owner": {
                "box_secret": h(bytes(OWNER)),
                "box_public": h(bytes(OWNER.public_key)),
                "key_id": keys.key_id(bytes(OWNER.public_key)),
            }
        },
        "framing": [
            signature_vector(HUB, "example", "text", b"\x00\x01\xff", 0, 2**40 + 5),
            signature_vector(HUB, "example"),
        ],
        "token": {
            "token_id": tok.token_id,
            "secret": h(tok.secret),
            "hub_fingerprint": h(tok.hub_fingerprint),
            "text": str(tok),
            "secret_hash": h(tokens.secret_hash(tok.secret)),
            "hub_fingerprint_text": tok.hub_fingerprint_text,
        },
        "signed_call": {
            "method": method,
            "principal": DEVICE_ID,
            "nonce": h(call_nonce),
            "request": h(call_request),
            "request_sha256": h(hashlib.sha256(call_request).digest()),
            "signature": h(signature),
            "signed": _same(
                signature_vector(
                    DEVICE,
                    callauth.CONTEXT,
                    method,
                    DEVICE_ID,
                    call_nonce,
                    hashlib.sha256(call_request).digest(),
                ),
                signature,
            ),
            "metadata": [list(kv) for kv in callauth.metadata(DEVICE_ID, call_nonce, signature)],
        },
        "audit_entry": _audit_entry(),
    }


def _audit_entry() -> dict[str, Any]:
    """The first entry of a hub's audit trail: its chained hash and the hub's signature."""
    from doorkeeper.wire import auditchain

    seq, at, action, detail = 1, 1_796_000_000, "site.add", "oak"
    principal = f"operator:first-admin:{OPERATOR.pair.key_id}"
    digest = auditchain.entry_hash(seq, at, principal, action, detail, auditchain.GENESIS)
    return {"seq": seq, "at": at, "principal": principal, "action": action, "detail": detail,
            "prev_hash": h(auditchain.GENESIS), "entry_hash": h(digest),
            "signed": signature_vector(HUB, keys.CTX_AUDIT_ENTRY, digest)}


# ------------------------------------------------------------------ registration


def registration_json(tok: dict[str, Any]) -> dict[str, Any]:
    hub_challenge = seed("hub_challenge")
    secret = bytes.fromhex(tok["secret"])
    sealed = sealed_box(secret, HUB.pair.box_public, seed("register.ephemeral"))
    p = DEVICE.pair
    return {
        "hub_challenge": h(hub_challenge),
        "hub_proof": signature_vector(
            HUB, keys.CTX_HUB_PROOF, hub_challenge, HUB.pair.sign_public, HUB.pair.box_public
        ),
        "register_proof": signature_vector(
            DEVICE, keys.CTX_REGISTER, tok["token_id"], p.sign_public, p.box_public
        ),
        "sealed_token_secret": {
            "plaintext": tok["secret"],
            "recipient_box_public": h(HUB.pair.box_public),
            "recipient_box_secret": h(bytes(HUB.pair.box_key)),
            "ephemeral_secret": h(seed("register.ephemeral")),
            "nonce": h(hashlib.blake2b(sealed[:32] + HUB.pair.box_public, digest_size=24).digest()),
            "sealed": h(sealed),
        },
        "registered": signature_vector(
            HUB, keys.CTX_REGISTERED, DEVICE_ID, p.sign_public, p.box_public, HUB.pair.box_public
        ),
    }


# ------------------------------------------------------------------ whitelist and bundles


class _View:
    """A site at one version, as the hub's store would show it (records sealed)."""

    def __init__(self, site: Site, records: dict[str, bytes]) -> None:
        self.site = site
        self._records = records

    def changed_since(self, version: int) -> Changed | None:
        return None

    def records(self, person_ids: list[str] | None = None) -> Iterator[tuple[str, bytes | None]]:
        for pid in sorted(self._records if person_ids is None else person_ids):
            yield pid, self._records.get(pid)


def _template_input(label: str) -> np.ndarray:
    """512 float32 values from seeded bytes (int16 / 32768): no RNG whose stream may change."""
    raw = Stream(label)(2 * LIMITS.template_dim)
    return (np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768)).astype(np.float32)


def records_json(hub_keys: HubKeys) -> tuple[dict[str, Any], bytes]:
    config = pb.SiteConfig(
        site_id=SITE_ID,
        offline_validity_s=3600,
        stale_policy=pb.STALE_POLICY_CARDS_ONLY,
        credential_salt=seed("credential_salt"),
        log_owner_public_key=bytes(OWNER.public_key),
        log_owner_key_id=keys.key_id(bytes(OWNER.public_key)),
        utc_offset="+08:00",
        utc_offset_minutes=480,
    ).SerializeToString(deterministic=True)
    salt = seed("credential_salt")
    vector = _template_input("template")
    encoded = tmpl.encode(vector, MODEL_ID)
    out = {
        "site_config": h(config),
        "templates": [
            {
                "model_id": MODEL_ID,
                "input_f32le": h(vector.astype("<f4").tobytes()),
                "normalised_f32le": h(tmpl.normalise(vector).astype("<f4").tobytes()),
                "wire": h(encoded.SerializeToString(deterministic=True)),
                "vector_f16le": h(encoded.vector),
            }
        ],
        "credentials": {
            "salt": h(salt),
            "cards": [
                {
                    "input": c,
                    "normalised": credentials.normalise_card(c),
                    "hash": h(credentials.card_hash(salt, c)),
                }
                for c in ("04a1b2c3d4", "CARD0001")
            ],
            "pins": [{"input": p, "hash": h(credentials.pin_hash(salt, p))} for p in ("2468", "000000")],
        },
    }
    return out, config


def _person_records(hub_keys: HubKeys, site: Site) -> dict[str, bytes]:
    wl = Whitelist(None, hub_keys)  # type: ignore[arg-type]  # person_record reads no store
    specs = {
        PERSONS[0]: PersonSpec(
            name="A",
            templates=[tmpl.encode(_template_input("person.a"), MODEL_ID)],
            cards=["04a1b2c3d4"],
            schedules=[pb.Schedule(weekdays_mask=0b0011111, start_minute=420, end_minute=1320)],
        ),
        PERSONS[1]: PersonSpec(
            name="B",
            pins=["2468"],
            doors=["front"],
            valid_from=T0 - 86400,
            valid_until=T0 + 86400 * 365,
            always_allowed=True,
        ),
        PERSONS[2]: PersonSpec(name="C", cards=["CARD0001"]),
    }
    return {
        pid: wl.person_record(site, pid, spec).SerializeToString(deterministic=True)
        for pid, spec in specs.items()
    }


def _site(hub_keys: HubKeys, config: bytes, version: int, records: dict[str, bytes]) -> Site:
    chash = digest.record_hash(config)
    state = digest.state_digest(chash, [(pid, digest.record_hash(r)) for pid, r in sorted(records.items())])
    return Site(SITE_ID, "oak", version, state, len(records), hub_keys.seal(config), chash, T0)


def _bundle(
    publisher: Publisher,
    view: _View,
    kind: int,
    from_version: int,
    changed: Changed | None,
    device: Device,
    nonce: bytes,
) -> tuple[dict[str, Any], BundleMeta]:
    meta, spool = publisher._build(view, kind, from_version, changed)  # type: ignore[arg-type]
    with spool:
        spool.seek(0)
        chunks = [spool.read(n) for n in meta.chunk_length]
    signed = publisher.issue(meta, device, nonce)
    header = pb.BundleHeader.FromString(signed.header)
    content_key = publisher.keys.unseal(meta.content_key_sealed)
    from nacl.secret import SecretBox

    plain = [SecretBox(content_key).decrypt(c) for c in chunks]
    return {
        "kind": pb.BundleKind.Name(kind),
        "from_version": from_version,
        "to_version": meta.to_version,
        "fetch_nonce": h(nonce),
        "content_key": h(content_key),
        "wrapped_key_nonce": h(header.wrapped_key[:24]),
        "wrapped_key": h(header.wrapped_key),
        "chunks": [
            {"nonce": h(c[:24]), "plaintext": h(p), "data": h(c), "sha256": h(hashlib.sha256(c).digest())}
            for c, p in zip(chunks, plain, strict=True)
        ],
        "ciphertext_sha256": h(meta.ciphertext_sha256),
        "header": h(signed.header),
        "header_signature": _same(
            signature_vector(HUB, keys.CTX_BUNDLE_HEADER, signed.header), signed.signature
        ),
        "signed_header": h(signed.SerializeToString()),
        "state_digest": h(meta.state_digest),
        "person_count": meta.person_count,
    }, meta


def bundle_json() -> dict[str, Any]:
    hub_keys = HubKeys(HUB.pair, seed("hub.data_key"))
    rec_json, config = records_json(hub_keys)
    site3 = _site(hub_keys, config, 3, {})
    records = _person_records(hub_keys, site3)
    v3 = {pid: records[pid] for pid in PERSONS[:2]}
    v4 = {pid: records[pid] for pid in (PERSONS[0], PERSONS[2])}
    publisher = Publisher(
        None,  # type: ignore[arg-type]  # building and issuing read no store
        hub_keys,
        replace(LIMITS, target_chunk_bytes=1024),
        clock=lambda: T0,
        random=Stream("bundle"),
    )
    device = Device(DEVICE_ID, SITE_ID, "front", T0, DEVICE.pair.sign_public, DEVICE.pair.box_public, T0)
    snap_site, delta_site = _site(hub_keys, config, 3, v3), _site(hub_keys, config, 4, v4)
    snapshot, _ = _bundle(
        publisher,
        _View(snap_site, {p: hub_keys.seal(r) for p, r in v3.items()}),
        pb.BUNDLE_KIND_SNAPSHOT,
        0,
        None,
        device,
        seed("fetch.nonce.1"),
    )
    delta, delta_meta = _bundle(
        publisher,
        _View(delta_site, {p: hub_keys.seal(r) for p, r in v4.items()}),
        pb.BUNDLE_KIND_DELTA,
        3,
        Changed(person_ids=[PERSONS[1], PERSONS[2]]),
        device,
        seed("fetch.nonce.2"),
    )
    beacon = pb.Beacon(
        site_id=SITE_ID,
        version=4,
        hub_time=T0 + 5,
        nonce=seed("watch.nonce"),
        key_id=HUB.pair.key_id,
        state_digest=delta_site.state_digest,
    )
    signed_beacon = sign_beacon(hub_keys, beacon)
    # Section 7, bundles on the stream: the delta on the watch event naming version 4, its header
    # issued again for the stream (it echoes the watch nonce, as the beacon does; new wrap nonce).
    stream_header = publisher.issue(delta_meta, device, seed("watch.nonce"))
    watch_event = pb.WatchEvent(
        beacon=signed_beacon,
        header=stream_header,
        chunks=[pb.Chunk(index=i, data=bytes.fromhex(c["data"])) for i, c in enumerate(delta["chunks"])],
    )
    manifest = pb.Manifest(
        site_id=SITE_ID,
        device_id=DEVICE_ID,
        version=4,
        state_digest=delta_site.state_digest,
        person_count=2,
        device_time=T0 + 6,
        agent_version="0.1.0",
        model_id=MODEL_ID,
        beacon_nonce=seed("report.nonce"),
    ).SerializeToString()
    rotation = pb.KeyRotation(
        old_key_id=HUB.pair.key_id,
        new_sign_key=NEW_HUB.pair.sign_public,
        new_key_id=NEW_HUB.pair.key_id,
        issued_at=T0 + 7,
    ).SerializeToString()
    return {
        "now": T0,
        "site_id": SITE_ID,
        "device_id": DEVICE_ID,
        "records": rec_json,
        "person_records": {pid: h(r) for pid, r in records.items()},
        "record_hashes": {pid: h(digest.record_hash(r)) for pid, r in records.items()},
        "config_hash": h(digest.record_hash(config)),
        "state_digest_empty": h(digest.state_digest(digest.EMPTY_CONFIG, [])),
        "state_digests": {"3": h(snap_site.state_digest), "4": h(delta_site.state_digest)},
        "snapshot": snapshot,
        "delta": delta,
        "beacon": _same(
            signature_vector(HUB, keys.CTX_BEACON, signed_beacon.beacon), signed_beacon.signature
        ),
        "watch_event": {
            "watch_nonce": h(seed("watch.nonce")),
            "from_version": 3,
            "wrapped_key": h(pb.BundleHeader.FromString(stream_header.header).wrapped_key),
            "signed_header": h(stream_header.SerializeToString()),
            "event": h(watch_event.SerializeToString()),
        },
        "manifest": signature_vector(DEVICE, keys.CTX_MANIFEST, manifest),
        "key_rotation": signature_vector(HUB, keys.CTX_KEY_ROTATION, rotation),
        "wrap_example": {
            "content_key": h(seed("content_key")),
            "nonce": h(seed("wrap.nonce")[:24]),
            "wrapped": h(
                wrap_key(
                    Box(HUB.pair.box_key, PublicKey(DEVICE.pair.box_public)),
                    seed("content_key"),
                    seed("wrap.nonce")[:24],
                )
            ),
        },
    }


# ------------------------------------------------------------------ entry logs


def entrylog_json() -> dict[str, Any]:
    owner = entrylog.OwnerKey.from_public(bytes(OWNER.public_key))
    ephemeral = Stream("log.ephemeral")
    sealed_with: list[str] = []

    def sealer(plaintext: bytes, recipient: bytes) -> bytes:
        esk = ephemeral(32)
        sealed_with.append(h(esk))
        return sealed_box(plaintext, recipient, esk)

    entries = [
        entrylog.Entry(
            door="front",
            decision="granted",
            credential="face",
            person_id=PERSONS[0],
            similarity=0.71875,
            liveness=0.5,
            whitelist_version=4,
            wall_time_ms=T0 * 1000 + 1,
            monotonic_ns=10**12,
        ),
        entrylog.Entry(
            door="front",
            decision="denied",
            credential="card",
            reason="unknown_card",
            whitelist_version=4,
            wall_time_ms=T0 * 1000 + 2,
            monotonic_ns=10**12 + 5,
        ),
        entrylog.Entry(
            door="front",
            decision="shadow_granted",
            credential="pin",
            person_id=PERSONS[1],
            shadow=True,
            whitelist_version=4,
            wall_time_ms=T0 * 1000 + 3,
            monotonic_ns=10**12 + 9,
        ),
    ]
    records: list[dict[str, Any]] = []
    raws: list[bytes] = []
    head = entrylog.GENESIS

    def add(raw: bytes, **extra: Any) -> None:
        nonlocal head
        rec = pb.SealedLogRecord.FromString(raw)
        head = entrylog.link_out(rec, raw)
        raws.append(raw)
        records.append(
            {
                "seq": rec.seq,
                "record": h(raw),
                "chain_value": h(entrylog.chain_value(raw)),
                "link_out": h(head),
                **extra,
            }
        )

    # seq 1, 2: entries
    for seq, entry in enumerate(entries[:2], start=1):
        add(
            entrylog.seal_entry(entry, DEVICE_ID, seq, head, owner, sealer),
            entry=h(entry.to_proto(DEVICE_ID, seq).SerializeToString()),
            ephemeral_secret=sealed_with[-1],
        )
    # seq 3: a standalone gap marker (two decisions never written)
    add(entrylog.gap_marker(seq=3, prev_hash=head, unwritten=2, reason="disk_full"))
    # seq 4..6: written, then dropped by the storage policy; the range marker stands in for them
    before_drop = head
    dropped_head = head
    for seq in (4, 5, 6):
        raw = entrylog.seal_entry(entries[0], DEVICE_ID, seq, dropped_head, owner, sealer)
        dropped_head = entrylog.chain_value(raw)
    add(
        entrylog.gap_marker(
            seq=6, from_seq=4, prev_hash=before_drop, dropped=3, reason="outbox_full", link_hash=dropped_head
        )
    )
    # seq 7: an entry after the range, linked to the dropped records' chain value
    add(
        entrylog.seal_entry(entries[2], DEVICE_ID, 7, head, owner, sealer),
        entry=h(entries[2].to_proto(DEVICE_ID, 7).SerializeToString()),
        ephemeral_secret=sealed_with[-1],
    )
    batch1 = entrylog.sign_batch(
        DEVICE.pair.sign_key,
        site_id=SITE_ID,
        device_id=DEVICE_ID,
        records=raws[:2],
        sent_at_ms=T0 * 1000 + 10,
        backlog=3,
    )
    batch2 = entrylog.sign_batch(
        DEVICE.pair.sign_key,
        site_id=SITE_ID,
        device_id=DEVICE_ID,
        records=raws[2:],
        sent_at_ms=T0 * 1000 + 20,
        dropped_total=3,
        unwritten_total=2,
    )
    export = io.BytesIO()
    device_key = pb.LogDeviceKey(
        device_id=DEVICE_ID, site_id=SITE_ID, sign_public_key=DEVICE.pair.sign_public
    )
    entrylog.write_export(export, [device_key], [batch1, batch2])
    return {
        "device_id": DEVICE_ID,
        "site_id": SITE_ID,
        "owner_key_id": owner.key_id,
        "genesis": h(entrylog.GENESIS),
        "records": records,
        "dropped_ephemeral_secrets": sealed_with[2:5],
        "batches": [
            {
                "batch": h(b.batch),
                "signature": h(b.signature),
                "signed": h(b.SerializeToString()),
                "signature_vector": _same(
                    signature_vector(DEVICE, entrylog.BATCH_CONTEXT, b.batch), b.signature
                ),
            }
            for b in (batch1, batch2)
        ],
        "export": h(export.getvalue()),
    }


def build() -> dict[str, dict[str, Any]]:
    """Every vector file's content, by file name."""
    keys_vec = keys_json()
    return {
        "keys.json": keys_vec,
        "registration.json": registration_json(keys_vec["token"]),
        "bundle.json": bundle_json(),
        "entrylog.json": entrylog_json(),
    }


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m doorkeeper.tools.vectors", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=VECTORS_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the code")
    args = parser.parse_args(argv)
    stale = []
    for name, content in build().items():
        path = args.out / name
        text = render(content)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"vectors differ from the code: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
