"""A client that knows nothing can discover the hub: reflection, per-service health, one
fingerprint format for the hub key everywhere it is printed."""

from __future__ import annotations

from pathlib import Path

import grpc
from click.testing import CliRunner
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from doorkeeper.tools.cli import cli
from doorkeeper.wire import keys
from doorkeeper.wire import token as tokens
from tests.harness import HubThread, Operator


def test_reflection_lists_and_describes_the_services_without_authentication(tmp_path: Path) -> None:
    h = HubThread(tmp_path / "hub").start()
    try:
        with grpc.insecure_channel(h.address) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = set(db.get_services())
            assert {"doorkeeper.v1.DeviceSync", "doorkeeper.v1.Admin", "grpc.health.v1.Health"} <= services
            pool = DescriptorPool(db)
            sync = pool.FindServiceByName("doorkeeper.v1.DeviceSync")
            assert {m.name for m in sync.methods} == {
                "Register",
                "Challenge",
                "Watch",
                "Fetch",
                "Report",
                "UploadLogs",
            }
            header = pool.FindMessageTypeByName("doorkeeper.v1.BundleHeader")
            assert header.fields_by_name["nonce"].number == 17
    finally:
        h.stop()


def test_health_answers_per_service_and_not_for_unknown_ones(tmp_path: Path) -> None:
    h = HubThread(tmp_path / "hub").start()
    try:
        with grpc.insecure_channel(h.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "doorkeeper.v1.DeviceSync", "doorkeeper.v1.Admin"):
                r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert r.status == health_pb2.HealthCheckResponse.SERVING, service
            try:
                stub.Check(health_pb2.HealthCheckRequest(service="doorkeeper.v1.Nope"), timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            else:
                raise AssertionError("an unknown service must not be reported healthy")
    finally:
        h.stop()


def test_hub_key_fingerprint_is_printed_alike_by_hub_token_and_agent(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["hub", "init", "--data", str(tmp_path / "hub")])
    assert r.exit_code == 0, r.output
    public = (tmp_path / "hub" / "keys" / "hub.sign.pub").read_bytes()
    expected = keys.fingerprint_text(public)
    assert expected.startswith("SHA256:") and len(expected) == len("SHA256:") + 52
    assert expected in r.output
    r = runner.invoke(cli, ["hub", "show", "--data", str(tmp_path / "hub")])
    assert r.exit_code == 0 and r.stdout.strip().splitlines()[-1] == expected
    h = HubThread(tmp_path / "hub").start()
    try:
        env = {"DOORKEEPER_HUB": h.address, "DOORKEEPER_OPERATOR_KEY": str(h.data_dir / "operator.key")}
        Operator(h.address, h.data_dir / "operator.key").add_site("oak")
        r = runner.invoke(cli, ["device", "add", "--site", "oak", "--name", "front"], env=env)
        assert r.exit_code == 0, r.output
        token = r.stdout.strip().splitlines()[-1]
        assert expected in r.output
        assert tokens.Token.parse(token).hub_fingerprint_text == expected
        assert token.endswith(expected.removeprefix("SHA256:"))
        r = runner.invoke(
            cli, ["agent", "init", "--data", str(tmp_path / "a"), "--hub", h.address, "--token", token]
        )
        assert r.exit_code == 0, r.output
        assert expected in r.output
        r = runner.invoke(cli, ["agent", "status", "--data", str(tmp_path / "a"), "--json"])
        assert r.exit_code == 0, r.output
        assert f'"hub_key": "{expected}"' in r.stdout
    finally:
        h.stop()
