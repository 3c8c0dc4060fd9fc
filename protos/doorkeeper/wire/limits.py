"""Caps on untrusted sizes, in one place (as python-tuf keeps its config).

Everything that arrives from a network, a file or an operator is checked
against these before anything is allocated or parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    max_chunk_bytes: int = 3 * MiB  # under gRPC's 4 MiB default message size
    target_chunk_bytes: int = 1 * MiB  # plaintext per chunk the hub aims for
    max_chunks: int = 4096
    max_payload_bytes: int = 2048 * MiB
    max_persons: int = 1_000_000
    max_record_bytes: int = 64 * 1024
    max_templates_per_person: int = 16
    template_dim: int = 512
    max_id_chars: int = 64
    max_name_chars: int = 200
    max_doors_per_person: int = 256
    max_credentials_per_person: int = 16
    max_card_chars: int = 64
    max_pin_chars: int = 12
    max_schedules_per_person: int = 32
    max_log_batch_bytes: int = 3 * MiB
    max_log_records_per_batch: int = 5000
    grpc_max_message_bytes: int = 4 * MiB
    # Files an operator names (read with doorkeeper.wire.capped.read_capped: at most cap + 1
    # bytes whatever stat() says, so /dev/zero or a FIFO cannot grow the process).
    max_image_file_bytes: int = 40 * MiB
    max_image_pixels: int = 40_000_000  # e.g. 8000 x 5000, checked from the header
    max_npy_bytes: int = 64 * 1024  # a 512-float template is 2-4 KiB
    max_pem_bytes: int = 1 * MiB  # TLS certificates, keys, CA bundles
    max_token_file_bytes: int = 4096
    max_csv_bytes: int = 32 * MiB
    max_consent_chars: int = 500
    max_import_rows: int = 2000  # persons per ImportPersons call (one site version)
    max_audit_page: int = 5000
    max_rollout_doors: int = 1000  # doors named in one rollout stage
    # Chunk bytes one watch event carries (PROTOCOL sections 7 and 19): what the agent asks for
    # (WatchRequest.inline_bundle_bytes) and the most the hub inlines, whatever it is asked.
    max_inline_bundle_bytes: int = 64 * 1024


LIMITS = Limits()

# The largest integer SQLite (and PostgreSQL's bigint) stores: every uint64 a request carries
# must fit, or it cannot be compared with what is stored.
INT64_MAX = 2**63 - 1

# Site and door names, ids and principals: what `check_name` and the stores accept.
_LABEL = LIMITS.max_id_chars
_KEY = 64  # public keys, token secrets, hashes: 32 bytes today, room for a longer scheme
_SIGNATURE = 128
_FRESHNESS_NONCE = 64  # wire.freshness.MAX_NONCE_BYTES (the hub then checks the exact range)

# Caps at the hub's API boundary, one entry per string, bytes and repeated field of every
# request message ("Message.field", without the package): characters for a string, bytes for
# bytes, items for a repeated field; "Message.field[]" caps each item of a repeated string or
# bytes field. The hub refuses a request over any cap with INVALID_ARGUMENT, naming the field
# and its cap, before it authenticates, parses further or logs anything the caller sent.
# A field missing here is held to the DEFAULT_*_CAP below, and a test fails until it is listed.
REQUEST_FIELD_CAPS: dict[str, int] = {
    "RegisterRequest.token_id": _LABEL,
    "RegisterRequest.token_secret": _KEY,
    "RegisterRequest.device_sign_key": _KEY,
    "RegisterRequest.device_box_key": _KEY,
    "RegisterRequest.proof": _SIGNATURE,
    "RegisterRequest.sealed_token_secret": 256,  # hub.devices.MAX_SEALED_SECRET_BYTES (68 today)
    "ChallengeRequest.principal": _LABEL,
    "ChallengeRequest.hub_challenge": _FRESHNESS_NONCE,
    "WatchRequest.nonce": _FRESHNESS_NONCE,
    "FetchRequest.resume_ciphertext_sha256": _KEY,
    "FetchRequest.nonce": _FRESHNESS_NONCE,
    "SignedManifest.manifest": 4096,
    "SignedManifest.signature": _SIGNATURE,
    "SignedLogBatch.batch": LIMITS.max_log_batch_bytes,
    "SignedLogBatch.signature": _SIGNATURE,
    "AddSiteRequest.name": _LABEL,
    "AddSiteRequest.utc_offset": 16,
    "AddDeviceRequest.site": _LABEL,
    "AddDeviceRequest.name": _LABEL,
    "AddPersonRequest.site": _LABEL,
    "AddPersonRequest.name": LIMITS.max_name_chars,
    "AddPersonRequest.templates": LIMITS.max_templates_per_person,
    "Template.model_id": 256,
    "Template.vector": 4 * LIMITS.template_dim,  # float32 is the widest encoding
    "AddPersonRequest.doors": LIMITS.max_doors_per_person,
    "AddPersonRequest.doors[]": _LABEL,
    "AddPersonRequest.cards": LIMITS.max_credentials_per_person,
    "AddPersonRequest.cards[]": LIMITS.max_card_chars,
    "AddPersonRequest.pins": LIMITS.max_credentials_per_person,
    "AddPersonRequest.pins[]": LIMITS.max_pin_chars,
    "AddPersonRequest.schedules": LIMITS.max_schedules_per_person,
    "RemovePersonRequest.person_id": _LABEL,
    "FleetRequest.site": _LABEL,
    "SetOwnerKeyRequest.site": _LABEL,
    "SetOwnerKeyRequest.public_key": _KEY,
    "PullLogsRequest.site": _LABEL,
    "PullLogsRequest.device_id": _LABEL,
    # Idempotency keys chosen by the client (hub.audit checks their alphabet).
    "AddSiteRequest.request_id": _LABEL,
    "AddDeviceRequest.request_id": _LABEL,
    "AddPersonRequest.request_id": _LABEL,
    "RemovePersonRequest.request_id": _LABEL,
    "SetOwnerKeyRequest.request_id": _LABEL,
    # people (issue 12)
    "AddPersonRequest.consent": LIMITS.max_consent_chars,
    "ListPersonsRequest.site": _LABEL,
    "ListPersonsRequest.search": LIMITS.max_name_chars,
    "GetPersonRequest.person_id": _LABEL,
    "UpdatePersonRequest.person_id": _LABEL,
    "UpdatePersonRequest.request_id": _LABEL,
    "UpdatePersonRequest.doors": LIMITS.max_doors_per_person,
    "UpdatePersonRequest.doors[]": _LABEL,
    "UpdatePersonRequest.schedules": LIMITS.max_schedules_per_person,
    "UpdatePersonRequest.add_templates": LIMITS.max_templates_per_person,
    "UpdatePersonRequest.cards": LIMITS.max_credentials_per_person,
    "UpdatePersonRequest.cards[]": LIMITS.max_card_chars,
    "UpdatePersonRequest.pins": LIMITS.max_credentials_per_person,
    "UpdatePersonRequest.pins[]": LIMITS.max_pin_chars,
    "UpdatePersonRequest.consent": LIMITS.max_consent_chars,
    "UpdatePersonRequest.name": LIMITS.max_name_chars,
    "ImportPersonsRequest.site": _LABEL,
    "ImportPersonsRequest.persons": LIMITS.max_import_rows,
    "ImportPersonsRequest.request_id": _LABEL,
    # doors, operator keys, audit (issue 12)
    "RevokeDeviceRequest.site": _LABEL,
    "RevokeDeviceRequest.device": _LABEL,
    "RevokeDeviceRequest.request_id": _LABEL,
    "ReplaceDeviceRequest.site": _LABEL,
    "ReplaceDeviceRequest.name": _LABEL,
    "ReplaceDeviceRequest.request_id": _LABEL,
    "AddOperatorRequest.name": _LABEL,
    "AddOperatorRequest.role": 16,
    "AddOperatorRequest.public_key": _KEY,
    "AddOperatorRequest.request_id": _LABEL,
    "RevokeOperatorRequest.operator": _LABEL,
    "RevokeOperatorRequest.request_id": _LABEL,
    "ListAuditRequest.actor": _LABEL,
    "SetDeviceModeRequest.site": _LABEL,
    "SetDeviceModeRequest.device": _LABEL,
    "SetDeviceModeRequest.request_id": _LABEL,
    "StartRolloutRequest.site": _LABEL,
    "StartRolloutRequest.canary": LIMITS.max_rollout_doors,
    "StartRolloutRequest.canary[]": _LABEL,
    "StartRolloutRequest.auto_stop": 256,
    "StartRolloutRequest.request_id": _LABEL,
    "PromoteRolloutRequest.site": _LABEL,
    "PromoteRolloutRequest.doors": LIMITS.max_rollout_doors,
    "PromoteRolloutRequest.doors[]": _LABEL,
    "PromoteRolloutRequest.request_id": _LABEL,
    "AbortRolloutRequest.site": _LABEL,
    "AbortRolloutRequest.reason": 500,
    "AbortRolloutRequest.request_id": _LABEL,
    "GetRolloutRequest.site": _LABEL,
    "DecisionCountsRequest.site": _LABEL,
    "DecisionCountsRequest.device": _LABEL,
    "SiteReadinessRequest.site": _LABEL,
    "VersionHistoryRequest.site": _LABEL,
}
DEFAULT_STRING_CAP = 256
DEFAULT_BYTES_CAP = 4096
DEFAULT_ITEMS_CAP = 64
