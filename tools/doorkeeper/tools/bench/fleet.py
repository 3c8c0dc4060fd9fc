"""`doorkeeper bench fleet`: many real doors against K hub replicas, measured from outside.

What runs, all real and on loopback: K `doorkeeper hub serve` processes, a round-robin TCP
balancer in front of them (`fleet_proxy`), and N simulated doors spread over a few worker
processes (`fleet_doors`: each door its own keys, channel, registration with a one-time
token, watch stream, fetch verified with the agent's own core, in-memory apply checked
against the signed state digest, signed reports, sealed entry-log uploads). The operator's
calls go through the balancer too.

Stores: `--store sqlite` (one hub on its data dir's SQLite file) or `--store postgresql` (K
replicas sharing one database, made for the run on the server of `--pg-url` and dropped
after; the replicas share the data dir's keys). Pinning puts the hubs on the first core(s),
the balancer and doors on the last; PostgreSQL's server processes are not pinned.

What each figure is (per change, the clock starts when the operator's `AddPerson` returned,
that is when the change is committed):
- apply_p50_s / apply_p99_s / apply_max_s: time until 50 %, 99 % and every door had its
  signed report of the new version answered by the hub (the hub has recorded the manifest:
  the run then checks with `Admin.Fleet` that every door's reported version is the new one
  and fails otherwise); medians over the one-person changes (apply_max_s: the worst).
- hub_cpu_ms_per_device_change: user+system CPU of all hub processes (/proc/PID/stat) from
  the commit until every door reported, divided by doors; median over the one-person changes.
  It includes the hub's whole work for the change: watch wake-ups and beacons, call nonces,
  fetches (bundle build once, one header per door, chunks), reports.
- db_cpu_ms_per_device_change (PostgreSQL only): the same for the PostgreSQL server processes
  serving the run's database (pg_stat_activity), not included in the hub's figure.
- bytes_per_device_change: protobuf bytes a door sent and received for the change (beacon
  announcing it, fetch request and parts, report and answer); HTTP/2 and TLS framing excluded.
- big_change: the same for one change of ``--big-persons`` persons (SQLite: all but one
  committed straight into the hub's store, the last through `AddPerson`, which wakes the
  watchers; PostgreSQL: all committed straight into the database, whose notification wakes
  every replica): doors fetch one delta holding all of them.
- hub_rss_mb_per_1000_devices: hub RSS (all replicas) with every door connected and in sync,
  minus the RSS before any door connected, per 1,000 doors.
- admin_p50_ms: a signed `ListSites` (its Challenge included) while the fleet is connected.
- ingest_per_s: entry-log records stored per second while every door uploads
  ``--upload-batches`` batches of ``--batch-records`` records at once (records sealed and
  chained on the doors; the hub checks signatures and the chain and stores them).
- errors: every failed call by method and status code, as the doors saw them;
  error_samples: the details and gRPC debug string of the first few of each (where the
  status came from: the hub's trailers, an RST_STREAM from the hub, the transport).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click

from doorkeeper.agent.sync.watch import INLINE_BUNDLE_BYTES
from doorkeeper.tools.bench import kit
from doorkeeper.tools.bench.fleet_doors import raise_fd_limit

DOORS_ENTRY = "doorkeeper.tools.bench.fleet_doors"
PROXY_ENTRY = "doorkeeper.tools.bench.fleet_proxy"
BASE_PERSONS = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def check_topology(store: str, hubs: int) -> None:
    if hubs < 1:
        raise click.BadParameter("--hubs must be at least 1")
    if store == "sqlite" and hubs > 1:
        raise click.ClickException(
            "several hub replicas need a shared store: one SQLite file belongs to one hub "
            "process (DIR/hub.lock); use --store postgresql")


def uptime() -> str:
    """`uptime`'s line (the machine's load when a figure was taken)."""
    path = shutil.which("uptime")
    if path is None:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())
    return subprocess.run([path], capture_output=True, text=True, check=False).stdout.strip()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    from doorkeeper.tools.bench.sync_probes import status_kb

    return status_kb("VmRSS", pid) * 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------ setup


class SqliteSetup:
    """A fresh hub data dir with one site, its log-owner key, base persons and N door tokens;
    its store is the data dir's SQLite file (one hub process)."""

    store_url: str | None = None
    direct_writes_wake = False

    def __init__(self, root: Path, devices: int) -> None:
        import numpy as np
        from nacl.public import PrivateKey

        from doorkeeper.hub.devices import Devices
        from doorkeeper.hub.server import init_hub
        from doorkeeper.tools.bench.sync_workers import person_specs

        self.data = root / "hub"
        self.operator_key = init_hub(self.data, self.store_url)
        store, hub_keys, whitelist = self.open_domain()
        try:
            site = whitelist.add_site("fleet")
            self.site_id = site.site_id
            whitelist.set_owner_key(site.site_id, bytes(PrivateKey.generate().public_key))
            whitelist.add_persons(site.site_id, person_specs(np.random.default_rng(1), BASE_PERSONS, "base"))
            devices_api = Devices(store, hub_keys)
            self.tokens = [devices_api.add(site.site_id, f"door-{i:05d}", 7200).token for i in range(devices)]
        finally:
            store.close()

    def open_domain(self) -> tuple[Any, Any, Any]:
        """(store, hub keys, whitelist) on the hub's store, without gRPC."""
        from doorkeeper.hub.hubkeys import HubKeys
        from doorkeeper.hub.server import open_store
        from doorkeeper.hub.whitelist import Whitelist

        store = open_store(self.data, self.store_url, pool_size=2)
        hub_keys = HubKeys.load(self.data / "keys")
        return store, hub_keys, Whitelist(store, hub_keys)

    def hub_args(self, replica: int) -> list[str]:
        """Every replica gets the same keys (the data dir) and the same store."""
        return ["--data", str(self.data), *(["--store", self.store_url] if self.store_url else [])]

    def site_version(self) -> int:
        store, _, _ = self.open_domain()
        try:
            return int(store.get_site(self.site_id).version)
        finally:
            store.close()

    def add_persons_directly(self, count: int, tag: str) -> int:
        """One change of `count` persons committed straight into the store: its version.
        Wakes no hub on SQLite (the hub's in-process notifier never hears of it); on
        PostgreSQL the commit notifies every replica (`direct_writes_wake`)."""
        import numpy as np

        from doorkeeper.tools.bench.sync_workers import person_specs

        store, _, whitelist = self.open_domain()
        try:
            specs = person_specs(np.random.default_rng(len(tag)), count, tag)
            _, site = whitelist.add_persons(self.site_id, specs)
            return int(site.version)
        finally:
            store.close()


