"""Operator keys at the hub: added from a public key made on the operator's machine, listed,
revoked (kept, so the audit trail still names them; a revoked key is refused on every call).

The hub never sees an operator's private key. The last active admin key cannot be revoked:
nobody could add another one afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from doorkeeper.hub.auth import ROLES
from doorkeeper.hub.store import Conflict, HubStore, NotFound, Operator
from doorkeeper.hub.whitelist import InvalidRequest, check_name
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys


def info(op: Operator) -> pb.OperatorInfo:
    return pb.OperatorInfo(key_id=op.key_id, name=op.name, role=op.role, created_at=op.created_at,
                           revoked_at=op.revoked_at or 0)


class Operators:
    def __init__(self, store: HubStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def add(self, name: str, role: str, public_key: bytes) -> Operator:
        """Register a public key under a unique name and a role. Refuses a bad role or key,
        a taken name, or a key already registered; nothing changes then."""
        check_name("operator", name)
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        if len(public_key) != keys.KEY_BYTES:
            raise InvalidRequest("operator public key must be 32 bytes (Ed25519)")
        if any(o.name == name for o in self.store.list_operators()):
            raise Conflict(f"an operator named {name!r} already exists")
        op = Operator(keys.key_id(public_key), bytes(public_key), role, name, int(self.clock()))
        self.store.add_operator(op)
        return op

    def find(self, ref: str) -> Operator:
        """By key id or by name."""
        for op in self.store.list_operators():
            if ref in (op.key_id, op.name):
                return op
        raise NotFound(f"no operator key or name {ref!r}")

    def revoke(self, ref: str) -> Operator:
        op = self.find(ref)
        admins = [o for o in self.store.list_operators() if o.role == "admin" and o.revoked_at is None]
        if op.role == "admin" and op.revoked_at is None and len(admins) == 1:
            raise InvalidRequest("this is the last active admin key; add another admin before revoking it")
        return self.store.revoke_operator(op.key_id, int(self.clock()))
