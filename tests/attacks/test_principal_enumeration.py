"""Probing `Challenge` to learn which device ids and operator key ids exist.

The answer must not depend on whether the principal is known: same fields,
same sizes, and no store lookup at all (so no timing difference either).
"""

from __future__ import annotations

from pathlib import Path

from doorkeeper.agent.sync.hubclient import SYNC, HubClient
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import register_agent


class NoStore:
    """Stands in for the store while Challenge runs: any use of it fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"Challenge touched the store ({name})")


def test_challenge_answers_alike_for_known_and_unknown_principals(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "front")
    agent.close()
    unregistered = operator.add_device("oak", "back").device_id
    with operator.client() as c:
        operator_id = c.principal
    principals = [agent.syncer.identity.device_id, unregistered, operator_id, "0" * 32, "nobody", ""]
    real_store = hub.hub.authenticator.store
    hub.hub.authenticator.store = NoStore()
    try:
        with HubClient(hub.address) as client:
            answers = [client.unsigned(SYNC + "Challenge", pb.ChallengeRequest(principal=p))
                       for p in principals]
    finally:
        hub.hub.authenticator.store = real_store
    shapes = {(tuple(f.name for f, _ in a.ListFields()), len(a.nonce), a.expires_in_s) for a in answers}
    assert len(shapes) == 1, shapes
    assert len({a.nonce for a in answers}) == len(answers)