class PostgresSetup(SqliteSetup):
    """The same hub on a PostgreSQL database (made for the run by the caller, dropped after)
    that every replica shares; the data dir holds only the keys, which every replica reads."""

    direct_writes_wake = True

    def __init__(self, root: Path, devices: int, store_url: str) -> None:
        self.store_url = store_url
        super().__init__(root, devices)


# ------------------------------------------------------------------ processes


class Processes:
    """Every child of one run; all stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: list[subprocess.Popen[Any]] = []

    def spawn(self, name: str, argv: list[str], core: int | None = None, pipes: bool = False
              ) -> subprocess.Popen[Any]:
        def prepare() -> None:
            raise_fd_limit()
            if core is not None:
                os.sched_setaffinity(0, {core})

        log: IO[bytes] = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the child)
        proc = subprocess.Popen(
            argv, preexec_fn=prepare, env={**os.environ, **kit.ONE_THREAD},
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log, stderr=log, text=pipes,
        )
        log.close()
        self.children.append(proc)
        return proc

    def tail(self, name: str) -> str:
        lines = (self.root / f"{name}.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def stop(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_port(port: int, proc: subprocess.Popen[Any], what: str, procs: Processes, name: str) -> None:
    deadline = time.monotonic() + 60
    while not kit.port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(f"{what} did not start: {procs.tail(name)}")
        time.sleep(0.05)


class Worker:
    """One door process, driven over its stdin/stdout."""

    def __init__(self, proc: subprocess.Popen[Any], index: int) -> None:
        self.proc = proc
        self.index = index

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise click.ClickException(f"door worker {self.index} died")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise click.ClickException(f"door worker {self.index}: {answer['error']}")
        return answer


def ask_all(workers: list[Worker], command: dict[str, Any]) -> list[dict[str, Any]]:
    for w in workers:
        w.send(command)
    return [w.receive() for w in workers]


# ------------------------------------------------------------------ the run


class Run:
    def __init__(self, opts: dict[str, Any], root: Path) -> None:
        self.opts = opts
        self.root = root
        self.procs = Processes(root)
        self.hub_pids: list[int] = []
        self.workers: list[Worker] = []
        self.version = 0
        self.database: str | None = None  # the PostgreSQL database's name (--store postgresql)

    def hub_cpu(self) -> float:
        return sum(cpu_s(pid) for pid in self.hub_pids)

    def db_cpu(self) -> dict[int, float]:
        """CPU seconds of each PostgreSQL server process serving the run's database (none on
        SQLite): the hubs' pools grow under load, so a process is counted from its start."""
        if self.database is None:
            return {}
        import psycopg

        with psycopg.connect(self.opts["pg_url"], autocommit=True, connect_timeout=10) as admin:
            pids = [row[0] for row in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,))]
        seconds = {}
        for pid in pids:
            try:
                seconds[pid] = cpu_s(pid)
            except FileNotFoundError:  # its session ended between the query and the read
                continue
        return seconds

    def cpu_mark(self) -> tuple[float, dict[int, float]]:
        return self.hub_cpu(), self.db_cpu()

    def cpu_since(self, mark: tuple[float, dict[int, float]]) -> tuple[float, float]:
        """(hub, database) CPU seconds since `mark`."""
        hub = self.hub_cpu() - mark[0]
        return hub, sum(s - mark[1].get(pid, 0.0) for pid, s in self.db_cpu().items())

    def hub_rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.hub_pids)

    def start(self, setup: SqliteSetup) -> str:
        first, last = kit.cores()
        pin = self.opts["pin"] and first != last
        hub_cores = [c for c in sorted(os.sched_getaffinity(0)) if c != last] or [first]
        backends = []
        for k in range(self.opts["hubs"]):
            port = kit.free_port()
            name = f"hub{k}"
            proc = self.procs.spawn(name, [
                sys.executable, "-m", "doorkeeper", "hub", "serve", *setup.hub_args(k),
                "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off",
                "--beacon-interval", str(self.opts["beacon_interval"]),
            ], core=hub_cores[k % len(hub_cores)] if pin else None)
            wait_port(port, proc, f"hub replica {k}", self.procs, name)
            self.hub_pids.append(proc.pid)
            backends.append(f"127.0.0.1:{port}")
        if self.opts["balancer"]:
            port = kit.free_port()
            proxy = self.procs.spawn("balancer", [sys.executable, "-m", PROXY_ENTRY,
                                                  json.dumps({"port": port, "backends": backends})],
                                     core=last if pin else None)
            wait_port(port, proxy, "balancer", self.procs, "balancer")
            address = f"127.0.0.1:{port}"
        else:
            address = backends[0]  # the operator's; worker i dials replica i mod K directly
        n_workers = self.opts["workers"]
        shares = [setup.tokens[i::n_workers] for i in range(n_workers)]
        for i, tokens in enumerate(shares):
            dial = address if self.opts["balancer"] else backends[i % len(backends)]
            args = {"address": dial, "tokens": tokens, "core": last if pin else None,
                    "stream_nonces": self.opts["call_nonces"] == "stream",
                    "inline_bytes": INLINE_BUNDLE_BYTES if self.opts["delivery"] == "watch" else 0,
                    "decision_hours": self.opts["decision_hours"]}
            # Tokens are secrets: in a 0600 file of the run's directory, not on a command line.
            args_file = self.root / f"doors{i}.json"
            args_file.touch(0o600)
            args_file.write_text(json.dumps(args))
            proc = self.procs.spawn(f"doors{i}", [sys.executable, "-m", DOORS_ENTRY, str(args_file)],
                                    pipes=True)
            self.workers.append(Worker(proc, i))
        return address

    def change_figures(self, version: int, committed_at: float, cpu_before: tuple[float, dict[int, float]]
                       ) -> dict[str, Any]:
        answers = ask_all(self.workers, {"cmd": "wait", "version": version, "timeout": self.opts["timeout"]})
        cpu, db_cpu = self.cpu_since(cpu_before)
        times = [t - committed_at for a in answers for t in a["times"]]
        missing = sum(a["missing"] for a in answers)
        n = self.opts["devices"]
        errors: Counter[str] = Counter()
        for a in answers:
            errors.update(a["errors"])
        return {
            "errors_so_far": dict(errors),
            "version": version, "p50_s": percentile(times, 0.5), "p99_s": percentile(times, 0.99),
            "max_s": max(times) if times else float("nan"), "missing": missing,
            "hub_cpu_ms_per_device": cpu * 1000 / n,
            "db_cpu_ms_per_device": db_cpu * 1000 / n if self.database else None,
            "bytes_per_device": sum(a["bytes"] for a in answers) / n,
            "answers": answers,
        }

    def check_fleet(self, client: Any, version: int) -> int:
        """Doors whose signed report of `version` the hub recorded (Admin.Fleet)."""
        from doorkeeper.agent.sync.hubclient import ADMIN
        from doorkeeper.v1 import doorkeeper_pb2 as pb

        fleet = client.call(ADMIN + "Fleet", pb.FleetRequest(), timeout=60)
        return sum(1 for d in fleet.devices if d.reported_version == version and d.in_sync)


