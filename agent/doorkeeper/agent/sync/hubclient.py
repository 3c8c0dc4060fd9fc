"""The agent's (and operator tools') connection to the hub.

Every call has a deadline. Signed calls sign the method, principal, a single-use
call nonce and the exact request bytes (`doorkeeper.wire.callauth`). The nonce
comes from a `Challenge` round trip, or, cheaper, from the hub's last answer on
an authenticated stream: a watch beacon (`WatchRequest.call_nonces`) or a fetch
(`FetchRequest.call_nonce`) hands the door a nonce for its next signed call
(`offer_nonce`), so a change costs the door and the hub a Fetch and a Report and
no Challenge. Such a nonce is used once, only while well within its lifetime,
and a unary call refused UNAUTHENTICATED with one is retried once with a
Challenge nonce (a hub restored from a backup, or another replica's clock).
Keepalive is set so a half-open connection is noticed in bounded time; the hub
permits these ping intervals.

Several hub addresses (replicas on one database, comma-separated, in order of
preference): the client stays with the one that answers and moves to the next
when a call or stream on it fails for a transport reason (UNAVAILABLE,
DEADLINE_EXCEEDED); it retries nothing itself: the caller's jittered backoff
(watch reconnects, sync retries, upload intervals) decides when the next
attempt, on the next address, is made.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from nacl.signing import SigningKey

from doorkeeper.runtime.config.types import MAX_HUB_ADDRESSES
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import callauth
from doorkeeper.wire.capped import read_capped
from doorkeeper.wire.limits import LIMITS

CLIENT_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", LIMITS.grpc_max_message_bytes),
    ("grpc.max_send_message_length", LIMITS.grpc_max_message_bytes),
    ("grpc.enable_retries", 0),  # retries are ours (tenacity), only for idempotent calls
    # Reconnect soon after a hub comes back, with gRPC's own jitter against a thundering herd.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 10_000),
    # One channel's backoff must not fail another channel's calls in the same process.
    ("grpc.use_local_subchannel_pool", 1),
]

DEFAULT_TIMEOUT_S = 10.0
# A nonce the hub handed out lives NONCE_TTL_S (120 s) by the hub's clock; use it well before.
OFFERED_NONCE_MAX_AGE_S = 60.0
SEEN_OFFERS = 256  # offered nonces remembered, so that a replayed one is not used twice
SYNC = "/doorkeeper.v1.DeviceSync/"
ADMIN = "/doorkeeper.v1.Admin/"

# method -> response type
# Every method's response type, read from the contract's own descriptors (DeviceSync and
# Admin), so a new RPC needs no entry here.
RESPONSES: dict[str, Any] = {
    f"/{service.full_name}/{method.name}": getattr(pb, method.output_type.name)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}


log = logging.getLogger("doorkeeper.agent.sync.hubclient")
DEFAULT_HUB_PORT = 50051  # the hub's documented listen port (`hub serve`)
# A call or stream that failed so on one hub moves the client to the next address.
FAILOVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_PORT = re.compile(r"\d{1,5}")


class BadAddress(ValueError):
    """A hub address that is not HOST, HOST:PORT, [IPv6] or [IPv6]:PORT."""


def hub_target(address: str) -> str:
    """`address` with the default hub port added when it names none.

    gRPC would read a bare `localhost` as `localhost:443`, a port no hub listens on by
    default: the operator meant the hub's own port. Raises BadAddress for a malformed one."""
    address = address.strip()
    if not address or len(address) > 255 or any(c.isspace() for c in address):
        raise BadAddress(f"--hub {address!r}: a hub address must be HOST or HOST:PORT")
    if "://" in address:
        raise BadAddress(f"--hub {address!r}: a hub address must be HOST or HOST:PORT, without a scheme")
    if address.startswith("["):  # [IPv6] or [IPv6]:port
        host, _, rest = address.partition("]")
        if not rest:
            return f"{host}]:{DEFAULT_HUB_PORT}"
        port = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, port = address.split(":")
    elif ":" in address:  # a bare IPv6 address
        return f"[{address}]:{DEFAULT_HUB_PORT}"
    else:
        return f"{address}:{DEFAULT_HUB_PORT}"
    if not host or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise BadAddress(f"--hub {address!r}: the port must be a number from 1 to 65535")
    return address


