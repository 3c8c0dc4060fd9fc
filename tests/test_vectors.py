"""Known-answer vectors (protos/vectors/): the code makes them byte for byte, and the
production verification paths accept them (a format change is a deliberate diff)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nacl.public import PrivateKey, SealedBox

from doorkeeper.agent.sync import bundle as core
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.tools import vectors
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth, entrylog, keys
from doorkeeper.wire import templates as tmpl
from doorkeeper.wire import token as tokens

FILES = ("keys.json", "registration.json", "bundle.json", "entrylog.json")


def load(name: str) -> Any:
    return json.loads((vectors.VECTORS_DIR / name).read_text())


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def test_the_code_reproduces_every_committed_vector_byte_for_byte() -> None:
    built = vectors.build()
    assert sorted(built) == sorted(FILES)
    for name, content in built.items():
        assert (vectors.VECTORS_DIR / name).read_text() == vectors.render(content), (
            f"{name} differs from what the code makes: a wire format changed. If deliberate, run "
            "`python -m doorkeeper.tools.vectors` and say so in PROTOCOL.md"
        )


def test_check_mode_reports_an_edited_vector(tmp_path: Path) -> None:
    assert vectors.main(["--out", str(tmp_path)]) == 0
    assert vectors.main(["--out", str(tmp_path), "--check"]) == 0
    data = json.loads((tmp_path / "bundle.json").read_text())
    data["snapshot"]["header"] = data["snapshot"]["header"][:-2] + "00"
    (tmp_path / "bundle.json").write_text(vectors.render(data))
    assert vectors.main(["--out", str(tmp_path), "--check"]) == 1


def _signatures(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node] if {"context", "parts", "message", "signature"} <= node.keys() else []
        return found + [s for v in node.values() for s in _signatures(v)]
    if isinstance(node, list):
        return [s for v in node for s in _signatures(v)]
    return []


def _parts(parts: list[dict[str, Any]]) -> tuple[bytes | str | int, ...]:
    out: list[bytes | str | int] = []
    for p in parts:
        if "u64" in p:
            out.append(int(p["u64"]))
        elif "str" in p:
            out.append(p["str"])
        else:
            out.append(b(p["hex"]))
    return tuple(out)


def test_every_signature_context_is_covered_and_verifies_with_the_production_framing() -> None:
    parties = load("keys.json")["parties"]
    sigs = [s for name in FILES for s in _signatures(load(name))]
    contexts = {s["context"] for s in sigs}
    code_contexts = {v for k, v in vars(keys).items() if k.startswith("CTX_")}
    code_contexts |= {callauth.CONTEXT, entrylog.BATCH_CONTEXT}
    assert code_contexts <= contexts, code_contexts - contexts
    for s in sigs:
        parts = _parts(s["parts"])
        assert keys._message(s["context"], parts) == b(s["message"])
        public = b(parties[s["signer"]]["sign_public"])
        assert keys.verify(public, b(s["signature"]), s["context"], *parts)
        assert not keys.verify(public, b(s["signature"]), s["context"] + "x", *parts)
    # The two contexts signed inside wire modules rather than keys.CTX_*.
    logs = load("entrylog.json")
    device = b(parties["device"]["sign_public"])
    for batch in logs["batches"]:
        assert keys.verify(device, b(batch["signature"]), entrylog.BATCH_CONTEXT, b(batch["batch"]))


def test_keys_token_and_signed_call() -> None:
    v = load("keys.json")
    for party in ("hub", "device", "operator", "hub-rotated"):
        p = v["parties"][party]
        pair = keys.KeyPair(keys.SigningKey(b(p["sign_seed"])), PrivateKey(b(p["box_secret"])))
        assert pair.sign_public == b(p["sign_public"]) and pair.box_public == b(p["box_public"])
        assert pair.key_id == p["key_id"] == p["fingerprint"][:16]
        assert keys.fingerprint_text(pair.sign_public) == p["fingerprint_text"]
    t = v["token"]
    tok = tokens.Token.parse(t["text"])
    assert (tok.token_id, tok.secret.hex(), tok.hub_fingerprint.hex()) == (
        t["token_id"],
        t["secret"],
        t["hub_fingerprint"],
    )
    assert tokens.secret_matches(tok.secret, b(t["secret_hash"]))
    assert tok.hub_fingerprint_text == v["parties"]["hub"]["fingerprint_text"] == t["hub_fingerprint_text"]
    assert t["text"].endswith(t["hub_fingerprint_text"].removeprefix("SHA256:"))
    c = v["signed_call"]
    assert hashlib.sha256(b(c["request"])).hexdigest() == c["request_sha256"]
    device = b(v["parties"]["device"]["sign_public"])
    assert callauth.check_call(
        device, b(c["signature"]), c["method"], c["principal"], b(c["nonce"]), b(c["request"])
    )
    assert not callauth.check_call(
        device, b(c["signature"]), c["method"], c["principal"], b(c["nonce"]), b(c["request"]) + b"\x00"
    )
    assert [list(kv) for kv in callauth.metadata(c["principal"], b(c["nonce"]), b(c["signature"]))] == c[
        "metadata"
    ]


def test_sealed_boxes_are_libsodiums_and_open_with_the_recipient_key() -> None:
    s = load("registration.json")["sealed_token_secret"]
    assert SealedBox(PrivateKey(b(s["recipient_box_secret"]))).decrypt(b(s["sealed"])) == b(s["plaintext"])
    logs = load("entrylog.json")
    owner = PrivateKey(b(load("keys.json")["parties"]["owner"]["box_secret"]))
    for rec in logs["records"]:
        if "entry" in rec:
            sealed = pb.SealedLogRecord.FromString(b(rec["record"]))
            assert SealedBox(owner).decrypt(sealed.ciphertext) == b(rec["entry"])


def _trust(v: dict[str, Any], hub: str = "hub") -> core.Trust:
    p = load("keys.json")["parties"]
    return core.Trust(
        b(p[hub]["sign_public"]),
        v["site_id"],
        v["device_id"],
        PrivateKey(b(p["device"]["box_secret"])),
        b(p["hub"]["box_public"]),
    )


def _apply(wl: LocalWhitelist, trust: core.Trust, bundle: dict[str, Any], current: int, now: int) -> None:
    signed = pb.SignedBundleHeader.FromString(b(bundle["signed_header"]))
    vh = core.verify_header(signed, trust, current, now)
    for i, chunk in enumerate(bundle["chunks"]):
        core.check_chunk(vh, i, b(chunk["data"]))
    key = core.open_content_key(vh, trust)
    assert key == b(bundle["content_key"])
    wl.apply(vh, (c for chunk in bundle["chunks"] for c in core.decrypt_chunk(key, b(chunk["data"]))))


def test_bundles_verify_decrypt_and_apply_to_the_signed_digest(tmp_path: Path) -> None:
    v = load("bundle.json")
    trust = _trust(v)
    wl = LocalWhitelist(tmp_path / "wl.db", bytes(32))
    try:
        _apply(wl, trust, v["snapshot"], 0, v["now"])
        assert wl.version == 3 and wl.state_digest == b(v["state_digests"]["3"])
        _apply(wl, trust, v["delta"], 3, v["now"])
        assert wl.version == 4 and wl.state_digest == b(v["state_digests"]["4"]) == b(
            v["delta"]["state_digest"]
        )
        assert wl.person_count == v["delta"]["person_count"] == 2
        # A single flipped ciphertext byte is refused by its signed hash, before decryption.
        snap = v["snapshot"]
        vh = core.verify_header(
            pb.SignedBundleHeader.FromString(b(snap["signed_header"])), trust, 0, v["now"]
        )
        bad = bytearray(b(snap["chunks"][0]["data"]))
        bad[-1] ^= 1
        with pytest.raises(core.Truncated):
            core.check_chunk(vh, 0, bytes(bad))
    finally:
        wl.close()
    for chunk in v["snapshot"]["chunks"]:
        data = b(chunk["data"])
        assert data[:24] == b(chunk["nonce"]) and hashlib.sha256(data).hexdigest() == chunk["sha256"]
    header = pb.BundleHeader.FromString(b(v["snapshot"]["header"]))
    assert header.nonce == b(v["snapshot"]["fetch_nonce"]) and header.wrapped_key == b(
        v["snapshot"]["wrapped_key"]
    )
    beacon = core.verify_beacon(
        pb.SignedBeacon(beacon=b(v["beacon"]["parts"][0]["hex"]), signature=b(v["beacon"]["signature"])),
        trust,
    )
    assert beacon.version == 4 and beacon.state_digest == b(v["state_digests"]["4"])
    # Section 7: the delta on a watch event, header echoing the watch nonce like the beacon.
    we = v["watch_event"]
    event = pb.WatchEvent.FromString(b(we["event"]))
    assert core.verify_beacon(event.beacon, trust).nonce == b(we["watch_nonce"])
    vh = core.verify_header(event.header, trust, we["from_version"], v["now"])
    assert event.header.SerializeToString() == b(we["signed_header"])
    assert vh.header.nonce == b(we["watch_nonce"]) and vh.header.to_version == beacon.version
    assert [(c.index, c.data.hex()) for c in event.chunks] == list(
        enumerate(c["data"] for c in v["delta"]["chunks"])
    )
    for c in event.chunks:
        core.check_chunk(vh, c.index, c.data)
    assert core.open_content_key(vh, trust) == b(v["delta"]["content_key"])
    r = v["key_rotation"]
    new = core.follow_rotation(
        pb.SignedKeyRotation(rotation=b(r["parts"][0]["hex"]), signature=b(r["signature"])), trust
    )
    assert new is not None and new.hub_sign_key == _trust(v, "hub-rotated").hub_sign_key


def test_templates_and_credential_hashes() -> None:
    v = load("bundle.json")["records"]
    t = v["templates"][0]
    vector = np.frombuffer(b(t["input_f32le"]), dtype="<f4")
    encoded = tmpl.encode(vector, t["model_id"])
    assert encoded.SerializeToString(deterministic=True) == b(t["wire"])
    decoded = tmpl.decode(pb.Template.FromString(b(t["wire"])))
    assert float(np.dot(decoded, np.frombuffer(b(t["normalised_f32le"]), dtype="<f4"))) > 0.999


def test_entry_log_chain_batches_and_export_verify_with_the_owner_tools() -> None:
    v = load("entrylog.json")
    owner = load("keys.json")["parties"]["owner"]
    frames = list(entrylog.read_export(io.BytesIO(b(v["export"]))))
    report = entrylog.verify_export(frames, {owner["key_id"]: b(owner["box_secret"])})
    assert report.ok, report.errors
    assert [e.seq for e in report.entries] == [1, 2, 7]
    assert [(g.from_seq, g.to_seq, g.dropped, g.unwritten) for g in report.gaps] == [
        (3, 3, 0, 2),
        (4, 6, 3, 0),
    ]
    head = b(v["genesis"])
    for rec in v["records"]:
        parsed = entrylog.parse_record(b(rec["record"]))
        assert parsed.prev_hash == head
        head = entrylog.link_out(parsed, b(rec["record"]))
        assert head == b(rec["link_out"])
