"""A man in the middle on loopback: a gRPC server that relays every call to the real hub.

It knows the service only by method name and moves raw bytes (no stubs), as an
attacker on the path would: it records every request and answer, and for any
method the test can replace the relay with what the attacker sends instead
(`unary[method]`, `stream[method]`), e.g. a beacon captured earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

STREAMING = {"Watch", "Fetch", "PullLogs"}


@dataclass
class Seen:
    method: str  # short name, e.g. "Fetch"
    request: bytes
    answers: list[bytes] = field(default_factory=list)


class Mitm:
    def __init__(self, upstream: str) -> None:
        self.channel = grpc.insecure_channel(upstream)
        self.seen: list[Seen] = []
        # Attacker's replacements: request bytes -> answer bytes (or an iterator of them).
        self.unary: dict[str, Callable[[bytes, Any], bytes]] = {}
        self.stream: dict[str, Callable[[bytes, Any], Iterator[bytes]]] = {}
        self.generation = 0  # `cut` bumps it: streams relayed since an earlier one stop
        self.server = grpc.server(ThreadPoolExecutor(max_workers=32))
        self.server.add_generic_rpc_handlers([_Handler(self)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.stop(grace=None)
        self.channel.close()

    def calls(self, method: str) -> list[Seen]:
        return [s for s in list(self.seen) if s.method == method]

    def relay_unary(self, full: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        call = self.channel.unary_unary(full)
        try:
            return call(request, metadata=context.invocation_metadata(),  # type: ignore[no-any-return]
                        timeout=context.time_remaining())
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]
            raise

    def cut(self) -> None:
        """Stop relaying the streams open now: the next message upstream sends on any of them is
        withheld and the stream ends UNAVAILABLE (an attacker who takes over the network
        mid-stream; new streams meet the replacements in `stream`)."""
        self.generation += 1

    def relay_stream(self, full: str, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        generation = self.generation
        call = self.channel.unary_stream(full)(request, metadata=context.invocation_metadata(),
                                                timeout=context.time_remaining())
        context.add_callback(call.cancel)
        try:
            for answer in call:
                if self.generation != generation:
                    call.cancel()
                    context.abort(grpc.StatusCode.UNAVAILABLE, "cut")
                yield answer
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, mitm: Mitm) -> None:
        self.mitm = mitm

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        full = details.method  # type: ignore[attr-defined]
        name = full.rsplit("/", 1)[-1]
        mitm = self.mitm
        if name in STREAMING:
            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                seen = Seen(name, request)
                mitm.seen.append(seen)
                replace = mitm.stream.get(name)
                source = replace(request, context) if replace else mitm.relay_stream(full, request, context)
                for answer in source:
                    seen.answers.append(answer)
                    yield answer

            return grpc.unary_stream_rpc_method_handler(stream)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            seen = Seen(name, request)
            mitm.seen.append(seen)
            replace = mitm.unary.get(name)
            answer = replace(request, context) if replace else mitm.relay_unary(full, request, context)
            seen.answers.append(answer)
            return answer

        return grpc.unary_unary_rpc_method_handler(unary)
