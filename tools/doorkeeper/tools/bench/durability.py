"""`doorkeeper bench durability`: power cuts, not kills, against every store that acknowledges.

A SIGKILL keeps the kernel's page cache, so a kill-only test passes even with
`synchronous=OFF`. Here each store writes on the power-loss file system
(`doorkeeper.tools.powerloss`: unsynced data and names are dropped at a cut), is cut at a
random moment (after a random number, 1 to --records, of acknowledged writes; a few more may be
acknowledged while the cut lands), and is read back after the "reboot":

- hub: `AddPerson` through a real `doorkeeper hub serve` process over gRPC; acknowledged =
  (version, person id and name) answered to the operator;
- hub_logs: a door's outbox (off the disk) uploading to that hub process; acknowledged =
  (seq, person id) of every record at or below a `LogAck` watermark;
- agent_whitelist: the agent's sync loop (`Syncer.sync_once`) against a hub off the disk;
  acknowledged = every person published up to a version the agent applied;
- outbox: `Outbox.append`; acknowledged = (seq, person id) of each record reported written.

`lost` compares CONTENTS: an acknowledged key that is missing, or now holds something else,
is lost. `reissued_versions`: keys (version, seq) acknowledged twice with different contents.
`duplicated`: contents stored under two keys. `torn_cuts`: cuts that also wrote a random
fraction of the unsynced pages to disk first (the kernel may have written some back), leaving
files torn; the other cuts drop every unsynced page. The control (`sqlite_synchronous_off`) runs plain
SQLite inserts with synchronous=OFF on the same file system: it must lose, or the harness
proves nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench.kit import emit

STORES = ("hub", "hub_logs", "agent_whitelist", "outbox")


def run(cuts: int, records: int, seed: int, torn: bool) -> dict[str, Any]:
    from doorkeeper.tools.powerloss.mount import unavailable
    from doorkeeper.tools.powerloss.trials import TRIALS, sqlite_trial

    reason = unavailable()
    if reason:
        raise click.ClickException(f"the power-loss file system cannot run here: {reason}")
    result: dict[str, Any] = {
        "command": f"doorkeeper bench durability --cuts {cuts} --records {records} --seed {seed}"
                   f" {'--torn' if torn else '--clean'} --json",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
        "method": "power cuts on a FUSE file system that drops unsynced writes, renames and creations; "
                  "lost compares acknowledged contents with what is read back after the reboot",
    }
    with tempfile.TemporaryDirectory(prefix="dk-bench-durability-") as tmp:
        for store in STORES:
            t0 = time.perf_counter()
            tally = TRIALS[store](Path(tmp) / store, cuts, records, seed=seed, torn=torn)
            result[store] = {**tally.figures(), "seconds": round(time.perf_counter() - t0, 1)}
        control = sqlite_trial(Path(tmp) / "control", max(1, min(cuts, 5)), records,
                               synchronous="OFF", seed=seed, torn=torn)
        result["control_sqlite_synchronous_off"] = control.figures()
    for key in ("acknowledged", "lost", "duplicated", "reissued_versions"):
        result[key] = sum(result[store][key] for store in STORES)
    result["cuts"] = {store: result[store]["cuts"] for store in STORES}
    return result


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--cuts", default=20, show_default=True, help="Power cuts per store.")
@click.option("--records", default=50, show_default=True,
              help="At most this many acknowledged writes before each cut (the cut point is random).")
@click.option("--seed", default=0, show_default=True)
@click.option("--torn/--clean", default=True, show_default=True,
              help="--torn: about half the cuts also persist a random fraction of the unsynced pages "
                   "(torn files, as a real disk may leave); --clean: every cut drops them all.")
def durability(as_json: bool, cuts: int, records: int, seed: int, torn: bool) -> None:
    """Power-cut figures per store: acknowledged, lost, duplicated, reissued_versions, cuts."""
    emit(run(cuts, records, seed, torn), as_json, title="doorkeeper bench durability")
