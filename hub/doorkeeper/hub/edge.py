"""The hub's edge: every request is parsed and held to its caps here, before anything else.

`EdgeInterceptor` wraps every method's request deserializer: a body that does not parse, a
string, bytes or repeated field over its cap (`doorkeeper.wire.limits.REQUEST_FIELD_CAPS`) or
a uint64 that no store can hold is answered INVALID_ARGUMENT naming the field and its cap. The
check costs one length lookup per field the caller set: nothing proportional to the size of
what was sent runs on the event loop, and the caller's text is never echoed into a log line.

A servicer that raises anything else is answered INTERNAL; its traceback is logged once per
interval, not once per call.

`Refusals` is the one place a refused call is counted (``rpc_errors_total{method,code,reason}``)
and logged: one WARNING line per (method, reason) per interval, carrying how many refusals it
stands for, so a client sending garbage in a loop cannot fill the disk with log lines.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from doorkeeper.runtime.metrics import HubMetrics
from doorkeeper.wire.limits import (
    DEFAULT_BYTES_CAP,
    DEFAULT_ITEMS_CAP,
    DEFAULT_STRING_CAP,
    INT64_MAX,
    REQUEST_FIELD_CAPS,
)

log = logging.getLogger("doorkeeper.hub")

LOG_INTERVAL_S = 10.0
_MAX_DETAIL_CHARS = 200
_UINT64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)


def field_cap(key: str, default: int) -> int:
    return REQUEST_FIELD_CAPS.get(key, default)


def check_request(message: Message) -> str | None:
    """The first field of ``message`` over its cap, as a sentence naming the field and its cap;
    None when every field is within its cap. Only set fields are visited; each costs O(1)
    before its items are visited, and item counts are capped first."""
    for field, value in message.ListFields():
        key = f"{message.DESCRIPTOR.name}.{field.name}"
        if field.is_repeated:
            cap = field_cap(key, DEFAULT_ITEMS_CAP)
            if len(value) > cap:
                return f"{key}: at most {cap} items (got {len(value)})"
            for item in value:
                problem = _check_value(field, key + "[]", item)
                if problem:
                    return problem
        else:
            problem = _check_value(field, key, value)
            if problem:
                return problem
    return None


def _check_value(field: FieldDescriptor, key: str, value: Any) -> str | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return check_request(value)
    if field.type == FieldDescriptor.TYPE_STRING:
        cap = field_cap(key, DEFAULT_STRING_CAP)
        return f"{key}: at most {cap} characters (got {len(value)})" if len(value) > cap else None
    if field.type == FieldDescriptor.TYPE_BYTES:
        cap = field_cap(key, DEFAULT_BYTES_CAP)
        return f"{key}: at most {cap} bytes (got {len(value)})" if len(value) > cap else None
    if field.type in _UINT64 and value > INT64_MAX:
        return f"{key}: at most 2^63-1"
    return None


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request that was refused at the edge; the handler answers it."""

    reason: str  # "malformed" or "over_cap"
    detail: str


