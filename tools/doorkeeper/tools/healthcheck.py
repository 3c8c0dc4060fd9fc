"""A gRPC health probe for the hub, for container HEALTHCHECKs and exec probes.

    python -m doorkeeper.tools.healthcheck HOST:PORT [--tls-ca FILE] [--server-name NAME]

Asks the standard ``grpc.health.v1.Health/Check`` (service ``""`` by default) and exits 0 only
when the answer is SERVING. Every other outcome (NOT_SERVING, unknown service, nothing
listening, TLS failure, deadline) exits 1 with one line on stderr saying why; Docker reserves
exit status 2, so usage errors exit 1 as well.

Health is one of the hub's public methods (no signed call needed). With ``--tls-ca`` the hub's
certificate is verified against that CA; ``--server-name`` names the host the certificate is
for when the probe connects by another name (e.g. 127.0.0.1 inside the container).
Deliberately small: argparse, grpc, grpc_health and two stdlib-only wire modules, so a probe
starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS

HEALTHY, UNHEALTHY = 0, 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UNHEALTHY, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m doorkeeper.tools.healthcheck",
                description="Exit 0 when the gRPC health service at ADDRESS reports SERVING.")
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) to verify the hub's TLS certificate.")
    p.add_argument("--tls", action="store_true", help="Use TLS with the system's CA roots.")
    p.add_argument("--server-name", help="Name to verify the certificate against (default: HOST).")
    p.add_argument("--service", default="", help="Health service name (default: '' = the whole server).")
    p.add_argument("--timeout", type=float, default=3.0, help="Seconds for the whole check (default 3).")
    return p


def check(address: str, *, tls_ca: bytes | None = None, tls: bool = False, server_name: str | None = None,
          service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """(serving?, one-line reason). Never raises for an unreachable or unhealthy server."""
    options: list[tuple[str, str | int]] = [("grpc.enable_retries", 0)]
    if tls or tls_ca is not None:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca),
                                      options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code == grpc.StatusCode.NOT_FOUND:
            details = details or f"health service {service!r} is not known to the server"
        return False, f"{address}: {code.name if code else 'ERROR'}: {details}"
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return UNHEALTHY
    ca: bytes | None = None
    if args.tls_ca is not None:
        try:
            ca = read_capped(args.tls_ca, LIMITS.max_pem_bytes, "CA file")
        except (OSError, TooLarge) as exc:
            print(f"cannot read --tls-ca {args.tls_ca}: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return UNHEALTHY
    ok, reason = check(args.address, tls_ca=ca, tls=args.tls, server_name=args.server_name,
                       service=args.service, timeout=args.timeout)
    print(reason, file=sys.stdout if ok else sys.stderr)
    return HEALTHY if ok else UNHEALTHY


if __name__ == "__main__":
    raise SystemExit(main())