def hub_addresses(address: str) -> list[str]:
    """One hub address, or several comma-separated (replicas, in order of preference), each
    as `hub_target` gives it. Raises BadAddress for a malformed one or an empty list item."""
    parts = address.split(",")
    if len(parts) > MAX_HUB_ADDRESSES:
        raise BadAddress(f"--hub: at most {MAX_HUB_ADDRESSES} hub addresses")
    targets = [hub_target(part) for part in parts]
    return list(dict.fromkeys(targets))  # a repeated address once


class BadCA(ValueError):
    """A --tls-ca file that holds no PEM certificate."""


def read_ca(tls_ca: Path) -> bytes:
    """The CA file's bytes, refused (BadCA) unless it holds a PEM certificate gRPC can load."""
    from cryptography import x509

    ca = read_capped(tls_ca, LIMITS.max_pem_bytes, "CA file")
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError:
        raise BadCA(f"--tls-ca {tls_ca} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
                    ) from None
    return ca


def open_channel(address: str, tls_ca: Path | None = None) -> grpc.Channel:
    address = hub_target(address)
    if tls_ca is not None:
        ca = read_ca(tls_ca)
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        return grpc.secure_channel(address, creds, options=CLIENT_OPTIONS)
    return grpc.insecure_channel(address, options=CLIENT_OPTIONS)


