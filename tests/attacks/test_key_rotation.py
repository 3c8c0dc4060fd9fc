"""Hub key rotation: devices follow the signed chain; the retired key and forged links are refused."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from doorkeeper.hub.hubkeys import HubKeys, rotate_signing_key
from doorkeeper.hub.publisher import sign_header
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import keys
from tests.attacks.test_bundle_refusals import Intercept, header_of, refused, with_header
from tests.harness import HubThread, Operator, open_agent, random_template, register_agent


def test_devices_follow_a_rotation_and_refuse_the_retired_key(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(31)
    h = HubThread(tmp_path / "hub").start()
    port = h.port
    op = Operator(h.address, h.data_dir / "operator.key")
    op.add_site("oak")
    op.add_person("oak", templates=[random_template(rng)])
    register_agent(op, "oak", "front", tmp_path / "a").close()
    agent = open_agent(tmp_path / "a")
    assert agent.syncer.sync_once().ok
    old_keys = HubKeys.load(tmp_path / "hub" / "keys")
    h.stop()
    old_id, new_id = rotate_signing_key(tmp_path / "hub" / "keys")
    assert not (tmp_path / "hub" / "keys" / "hub.sign.key.new").exists()
    h = HubThread(tmp_path / "hub", port=port).start()
    try:
        assert h.hub.keys.key_id == new_id != old_id
        Operator(h.address, h.data_dir / "operator.key").add_person("oak", templates=[random_template(rng)])
        intercept = Intercept(agent)
        result = agent.syncer.sync_with_retries(attempts=5, max_wait_s=1)
        assert result.outcome == "applied", result
        assert agent.syncer.trust.hub_key_id == new_id
        assert open_agent(tmp_path / "a").syncer.trust.hub_key_id == new_id  # persisted
        # A bundle signed with the retired key (say, by someone who kept a copy) is refused.
        Operator(h.address, h.data_dir / "operator.key").add_person("oak", templates=[random_template(rng)])

        def old_signed(parts: list[pb.BundlePart]) -> list[pb.BundlePart]:
            hdr = header_of([p for p in parts if p.WhichOneof("part") == "header"])
            hdr.key_id = old_id
            rest = [p for p in parts if p.WhichOneof("part") != "rotation"]
            return with_header(rest, sign_header(old_keys, hdr))

        intercept.rewrite = old_signed
        refused(agent, "Forged", caplog)
    finally:
        agent.close()
        h.stop()


def test_a_forged_rotation_is_refused_and_trust_does_not_move(hub, operator, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    operator.add_site("oak")
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        operator.add_person("oak", templates=[random_template(np.random.default_rng(2))])
        pinned = agent.syncer.trust
        attacker = SigningKey.generate()
        rotation = pb.KeyRotation(old_key_id=pinned.hub_key_id, new_sign_key=bytes(attacker.verify_key),
                                  new_key_id=keys.key_id(bytes(attacker.verify_key))).SerializeToString()
        forged = pb.SignedKeyRotation(rotation=rotation,
                                      signature=keys.sign(attacker, keys.CTX_KEY_ROTATION, rotation))
        intercept = Intercept(agent)
        intercept.rewrite = lambda parts: [pb.BundlePart(rotation=forged), *parts]
        with caplog.at_level(logging.ERROR):
            refused(agent, "Forged", caplog)
        assert agent.syncer.trust == pinned
    finally:
        agent.close()
