from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StalePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STALE_POLICY_UNSPECIFIED: _ClassVar[StalePolicy]
    STALE_POLICY_KEEP_WORKING: _ClassVar[StalePolicy]
    STALE_POLICY_ALWAYS_ALLOWED_ONLY: _ClassVar[StalePolicy]
    STALE_POLICY_CARDS_ONLY: _ClassVar[StalePolicy]

class DoorMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOOR_MODE_UNSPECIFIED: _ClassVar[DoorMode]
    DOOR_MODE_ENFORCE: _ClassVar[DoorMode]
    DOOR_MODE_SHADOW: _ClassVar[DoorMode]

class BundleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUNDLE_KIND_UNSPECIFIED: _ClassVar[BundleKind]
    BUNDLE_KIND_DELTA: _ClassVar[BundleKind]
    BUNDLE_KIND_SNAPSHOT: _ClassVar[BundleKind]

class LogRecordKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_RECORD_KIND_UNSPECIFIED: _ClassVar[LogRecordKind]
    LOG_RECORD_KIND_ENTRY: _ClassVar[LogRecordKind]
    LOG_RECORD_KIND_GAP: _ClassVar[LogRecordKind]
STALE_POLICY_UNSPECIFIED: StalePolicy
STALE_POLICY_KEEP_WORKING: StalePolicy
STALE_POLICY_ALWAYS_ALLOWED_ONLY: StalePolicy
STALE_POLICY_CARDS_ONLY: StalePolicy
DOOR_MODE_UNSPECIFIED: DoorMode
DOOR_MODE_ENFORCE: DoorMode
DOOR_MODE_SHADOW: DoorMode
BUNDLE_KIND_UNSPECIFIED: BundleKind
BUNDLE_KIND_DELTA: BundleKind
BUNDLE_KIND_SNAPSHOT: BundleKind
LOG_RECORD_KIND_UNSPECIFIED: LogRecordKind
LOG_RECORD_KIND_ENTRY: LogRecordKind
LOG_RECORD_KIND_GAP: LogRecordKind

