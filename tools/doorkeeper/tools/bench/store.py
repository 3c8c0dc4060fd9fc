"""`doorkeeper bench store`: what one hub store call costs on each backend.

Runs the calls every door or operator request makes (a nonce spent per signed call, a site
read per beacon, a one-person change with its audit entry and request id in one atomic block)
against a fresh SQLite file or a fresh PostgreSQL database (created on the given server and
dropped after), one at a time for the latency, then from several threads at once on one site
for the write throughput that site's row lock (PostgreSQL) or file lock (SQLite) allows.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from doorkeeper.hub.store import AuditEntry, CallRecord, ChangeSet, HubStore, PersonWrite, Site
from doorkeeper.tools.bench.kit import emit, throwaway_database
from doorkeeper.wire import digest


@contextmanager
def _store(backend: str) -> Iterator[HubStore]:
    if backend == "sqlite":
        from doorkeeper.hub.sqlite_store import SqliteHubStore

        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteHubStore(Path(tmp) / "hub.db")
            try:
                yield store
            finally:
                store.close()
        return
    from doorkeeper.hub.pg_store import PgHubStore

    with throwaway_database(backend) as url:
        pg = PgHubStore(url)
        try:
            yield pg
        finally:
            pg.close()


def _person(n: int) -> PersonWrite:
    payload = n.to_bytes(8, "big")
    return PersonWrite(f"{n:032x}", b"name", b"record" * 100 + payload, digest.record_hash(payload))


def _p50_ms(fn: Callable[[int], object], ops: int) -> float:
    times = []
    for i in range(ops):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


def run(backend: str, ops: int, threads: int) -> dict[str, object]:
    with _store(backend) as store:
        chash = digest.record_hash(b"config")
        store.create_site(Site("s1", "oak", 1, digest.state_digest(chash, []), 0, b"c", chash, 0))
        counter = iter(range(10**9))

        def change(_: int) -> None:
            n = next(counter)
            with store.atomic():
                store.get_site("s1")
                store.apply_changes("s1", ChangeSet(upserts=(_person(n),)), now=n)
                store.audit(AuditEntry(n, "bench", "person.add", ""))
                store.remember_call("bench", f"req-{n:08d}", CallRecord("m", b"h", b"r"), now=n)

        out: dict[str, object] = {
            "store": "sqlite" if backend == "sqlite" else "postgresql",
            "spend_nonce_p50_ms": _p50_ms(
                lambda i: store.spend_nonce("p", i.to_bytes(8, "big"), 1e12, time.time()), ops),
            "get_site_p50_ms": _p50_ms(lambda _: store.get_site("s1"), ops),
            "audited_change_p50_ms": _p50_ms(change, ops),
        }
        before = store.get_site("s1").version
        start = time.perf_counter()
        def writer() -> None:
            for _ in range(ops):
                change(0)

        workers = [threading.Thread(target=writer) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        made = store.get_site("s1").version - before
        assert made == ops * threads  # every change got its own version
        out[f"changes_per_s_{threads}_threads_one_site"] = round(made / elapsed, 1)
        return out


@click.command()
@click.option("--store", "backend", default="sqlite", show_default=True,
              help='"sqlite", or a postgresql:// URL of a server to create a throwaway database on.')
@click.option("--ops", default=200, show_default=True, help="Calls per figure.")
@click.option("--threads", default=4, show_default=True, help="Writers at once for the throughput figure.")
@click.option("--json", "as_json", is_flag=True)
def store(backend: str, ops: int, threads: int, as_json: bool) -> None:
    """Hub store call latency (p50) and one site's change throughput, SQLite or PostgreSQL."""
    if backend != "sqlite" and not backend.startswith(("postgresql://", "postgres://")):
        raise click.UsageError('--store must be "sqlite" or a postgresql:// URL')
    emit(run(backend, ops, threads), as_json, title="doorkeeper bench store")
