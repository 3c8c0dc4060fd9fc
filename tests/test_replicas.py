"""Three `hub serve` replicas on one PostgreSQL database, with real agents.

The replicas run with beacon interval and reconcile interval far longer than any wait
here (600 s), unless a test says otherwise: a door then learns of a change committed on
another replica only through that replica's LISTEN session (or, after it was cut, through
the reconcile that follows every reconnect), never through a periodic re-read.
"""

from __future__ import annotations

import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
import pytest

from doorkeeper.agent.sync.identity import init_agent
from doorkeeper.agent.sync.service import SyncOptions, SyncService
from doorkeeper.hub.server import init_hub
from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.balancer import Balancer
from tests.harness import Operator, free_port, random_template, spawn_hub, wait_for
from tests.pg import pg_ctl, server_up

SLOW = "600"  # seconds: no periodic path fires while a test waits


@dataclass
class Cluster:
    data_dir: Path
    url: str
    ports: list[int]
    procs: list[subprocess.Popen]  # type: ignore[type-arg]
    metrics_ports: list[int]
    services: list[SyncService] = field(default_factory=list)

    def metric(self, replica: int, series: str) -> int:
        """One series of a replica's Prometheus endpoint (0 when absent, -1 when it is down)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_ports[replica]}/metrics",
                                        timeout=5) as page:
                text = page.read().decode()
        except OSError:
            return -1  # a killed replica
        return next((int(float(x.split()[-1])) for x in text.splitlines()
                     if x.startswith(series + " ")), 0)

    def watching(self, replica: int) -> int:
        """Open watch streams on one replica."""
        return self.metric(replica, "doorkeeper_connected_devices")

    def built(self, kind: str) -> int:
        """Bundles of `kind` built by all replicas together."""
        return sum(self.metric(r, f'doorkeeper_bundles_built_total{{kind="{kind}"}}') for r in range(3))

    def operator(self, replica: int) -> Operator:
        return Operator(f"127.0.0.1:{self.ports[replica]}", self.data_dir / "operator.key")

    def door(self, root: Path, name: str, register_at: str, dial: str) -> SyncService:
        token = self.operator(0).add_device("oak", name).token
        init_agent(root / name, register_at, token)
        service = SyncService(root / name, SyncOptions(poll_interval_s=3600, heartbeat_interval_s=3600,
                                                       upload_interval_s=3600, hub_address=dial))
        service.start()
        self.services.append(service)
        return service

    def sql(self, query: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query).fetchall()  # type: ignore[arg-type]


def start_cluster(tmp_path: Path, url: str, reconcile_s: str = SLOW) -> Cluster:
    data_dir = tmp_path / "hub"
    init_hub(data_dir, url)
    ports = [free_port() for _ in range(3)]
    metrics = [free_port() for _ in range(3)]
    procs = [spawn_hub(data_dir, port, "--store", url, "--beacon-interval", SLOW,
                       "--reconcile-interval", reconcile_s, "--metrics-listen", f"127.0.0.1:{mport}")
             for port, mport in zip(ports, metrics, strict=True)]
    cluster = Cluster(data_dir, url, ports, procs, metrics)
    cluster.operator(0).add_site("oak")
    return cluster


@pytest.fixture
def make_cluster(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    # Three replicas at the default pool size could hold 60 of the server's 100 connections,
    # which other test runs share.
    monkeypatch.setenv("DOORKEEPER_HUB__STORE_POOL_SIZE", "6")
    made: list[Cluster] = []

    def make(reconcile_s: str = SLOW) -> Cluster:
        made.append(start_cluster(tmp_path, pg_url, reconcile_s))
        return made[-1]

    yield make
    for cluster in made:
        for service in cluster.services:
            service.close()
        for proc in cluster.procs:
            proc.kill()
            proc.wait(10)


def holds(service: SyncService, person_id: str) -> bool:
    return service.whitelist.person(person_id) is not None


def test_a_change_through_replica_1_reaches_doors_on_replica_3(make_cluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster()
    rng = np.random.default_rng(1)
    third = f"127.0.0.1:{cluster.ports[2]}"
    door = cluster.door(tmp_path, "gate", third, third)
    assert wait_for(lambda: door.whitelist.version == 1, timeout=60)
    assert wait_for(lambda: cluster.watching(2) == 1, timeout=60)  # its stream is open on replica 3
    added = cluster.operator(0).add_person("oak", templates=[random_template(rng)])
    assert wait_for(lambda: holds(door, added.person_id), timeout=60)
    # Its signed report, made through replica 3, is what every replica's fleet status reads.
    assert wait_for(lambda: cluster.sql("SELECT version FROM reports") == [(2,)], timeout=60)


def test_a_cut_listen_session_reconnects_and_reconciles(make_cluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster()
    rng = np.random.default_rng(2)
    doors = [cluster.door(tmp_path, f"door{i}", f"127.0.0.1:{p}", f"127.0.0.1:{p}")
             for i, p in enumerate(cluster.ports)]
    assert wait_for(lambda: all(d.whitelist.version == 1 for d in doors), timeout=60)
    assert wait_for(lambda: all(cluster.watching(r) == 1 for r in range(3)), timeout=60)
    listening = "SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN doorkeeper_sites'" \
                " AND datname = current_database()"
    assert wait_for(lambda: len(cluster.sql(listening)) == 3, timeout=30)
    # Cut every replica's LISTEN session, then change at once: the notification of this
    # change may reach no one; the reconcile after each reconnect must cover it.
    cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = 'LISTEN doorkeeper_sites' AND datname = current_database()")
    added = cluster.operator(0).add_person("oak", templates=[random_template(rng)])
    assert wait_for(lambda: all(holds(d, added.person_id) for d in doors), timeout=60)
    assert wait_for(lambda: len(cluster.sql(listening)) == 3, timeout=30)  # all back
    # Three doors on three replicas fetched the same snapshot, then the same delta: each was
    # built once among the replicas (the store's per-site build lock), then served by all.
    assert (cluster.built("snapshot"), cluster.built("delta")) == (1, 1)


def test_kill_9_of_a_replica_moves_its_doors_to_the_others(make_cluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster()
    rng = np.random.default_rng(3)
    balancer = Balancer(cluster.ports)
    try:
        first = f"127.0.0.1:{cluster.ports[0]}"
        doors = [cluster.door(tmp_path, f"door{i}", first, balancer.address) for i in range(4)]
        assert wait_for(lambda: all(d.whitelist.version == 1 for d in doors), timeout=60)
        victim = max(range(3), key=lambda i: balancer.routed.count(cluster.ports[i]))
        assert balancer.routed.count(cluster.ports[victim]) > 0
        cluster.procs[victim].kill()  # SIGKILL: no goodbye to its streams
        cluster.procs[victim].wait(10)
        # Its doors' streams come back through the balancer on the two others.
        assert wait_for(lambda: sum(cluster.watching(r) for r in range(3) if r != victim) == 4,
                        timeout=60)
        survivor = (victim + 1) % 3
        added = cluster.operator(survivor).add_person("oak", templates=[random_template(rng)])
        assert wait_for(lambda: all(holds(d, added.person_id) for d in doors), timeout=90)
        version = cluster.sql("SELECT version FROM sites WHERE name = 'oak'")[0][0]
        assert all(d.whitelist.version == version for d in doors)
    finally:
        balancer.close()


def test_doors_converge_through_a_postgresql_restart(make_cluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster(reconcile_s="3")
    rng = np.random.default_rng(4)
    doors = [cluster.door(tmp_path, f"door{i}", f"127.0.0.1:{p}", f"127.0.0.1:{p}")
             for i, p in enumerate(cluster.ports)]
    assert wait_for(lambda: all(d.whitelist.version == 1 for d in doors), timeout=60)
    added: list[str] = []
    stop = threading.Event()

    def keep_changing() -> None:  # an operator adding persons through the restart, retrying
        replica = 0
        while not stop.is_set():
            try:
                added.append(cluster.operator(replica % 3).add_person(
                    "oak", templates=[random_template(rng)]).person_id)
            except Exception:  # refused while the database is down: try the next replica
                stop.wait(0.3)
            replica += 1

    writer = threading.Thread(target=keep_changing, daemon=True)
    writer.start()
    try:
        assert wait_for(lambda: len(added) >= 2, timeout=60)
        pg_ctl("restart")
        before = len(added)
        assert wait_for(lambda: len(added) >= before + 3, timeout=120)  # writes flow again
    finally:
        stop.set()
        writer.join(30)
        if not server_up():
            pg_ctl("start")
    final = cluster.sql("SELECT version FROM sites WHERE name = 'oak'")[0][0]
    assert wait_for(lambda: all(d.whitelist.version == final for d in doors), timeout=90)
    assert all(holds(d, pid) for d in doors for pid in added)


def test_two_operators_on_two_replicas_make_gapless_versions(make_cluster) -> None:
    cluster: Cluster = make_cluster()
    rng = np.random.default_rng(5)
    templates = [random_template(rng) for _ in range(24)]
    added: list[str] = []

    def operator(replica: int) -> None:
        op = cluster.operator(replica)
        for i in range(12):
            added.append(op.add_person("oak", name=f"r{replica}-{i}",
                                       templates=[templates[replica * 12 + i]]).person_id)

    threads = [threading.Thread(target=operator, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(set(added)) == 24
    versions = [v for (v,) in cluster.sql(
        "SELECT c.version FROM changes c JOIN sites s USING (site_id) WHERE s.name = 'oak'"
        " AND c.person_id <> '' ORDER BY c.version")]
    assert versions == list(range(2, 26))  # one version per person: none twice, none skipped
    assert cluster.sql("SELECT version, person_count FROM sites WHERE name = 'oak'") == [(25, 24)]
    assert sorted(pid for (pid,) in cluster.sql("SELECT person_id FROM persons")) == sorted(added)
    # The two replicas extended one audit chain: verified through the third.
    from click.testing import CliRunner

    from doorkeeper.tools.cli import cli

    env = {"DOORKEEPER_HUB": f"127.0.0.1:{cluster.ports[2]}",
           "DOORKEEPER_OPERATOR_KEY": str(cluster.data_dir / "operator.key")}
    r = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert r.exit_code == 0 and "audit trail intact" in r.output, r.output
    assert cluster.sql("SELECT count(*), max(id) FROM audit") == [(25, 25)]  # the site, 24 persons


def test_a_door_revoked_through_replica_1_loses_its_stream_on_replica_3(make_cluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster()
    third = f"127.0.0.1:{cluster.ports[2]}"
    door = cluster.door(tmp_path, "gate", third, third)
    assert wait_for(lambda: door.whitelist.version == 1, timeout=60)
    assert wait_for(lambda: cluster.watching(2) == 1, timeout=60)
    cluster.operator(0).call("RevokeDevice", pb.RevokeDeviceRequest(site="oak", device="gate"))
    # Beacons come every 600 s here: only the revocation's notification ends the stream now.
    assert wait_for(lambda: cluster.watching(2) == 0, timeout=60)
    assert cluster.watching(2) == 0  # its reconnects are refused: no stream reopens


def test_a_revocation_whose_notification_was_lost_ends_the_stream_at_the_reconcile(
        make_cluster, tmp_path: Path) -> None:
    """Streams read no door row after they opened: a revocation this replica was never told
    of (here committed straight into the database, no NOTIFY) is found by the reconcile."""
    cluster: Cluster = make_cluster(reconcile_s="2")
    third = f"127.0.0.1:{cluster.ports[2]}"
    doors = [cluster.door(tmp_path, name, third, third) for name in ("gate", "side")]
    assert wait_for(lambda: all(d.whitelist.version == 1 for d in doors), timeout=60)
    assert wait_for(lambda: cluster.watching(2) == 2, timeout=60)
    cluster.sql("UPDATE devices SET revoked_at = 1 WHERE name = 'gate' RETURNING 1")
    assert wait_for(lambda: cluster.watching(2) == 1, timeout=60)  # gate's stream, not side's
    added = cluster.operator(0).add_person("oak", templates=[random_template(np.random.default_rng(6))])
    assert wait_for(lambda: holds(doors[1], added.person_id), timeout=60)
    assert not holds(doors[0], added.person_id) and cluster.watching(2) == 1


def test_a_door_given_every_replica_fails_over_from_a_killed_one_and_stays(
        make_cluster, tmp_path: Path) -> None:
    """No balancer: the door is configured with the three replicas' addresses. It registers
    through the first that answers (the first address is dead), works with the replica it
    found, moves on when that one is killed, converges, and stays where it works."""
    cluster: Cluster = make_cluster()
    rng = np.random.default_rng(7)
    dead = f"127.0.0.1:{free_port()}"
    replicas = [f"127.0.0.1:{p}" for p in cluster.ports]
    door = cluster.door(tmp_path, "gate", ",".join([dead, replicas[0]]), ",".join(replicas))
    client = door.syncer.client
    assert door.syncer.identity.hub_address == f"{dead},{replicas[0]}"  # registered through the 2nd
    assert wait_for(lambda: door.whitelist.version == 1, timeout=60)
    assert wait_for(lambda: cluster.watching(0) == 1, timeout=60)
    assert client.current_address == replicas[0] and client.failovers == 0
    cluster.procs[0].kill()  # SIGKILL: its stream breaks without a goodbye
    cluster.procs[0].wait(10)
    assert wait_for(lambda: cluster.watching(1) == 1, timeout=60)  # the next address
    added = cluster.operator(2).add_person("oak", templates=[random_template(rng)])
    assert wait_for(lambda: holds(door, added.person_id), timeout=60)
    assert wait_for(lambda: cluster.sql("SELECT version FROM reports") == [(2,)], timeout=60)
    for _ in range(2):  # more work: it stays with the replica that answers
        added = cluster.operator(2).add_person("oak", templates=[random_template(rng)])
        assert wait_for(lambda: holds(door, added.person_id), timeout=60)  # noqa: B023
    assert client.current_address == replicas[1] and client.failovers == 1
    assert cluster.watching(1) == 1 and cluster.watching(2) == 0
