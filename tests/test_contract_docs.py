"""The written contract names only what the code uses: metadata keys and signature contexts
in the .proto comments and in PROTOCOL.md are the ones the code sends and checks."""

from __future__ import annotations

import re
from pathlib import Path

from doorkeeper.wire import callauth, entrylog, keys

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "protos" / "doorkeeper" / "v1" / "doorkeeper.proto"
PROTOCOL = ROOT / "protos" / "PROTOCOL.md"
CODE_DIRS = ("protos", "runtime", "agent", "hub", "tools")

METADATA_KEYS = {callauth.MD_PRINCIPAL, callauth.MD_NONCE, callauth.MD_SIGNATURE}
SIGNATURE_CONTEXTS = {v for k, v in vars(keys).items() if k.startswith("CTX_")} | {
    callauth.CONTEXT,
    entrylog.BATCH_CONTEXT,
}


def hash_tags() -> set[str]:
    """Domain tags the code hashes with: b"doorkeeper/v1/<tag>\\x00" literals in the source."""
    tags: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            tags |= set(re.findall(r'b"doorkeeper/v1/([a-z0-9-]+)\\x00"', path.read_text()))
    return tags


def comments(proto_text: str) -> str:
    return "\n".join(line.split("//", 1)[1] for line in proto_text.splitlines() if "//" in line)


def problems(text: str) -> list[str]:
    """What a contract text names that the code does not use."""
    found = []
    for key in sorted(set(re.findall(r"\bx-dk-[a-z0-9-]+", text)) - METADATA_KEYS):
        found.append(f"metadata key {key!r} is not one the code sends or checks")
    for ctx in sorted(set(re.findall(r'context "([a-z0-9-]+)"', text)) - SIGNATURE_CONTEXTS):
        found.append(f"signature context {ctx!r} is not one the code signs with")
    for tag in sorted(
        set(re.findall(r"(?<![/\w])doorkeeper/v1/([a-z0-9-]+)", text)) - SIGNATURE_CONTEXTS - hash_tags()
    ):
        found.append(f"domain tag 'doorkeeper/v1/{tag}' is not one the code uses")
    # Signatures are framed (length-prefixed parts), never "prefix || a || b".
    for ctx in sorted(set(re.findall(r'"doorkeeper/v1/([a-z0-9-]+)"\s*\|\|', text)) & SIGNATURE_CONTEXTS):
        found.append(f"signature context {ctx!r} is described as a plain concatenation")
    return found


def test_the_proto_comments_name_only_metadata_keys_and_contexts_the_code_uses() -> None:
    text = comments(PROTO.read_text())
    assert problems(text) == []
    # ... and they name every one of them.
    assert set(re.findall(r"\bx-dk-[a-z0-9-]+", text)) == METADATA_KEYS
    assert set(re.findall(r'context "([a-z0-9-]+)"', text)) == SIGNATURE_CONTEXTS


def test_protocol_md_names_only_what_the_code_uses_and_every_context() -> None:
    text = PROTOCOL.read_text()
    assert problems(text) == []
    assert set(re.findall(r"\bx-dk-[a-z0-9-]+", text)) >= METADATA_KEYS
    table = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.MULTILINE))
    assert table >= SIGNATURE_CONTEXTS, SIGNATURE_CONTEXTS - table


def test_the_check_catches_the_old_wrong_statements() -> None:
    old = comments(
        "// Signed calls (metadata x-dk-device, x-dk-nonce, x-dk-signature).\n"
        '// Ed25519 by device_sign_key over "doorkeeper/v1/register" || token_id ||\n'
        '// Ed25519 by the device key, context "log-batches"\n'
    )
    found = problems(old)
    assert any("x-dk-device" in p for p in found)
    assert any("'register' is described as a plain concatenation" in p for p in found)
    assert any("'log-batches'" in p for p in found)


def test_protocol_md_states_the_numbers_the_code_enforces() -> None:
    """Roles, caps, lifetimes and transport settings in PROTOCOL.md are the code's own."""
    from doorkeeper.hub import auth, devices, service
    from doorkeeper.hub.server import SERVER_OPTIONS
    from doorkeeper.wire import freshness, token
    from doorkeeper.wire.limits import LIMITS

    text = PROTOCOL.read_text()
    roles: dict[str, set[str]] = {}
    for methods, who in re.findall(
        r"^\| ((?:`[A-Za-z]+`(?:, )?)+)(?: \(server stream\))? \| ([a-z, ]+) \|$", text, re.MULTILINE
    ):
        for method in re.findall(r"`([A-Za-z]+)`", methods):
            roles[method] = set(who.split(", "))
    assert roles == {m: set(r) for m, r in auth.ADMIN_METHODS.items()}
    server = dict(SERVER_OPTIONS)
    min_ping = server["grpc.http2.min_ping_interval_without_data_ms"]
    ping_s = server["grpc.keepalive_time_ms"] // 1000
    ping_timeout_s = server["grpc.keepalive_timeout_ms"] // 1000
    for needle in (
        f"`expires_in_s` ({auth.NONCE_TTL_S})",
        f"signed call within {auth.NONCE_TTL_S} s",
        f"At most {service.MAX_WATCHES_PER_DEVICE} concurrent `Watch` streams per device",
        f"`grpc.http2.min_ping_interval_without_data_ms = {min_ping}`",
        f"every {ping_s} s (timeout {ping_timeout_s} s)",
        f"holds up to {server['grpc.server.max_pending_requests']:,} calls that arrived before",
        f"up to 4 MiB ({LIMITS.grpc_max_message_bytes:,} bytes)",
        f"(16 to {freshness.MAX_NONCE_BYTES} are",
        f"accepts {freshness.MIN_NONCE_BYTES} to {freshness.MAX_NONCE_BYTES}",
        f"refuses more than {token.MAX_TOKEN_CHARS} characters",
        f"at most {devices.MAX_SEALED_SECRET_BYTES} bytes",
        f"1 to {LIMITS.max_chunks} chunks",
        f"at most {LIMITS.max_templates_per_person} templates",
        f"`person_count` at most {LIMITS.max_persons:,}",
    ):
        assert needle in " ".join(text.split()), needle
