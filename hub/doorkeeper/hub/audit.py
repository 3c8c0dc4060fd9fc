"""Operator changes with their audit entries: all or nothing, once per request id.

A change (a site, a device, a person, an owner key) and the audit entry naming who made
it commit in one store transaction: the operator is never told "failed" about a change
that landed unaudited. A request carrying a `request_id` is remembered with its answer
(sealed: an AddDevice answer holds a registration token) in that same transaction, so a
client retrying a call whose answer was lost gets the first answer, not a second person.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.store import AuditEntry, CallRecord, HubStore
from doorkeeper.hub.whitelist import InvalidRequest
from doorkeeper.wire import auditchain, keys

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass(frozen=True)
class Done:
    """What a change did: the answer for the operator, the audit line, the site to wake."""

    response: Any  # a protobuf message
    action: str
    detail: str
    site_id: str = ""


class AuditedChanges:
    """Changes with their audit entries. Entries are hash-chained and signed by the hub
    (`doorkeeper.wire.auditchain`); the chain is extended inside the change's transaction,
    so two writers never chain off the same entry."""

    def __init__(self, store: HubStore, hub_keys: HubKeys, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.keys = hub_keys
        self.clock = clock

    def record(self, principal_label: str, action: str, detail: str) -> None:
        """An audit entry for something that changed nothing (e.g. a log pull), chained."""
        with self.store.atomic():
            self._append(int(self.clock()), principal_label, action, detail)

    def _append(self, now: int, principal: str, action: str, detail: str) -> None:
        last = self.store.last_audit()
        seq = (last.seq if last is not None else 0) + 1
        prev = last.entry_hash if last is not None and last.entry_hash else auditchain.GENESIS
        digest = auditchain.entry_hash(seq, now, principal, action, detail, prev)
        signature = keys.sign(self.keys.pair.sign_key, auditchain.CTX_AUDIT_ENTRY, digest)
        self.store.audit(AuditEntry(now, principal, action, detail, seq=seq, prev_hash=prev,
                                    entry_hash=digest, key_id=self.keys.key_id, signature=signature))

    def apply(self, principal_label: str, change: Callable[[], Done]) -> Done:
        """Run `change` and audit it in one transaction: for what the hub does by itself
        (a rollout's scheduler), with no request id. An exception rolls both back."""
        with self.store.atomic():
            done = change()
            self._append(int(self.clock()), principal_label, done.action, done.detail)
        return done

    def run(self, principal_id: str, principal_label: str, request: Any, response_type: Any,
            change: Callable[[], Done]) -> Done:
        """Run `change` and audit it in one transaction; a repeated request id gets the
        first answer (with no site to wake). Refuses a malformed request id, or one already
        used for a different request, with `InvalidRequest`; nothing changes then."""
        request_id: str = request.request_id
        if request_id and not _REQUEST_ID.fullmatch(request_id):
            raise InvalidRequest("request id must be 8-64 letters, digits, '-' or '_'")
        method = type(request).DESCRIPTOR.full_name
        request_hash = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        now = int(self.clock())
        with self.store.atomic():
            if request_id:
                prior = self.store.recall_call(principal_id, request_id)
                if prior is not None:
                    if (prior.method, prior.request_hash) != (method, request_hash):
                        raise InvalidRequest("this request id was used for a different request")
                    first = response_type.FromString(self.keys.unseal(prior.response_sealed))
                    return Done(first, "", "")
            done = change()
            self._append(now, principal_label, done.action, done.detail)
            if request_id:
                sealed = self.keys.seal(done.response.SerializeToString(deterministic=True))
                self.store.remember_call(principal_id, request_id,
                                         CallRecord(method, request_hash, sealed), now)
        return done
