"""The console's only way to the hub: signed Admin calls with the operator's key.

The same client, signing and retrying as the `doorkeeper` command line (`cli.common`):
roles and the audit trail apply unchanged. A failed call becomes a `HubError` holding a
sentence a person can read and the HTTP status the page answers with; a call the hub does
not implement yet becomes `NotAvailable`, so a page can say "not available on this hub".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from doorkeeper.agent.sync.hubclient import ADMIN, explain_transport
from doorkeeper.tools.cli.common import change_call, operator_client
from doorkeeper.v1 import doorkeeper_pb2 as pb

# gRPC status -> (HTTP status for the page, how a person reads it)
_STATUS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.PERMISSION_DENIED: (403, "the hub refused: this operator key's role may not do this"),
    grpc.StatusCode.UNAUTHENTICATED: (403, "the hub does not accept this operator key"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "the hub refused the request"),
    grpc.StatusCode.NOT_FOUND: (404, "not found at the hub"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already exists at the hub"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "the hub refused it in the current state"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "the hub is busy or the request is too large"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not available on this hub"),
}


class HubError(Exception):
    """A hub call failed; `str()` is one readable sentence, `http_status` the page's status."""

    def __init__(self, message: str, http_status: int, code: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


class NotAvailable(HubError):
    """The hub does not implement this call (an older hub, or a feature not landed yet)."""


def hub_error(exc: grpc.RpcError, address: str, tls_ca: Path | None) -> HubError:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    transport = explain_transport(exc, address, tls_ca)
    if transport is not None:
        return HubError(transport, 502, code.name)
    status, words = _STATUS.get(code, (502, f"the hub failed on this call ({code.name.lower()})"))
    message = f"{words}: {details}" if details and code != grpc.StatusCode.UNIMPLEMENTED else words
    return (NotAvailable if code == grpc.StatusCode.UNIMPLEMENTED else HubError)(message, status, code.name)


class HubAPI:
    """Admin calls as one operator. Thread-safe (one gRPC channel, shared)."""

    def __init__(self, address: str, operator_key: Path, tls_ca: Path | None = None) -> None:
        self.address = address
        self.tls_ca = tls_ca
        self.client = operator_client(address, operator_key, tls_ca)
        self.key_id: str = self.client.principal

    def close(self) -> None:
        self.client.close()

    def read(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """A call that changes nothing."""
        try:
            return self.client.call(ADMIN + method, request, timeout=timeout)
        except grpc.RpcError as exc:
            raise hub_error(exc, self.address, self.tls_ca) from None

    def change(self, method: str, request: Any) -> Any:
        """A change: one request id, the same on every retry, so it is made at most once."""
        try:
            return change_call(self.client, ADMIN + method, request)
        except grpc.RpcError as exc:
            raise hub_error(exc, self.address, self.tls_ca) from None

    # ---- reads the pages share

    def sites(self) -> list[pb.SiteInfo]:
        return list(self.read("ListSites", pb.ListSitesRequest()).sites)

    def site(self, ref: str) -> pb.SiteInfo:
        for s in self.sites():
            if ref in (s.site_id, s.name):
                return s
        raise HubError(f"no site {ref!r} at the hub", 404, "NOT_FOUND")

    def fleet(self, site: str = "") -> list[pb.DeviceStatus]:
        return list(self.read("Fleet", pb.FleetRequest(site=site), timeout=60).devices)

    def audit_pages(self, request: pb.ListAuditRequest) -> Iterator[pb.ListAuditResponse]:
        while True:
            page = self.read("ListAudit", request, timeout=60)
            yield page
            if not page.more or not page.entries:
                return
            request.after_seq = page.entries[-1].seq
