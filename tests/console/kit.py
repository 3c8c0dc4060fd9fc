"""What the console tests share: a real hub, a console on it, a logged-in HTTP client."""

from __future__ import annotations

import re
from pathlib import Path

from doorkeeper.tools.console.app import Console, make_console
from doorkeeper.tools.console.hubapi import HubAPI
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.harness import Operator

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_for(address: str, key_file: Path, poll_s: float = 1.0) -> Console:
    return make_console(HubAPI(address, key_file), poll_s=poll_s)


def add_operator_key(operator: Operator, name: str, role: str, out: Path) -> Path:
    """A new operator key of `role` registered at the hub by the first admin."""
    pair = keys.KeyPair.generate()
    keys.write_private(out, bytes(pair.sign_key))
    operator.call("AddOperator", pb.AddOperatorRequest(name=name, role=role, public_key=pair.sign_public))
    return out


def door_names(operator: Operator, site: str) -> list[str]:
    fleet = operator.call("Fleet", pb.FleetRequest(site=site))
    return sorted(d.name for d in fleet.devices)  # type: ignore[attr-defined]


def audit_actions(operator: Operator) -> list[str]:
    page = operator.call("ListAudit", pb.ListAuditRequest(all=True))
    return [e.action for e in page.entries]  # type: ignore[attr-defined]