class HubClient:
    """Signed unary and server-streaming calls as one principal (device or operator)."""

    def __init__(
        self,
        address: str,
        principal: str = "",
        sign_key: SigningKey | None = None,
        tls_ca: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """``address``: HOST[:PORT], or several comma-separated (see the module doc)."""
        self.address = address
        self.addresses = hub_addresses(address)
        self.principal = principal
        self.sign_key = sign_key
        self.tls_ca = tls_ca
        self.timeout_s = timeout_s
        self._current = 0  # index into `addresses`: the hub calls go to
        self._channels: dict[int, grpc.Channel] = {}  # opened on first use, closed by `close`
        self._switch_lock = threading.Lock()
        self.failovers = 0  # moves to the next address (for tests and status)
        self._channel(0)
        self._offered: tuple[bytes, float] | None = None
        self._offered_lock = threading.Lock()
        self._seen_offers: OrderedDict[bytes, None] = OrderedDict()
        self.challenges = 0  # Challenge round trips made for signed calls (for tests and benches)

    def offer_nonce(self, nonce: bytes) -> None:
        """A call nonce the hub handed out on an authenticated stream, for the next signed call.

        One already offered before is ignored: a replayed answer carries a spent nonce."""
        if not nonce:
            return
        nonce = bytes(nonce)
        with self._offered_lock:
            if nonce in self._seen_offers:
                return
            self._seen_offers[nonce] = None
            while len(self._seen_offers) > SEEN_OFFERS:
                self._seen_offers.popitem(last=False)
            self._offered = (nonce, time.monotonic())

    def _take_offered(self) -> bytes:
        with self._offered_lock:
            offered, self._offered = self._offered, None
        if offered is None or time.monotonic() - offered[1] > OFFERED_NONCE_MAX_AGE_S:
            return b""
        return offered[0]

    def fresh(self, timeout_s: float) -> HubClient:
        """Another client for the same hub and principal, on a new channel (starting with
        the address this one uses now)."""
        client = HubClient(self.address, self.principal, self.sign_key, self.tls_ca, timeout_s)
        client._current = self._current
        return client

    @property
    def current_address(self) -> str:
        return self.addresses[self._current]

    @property
    def channel(self) -> grpc.Channel:
        """The channel to the hub calls go to now."""
        return self._channel(self._current)

    def _channel(self, index: int) -> grpc.Channel:
        with self._switch_lock:
            channel = self._channels.get(index)
            if channel is None:
                channel = self._channels[index] = open_channel(self.addresses[index], self.tls_ca)
            return channel

    def failed(self, index: int, exc: BaseException) -> None:
        """A call through `addresses[index]` failed with `exc`: on a transport failure, and
        when no other call has moved on already, later calls go to the next address."""
        if len(self.addresses) < 2 or not isinstance(exc, grpc.RpcError) or \
                exc.code() not in FAILOVER_CODES:  # type: ignore[attr-defined]
            return
        with self._switch_lock:
            if self._current != index:
                return
            self._current = (index + 1) % len(self.addresses)
            self.failovers += 1
            moved_to = self.addresses[self._current]
        log.warning("hub at %s: %s; next calls go to %s", self.addresses[index], describe(exc), moved_to)

    def close(self) -> None:
        with self._switch_lock:
            channels = list(self._channels.values())
        for channel in channels:
            channel.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metadata(self, method: str, raw: bytes, timeout: float, wait_for_ready: bool = False,
                  offered: bool = True) -> tuple[tuple[str, str], ...]:
        if self.sign_key is None:
            return ()
        nonce = self._take_offered() if offered else b""
        if not nonce:
            self.challenges += 1
            nonce = self.unsigned(SYNC + "Challenge", pb.ChallengeRequest(principal=self.principal), timeout,
                                  wait_for_ready).nonce
        sig = callauth.call_signature(self.sign_key, method, self.principal, nonce, raw)
        return callauth.metadata(self.principal, nonce, sig)

    def unsigned(self, method: str, request: Any, timeout: float | None = None,
                 wait_for_ready: bool = False) -> Any:
        index = self._current
        call = self._channel(index).unary_unary(method, response_deserializer=RESPONSES[method].FromString)
        try:
            return call(request.SerializeToString(), timeout=timeout or self.timeout_s,
                        wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            self.failed(index, exc)
            raise

    def call(self, method: str, request: Any, timeout: float | None = None,
             wait_for_ready: bool = False) -> Any:
        """A signed unary call. `wait_for_ready` waits (up to the deadline) for a
        reconnecting channel instead of failing at once: for background work only."""
        timeout = timeout or self.timeout_s
        raw = request.SerializeToString()
        index = self._current
        call = self._channel(index).unary_unary(method, response_deserializer=RESPONSES[method].FromString)
        had_offer = self._offered is not None
        try:
            try:
                return call(raw, timeout=timeout, wait_for_ready=wait_for_ready,
                            metadata=self._metadata(method, raw, timeout, wait_for_ready))
            except grpc.RpcError as exc:
                if not had_offer or exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
                    raise
            # The offered nonce was refused (expired, or spent on a replica that restarted):
            # once more with a Challenge nonce.
            return call(raw, timeout=timeout, wait_for_ready=wait_for_ready,
                        metadata=self._metadata(method, raw, timeout, wait_for_ready, offered=False))
        except grpc.RpcError as exc:
            self.failed(index, exc)
            raise

    def stream(self, method: str, request: Any, timeout: float) -> Iterator[Any]:
        """A signed server-streaming call; the iterator also has `cancel()` (as a grpc.Call).

        Signed with an offered nonce and refused UNAUTHENTICATED before its first answer: opened
        once more with a Challenge nonce. A transport failure while it runs moves later calls
        to the next hub address (`failed`)."""
        raw = request.SerializeToString()
        index = self._current
        call = self._channel(index).unary_stream(method, response_deserializer=RESPONSES[method].FromString)
        had_offer = self._offered is not None
        try:
            first = call(raw, timeout=timeout, metadata=self._metadata(method, raw, self.timeout_s))
        except grpc.RpcError as exc:  # its Challenge failed
            self.failed(index, exc)
            raise
        reopen = None if not had_offer else lambda: call(raw, timeout=timeout, metadata=self._metadata(
            method, raw, self.timeout_s, offered=False))
        return _RetriedStream(first, reopen, lambda exc: self.failed(index, exc))


class _RetriedStream:
    """A server stream opened again (once) when its first attempt was refused UNAUTHENTICATED
    before any answer (with `reopen`); `cancel()` cancels whichever attempt is current; a
    failure that ends it is passed to `on_error` before it is raised."""

    def __init__(self, call: Any, reopen: Callable[[], Any] | None,
                 on_error: Callable[[grpc.RpcError], None]) -> None:
        self._call = call
        self._reopen = reopen
        self._on_error = on_error
        self._answered = False
        self._cancelled = False

    def cancel(self) -> bool:
        self._cancelled = True
        return bool(self._call.cancel())

    def __getattr__(self, name: str) -> Any:  # the rest of grpc.Call, of the current attempt
        return getattr(self._call, name)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            try:
                item = next(self._call)
            except grpc.RpcError as exc:
                if self._reopen is None or self._answered or self._cancelled or \
                        exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
                    raise
                self._answered = True  # reopen once only
                self._call = self._reopen()
                item = next(self._call)
        except grpc.RpcError as exc:
            if not self._cancelled:
                self._on_error(exc)
            raise
        self._answered = True
        return item


def transient(exc: BaseException) -> bool:
    """Transport trouble worth retrying (the hub is down, slow or shedding load), not a refusal.

    CANCELLED counts too: a hub (or a proxy) that drops a call under load or on shutdown
    reports it so, and nothing the door sent was refused. The door's own cancellations (stop,
    watch renewal) are recognised by their callers before they ask."""
    return isinstance(exc, grpc.RpcError) and exc.code() in (  # type: ignore[attr-defined]
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    )


def log_sender(client: HubClient, timeout: float, wait_for_ready: bool = False) -> Callable[[Any], Any]:
    """UploadLogs as the uploader's `send`: a gRPC failure becomes `UploadFailed` with a
    one-line reason (the uploader lets any other exception through as a bug)."""
    from doorkeeper.agent.entries.uploader import UploadFailed

    def send(batch: Any) -> Any:
        try:
            return client.call(SYNC + "UploadLogs", batch, timeout=timeout, wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            raise UploadFailed(describe(exc), transient(exc)) from exc

    return send
def explain_transport(exc: BaseException, address: str, tls_ca: Path | None) -> str | None:
    """A plain sentence for a call that never reached the hub's code (no answer, a TLS
    mismatch), naming the address tried; None for anything else (a refusal by the hub)."""
    if not isinstance(exc, grpc.RpcError) or exc.code() not in (  # type: ignore[attr-defined]
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return None
    details = exc.details() or ""  # type: ignore[attr-defined]
    try:
        target = hub_target(address)
    except BadAddress:
        target = address
    if "WRONG_VERSION_NUMBER" in details and tls_ca is not None:
        return f"the hub at {target} does not speak TLS (a plaintext hub); drop --tls-ca, or serve TLS"
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details:
        return (f"the hub at {target} presented a TLS certificate that --tls-ca {tls_ca} does not vouch "
                "for; give the CA that signed the hub's certificate")
    if "security handshaker" in details or "root certificate" in details:
        return f"--tls-ca {tls_ca} is not a usable CA certificate for the hub at {target}"
    if "Socket closed" in details and tls_ca is None:
        return (f"the hub at {target} closed the connection: it probably serves TLS; "
                "give --tls-ca CA.pem (env DOORKEEPER_TLS_CA)")
    if "DNS resolution failed" in details or "Name or service not known" in details:
        return f"cannot resolve the hub's host name in {target}"
    if "Connection refused" in details:
        return f"no hub answers at {target} (connection refused); check --hub HOST[:PORT]"
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
        return f"the hub at {target} did not answer in time"
    return f"cannot reach the hub at {target}: {details}"


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return str(exc)
