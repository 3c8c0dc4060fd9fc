"""The hub's storage interface.

Everything the hub keeps goes through `HubStore`, so that the embedded SQLite
backend (`hub/sqlite_store.py`) and a later PostgreSQL backend for stateless
replicas pass the same tests (`tests/test_hub_store.py`). Rows are frozen
dataclasses; sealed columns hold ciphertext made with the hub data key, which
is kept apart from the database file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol


class StoreError(Exception):
    """Base for storage-level refusals."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """A unique name is taken, or a row changed under us."""


class Unavailable(StoreError):
    """The database cannot be reached now (a restarting server, a broken connection): the
    call changed nothing it did not commit, and may be retried."""


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    version: int
    state_digest: bytes
    person_count: int
    config_sealed: bytes  # serialised SiteConfig, sealed with the data key
    config_hash: bytes
    created_at: int


@dataclass(frozen=True)
class Device:
    device_id: str
    site_id: str
    name: str
    created_at: int
    sign_public: bytes | None = None
    box_public: bytes | None = None
    registered_at: int | None = None
    revoked_at: int | None = None  # a revoked door is refused on every call


@dataclass(frozen=True)
class Token:
    token_id: str
    site_id: str
    device_id: str
    secret_hash: bytes
    expires_at: int
    used_at: int | None = None


@dataclass(frozen=True)
class PersonWrite:
    person_id: str
    name_sealed: bytes
    record_sealed: bytes
    record_hash: bytes
    # ("card" | "pin", keyed hash): unique per site, so no door ever has to guess whose it is.
    credentials: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class PersonRow:
    """A stored person as the hub reads it back (both blobs sealed with the data key)."""

    person_id: str
    site_id: str
    name_sealed: bytes
    record_sealed: bytes
    updated_version: int


@dataclass(frozen=True)
class ChangeSet:
    """One atomic whitelist change: it gets exactly one new site version."""

    upserts: tuple[PersonWrite, ...] = ()
    removes: tuple[str, ...] = ()
    config_sealed: bytes | None = None
    config_hash: bytes | None = None


@dataclass(frozen=True)
class BundleMeta:
    bundle_id: str
    site_id: str
    kind: int
    from_version: int
    to_version: int
    ciphertext_sha256: bytes
    chunk_sha256: tuple[bytes, ...]
    chunk_length: tuple[int, ...]
    content_key_sealed: bytes
    state_digest: bytes
    person_count: int
    created_at: int


DECISION_KEEP_S = 35 * 86400  # hourly decision counts kept per door

# DecisionHour's counters (doorkeeper.v1), in field order: one store column each.
DECISION_COUNTERS = (
    "granted_face", "granted_card", "granted_pin", "refused_unknown_face",
    "refused_not_allowed_now", "refused_expired", "refused_stale", "refused_ambiguous",
    "refused_credential", "refused_other", "shadow_would_grant", "shadow_would_refuse",
)
# (hour start in unix seconds, then the counters in DECISION_COUNTERS order)
DecisionRow = tuple[int, ...]


@dataclass(frozen=True)
class VersionRow:
    """One site version as the hub made it."""

    site_id: str
    version: int
    state_digest: bytes
    person_count: int
    made_at: int  # 0 = made before the hub recorded versions (schema 4)


@dataclass(frozen=True)
class DeviceReport:
    device_id: str
    version: int
    state_digest: bytes
    person_count: int
    reported_at: int
    device_time: int
    manifest: bytes
    signature: bytes
    stale: bool = False
    last_error: str = ""
    outbox_backlog: int = 0
    outbox_dropped: int = 0
    # Hourly decision counts from the manifest, checked (hub.decisions); stored beside the
    # report, each hour's counters only ever raised (a late, older manifest lowers nothing).
    decisions: tuple[DecisionRow, ...] = ()


@dataclass(frozen=True)
class Operator:
    key_id: str
    public_key: bytes
    role: str
    name: str
    created_at: int
    revoked_at: int | None = None  # a revoked key is refused on every call


@dataclass(frozen=True)
class AuditEntry:
    at: int
    principal: str
    action: str
    detail: str = ""
    # The chain (hub.audit): seq is the entry's position, entry_hash covers it, the fields
    # above and prev_hash; the hub key `key_id` signs entry_hash.
    seq: int = 0
    prev_hash: bytes = b""
    entry_hash: bytes = b""
    key_id: str = ""
    signature: bytes = b""


@dataclass(frozen=True)
class CallRecord:
    """An operator call that changed something, kept under its request id so that a retry
    gets the first answer instead of a second change."""

    method: str
    request_hash: bytes  # sha256 of the deterministic request bytes
    response_sealed: bytes  # the response, sealed with the hub data key (tokens are secrets)


# Rollout states (`doorkeeper.hub.rollouts`): the first three are open, one per site at most.
ROLLOUT_OPEN = ("scheduled", "staged", "promoting")


@dataclass(frozen=True)
class Rollout:
    """A staged rollout of one site's changes (`doorkeeper.hub.rollouts`).

    `base_*` is the site as it was when the stage began (its records are kept apart, see
    `HubStore.rollout_persons`): the doors outside `stage` are served that. `rev` moves on every
    update, so two replicas acting on the same rollout at once cannot both succeed."""

    rollout_id: str
    site_id: str
    state: str
    created_at: int
    principal: str = ""  # who started it (scheduled firings are audited under this name)
    rev: int = 0
    started_at: int = 0
    stage_started_at: int = 0
    base_version: int = 0
    base_digest: bytes = b""
    base_person_count: int = 0
    base_config_sealed: bytes = b""
    base_config_hash: bytes = b""
    audit_from: int = 0  # the audit seq before the rollout began: its staged changes follow
    auto_stop: str = ""
    stop_reason: str = ""
    stage: tuple[str, ...] = ()  # device ids served the head version
    scheduled_at: int = 0
    scheduled_action: str = ""  # "start" or "promote"
    scheduled_doors: tuple[str, ...] = ()
    scheduled_percent: int = 0
    closed_at: int = 0
    closed_version: int = 0


@dataclass(frozen=True)
class BasePerson:
    """A person as the site held them when a rollout's stage began (all blobs sealed)."""

    person_id: str
    name_sealed: bytes
    record_sealed: bytes
    record_hash: bytes


