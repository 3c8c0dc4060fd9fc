"""Who is calling: signed, nonce-bound calls from devices and operators.

`Authenticator` holds the rules (no gRPC in it); `AuthInterceptor` applies them
to every method except the public ones, seeing the exact request bytes through
a wrapped deserializer, and hands the verified principal to the servicer
through a context variable.

Call nonces are stateless until spent: a nonce is its expiry, random bytes and
a MAC (keyed by the hub's data key) over those and the principal. Issuing one
stores nothing and looks nothing up, so `Challenge` answers every principal,
known or not, the same way in the same time, a flood of challenges grows no
table, and any number of concurrent calls of one principal each keep their
nonce (a per-principal table of the newest 64 evicted 14 of 100 concurrent
fetches' nonces). A nonce is recorded only when a call that verified spends
it, and forgotten when it expires: replay is refused, and the table holds no
more than signed calls brought in one nonce lifetime.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from doorkeeper.hub.edge import Malformed, Refusals
from doorkeeper.hub.lane import StoreLane
from doorkeeper.hub.store import Device, HubStore, NotFound, Operator, Unavailable
from doorkeeper.wire import callauth

NONCE_TTL_S = 120
MAX_PRINCIPAL_CHARS = 64
_NONCE_RANDOM_BYTES = 8
_NONCE_TAG_BYTES = callauth.NONCE_BYTES - 4 - _NONCE_RANDOM_BYTES
ROLES = ("admin", "operator", "auditor")

# Which roles may call each admin method.
ADMIN_METHODS: dict[str, tuple[str, ...]] = {
    "AddSite": ("admin",),
    "ListSites": ROLES,
    "AddDevice": ("admin", "operator"),
    "AddPerson": ("admin", "operator"),
    "RemovePerson": ("admin", "operator"),
    "Fleet": ROLES,
    "SetOwnerKey": ("admin",),
    "PullLogs": ("admin", "auditor"),
    "ListPersons": ("admin", "operator"),
    "GetPerson": ("admin", "operator"),
    "UpdatePerson": ("admin", "operator"),
    "ImportPersons": ("admin", "operator"),
    "RevokeDevice": ("admin", "operator"),
    "ReplaceDevice": ("admin", "operator"),
    "AddOperator": ("admin",),
    "ListOperators": ("admin", "auditor"),
    "RevokeOperator": ("admin",),
    "ListAudit": ("admin", "auditor"),
    "SetDeviceMode": ("admin", "operator"),
    "StartRollout": ("admin", "operator"),
    "PromoteRollout": ("admin", "operator"),
    "AbortRollout": ("admin", "operator"),
    "GetRollout": ROLES,
    "DecisionCounts": ROLES,  # aggregates without identities
    "SiteReadiness": ("admin", "operator"),  # names residents
    "VersionHistory": ROLES,
}


class AuthError(Exception):
    """The call is not authenticated (unknown principal, bad signature, spent nonce).

    ``reason`` names the kind for metrics: unsigned, bad_metadata, unknown_principal,
    unregistered, bad_signature or replay."""

    def __init__(self, message: str, reason: str = "unauthenticated") -> None:
        super().__init__(message)
        self.reason = reason


class NotImplementedHere(Exception):
    """An Admin method of the contract this hub does not serve yet (no roles are defined for it):
    answered UNIMPLEMENTED, as gRPC answers any method without a handler, so a client can tell
    "not available on this hub" from "your role may not"."""


class Forbidden(Exception):
    """Authenticated, but the principal's role does not allow this call."""


@dataclass(frozen=True)
class Principal:
    kind: str  # "device" or "operator"
    id: str
    device: Device | None = None
    operator: Operator | None = None

    @property
    def label(self) -> str:
        if self.operator is not None:
            return f"operator:{self.operator.name}:{self.id}"
        return f"device:{self.id}"


CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("doorkeeper_principal")