class Refusals:
    """Counts and logs refused calls: a metric per (full method, code, reason), and at most
    one WARNING line per (method, reason) per ``interval_s`` with the count it stands for."""

    def __init__(self, metrics: HubMetrics | None, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], float] = {}
        self.total = 0

    def record(self, method: str, code: grpc.StatusCode, reason: str, detail: str,
               error: BaseException | None = None) -> None:
        """Count one refusal; log it unless a line for (method, reason) went out within the
        interval. With ``error`` (a fault, not a refusal) the line is an ERROR with its traceback."""
        if self.metrics is not None:
            self.metrics.record_rpc_error(method, code.name, reason)
        key = (method, reason)
        now = self.clock()
        with self._lock:
            self.total += 1
            count = self._pending.get(key, 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._pending[key] = count
                return
            self._pending[key] = 0
            self._last[key] = now
        if len(detail) > _MAX_DETAIL_CHARS:
            detail = detail[:_MAX_DETAIL_CHARS] + "..."
        log.log(logging.ERROR if error is not None else logging.WARNING,
                "refused %s %s (%s): %s [%d such refusal(s) since the last line]",
                method, code.name, reason, detail, count, exc_info=error,
                extra={"rpc_method": method, "reason": reason, "refusals": count})

    async def abort(self, context: grpc.aio.ServicerContext, method: str, code: grpc.StatusCode,
                    reason: str, detail: str) -> NoReturn:
        self.record(method, code, reason, detail)
        await context.abort(code, detail)
        raise AssertionError("unreachable: context.abort raises")

    async def fault(self, context: grpc.aio.ServicerContext, method: str, error: Exception) -> NoReturn:
        """A servicer raised something no domain rule maps: answer INTERNAL without echoing
        it, and log its traceback at most once per interval (not once per call).

        A method of the contract whose handler has not landed (the generated servicer's default
        raises NotImplementedError) is answered UNIMPLEMENTED instead, as gRPC answers a method
        it has no handler for: a client can then say "not available on this hub"."""
        if isinstance(error, NotImplementedError):
            await self.abort(context, method, grpc.StatusCode.UNIMPLEMENTED, "unimplemented",
                             "this hub does not implement this call yet")
        self.record(method, grpc.StatusCode.INTERNAL, "internal", type(error).__name__, error)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the hub logged it")
        raise AssertionError("unreachable: context.abort raises")


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with INVALID_ARGUMENT, every request whose body does not parse or breaks a cap.

    Install it inside (after) the auth interceptor: the auth interceptor lets a `Malformed`
    request through unauthenticated, and this one answers it, so a hostile body costs neither a
    signature check nor a store lookup.
    """

    def __init__(self, refusals: Refusals) -> None:
        self.refusals = refusals

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if handler.request_streaming:
            # gRPC server reflection, the only client-streaming service the hub serves: the
            # library parses and answers its own requests (no doorkeeper request has a stream).
            return handler
        method: str = details.method
        parse = handler.request_deserializer
        refusals = self.refusals

        def deserialize(raw: bytes) -> object:
            try:
                message = parse(raw)
            except DecodeError:
                return Malformed("malformed", f"request body of {len(raw)} bytes does not parse")
            problem = check_request(message)
            return Malformed("over_cap", problem) if problem else message

        def cancelled() -> None:
            """Counted and logged (rate-limited): a call that ended CANCELLED, never silently.
            A watch stream ends so whenever its door renews it or stops: not worth a line."""
            if not method.endswith("/Watch"):
                refusals.record(method, grpc.StatusCode.CANCELLED, "cancelled",
                                "the call ended before its answer was complete (the door went away, "
                                "its deadline passed, or the hub is stopping)")

        async def refuse(request: Malformed, context: grpc.aio.ServicerContext) -> NoReturn:
            await refusals.abort(context, method, grpc.StatusCode.INVALID_ARGUMENT, request.reason,
                                 request.detail)
            raise AssertionError("unreachable: abort raises")

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary(request, context):  # type: ignore[no-untyped-def]
                if isinstance(request, Malformed):
                    await refuse(request, context)
                try:
                    return await inner_uu(request, context)
                except grpc.aio.AbortError:
                    raise
                except asyncio.CancelledError:
                    cancelled()
                    raise
                except Exception as exc:
                    await refusals.fault(context, method, exc)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=deserialize, response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream
            if not inspect.isasyncgenfunction(inner_us):  # writes through context.write (health)

                async def written(request, context):  # type: ignore[no-untyped-def]
                    if isinstance(request, Malformed):
                        await refuse(request, context)
                    await inner_us(request, context)

                return grpc.unary_stream_rpc_method_handler(
                    written, request_deserializer=deserialize,
                    response_serializer=handler.response_serializer)

            async def stream(request, context):  # type: ignore[no-untyped-def]
                if isinstance(request, Malformed):
                    await refuse(request, context)
                try:
                    async for item in inner_us(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except asyncio.CancelledError:
                    cancelled()
                    raise
                except Exception as exc:
                    await refusals.fault(context, method, exc)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=deserialize, response_serializer=handler.response_serializer)
        raise RuntimeError(f"{method}: streaming requests are not supported at the edge")