@dataclass
class Changed:
    """What changed after a version: person ids touched and whether config moved."""

    person_ids: list[str] = field(default_factory=list)
    config: bool = False


class StateView(Protocol):
    """A consistent read of one site at one version (one read transaction)."""

    site: Site

    def changed_since(self, version: int) -> Changed | None:
        """Persons touched in (version, site.version]; None if the log was compacted past it."""
        ...

    def records(self, person_ids: Iterable[str] | None = None) -> Iterator[tuple[str, bytes | None]]:
        """(person_id, record_sealed) in person id order; None for an id no longer present."""
        ...


class HubStore(Protocol):
    # sites
    def create_site(self, site: Site) -> None: ...
    def get_site(self, name_or_id: str) -> Site: ...
    def list_sites(self) -> list[Site]: ...
    def site_versions(self) -> dict[str, int]:
        """site_id -> version of every site (one cheap query: replicas reconcile with it)."""
        ...
    def apply_changes(self, site_id: str, changes: ChangeSet, now: int) -> Site:
        """Atomically apply `changes`, bump the site version by one, recompute the digest.

        Raises NotFound for removing an unknown person and Conflict for a card or PIN
        another person of the site holds; either way nothing changes.
        """
        ...
    def reading(self, site_id: str) -> AbstractContextManager[StateView]: ...
    def person_site(self, person_id: str) -> str: ...
    def list_persons(self, site_id: str) -> list[PersonRow]:
        """Every person of the site, in person id order."""
        ...
    def get_person(self, person_id: str) -> PersonRow:
        """Raises NotFound for an unknown person."""
        ...
    def compact(self, site_id: str, keep_after_version: int) -> int: ...

    # devices and tokens
    def create_device(self, device: Device, token: Token) -> None: ...
    def get_device(self, device_id: str) -> Device: ...
    def list_devices(self, site_id: str | None = None) -> list[Device]: ...
    def device_keys(self, device_ids: Iterable[str]) -> dict[str, bytes | None]:
        """device id -> its signing key now, None when revoked or not bound; unknown ids are
        left out (one query: a replica checks the doors holding its streams with it)."""
        ...
    def get_token(self, token_id: str) -> Token: ...
    def bind_token_keys(
        self, token_id: str, sign_public: bytes, box_public: bytes, now: int
    ) -> Device:
        """Bind the keys to the token's device, only if the token is unused and unexpired.

        The token stays unspent (a later registration with it rebinds) until
        `complete_registration`: a registration that fails on the way back to the
        door must not cost the token. Raises Conflict for a used or expired token.
        """
        ...
    def revoke_device(self, device_id: str, now: int) -> Device:
        """Mark the door revoked (its keys are refused from now on) and spend its unused
        tokens. Revoking a revoked door changes nothing. Raises NotFound."""
        ...
    def replace_device(self, device_id: str, token: Token) -> Device:
        """A new token for the same door: its keys and registration are cleared (the old
        keys are refused from now on), its unused tokens spent, a revocation lifted; name,
        id and history stay. Raises NotFound."""
        ...
    def complete_registration(self, device_id: str, now: int) -> bool:
        """Spend the device's token and mark it registered (its first signed call).

        True when the device is registered afterwards (also when a concurrent call
        completed it first); False when its token is spent but it is not registered.
        """
        ...

    # bundles
    def building(self, site_id: str) -> AbstractContextManager[None]:
        """Held while a bundle of the site is built: one builder per site at a time among all
        hubs sharing this store, so the next one finds the bundle (`find_bundle`) instead of
        building it again."""
        ...
    def put_bundle(self, meta: BundleMeta, chunks: Iterable[bytes]) -> BundleMeta:
        """Store a built bundle; if an equal (site, kind, from, to) exists, return that one."""
        ...
    def find_bundle(
        self, site_id: str, kind: int, from_version: int, to_version: int
    ) -> BundleMeta | None: ...
    def find_bundle_by_hash(self, site_id: str, ciphertext_sha256: bytes) -> BundleMeta | None: ...
    def read_chunk(self, bundle_id: str, index: int) -> bytes: ...
    def prune_bundles(self, site_id: str, below_version: int) -> int: ...

    # authentication
    def spend_nonce(self, principal: str, nonce: bytes, expires_at: float, now: float) -> bool:
        """Record a call nonce as used until `expires_at`: True the first time, False after.

        Only nonces of calls whose signature verified reach here, and expired rows are
        deleted by a spend at most every NONCE_PURGE_S, once NONCE_PURGE_SLACK_S past their
        expiry (not on every spend: that was a second statement per signed call), so the
        table holds at most what signed calls brought in one nonce lifetime plus those.
        Issuing a nonce stores nothing (`auth.Authenticator`).
        """
        ...
    def add_operator(self, operator: Operator) -> None: ...
    def get_operator(self, key_id: str) -> Operator: ...
    def list_operators(self) -> list[Operator]: ...
    def revoke_operator(self, key_id: str, now: int) -> Operator:
        """Mark the key revoked (kept, so the audit trail still names it). Raises NotFound."""
        ...

    # one operator change: the change, its audit entry and its request id, all or nothing
    def atomic(self) -> AbstractContextManager[None]:
        """Everything the calling thread writes inside the block commits together or not
        at all (an exception rolls all of it back). Blocks do not nest."""
        ...
    def recall_call(self, principal: str, request_id: str) -> CallRecord | None: ...
    def remember_call(self, principal: str, request_id: str, record: CallRecord, now: int) -> None:
        """Keep `record` under (principal, request_id) for a while (older ones are forgotten)."""
        ...

    # staged rollouts
    def start_rollout(self, rollout: Rollout) -> Rollout:
        """Store a new rollout; one in state "staged" takes its base in the same transaction
        (the site's version, digest, config and every person's sealed record as of now).
        Raises Conflict when the site has an open rollout (nothing is stored then)."""
        ...
    def stage_rollout(self, rollout_id: str, expect_rev: int, now: int) -> Rollout | None:
        """A "scheduled" rollout begins: take its base as `start_rollout` does. None (and no
        change) when its rev moved since the caller read it."""
        ...
    def update_rollout(self, rollout: Rollout, expect_rev: int) -> bool:
        """Write the rollout's mutable fields (state, stage, schedule, stop, close) with rev
        expect_rev + 1, only if its rev is still `expect_rev`: False (and no change) when
        another writer (a replica, the operator) got there first."""
        ...
    def get_rollout(self, site_id: str) -> Rollout | None:
        """The site's open rollout, else its latest one; None when it never had one."""
        ...
    def site_and_rollout(self, site_id: str) -> tuple[Site, Rollout | None]:
        """`get_site` and `get_rollout` read in one snapshot: what a door is served is decided
        from a site version and a rollout state that held together."""
        ...
    def open_rollouts(self) -> list[Rollout]: ...
    def rollout_persons(self, rollout_id: str) -> list[BasePerson]:
        """The persons of the rollout's base, in person id order."""
        ...

    # fleet status and audit
    def record_report(self, report: DeviceReport) -> None:
        """Keep the latest report, the first time the device reported its version, and its
        hourly decision counts (hours older than DECISION_KEEP_S are dropped). The hours are
        distinct and none older than kept (`decisions.checked_rows`): PostgreSQL writes them
        in one statement, which refuses one hour twice."""
        ...
    def latest_report(self, device_id: str) -> DeviceReport | None: ...
    def latest_reports(self, site_id: str) -> dict[str, DeviceReport]:
        """device_id -> latest report, for every door of the site that has reported (one
        query: fleet status and rollouts read every door of a site at once)."""
        ...
    def decision_rows(self, device_ids: Sequence[str], since: int, until: int
                      ) -> list[tuple[str, DecisionRow]]:
        """(device_id, row) for hours in [since, until), by device then hour."""
        ...
    def door_versions(self, device_ids: Sequence[str], min_version: int) -> list[tuple[str, int, int]]:
        """(device_id, version, first reported at) for versions >= min_version."""
        ...
    def version_rows(self, site_id: str, limit: int) -> list[VersionRow]:
        """The site's versions, newest first."""
        ...
    def version_row(self, site_id: str, version: int) -> VersionRow | None: ...
    def audit(self, entry: AuditEntry) -> None:
        """Append an entry; one with a seq is stored at that position (the chain's)."""
        ...
    def list_audit(self, limit: int = 100) -> list[AuditEntry]: ...
    def last_audit(self) -> AuditEntry | None:
        """The entry with the highest seq (read inside the caller's transaction)."""
        ...
    def audit_page(self, after_seq: int, limit: int) -> list[AuditEntry]:
        """Entries with seq > after_seq, in seq order, at most `limit`."""
        ...
    def close(self) -> None: ...
