"""The hub serves TLS when given a certificate; agents verify it with a CA file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from doorkeeper.agent.sync.hubclient import SYNC, HubClient
from doorkeeper.agent.sync.identity import init_agent
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import HubThread, Operator, open_agent, random_template


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_agent_registers_and_syncs_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    h = HubThread(tmp_path / "hub", tls=(cert, key)).start()
    try:
        from nacl.signing import SigningKey

        from doorkeeper.wire import keys

        op_key = SigningKey(keys.read_private(h.data_dir / "operator.key"))
        op = Operator(h.address, h.data_dir / "operator.key")
        op.client = lambda: HubClient(h.address, keys.key_id(bytes(op_key.verify_key)), op_key,  # type: ignore[method-assign]
                                      tls_ca=cert)
        op.add_site("oak")
        op.add_person("oak", templates=[random_template(np.random.default_rng(1))])
        token = op.add_device("oak", "front").token
        init_agent(tmp_path / "a", h.address, token, tls_ca=cert)
        agent = open_agent(tmp_path / "a")
        try:
            assert agent.syncer.sync_once().outcome == "applied"
            assert agent.whitelist.person_count == 1
        finally:
            agent.close()
        with HubClient(h.address, timeout_s=3) as plaintext, pytest.raises(grpc.RpcError):
            plaintext.unsigned(SYNC + "Challenge", pb.ChallengeRequest(principal="x"))
    finally:
        h.stop()