class Template(_message.Message):
    __slots__ = ("model_id", "dim", "vector", "encoding")
    class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ENCODING_UNSPECIFIED: _ClassVar[Template.Encoding]
        ENCODING_F16: _ClassVar[Template.Encoding]
        ENCODING_F32: _ClassVar[Template.Encoding]
    ENCODING_UNSPECIFIED: Template.Encoding
    ENCODING_F16: Template.Encoding
    ENCODING_F32: Template.Encoding
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dim: int
    vector: bytes
    encoding: Template.Encoding
    def __init__(self, model_id: _Optional[str] = ..., dim: _Optional[int] = ..., vector: _Optional[bytes] = ..., encoding: _Optional[_Union[Template.Encoding, str]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("weekdays_mask", "start_minute", "end_minute")
    WEEKDAYS_MASK_FIELD_NUMBER: _ClassVar[int]
    START_MINUTE_FIELD_NUMBER: _ClassVar[int]
    END_MINUTE_FIELD_NUMBER: _ClassVar[int]
    weekdays_mask: int
    start_minute: int
    end_minute: int
    def __init__(self, weekdays_mask: _Optional[int] = ..., start_minute: _Optional[int] = ..., end_minute: _Optional[int] = ...) -> None: ...

class PersonRecord(_message.Message):
    __slots__ = ("person_id", "templates", "valid_from", "valid_until", "doors", "card_hashes", "pin_hashes", "schedules", "always_allowed")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    CARD_HASHES_FIELD_NUMBER: _ClassVar[int]
    PIN_HASHES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    valid_from: int
    valid_until: int
    doors: _containers.RepeatedScalarFieldContainer[str]
    card_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    pin_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    always_allowed: bool
    def __init__(self, person_id: _Optional[str] = ..., templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ..., valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ..., doors: _Optional[_Iterable[str]] = ..., card_hashes: _Optional[_Iterable[bytes]] = ..., pin_hashes: _Optional[_Iterable[bytes]] = ..., schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ..., always_allowed: _Optional[bool] = ...) -> None: ...

class DoorModeEntry(_message.Message):
    __slots__ = ("device_id", "mode")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    mode: DoorMode
    def __init__(self, device_id: _Optional[str] = ..., mode: _Optional[_Union[DoorMode, str]] = ...) -> None: ...

class SiteConfig(_message.Message):
    __slots__ = ("site_id", "offline_validity_s", "stale_policy", "credential_salt", "log_owner_public_key", "log_owner_key_id", "utc_offset", "utc_offset_minutes", "door_modes")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_VALIDITY_S_FIELD_NUMBER: _ClassVar[int]
    STALE_POLICY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_SALT_FIELD_NUMBER: _ClassVar[int]
    LOG_OWNER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    LOG_OWNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    DOOR_MODES_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    offline_validity_s: int
    stale_policy: StalePolicy
    credential_salt: bytes
    log_owner_public_key: bytes
    log_owner_key_id: str
    utc_offset: str
    utc_offset_minutes: int
    door_modes: _containers.RepeatedCompositeFieldContainer[DoorModeEntry]
    def __init__(self, site_id: _Optional[str] = ..., offline_validity_s: _Optional[int] = ..., stale_policy: _Optional[_Union[StalePolicy, str]] = ..., credential_salt: _Optional[bytes] = ..., log_owner_public_key: _Optional[bytes] = ..., log_owner_key_id: _Optional[str] = ..., utc_offset: _Optional[str] = ..., utc_offset_minutes: _Optional[int] = ..., door_modes: _Optional[_Iterable[_Union[DoorModeEntry, _Mapping]]] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("upsert_record", "remove_person_id", "site_config")
    UPSERT_RECORD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    upsert_record: bytes
    remove_person_id: str
    site_config: bytes
    def __init__(self, upsert_record: _Optional[bytes] = ..., remove_person_id: _Optional[str] = ..., site_config: _Optional[bytes] = ...) -> None: ...

class ChangeBatch(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class BundleHeader(_message.Message):
    __slots__ = ("format", "kind", "site_id", "device_id", "from_version", "to_version", "issued_at", "expires_at", "key_id", "payload_length", "ciphertext_sha256", "chunk_sha256", "chunk_length", "wrapped_key", "state_digest", "person_count", "nonce", "effective_at")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PERSON_COUNT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    format: int
    kind: BundleKind
    site_id: str
    device_id: str
    from_version: int
    to_version: int
    issued_at: int
    expires_at: int
    key_id: str
    payload_length: int
    ciphertext_sha256: bytes
    chunk_sha256: _containers.RepeatedScalarFieldContainer[bytes]
    chunk_length: _containers.RepeatedScalarFieldContainer[int]
    wrapped_key: bytes
    state_digest: bytes
    person_count: int
    nonce: bytes
    effective_at: int
    def __init__(self, format: _Optional[int] = ..., kind: _Optional[_Union[BundleKind, str]] = ..., site_id: _Optional[str] = ..., device_id: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., key_id: _Optional[str] = ..., payload_length: _Optional[int] = ..., ciphertext_sha256: _Optional[bytes] = ..., chunk_sha256: _Optional[_Iterable[bytes]] = ..., chunk_length: _Optional[_Iterable[int]] = ..., wrapped_key: _Optional[bytes] = ..., state_digest: _Optional[bytes] = ..., person_count: _Optional[int] = ..., nonce: _Optional[bytes] = ..., effective_at: _Optional[int] = ...) -> None: ...

class SignedBundleHeader(_message.Message):
    __slots__ = ("header", "signature")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    signature: bytes
    def __init__(self, header: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Beacon(_message.Message):
    __slots__ = ("site_id", "version", "hub_time", "nonce", "key_id", "state_digest")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HUB_TIME_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    version: int
    hub_time: int
    nonce: bytes
    key_id: str
    state_digest: bytes
    def __init__(self, site_id: _Optional[str] = ..., version: _Optional[int] = ..., hub_time: _Optional[int] = ..., nonce: _Optional[bytes] = ..., key_id: _Optional[str] = ..., state_digest: _Optional[bytes] = ...) -> None: ...

class SignedBeacon(_message.Message):
    __slots__ = ("beacon", "signature")
    BEACON_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    beacon: bytes
    signature: bytes
    def __init__(self, beacon: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("token_id", "token_secret", "device_sign_key", "device_box_key", "proof", "sealed_token_secret")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SIGN_KEY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_BOX_KEY_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    SEALED_TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    token_secret: bytes
    device_sign_key: bytes
    device_box_key: bytes
    proof: bytes
    sealed_token_secret: bytes
    def __init__(self, token_id: _Optional[str] = ..., token_secret: _Optional[bytes] = ..., device_sign_key: _Optional[bytes] = ..., device_box_key: _Optional[bytes] = ..., proof: _Optional[bytes] = ..., sealed_token_secret: _Optional[bytes] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("site_id", "site_name", "device_id", "device_name", "hub_sign_key", "hub_key_id", "hub_signature", "hub_box_key")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    HUB_SIGN_KEY_FIELD_NUMBER: _ClassVar[int]
    HUB_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    HUB_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    HUB_BOX_KEY_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    site_name: str
    device_id: str
    device_name: str
    hub_sign_key: bytes
    hub_key_id: str
    hub_signature: bytes
    hub_box_key: bytes
    def __init__(self, site_id: _Optional[str] = ..., site_name: _Optional[str] = ..., device_id: _Optional[str] = ..., device_name: _Optional[str] = ..., hub_sign_key: _Optional[bytes] = ..., hub_key_id: _Optional[str] = ..., hub_signature: _Optional[bytes] = ..., hub_box_key: _Optional[bytes] = ...) -> None: ...

class ChallengeRequest(_message.Message):
    __slots__ = ("principal", "hub_challenge")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    HUB_CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    principal: str
    hub_challenge: bytes
    def __init__(self, principal: _Optional[str] = ..., hub_challenge: _Optional[bytes] = ...) -> None: ...

class ChallengeResponse(_message.Message):
    __slots__ = ("nonce", "hub_time", "expires_in_s", "hub_sign_key", "hub_box_key", "hub_proof")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    HUB_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    HUB_SIGN_KEY_FIELD_NUMBER: _ClassVar[int]
    HUB_BOX_KEY_FIELD_NUMBER: _ClassVar[int]
    HUB_PROOF_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    hub_time: int
    expires_in_s: int
    hub_sign_key: bytes
    hub_box_key: bytes
    hub_proof: bytes
    def __init__(self, nonce: _Optional[bytes] = ..., hub_time: _Optional[int] = ..., expires_in_s: _Optional[int] = ..., hub_sign_key: _Optional[bytes] = ..., hub_box_key: _Optional[bytes] = ..., hub_proof: _Optional[bytes] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("current_version", "nonce", "call_nonces", "inline_bundle_bytes")
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CALL_NONCES_FIELD_NUMBER: _ClassVar[int]
    INLINE_BUNDLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    nonce: bytes
    call_nonces: bool
    inline_bundle_bytes: int
    def __init__(self, current_version: _Optional[int] = ..., nonce: _Optional[bytes] = ..., call_nonces: _Optional[bool] = ..., inline_bundle_bytes: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("beacon", "call_nonce", "header", "chunks")
    BEACON_FIELD_NUMBER: _ClassVar[int]
    CALL_NONCE_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    beacon: SignedBeacon
    call_nonce: bytes
    header: SignedBundleHeader
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    def __init__(self, beacon: _Optional[_Union[SignedBeacon, _Mapping]] = ..., call_nonce: _Optional[bytes] = ..., header: _Optional[_Union[SignedBundleHeader, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("current_version", "resume_ciphertext_sha256", "resume_from_chunk", "want_snapshot", "nonce", "call_nonce")
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_CIPHERTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_CHUNK_FIELD_NUMBER: _ClassVar[int]
    WANT_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CALL_NONCE_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    resume_ciphertext_sha256: bytes
    resume_from_chunk: int
    want_snapshot: bool
    nonce: bytes
    call_nonce: bool
    def __init__(self, current_version: _Optional[int] = ..., resume_ciphertext_sha256: _Optional[bytes] = ..., resume_from_chunk: _Optional[int] = ..., want_snapshot: _Optional[bool] = ..., nonce: _Optional[bytes] = ..., call_nonce: _Optional[bool] = ...) -> None: ...

class BundlePart(_message.Message):
    __slots__ = ("header", "chunk", "up_to_date", "rotation", "call_nonce")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    CALL_NONCE_FIELD_NUMBER: _ClassVar[int]
    header: SignedBundleHeader
    chunk: Chunk
    up_to_date: SignedBeacon
    rotation: SignedKeyRotation
    call_nonce: bytes
    def __init__(self, header: _Optional[_Union[SignedBundleHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., up_to_date: _Optional[_Union[SignedBeacon, _Mapping]] = ..., rotation: _Optional[_Union[SignedKeyRotation, _Mapping]] = ..., call_nonce: _Optional[bytes] = ...) -> None: ...

class KeyRotation(_message.Message):
    __slots__ = ("old_key_id", "new_sign_key", "new_key_id", "issued_at")
    OLD_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_SIGN_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    old_key_id: str
    new_sign_key: bytes
    new_key_id: str
    issued_at: int
    def __init__(self, old_key_id: _Optional[str] = ..., new_sign_key: _Optional[bytes] = ..., new_key_id: _Optional[str] = ..., issued_at: _Optional[int] = ...) -> None: ...

class SignedKeyRotation(_message.Message):
    __slots__ = ("rotation", "signature")
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    rotation: bytes
    signature: bytes
    def __init__(self, rotation: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("site_id", "device_id", "version", "state_digest", "person_count", "device_time", "agent_version", "model_id", "stale", "last_error", "outbox_backlog", "outbox_dropped", "behind", "known_version", "beacon_nonce", "decisions", "mode", "pending_version", "pending_effective_at", "refused_version", "refused_reason", "refused_at")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PERSON_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DROPPED_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    BEACON_NONCE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PENDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    device_id: str
    version: int
    state_digest: bytes
    person_count: int
    device_time: int
    agent_version: str
    model_id: str
    stale: bool
    last_error: str
    outbox_backlog: int
    outbox_dropped: int
    behind: bool
    known_version: int
    beacon_nonce: bytes
    decisions: _containers.RepeatedCompositeFieldContainer[DecisionHour]
    mode: DoorMode
    pending_version: int
    pending_effective_at: int
    refused_version: int
    refused_reason: str
    refused_at: int
    def __init__(self, site_id: _Optional[str] = ..., device_id: _Optional[str] = ..., version: _Optional[int] = ..., state_digest: _Optional[bytes] = ..., person_count: _Optional[int] = ..., device_time: _Optional[int] = ..., agent_version: _Optional[str] = ..., model_id: _Optional[str] = ..., stale: _Optional[bool] = ..., last_error: _Optional[str] = ..., outbox_backlog: _Optional[int] = ..., outbox_dropped: _Optional[int] = ..., behind: _Optional[bool] = ..., known_version: _Optional[int] = ..., beacon_nonce: _Optional[bytes] = ..., decisions: _Optional[_Iterable[_Union[DecisionHour, _Mapping]]] = ..., mode: _Optional[_Union[DoorMode, str]] = ..., pending_version: _Optional[int] = ..., pending_effective_at: _Optional[int] = ..., refused_version: _Optional[int] = ..., refused_reason: _Optional[str] = ..., refused_at: _Optional[int] = ...) -> None: ...

class DecisionHour(_message.Message):
    __slots__ = ("hour", "granted_face", "granted_card", "granted_pin", "refused_unknown_face", "refused_not_allowed_now", "refused_expired", "refused_stale", "refused_ambiguous", "refused_credential", "refused_other", "shadow_would_grant", "shadow_would_refuse")
    HOUR_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FACE_FIELD_NUMBER: _ClassVar[int]
    GRANTED_CARD_FIELD_NUMBER: _ClassVar[int]
    GRANTED_PIN_FIELD_NUMBER: _ClassVar[int]
    REFUSED_UNKNOWN_FACE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_NOT_ALLOWED_NOW_FIELD_NUMBER: _ClassVar[int]
    REFUSED_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_STALE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AMBIGUOUS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    REFUSED_OTHER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_WOULD_GRANT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_WOULD_REFUSE_FIELD_NUMBER: _ClassVar[int]
    hour: int
    granted_face: int
    granted_card: int
    granted_pin: int
    refused_unknown_face: int
    refused_not_allowed_now: int
    refused_expired: int
    refused_stale: int
    refused_ambiguous: int
    refused_credential: int
    refused_other: int
    shadow_would_grant: int
    shadow_would_refuse: int
    def __init__(self, hour: _Optional[int] = ..., granted_face: _Optional[int] = ..., granted_card: _Optional[int] = ..., granted_pin: _Optional[int] = ..., refused_unknown_face: _Optional[int] = ..., refused_not_allowed_now: _Optional[int] = ..., refused_expired: _Optional[int] = ..., refused_stale: _Optional[int] = ..., refused_ambiguous: _Optional[int] = ..., refused_credential: _Optional[int] = ..., refused_other: _Optional[int] = ..., shadow_would_grant: _Optional[int] = ..., shadow_would_refuse: _Optional[int] = ...) -> None: ...

class SignedManifest(_message.Message):
    __slots__ = ("manifest", "signature")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    signature: bytes
    def __init__(self, manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("in_sync", "hub_version", "resync", "beacon")
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    HUB_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    BEACON_FIELD_NUMBER: _ClassVar[int]
    in_sync: bool
    hub_version: int
    resync: bool
    beacon: SignedBeacon
    def __init__(self, in_sync: _Optional[bool] = ..., hub_version: _Optional[int] = ..., resync: _Optional[bool] = ..., beacon: _Optional[_Union[SignedBeacon, _Mapping]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("device_id", "seq", "wall_time_ms", "monotonic_ns", "door", "decision", "credential", "person_id", "similarity", "has_liveness", "liveness", "whitelist_version", "reason", "shadow")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    DOOR_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    HAS_LIVENESS_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    WHITELIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    seq: int
    wall_time_ms: int
    monotonic_ns: int
    door: str
    decision: str
    credential: str
    person_id: str
    similarity: float
    has_liveness: bool
    liveness: float
    whitelist_version: int
    reason: str
    shadow: bool
    def __init__(self, device_id: _Optional[str] = ..., seq: _Optional[int] = ..., wall_time_ms: _Optional[int] = ..., monotonic_ns: _Optional[int] = ..., door: _Optional[str] = ..., decision: _Optional[str] = ..., credential: _Optional[str] = ..., person_id: _Optional[str] = ..., similarity: _Optional[float] = ..., has_liveness: _Optional[bool] = ..., liveness: _Optional[float] = ..., whitelist_version: _Optional[int] = ..., reason: _Optional[str] = ..., shadow: _Optional[bool] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("device_id", "first_seq", "last_seq", "records", "site_id", "sent_at_ms", "backlog", "dropped_total", "unwritten_total")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNWRITTEN_TOTAL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    first_seq: int
    last_seq: int
    records: _containers.RepeatedScalarFieldContainer[bytes]
    site_id: str
    sent_at_ms: int
    backlog: int
    dropped_total: int
    unwritten_total: int
    def __init__(self, device_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., records: _Optional[_Iterable[bytes]] = ..., site_id: _Optional[str] = ..., sent_at_ms: _Optional[int] = ..., backlog: _Optional[int] = ..., dropped_total: _Optional[int] = ..., unwritten_total: _Optional[int] = ...) -> None: ...

class SignedLogBatch(_message.Message):
    __slots__ = ("batch", "signature")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    batch: bytes
    signature: bytes
    def __init__(self, batch: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SealedLogRecord(_message.Message):
    __slots__ = ("seq", "prev_hash", "owner_key_id", "ciphertext", "kind", "gap_from_seq", "gap_dropped", "gap_unwritten", "gap_reason", "link_hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GAP_FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    GAP_DROPPED_FIELD_NUMBER: _ClassVar[int]
    GAP_UNWRITTEN_FIELD_NUMBER: _ClassVar[int]
    GAP_REASON_FIELD_NUMBER: _ClassVar[int]
    LINK_HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    prev_hash: bytes
    owner_key_id: str
    ciphertext: bytes
    kind: LogRecordKind
    gap_from_seq: int
    gap_dropped: int
    gap_unwritten: int
    gap_reason: str
    link_hash: bytes
    def __init__(self, seq: _Optional[int] = ..., prev_hash: _Optional[bytes] = ..., owner_key_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., kind: _Optional[_Union[LogRecordKind, str]] = ..., gap_from_seq: _Optional[int] = ..., gap_dropped: _Optional[int] = ..., gap_unwritten: _Optional[int] = ..., gap_reason: _Optional[str] = ..., link_hash: _Optional[bytes] = ...) -> None: ...

class LogAck(_message.Message):
    __slots__ = ("watermark", "duplicates")
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    watermark: int
    duplicates: int
    def __init__(self, watermark: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class AddSiteRequest(_message.Message):
    __slots__ = ("name", "offline_validity_s", "stale_policy", "utc_offset", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_VALIDITY_S_FIELD_NUMBER: _ClassVar[int]
    STALE_POLICY_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    offline_validity_s: int
    stale_policy: StalePolicy
    utc_offset: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., offline_validity_s: _Optional[int] = ..., stale_policy: _Optional[_Union[StalePolicy, str]] = ..., utc_offset: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SiteInfo(_message.Message):
    __slots__ = ("site_id", "name", "version", "offline_validity_s", "stale_policy", "person_count", "state_digest", "log_owner_key_id")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_VALIDITY_S_FIELD_NUMBER: _ClassVar[int]
    STALE_POLICY_FIELD_NUMBER: _ClassVar[int]
    PERSON_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LOG_OWNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    name: str
    version: int
    offline_validity_s: int
    stale_policy: StalePolicy
    person_count: int
    state_digest: bytes
    log_owner_key_id: str
    def __init__(self, site_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., offline_validity_s: _Optional[int] = ..., stale_policy: _Optional[_Union[StalePolicy, str]] = ..., person_count: _Optional[int] = ..., state_digest: _Optional[bytes] = ..., log_owner_key_id: _Optional[str] = ...) -> None: ...

class AddDeviceRequest(_message.Message):
    __slots__ = ("site", "name", "token_ttl_s", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TTL_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    token_ttl_s: int
    request_id: str
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ..., token_ttl_s: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddDeviceResponse(_message.Message):
    __slots__ = ("device_id", "token", "expires_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    token: str
    expires_at: int
    def __init__(self, device_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class AddPersonRequest(_message.Message):
    __slots__ = ("site", "name", "templates", "valid_from", "valid_until", "doors", "cards", "pins", "schedules", "always_allowed", "request_id", "consent", "allow_duplicate_face")
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    CARDS_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DUPLICATE_FACE_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    valid_from: int
    valid_until: int
    doors: _containers.RepeatedScalarFieldContainer[str]
    cards: _containers.RepeatedScalarFieldContainer[str]
    pins: _containers.RepeatedScalarFieldContainer[str]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    always_allowed: bool
    request_id: str
    consent: str
    allow_duplicate_face: bool
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ..., templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ..., valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ..., doors: _Optional[_Iterable[str]] = ..., cards: _Optional[_Iterable[str]] = ..., pins: _Optional[_Iterable[str]] = ..., schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ..., always_allowed: _Optional[bool] = ..., request_id: _Optional[str] = ..., consent: _Optional[str] = ..., allow_duplicate_face: _Optional[bool] = ...) -> None: ...

class PersonProfile(_message.Message):
    __slots__ = ("name", "consent", "created_at", "duplicate_of")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    name: str
    consent: str
    created_at: int
    duplicate_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., consent: _Optional[str] = ..., created_at: _Optional[int] = ..., duplicate_of: _Optional[_Iterable[str]] = ...) -> None: ...

class PersonInfo(_message.Message):
    __slots__ = ("person_id", "site_id", "name", "templates", "cards", "pins", "valid_from", "valid_until", "doors", "schedules", "always_allowed", "consent", "updated_version", "created_at", "duplicate_of")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    CARDS_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    site_id: str
    name: str
    templates: int
    cards: int
    pins: int
    valid_from: int
    valid_until: int
    doors: _containers.RepeatedScalarFieldContainer[str]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    always_allowed: bool
    consent: str
    updated_version: int
    created_at: int
    duplicate_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, person_id: _Optional[str] = ..., site_id: _Optional[str] = ..., name: _Optional[str] = ..., templates: _Optional[int] = ..., cards: _Optional[int] = ..., pins: _Optional[int] = ..., valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ..., doors: _Optional[_Iterable[str]] = ..., schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ..., always_allowed: _Optional[bool] = ..., consent: _Optional[str] = ..., updated_version: _Optional[int] = ..., created_at: _Optional[int] = ..., duplicate_of: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPersonsRequest(_message.Message):
    __slots__ = ("site", "search")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    site: str
    search: str
    def __init__(self, site: _Optional[str] = ..., search: _Optional[str] = ...) -> None: ...

class ListPersonsResponse(_message.Message):
    __slots__ = ("persons", "site_version")
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    SITE_VERSION_FIELD_NUMBER: _ClassVar[int]
    persons: _containers.RepeatedCompositeFieldContainer[PersonInfo]
    site_version: int
    def __init__(self, persons: _Optional[_Iterable[_Union[PersonInfo, _Mapping]]] = ..., site_version: _Optional[int] = ...) -> None: ...

class GetPersonRequest(_message.Message):
    __slots__ = ("person_id",)
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    def __init__(self, person_id: _Optional[str] = ...) -> None: ...

class UpdatePersonRequest(_message.Message):
    __slots__ = ("person_id", "request_id", "set_validity", "valid_from", "valid_until", "set_doors", "doors", "set_schedules", "schedules", "set_always_allowed", "always_allowed", "add_templates", "replace_templates", "set_cards", "cards", "set_pins", "pins", "consent", "allow_duplicate_face", "name")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SET_VALIDITY_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    SET_DOORS_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    SET_SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    SET_ALWAYS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ADD_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    SET_CARDS_FIELD_NUMBER: _ClassVar[int]
    CARDS_FIELD_NUMBER: _ClassVar[int]
    SET_PINS_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DUPLICATE_FACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    request_id: str
    set_validity: bool
    valid_from: int
    valid_until: int
    set_doors: bool
    doors: _containers.RepeatedScalarFieldContainer[str]
    set_schedules: bool
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    set_always_allowed: bool
    always_allowed: bool
    add_templates: _containers.RepeatedCompositeFieldContainer[Template]
    replace_templates: bool
    set_cards: bool
    cards: _containers.RepeatedScalarFieldContainer[str]
    set_pins: bool
    pins: _containers.RepeatedScalarFieldContainer[str]
    consent: str
    allow_duplicate_face: bool
    name: str
    def __init__(self, person_id: _Optional[str] = ..., request_id: _Optional[str] = ..., set_validity: _Optional[bool] = ..., valid_from: _Optional[int] = ..., valid_until: _Optional[int] = ..., set_doors: _Optional[bool] = ..., doors: _Optional[_Iterable[str]] = ..., set_schedules: _Optional[bool] = ..., schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ..., set_always_allowed: _Optional[bool] = ..., always_allowed: _Optional[bool] = ..., add_templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ..., replace_templates: _Optional[bool] = ..., set_cards: _Optional[bool] = ..., cards: _Optional[_Iterable[str]] = ..., set_pins: _Optional[bool] = ..., pins: _Optional[_Iterable[str]] = ..., consent: _Optional[str] = ..., allow_duplicate_face: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class UpdatePersonResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ImportPersonsRequest(_message.Message):
    __slots__ = ("site", "persons", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    persons: _containers.RepeatedCompositeFieldContainer[AddPersonRequest]
    request_id: str
    def __init__(self, site: _Optional[str] = ..., persons: _Optional[_Iterable[_Union[AddPersonRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportResult(_message.Message):
    __slots__ = ("outcome", "person_id", "reason", "other_row")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[ImportResult.Outcome]
        OUTCOME_IMPORTED: _ClassVar[ImportResult.Outcome]
        OUTCOME_SKIPPED: _ClassVar[ImportResult.Outcome]
        OUTCOME_REFUSED: _ClassVar[ImportResult.Outcome]
    OUTCOME_UNSPECIFIED: ImportResult.Outcome
    OUTCOME_IMPORTED: ImportResult.Outcome
    OUTCOME_SKIPPED: ImportResult.Outcome
    OUTCOME_REFUSED: ImportResult.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OTHER_ROW_FIELD_NUMBER: _ClassVar[int]
    outcome: ImportResult.Outcome
    person_id: str
    reason: str
    other_row: int
    def __init__(self, outcome: _Optional[_Union[ImportResult.Outcome, str]] = ..., person_id: _Optional[str] = ..., reason: _Optional[str] = ..., other_row: _Optional[int] = ...) -> None: ...

class ImportPersonsResponse(_message.Message):
    __slots__ = ("results", "version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImportResult]
    version: int
    def __init__(self, results: _Optional[_Iterable[_Union[ImportResult, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class AddPersonResponse(_message.Message):
    __slots__ = ("person_id", "version")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    version: int
    def __init__(self, person_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RemovePersonRequest(_message.Message):
    __slots__ = ("person_id", "request_id")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    request_id: str
    def __init__(self, person_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RemovePersonResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RevokeDeviceRequest(_message.Message):
    __slots__ = ("site", "device", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    device: str
    request_id: str
    def __init__(self, site: _Optional[str] = ..., device: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeDeviceResponse(_message.Message):
    __slots__ = ("device_id", "revoked_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    revoked_at: int
    def __init__(self, device_id: _Optional[str] = ..., revoked_at: _Optional[int] = ...) -> None: ...

class ReplaceDeviceRequest(_message.Message):
    __slots__ = ("site", "name", "token_ttl_s", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TTL_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    token_ttl_s: int
    request_id: str
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ..., token_ttl_s: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class OperatorInfo(_message.Message):
    __slots__ = ("key_id", "name", "role", "created_at", "revoked_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    role: str
    created_at: int
    revoked_at: int
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., created_at: _Optional[int] = ..., revoked_at: _Optional[int] = ...) -> None: ...

class AddOperatorRequest(_message.Message):
    __slots__ = ("name", "role", "public_key", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    public_key: bytes
    request_id: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., public_key: _Optional[bytes] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListOperatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOperatorsResponse(_message.Message):
    __slots__ = ("operators",)
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedCompositeFieldContainer[OperatorInfo]
    def __init__(self, operators: _Optional[_Iterable[_Union[OperatorInfo, _Mapping]]] = ...) -> None: ...

class RevokeOperatorRequest(_message.Message):
    __slots__ = ("operator", "request_id")
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    operator: str
    request_id: str
    def __init__(self, operator: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("seq", "at", "principal", "action", "detail", "prev_hash", "entry_hash", "key_id", "signature")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    ENTRY_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: int
    principal: str
    action: str
    detail: str
    prev_hash: bytes
    entry_hash: bytes
    key_id: str
    signature: bytes
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[int] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., detail: _Optional[str] = ..., prev_hash: _Optional[bytes] = ..., entry_hash: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("since", "actor", "limit", "all", "after_seq")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    since: int
    actor: str
    limit: int
    all: bool
    after_seq: int
    def __init__(self, since: _Optional[int] = ..., actor: _Optional[str] = ..., limit: _Optional[int] = ..., all: _Optional[bool] = ..., after_seq: _Optional[int] = ...) -> None: ...

class HubPublicKey(_message.Message):
    __slots__ = ("key_id", "sign_public_key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGN_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    sign_public_key: bytes
    def __init__(self, key_id: _Optional[str] = ..., sign_public_key: _Optional[bytes] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries", "hub_keys", "more")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HUB_KEYS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    hub_keys: _containers.RepeatedCompositeFieldContainer[HubPublicKey]
    more: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., hub_keys: _Optional[_Iterable[_Union[HubPublicKey, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class ListSitesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSitesResponse(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[SiteInfo]
    def __init__(self, sites: _Optional[_Iterable[_Union[SiteInfo, _Mapping]]] = ...) -> None: ...

class FleetRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "site_id", "name", "reported_version", "reported_digest", "reported_at", "site_version", "in_sync", "digest_mismatch", "last_seen", "stale", "last_error", "outbox_backlog", "logs_watermark", "logs_gaps", "logs_error", "clock_skew_s", "registered", "behind", "known_version", "revoked_at", "created_at", "mode", "reported_mode", "target_version", "pending_version", "pending_effective_at", "refused_version", "refused_reason")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPORTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    SITE_VERSION_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    DIGEST_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    LOGS_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LOGS_GAPS_FIELD_NUMBER: _ClassVar[int]
    LOGS_ERROR_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEW_S_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_MODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    site_id: str
    name: str
    reported_version: int
    reported_digest: bytes
    reported_at: int
    site_version: int
    in_sync: bool
    digest_mismatch: bool
    last_seen: int
    stale: bool
    last_error: str
    outbox_backlog: int
    logs_watermark: int
    logs_gaps: int
    logs_error: str
    clock_skew_s: int
    registered: bool
    behind: bool
    known_version: int
    revoked_at: int
    created_at: int
    mode: DoorMode
    reported_mode: DoorMode
    target_version: int
    pending_version: int
    pending_effective_at: int
    refused_version: int
    refused_reason: str
    def __init__(self, device_id: _Optional[str] = ..., site_id: _Optional[str] = ..., name: _Optional[str] = ..., reported_version: _Optional[int] = ..., reported_digest: _Optional[bytes] = ..., reported_at: _Optional[int] = ..., site_version: _Optional[int] = ..., in_sync: _Optional[bool] = ..., digest_mismatch: _Optional[bool] = ..., last_seen: _Optional[int] = ..., stale: _Optional[bool] = ..., last_error: _Optional[str] = ..., outbox_backlog: _Optional[int] = ..., logs_watermark: _Optional[int] = ..., logs_gaps: _Optional[int] = ..., logs_error: _Optional[str] = ..., clock_skew_s: _Optional[int] = ..., registered: _Optional[bool] = ..., behind: _Optional[bool] = ..., known_version: _Optional[int] = ..., revoked_at: _Optional[int] = ..., created_at: _Optional[int] = ..., mode: _Optional[_Union[DoorMode, str]] = ..., reported_mode: _Optional[_Union[DoorMode, str]] = ..., target_version: _Optional[int] = ..., pending_version: _Optional[int] = ..., pending_effective_at: _Optional[int] = ..., refused_version: _Optional[int] = ..., refused_reason: _Optional[str] = ...) -> None: ...

class FleetResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ...) -> None: ...

class SetOwnerKeyRequest(_message.Message):
    __slots__ = ("site", "public_key", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    public_key: bytes
    request_id: str
    def __init__(self, site: _Optional[str] = ..., public_key: _Optional[bytes] = ..., request_id: _Optional[str] = ...) -> None: ...

class SetOwnerKeyResponse(_message.Message):
    __slots__ = ("key_id", "version")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PullLogsRequest(_message.Message):
    __slots__ = ("site", "device_id", "after_seq")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    site: str
    device_id: str
    after_seq: int
    def __init__(self, site: _Optional[str] = ..., device_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class LogDeviceKey(_message.Message):
    __slots__ = ("device_id", "site_id", "sign_public_key")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SIGN_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    site_id: str
    sign_public_key: bytes
    def __init__(self, device_id: _Optional[str] = ..., site_id: _Optional[str] = ..., sign_public_key: _Optional[bytes] = ...) -> None: ...

class PullLogsResponse(_message.Message):
    __slots__ = ("batches", "device_keys", "sealed_roster")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SEALED_ROSTER_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[SignedLogBatch]
    device_keys: _containers.RepeatedCompositeFieldContainer[LogDeviceKey]
    sealed_roster: bytes
    def __init__(self, batches: _Optional[_Iterable[_Union[SignedLogBatch, _Mapping]]] = ..., device_keys: _Optional[_Iterable[_Union[LogDeviceKey, _Mapping]]] = ..., sealed_roster: _Optional[bytes] = ...) -> None: ...

class RosterEntry(_message.Message):
    __slots__ = ("person_id", "name")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    name: str
    def __init__(self, person_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Roster(_message.Message):
    __slots__ = ("site_id", "site_name", "utc_offset_minutes", "persons", "made_at")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    MADE_AT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    site_name: str
    utc_offset_minutes: int
    persons: _containers.RepeatedCompositeFieldContainer[RosterEntry]
    made_at: int
    def __init__(self, site_id: _Optional[str] = ..., site_name: _Optional[str] = ..., utc_offset_minutes: _Optional[int] = ..., persons: _Optional[_Iterable[_Union[RosterEntry, _Mapping]]] = ..., made_at: _Optional[int] = ...) -> None: ...

class LogExportFrame(_message.Message):
    __slots__ = ("device_key", "batch", "sealed_roster")
    DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SEALED_ROSTER_FIELD_NUMBER: _ClassVar[int]
    device_key: LogDeviceKey
    batch: SignedLogBatch
    sealed_roster: bytes
    def __init__(self, device_key: _Optional[_Union[LogDeviceKey, _Mapping]] = ..., batch: _Optional[_Union[SignedLogBatch, _Mapping]] = ..., sealed_roster: _Optional[bytes] = ...) -> None: ...

class SetDeviceModeRequest(_message.Message):
    __slots__ = ("site", "device", "mode", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    device: str
    mode: DoorMode
    request_id: str
    def __init__(self, site: _Optional[str] = ..., device: _Optional[str] = ..., mode: _Optional[_Union[DoorMode, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SetDeviceModeResponse(_message.Message):
    __slots__ = ("device_id", "mode", "version")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    mode: DoorMode
    version: int
    def __init__(self, device_id: _Optional[str] = ..., mode: _Optional[_Union[DoorMode, str]] = ..., version: _Optional[int] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("site", "canary", "auto_stop", "at", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    AUTO_STOP_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    canary: _containers.RepeatedScalarFieldContainer[str]
    auto_stop: str
    at: int
    request_id: str
    def __init__(self, site: _Optional[str] = ..., canary: _Optional[_Iterable[str]] = ..., auto_stop: _Optional[str] = ..., at: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PromoteRolloutRequest(_message.Message):
    __slots__ = ("site", "doors", "percent", "at", "request_id", "deliver_early")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVER_EARLY_FIELD_NUMBER: _ClassVar[int]
    site: str
    doors: _containers.RepeatedScalarFieldContainer[str]
    percent: int
    at: int
    request_id: str
    deliver_early: bool
    def __init__(self, site: _Optional[str] = ..., doors: _Optional[_Iterable[str]] = ..., percent: _Optional[int] = ..., at: _Optional[int] = ..., request_id: _Optional[str] = ..., deliver_early: _Optional[bool] = ...) -> None: ...

class AbortRolloutRequest(_message.Message):
    __slots__ = ("site", "reason", "request_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    reason: str
    request_id: str
    def __init__(self, site: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class DecisionTotals(_message.Message):
    __slots__ = ("granted_face", "granted_card", "granted_pin", "refused_unknown_face", "refused_not_allowed_now", "refused_expired", "refused_stale", "refused_ambiguous", "refused_credential", "refused_other", "shadow_would_grant", "shadow_would_refuse")
    GRANTED_FACE_FIELD_NUMBER: _ClassVar[int]
    GRANTED_CARD_FIELD_NUMBER: _ClassVar[int]
    GRANTED_PIN_FIELD_NUMBER: _ClassVar[int]
    REFUSED_UNKNOWN_FACE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_NOT_ALLOWED_NOW_FIELD_NUMBER: _ClassVar[int]
    REFUSED_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_STALE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AMBIGUOUS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    REFUSED_OTHER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_WOULD_GRANT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_WOULD_REFUSE_FIELD_NUMBER: _ClassVar[int]
    granted_face: int
    granted_card: int
    granted_pin: int
    refused_unknown_face: int
    refused_not_allowed_now: int
    refused_expired: int
    refused_stale: int
    refused_ambiguous: int
    refused_credential: int
    refused_other: int
    shadow_would_grant: int
    shadow_would_refuse: int
    def __init__(self, granted_face: _Optional[int] = ..., granted_card: _Optional[int] = ..., granted_pin: _Optional[int] = ..., refused_unknown_face: _Optional[int] = ..., refused_not_allowed_now: _Optional[int] = ..., refused_expired: _Optional[int] = ..., refused_stale: _Optional[int] = ..., refused_ambiguous: _Optional[int] = ..., refused_credential: _Optional[int] = ..., refused_other: _Optional[int] = ..., shadow_would_grant: _Optional[int] = ..., shadow_would_refuse: _Optional[int] = ...) -> None: ...

class RolloutDoor(_message.Message):
    __slots__ = ("device_id", "name", "in_stage", "target_version", "reported_version", "state", "refused_reason", "offline_since", "pending_effective_at", "holds_aborted", "last_seen")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IN_STAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_SINCE_FIELD_NUMBER: _ClassVar[int]
    PENDING_EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    HOLDS_ABORTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    in_stage: bool
    target_version: int
    reported_version: int
    state: str
    refused_reason: str
    offline_since: int
    pending_effective_at: int
    holds_aborted: bool
    last_seen: int
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., in_stage: _Optional[bool] = ..., target_version: _Optional[int] = ..., reported_version: _Optional[int] = ..., state: _Optional[str] = ..., refused_reason: _Optional[str] = ..., offline_since: _Optional[int] = ..., pending_effective_at: _Optional[int] = ..., holds_aborted: _Optional[bool] = ..., last_seen: _Optional[int] = ...) -> None: ...

class StagedChange(_message.Message):
    __slots__ = ("version", "at", "principal", "action", "detail")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    version: int
    at: int
    principal: str
    action: str
    detail: str
    def __init__(self, version: _Optional[int] = ..., at: _Optional[int] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("rollout_id", "site_id", "state", "base_version", "base_digest", "head_version", "started_at", "stage_started_at", "auto_stop", "stop_reason", "scheduled_at", "scheduled_action", "doors", "stage_decisions", "baseline_decisions", "staged", "closed_at", "closed_version", "deliver_early")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    AUTO_STOP_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_ACTION_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    STAGE_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    STAGED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_VERSION_FIELD_NUMBER: _ClassVar[int]
    DELIVER_EARLY_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    site_id: str
    state: str
    base_version: int
    base_digest: bytes
    head_version: int
    started_at: int
    stage_started_at: int
    auto_stop: str
    stop_reason: str
    scheduled_at: int
    scheduled_action: str
    doors: _containers.RepeatedCompositeFieldContainer[RolloutDoor]
    stage_decisions: DecisionTotals
    baseline_decisions: DecisionTotals
    staged: _containers.RepeatedCompositeFieldContainer[StagedChange]
    closed_at: int
    closed_version: int
    deliver_early: bool
    def __init__(self, rollout_id: _Optional[str] = ..., site_id: _Optional[str] = ..., state: _Optional[str] = ..., base_version: _Optional[int] = ..., base_digest: _Optional[bytes] = ..., head_version: _Optional[int] = ..., started_at: _Optional[int] = ..., stage_started_at: _Optional[int] = ..., auto_stop: _Optional[str] = ..., stop_reason: _Optional[str] = ..., scheduled_at: _Optional[int] = ..., scheduled_action: _Optional[str] = ..., doors: _Optional[_Iterable[_Union[RolloutDoor, _Mapping]]] = ..., stage_decisions: _Optional[_Union[DecisionTotals, _Mapping]] = ..., baseline_decisions: _Optional[_Union[DecisionTotals, _Mapping]] = ..., staged: _Optional[_Iterable[_Union[StagedChange, _Mapping]]] = ..., closed_at: _Optional[int] = ..., closed_version: _Optional[int] = ..., deliver_early: _Optional[bool] = ...) -> None: ...

class DecisionCountsRequest(_message.Message):
    __slots__ = ("site", "device", "since")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    site: str
    device: str
    since: int
    def __init__(self, site: _Optional[str] = ..., device: _Optional[str] = ..., since: _Optional[int] = ...) -> None: ...

class DoorDecisions(_message.Message):
    __slots__ = ("device_id", "name", "hours")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    hours: _containers.RepeatedCompositeFieldContainer[DecisionHour]
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., hours: _Optional[_Iterable[_Union[DecisionHour, _Mapping]]] = ...) -> None: ...

class DecisionCountsResponse(_message.Message):
    __slots__ = ("doors",)
    DOORS_FIELD_NUMBER: _ClassVar[int]
    doors: _containers.RepeatedCompositeFieldContainer[DoorDecisions]
    def __init__(self, doors: _Optional[_Iterable[_Union[DoorDecisions, _Mapping]]] = ...) -> None: ...

class VersionHistoryRequest(_message.Message):
    __slots__ = ("site", "limit")
    SITE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    site: str
    limit: int
    def __init__(self, site: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "made_at", "state_digest", "person_count", "doors_total", "doors_applied", "converge_half_s", "converge_all_s")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MADE_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PERSON_COUNT_FIELD_NUMBER: _ClassVar[int]
    DOORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DOORS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    CONVERGE_HALF_S_FIELD_NUMBER: _ClassVar[int]
    CONVERGE_ALL_S_FIELD_NUMBER: _ClassVar[int]
    version: int
    made_at: int
    state_digest: bytes
    person_count: int
    doors_total: int
    doors_applied: int
    converge_half_s: int
    converge_all_s: int
    def __init__(self, version: _Optional[int] = ..., made_at: _Optional[int] = ..., state_digest: _Optional[bytes] = ..., person_count: _Optional[int] = ..., doors_total: _Optional[int] = ..., doors_applied: _Optional[int] = ..., converge_half_s: _Optional[int] = ..., converge_all_s: _Optional[int] = ...) -> None: ...

class VersionHistoryResponse(_message.Message):
    __slots__ = ("site_id", "versions")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    def __init__(self, site_id: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ...) -> None: ...

class SiteReadinessRequest(_message.Message):
    __slots__ = ("site", "since")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    site: str
    since: int
    def __init__(self, site: _Optional[str] = ..., since: _Optional[int] = ...) -> None: ...

class ReadinessPerson(_message.Message):
    __slots__ = ("person_id", "name")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    name: str
    def __init__(self, person_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ReadinessDoor(_message.Message):
    __slots__ = ("device_id", "name", "mode", "reported_version", "current", "shadow_would_grant", "shadow_would_refuse", "shadow_refuse_rate")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_WOULD_GRANT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_WOULD_REFUSE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REFUSE_RATE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    mode: DoorMode
    reported_version: int
    current: bool
    shadow_would_grant: int
    shadow_would_refuse: int
    shadow_refuse_rate: float
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., mode: _Optional[_Union[DoorMode, str]] = ..., reported_version: _Optional[int] = ..., current: _Optional[bool] = ..., shadow_would_grant: _Optional[int] = ..., shadow_would_refuse: _Optional[int] = ..., shadow_refuse_rate: _Optional[float] = ...) -> None: ...

class SiteReadinessResponse(_message.Message):
    __slots__ = ("site_id", "site_version", "no_credential", "no_consent", "doors", "ready")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_VERSION_FIELD_NUMBER: _ClassVar[int]
    NO_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    NO_CONSENT_FIELD_NUMBER: _ClassVar[int]
    DOORS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    site_version: int
    no_credential: _containers.RepeatedCompositeFieldContainer[ReadinessPerson]
    no_consent: _containers.RepeatedCompositeFieldContainer[ReadinessPerson]
    doors: _containers.RepeatedCompositeFieldContainer[ReadinessDoor]
    ready: bool
    def __init__(self, site_id: _Optional[str] = ..., site_version: _Optional[int] = ..., no_credential: _Optional[_Iterable[_Union[ReadinessPerson, _Mapping]]] = ..., no_consent: _Optional[_Iterable[_Union[ReadinessPerson, _Mapping]]] = ..., doors: _Optional[_Iterable[_Union[ReadinessDoor, _Mapping]]] = ..., ready: _Optional[bool] = ...) -> None: ...