class Authenticator:
    def __init__(self, store: HubStore, nonce_key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._nonce_key = nonce_key

    def _lookup(self, principal: str) -> Principal:
        if len(principal) > MAX_PRINCIPAL_CHARS:
            raise AuthError("unknown principal", "unknown_principal")
        try:
            device = self.store.get_device(principal)
        except NotFound:
            device = None
        if device is not None:
            if device.revoked_at is not None:
                raise AuthError("this door was revoked by an operator; its key is refused", "revoked")
            if device.sign_public is None:
                raise AuthError("device is not registered", "unregistered")
            return Principal("device", principal, device=device)
        try:
            operator = self.store.get_operator(principal)
        except NotFound:
            raise AuthError("unknown principal", "unknown_principal") from None
        if operator.revoked_at is not None:
            raise AuthError("this operator key was revoked", "revoked")
        return Principal("operator", principal, operator=operator)

    def challenge(self, principal: str) -> tuple[bytes, int]:
        """A fresh single-use nonce for `principal`, valid NONCE_TTL_S by the hub's clock.

        Answers alike for every principal, registered or not: no store access.
        """
        if len(principal) > MAX_PRINCIPAL_CHARS:
            raise AuthError(f"principal id longer than {MAX_PRINCIPAL_CHARS} characters", "bad_metadata")
        head = struct.pack(">I", int(self.clock()) + NONCE_TTL_S) + secrets.token_bytes(_NONCE_RANDOM_BYTES)
        return head + self._tag(principal, head), NONCE_TTL_S

    def _tag(self, principal: str, head: bytes) -> bytes:
        return hashlib.blake2b(head + principal.encode(), key=self._nonce_key,
                               digest_size=_NONCE_TAG_BYTES, person=b"dk-call-nonce").digest()

    def _nonce_expiry(self, principal: str, nonce: bytes) -> int | None:
        """The expiry of a nonce this hub issued to `principal` and that is still valid, else None."""
        head, tag = nonce[:-_NONCE_TAG_BYTES], nonce[-_NONCE_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(principal, head)):
            return None
        (expires_at,) = struct.unpack(">I", head[:4])
        return expires_at if expires_at >= self.clock() else None

    def verify(self, method: str, metadata: dict[str, str], request: bytes) -> Principal:
        principal_id = metadata.get(callauth.MD_PRINCIPAL, "")
        try:
            nonce = bytes.fromhex(metadata.get(callauth.MD_NONCE, ""))
            signature = bytes.fromhex(metadata.get(callauth.MD_SIGNATURE, ""))
        except ValueError:
            raise AuthError("malformed authentication metadata", "bad_metadata") from None
        if not principal_id or len(nonce) != callauth.NONCE_BYTES:
            raise AuthError("call is not signed (missing principal or nonce)", "unsigned")
        principal = self._lookup(principal_id)
        key = principal.device.sign_public if principal.device else principal.operator.public_key  # type: ignore[union-attr]
        assert key is not None
        if not callauth.check_call(key, signature, method, principal_id, nonce, request):
            raise AuthError("call signature does not verify", "bad_signature")
        expires_at = self._nonce_expiry(principal_id, nonce)
        now = self.clock()
        if expires_at is None or not self.store.spend_nonce(principal_id, nonce, expires_at, now):
            raise AuthError("nonce unknown, expired or already used (replay?)", "replay")
        device = principal.device
        # A device's first signed call: it holds its identity, so registration is complete.
        if device is not None and device.registered_at is None and not self.store.complete_registration(
            device.device_id, int(now)
        ):
            raise AuthError("device registration was not completed; register again", "unregistered")
        return principal

    @staticmethod
    def authorize(principal: Principal, service: str, method: str) -> None:
        if service.endswith(".Admin"):
            allowed = ADMIN_METHODS.get(method, ())
            if principal.operator is not None and method not in ADMIN_METHODS:
                raise NotImplementedHere(f"this hub does not implement {method} yet")
            if principal.operator is None:
                raise Forbidden(f"{principal.label} may not call {method}: it needs an operator key")
            if principal.operator.role not in allowed:
                needs = " or ".join(allowed) or "no"
                raise Forbidden(f"{principal.label} has the {principal.operator.role} role; {method} needs "
                                f"the {needs} role")
        elif principal.device is None:
            raise Forbidden("device calls need a device key")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call except `public_methods` (full method names).

    Every refusal is counted and logged (rate-limited) through `refusals`. A request the
    edge already refused (`Malformed`) goes through unauthenticated, to be answered
    INVALID_ARGUMENT by the edge without a signature check or a store lookup."""

    def __init__(self, auth: Authenticator, public_methods: set[str],
                 refusals: Refusals | None = None, lane: StoreLane | None = None) -> None:
        """``lane``: run the checks (store lookups, nonce spending) there, batched with other
        requests' (`doorkeeper.hub.lane`); without one, each in a worker thread of its own."""
        self.auth = auth
        self.public = public_methods
        self.refusals = refusals or Refusals(None)
        self.lane = lane

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        if handler is None or details.method in self.public:
            return handler
        metadata = {k: v for k, v in details.invocation_metadata if isinstance(v, str)}
        method = details.method
        _, service, name = method.split("/")
        auth = self.auth
        refusals = self.refusals
        lane = self.lane

        def deserialize(raw: bytes) -> tuple[bytes, object]:
            return raw, handler.request_deserializer(raw)

        async def check(raw: bytes, context: grpc.aio.ServicerContext) -> Principal:
            try:
                if lane is not None:
                    principal = await lane.run(auth.verify, method, metadata, raw)
                else:
                    principal = await asyncio.to_thread(auth.verify, method, metadata, raw)
                auth.authorize(principal, service, name)
            except AuthError as exc:
                await refusals.abort(context, method, grpc.StatusCode.UNAUTHENTICATED, exc.reason, str(exc))
            except Forbidden as exc:
                await refusals.abort(context, method, grpc.StatusCode.PERMISSION_DENIED, "forbidden",
                                     str(exc))
            except NotImplementedHere as exc:
                await refusals.abort(context, method, grpc.StatusCode.UNIMPLEMENTED, "unimplemented",
                                     str(exc))
            except Unavailable as exc:  # the database, for a moment: the caller retries
                await refusals.abort(context, method, grpc.StatusCode.UNAVAILABLE, "store_unavailable",
                                     str(exc))
            except asyncio.CancelledError:  # counted and logged (rate-limited), never silent
                if name != "Watch":
                    refusals.record(method, grpc.StatusCode.CANCELLED, "cancelled",
                                    "the call was cancelled while its signature was being checked "
                                    "(the door went away or its deadline passed)")
                raise
            return principal

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary(pair, context):  # type: ignore[no-untyped-def]
                raw, request = pair
                if not isinstance(request, Malformed):
                    CURRENT.set(await check(raw, context))
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def stream(pair, context):  # type: ignore[no-untyped-def]
                raw, request = pair
                if not isinstance(request, Malformed):
                    CURRENT.set(await check(raw, context))
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=deserialize, response_serializer=handler.response_serializer
            )
        raise RuntimeError(f"{method}: streaming requests are not supported by the auth interceptor")