def run_fleet(opts: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
    from doorkeeper.tools.bench.sync_workers import MODEL_ID
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import keys
    from doorkeeper.wire import templates as tmpl

    root = Path(tempfile.mkdtemp(prefix="dk-bench-fleet-"))
    run = Run(opts, root)
    n = opts["devices"]
    database = ExitStack()
    try:
        setup: SqliteSetup
        if opts["store"] == "postgresql":
            url = database.enter_context(kit.throwaway_database(opts["pg_url"], "dk_fleet"))
            setup = PostgresSetup(root, n, url)
            run.database = url.rsplit("/", 1)[1]
        else:
            setup = SqliteSetup(root, n)
        address = run.start(setup)
        load_before = uptime()
        rss_before = run.hub_rss()
        # first_sync: from asking the doors to start (register, watch, first fetch) to each
        # door's first signed report at the site's version, and the hub CPU of all of it.
        start_wall, start_cpu = time.time(), run.cpu_mark()
        started = ask_all(run.workers, {"cmd": "start"})
        register_s = max(a["s"] for a in started)
        first = run.change_figures(setup.site_version(), start_wall, start_cpu)
        if first["missing"]:
            raise click.ClickException(f"{first['missing']} doors never completed their first sync")
        time.sleep(1.0)
        rss_connected = run.hub_rss()

        key = SigningKey(keys.read_private(setup.operator_key))
        operator = HubClient(address, keys.key_id(bytes(key.verify_key)), key, timeout_s=60)
        admin_ms = []
        for _ in range(opts["admin_calls"]):
            t0 = time.perf_counter()
            operator.call(ADMIN + "ListSites", pb.ListSitesRequest())
            admin_ms.append((time.perf_counter() - t0) * 1000)

        rng = np.random.default_rng(7)

        def person(name: str) -> Any:
            template = tmpl.encode(rng.standard_normal(512).astype(np.float32), MODEL_ID)
            return pb.AddPersonRequest(site=setup.site_id, name=name, templates=[template],
                                       consent="bench fleet: synthetic resident, no person behind it")

        changes = []
        for i in range(opts["changes"]):
            cpu0 = run.cpu_mark()
            answer = operator.call(ADMIN + "AddPerson", person(f"New {i}"))
            committed = time.time()
            changes.append(run.change_figures(answer.version, committed, cpu0))
            changes[-1]["fleet_in_sync"] = run.check_fleet(operator, answer.version)
            time.sleep(opts["settle"])

        big: dict[str, Any] | None = None
        if opts["big_persons"] > 0 and setup.direct_writes_wake:
            # PostgreSQL: the store's commit notifies every replica; the change is that commit.
            cpu0 = run.cpu_mark()
            big_version = setup.add_persons_directly(opts["big_persons"], "big")
            big = run.change_figures(big_version, time.time(), cpu0)
        elif opts["big_persons"] > 0:
            setup.add_persons_directly(opts["big_persons"] - 1, "big")
            cpu0 = run.cpu_mark()
            big_version = operator.call(ADMIN + "AddPerson", person("Big")).version
            big = run.change_figures(big_version, time.time(), cpu0)
        if big is not None:
            big["fleet_in_sync"] = run.check_fleet(operator, big_version)
            time.sleep(opts["settle"])

        ingest: dict[str, Any] = {}
        if opts["upload_batches"] > 0:
            upload_cpu0 = run.hub_cpu()
            t0 = time.perf_counter()
            uploads = ask_all(run.workers, {"cmd": "upload", "batches": opts["upload_batches"],
                                            "records": opts["batch_records"]})
            wall = time.perf_counter() - t0
            records = sum(a["records"] for a in uploads)
            ingest = {"records": records, "s": wall, "batch_records": opts["batch_records"],
                      "batches_per_device": opts["upload_batches"],
                      "hub_cpu_us_per_record": (run.hub_cpu() - upload_cpu0) * 1e6 / max(1, records)}
            last_answers = uploads
        else:  # the counters of the last phase that ran (they count from the start)
            last_answers = ([big] if big else changes or [first])[-1]["answers"]
        load_after = uptime()
        operator.close()
        ask_all(run.workers, {"cmd": "stop"})
    finally:
        run.procs.stop()
        database.close()  # after the hubs: DROP ... WITH (FORCE) would cut their sessions
        if not opts["keep"]:
            shutil.rmtree(root, ignore_errors=True)

    errors: Counter[str] = Counter()
    rpcs: Counter[str] = Counter()
    samples: dict[str, list[str]] = {}
    for a in last_answers:
        errors.update(a["errors"])
        rpcs.update(a["rpcs"])
        for key, seen in a.get("error_samples", {}).items():
            samples.setdefault(key, []).extend(seen[:3 - len(samples.get(key, []))])
    for c in [first, *changes, *([big] if big else [])]:
        c.pop("answers")
    result: dict[str, Any] = {
        "devices": n, "hubs": opts["hubs"], "store": opts["store"], "workers": opts["workers"],
        "call_nonces": opts["call_nonces"], "delivery": opts["delivery"],
        "decision_hours": opts["decision_hours"], "changes": opts["changes"],
        "apply_p50_s": statistics.median(c["p50_s"] for c in changes) if changes else None,
        "apply_p99_s": statistics.median(c["p99_s"] for c in changes) if changes else None,
        "apply_max_s": max(c["max_s"] for c in changes) if changes else None,
        "hub_cpu_ms_per_device_change": (statistics.median(c["hub_cpu_ms_per_device"] for c in changes)
                                         if changes else None),
        "bytes_per_device_change": (statistics.median(c["bytes_per_device"] for c in changes)
                                    if changes else None),
        "hub_rss_mb_per_1000_devices": (rss_connected - rss_before) / 2**20 / n * 1000,
        "admin_p50_ms": statistics.median(admin_ms) if admin_ms else None,
        "ingest_per_s": ingest["records"] / ingest["s"] if ingest else None,
        "ingest": ingest,
        "one_person_changes": changes,
        "big_change": {"persons": opts["big_persons"], **big} if big else None,
        "first_sync": first, "register_s": register_s,
        "errors": dict(errors), "error_samples": samples, "rpcs": dict(rpcs),
        "rpcs_per_device_change_note": "rpcs counts every call the doors made in the whole run",
        "uptime_before": load_before, "uptime_after": load_after,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "pinned": opts["pin"], "balancer": opts["balancer"],
    }
    if run.database:
        result["store_database"] = run.database
        result["db_cpu_ms_per_device_change"] = statistics.median(
            c["db_cpu_ms_per_device"] for c in changes) if changes else None
    bad = [c for c in changes if c["missing"] or c["fleet_in_sync"] != n]
    if bad:
        result["incomplete_changes"] = len(bad)
    return result


@click.command("fleet")
@click.option("--devices", default=500, show_default=True, help="Simulated doors.")
@click.option("--hubs", default=1, show_default=True, help="Hub replicas behind the balancer.")
@click.option("--store", type=click.Choice(["sqlite", "postgresql"]), default="sqlite",
              show_default=True)
@click.option("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", show_default=True,
              help="--store postgresql: an admin connection to the server the run makes its "
                   "throwaway database on (created for the run, dropped after).")
@click.option("--workers", type=int, default=0, help="Door processes (default: one per 1,000 doors, 1 to 4).")
@click.option("--changes", default=3, show_default=True, help="One-person changes to time.")
@click.option("--big-persons", default=1000, show_default=True,
              help="Persons in the one big change (0: skip it).")
@click.option("--upload-batches", default=5, show_default=True, help="Entry-log batches per door (0: skip).")
@click.option("--batch-records", default=10, show_default=True, help="Records per batch (door-sized).")
@click.option("--call-nonces", type=click.Choice(["stream", "challenge"]), default="stream",
              show_default=True,
              help="stream: call nonces ride the watch stream and the fetch (v1 extension); "
                   "challenge: a Challenge before every signed call (the old path).")
@click.option("--delivery", type=click.Choice(["watch", "fetch"]), default="watch", show_default=True,
              help="watch: small deltas ride the watch stream (WatchRequest.inline_bundle_bytes), "
                   "a change costs a door one Report; fetch: every door fetches every change (the "
                   "old path, and the path of bundles too big for the stream).")
@click.option("--decision-hours", default=24, show_default=True,
              help="Hours of decision counts in every door's manifest (a real door reports the "
                   "last 48 h with any decision; 0: none, as the simulator sent before).")
@click.option("--admin-calls", default=20, show_default=True)
@click.option("--beacon-interval", default=15.0, show_default=True)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for a change to land.")
@click.option("--settle", default=1.0, show_default=True, help="Seconds of quiet between changes.")
@click.option("--balancer/--no-balancer", default=True, show_default=True,
              help="--no-balancer: each door process dials one replica directly (process i: replica "
                   "i mod K), for fleets whose connections the balancer's file-descriptor limit "
                   "cannot hold (it needs two per door).")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Hubs on the first core(s), balancer on the last (with two or more cores).")
@click.option("--keep", is_flag=True, help="Keep the temp dir (logs, databases).")
@click.option("--json", "as_json", is_flag=True)
def fleet(as_json: bool, **opts: Any) -> None:
    """N real doors against K hub replicas behind a round-robin TCP balancer (see module doc)."""
    check_topology(opts["store"], opts["hubs"])
    if opts["devices"] < 1:
        raise click.BadParameter("--devices must be at least 1")
    opts["workers"] = opts["workers"] or min(4, max(1, round(opts["devices"] / 1000)))
    if not opts["balancer"] and opts["workers"] < opts["hubs"]:
        raise click.BadParameter("--no-balancer needs at least one door process per hub (--workers)")
    kit.emit(run_fleet(opts), as_json, "bench fleet")
