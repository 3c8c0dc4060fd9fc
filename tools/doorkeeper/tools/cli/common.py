"""What the command modules share: operator connections and one-line errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import grpc
from rich.console import Console

from doorkeeper.wire import keys

console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit, never a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    sys.exit(code)


def one_line(message: str) -> str:
    """A multi-line message (e.g. every problem of a configuration file) as one line."""
    parts = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(p if p.endswith(":") else p + ";" for p in parts).rstrip(";")


def hub_failure(exc: grpc.RpcError, address: str, tls_ca: Path | None) -> NoReturn:
    """One line for a failed hub call: what went wrong in plain words, exit code 2 for
    anything the operator can fix (address, TLS, a refused request), 1 for a hub fault."""
    from doorkeeper.agent.sync.hubclient import explain_transport

    reason = explain_transport(exc, address, tls_ca)
    if reason is not None:
        fail(reason, code=2)
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        fail(f"the hub failed on this call ({code.name.lower()}): {details}", code=1)
    fail(f"hub refused ({code.name.lower().replace('_', ' ')}): {details}", code=2)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn gRPC, address, CA and key-file errors into one-line messages."""
    from doorkeeper.agent.sync.hubclient import BadAddress, BadCA

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            hub_failure(exc, kwargs.get("hub_address", ""), kwargs.get("tls_ca"))
        except (BadAddress, BadCA) as exc:
            fail(str(exc), code=2)
        except keys.KeyFileError as exc:
            fail(str(exc), code=2)

    return wrapper


def hub_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                      envvar="DOORKEEPER_TLS_CA",
                      help="CA certificate to verify the hub's TLS certificate.")(fn)
    fn = click.option("--operator-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                      envvar="DOORKEEPER_OPERATOR_KEY", required=True,
                      help="Operator's Ed25519 key file (env DOORKEEPER_OPERATOR_KEY).")(fn)
    fn = click.option("--hub", "hub_address", envvar="DOORKEEPER_HUB", required=True,
                      help="Hub address HOST[:PORT], default port 50051 (env DOORKEEPER_HUB).")(fn)
    return fn


def operator_client(hub_address: str, operator_key: Path, tls_ca: Path | None):  # type: ignore[no-untyped-def]
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import HubClient

    key = SigningKey(keys.read_private(operator_key))
    return HubClient(hub_address, keys.key_id(bytes(key.verify_key)), key, tls_ca)


def change_call(client: Any, method: str, request: Any) -> Any:
    """A signed call that changes something at the hub. It carries a fresh request id, the
    same on every retry of a transient failure (tenacity: backoff, jitter, a cap), so an
    answer lost on the way back never makes the change twice: the hub answers the repeat
    with its first result."""
    import uuid

    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    from doorkeeper.agent.sync.hubclient import transient

    request.request_id = request.request_id or uuid.uuid4().hex
    retrying = Retrying(retry=retry_if_exception(transient), stop=stop_after_attempt(4),
                        wait=wait_exponential_jitter(max=5.0), reraise=True)
    return retrying(client.call, method, request)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def metrics_server(listen: str | None, registry: Any, allow_remote: bool) -> Any:
    """Start the Prometheus endpoint (None when off); a taken port is logged, never fatal:
    a door must open even when its metrics cannot be served."""
    import logging

    from doorkeeper.runtime.metrics import start_metrics_server

    if not listen or listen == "off":
        return None
    try:
        server = start_metrics_server(listen, registry, allow_remote=allow_remote)
    except (OSError, ValueError) as exc:
        logging.getLogger("doorkeeper").error("metrics endpoint %s not started: %s", listen, exc)
        return None
    logging.getLogger("doorkeeper").info("metrics on %s", server.url)
    return server
