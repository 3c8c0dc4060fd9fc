"""`doorkeeper demo`: the whole system, live, on this machine, in under two minutes.

Real: `doorkeeper hub serve` and three `doorkeeper agent run` processes on loopback (gRPC,
embedded SQLite, the real face models), every operator and data-owner step run as the same
`doorkeeper ...` command a person would type (logged to `commands.log`), door 3's network link
through a TCP proxy that the demo cuts and restores (`demoproxy.LinkProxy`).
Simulated: the cameras (image files dropped into each door's hot folder), the locks (the `sim`
door driver) and, without ``../shared/faces``, the faces in front of the doors: modified copies
of the enrolment crops from insightface's sample photo (said on screen).

The demo learns what happened only as a user would: from the agents' output lines (decisions,
whitelist swaps, loop statistics), `agent status --json`, `fleet --json`, `site list --json` and
the owner's `logs` commands. Each expectation is checked; the exit status is 0 only if all held,
and every failed one is named. Every process it started is stopped (SIGTERM, then SIGKILL) and
checked gone with psutil before it returns.

This module is the command (the demo directory, the live screen, the verdict and the cleanup);
the story's eight steps are `demostory`, the processes, commands, checks and screen they play on
`demostage`, the faces and door frames `democast`, child processes and the agents' output lines
`demoprocs`, and door-3's cuttable link `demoproxy`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from doorkeeper.tools.demo.cast import CastError
from doorkeeper.tools.demo.procs import DemoError, sweep_leftovers, terminate_as_interrupt
from doorkeeper.tools.demo.stage import STEPS
from doorkeeper.tools.demo.story import Demo


@click.command()
@click.option("--keep", is_flag=True,
              help="Keep the demo directory (logs, databases, frames) and print its path.")
@click.option("--quick", is_flag=True, help="No pauses and fewer frames (the same steps; for CI).")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run in this (new or empty) directory instead of a temporary one.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the timings as JSON on stdout (the show goes to stderr).")
@click.option("--console", "with_console", is_flag=True,
              help="Afterwards, leave the demo's hub running with a web console on it (prints its "
              "one-time login URL) until Ctrl-C.")
def demo(keep: bool, quick: bool, work_dir: Path | None, as_json: bool, with_console: bool) -> None:
    """The whole system live on loopback: a hub, three doors, residents, a cut link, a hub restart,
    convergence and the owner's logs. Exit status 0 only if every step's expectation held."""
    console = Console(stderr=as_json, highlight=False)
    if not console.is_terminal:
        console.width = 120  # a log file or CI: wide enough that the tables do not wrap
    created = False
    if work_dir is not None:
        work_dir = work_dir.resolve()
        if work_dir.exists() and any(work_dir.iterdir()):
            raise click.UsageError(f"--dir {work_dir} is not empty")
        created = not work_dir.exists()
        work_dir.mkdir(parents=True, exist_ok=True)
        work = work_dir
    else:
        work = Path(tempfile.mkdtemp(prefix="doorkeeper-demo-"))
        created = True
    console.print(f"[bold]doorkeeper demo[/] in {work}" + (" (quick)" if quick else ""))
    d = Demo(work, console, quick)
    error: str | None = None
    interrupted = False
    live = Live(console=console, get_renderable=d.render, refresh_per_second=4, transient=True) \
        if console.is_terminal else contextlib.nullcontext()
    with terminate_as_interrupt():
        try:
            with live:
                try:
                    d.run()
                except (DemoError, CastError) as exc:
                    error = f"step {d.step_no} ({d.step_title}): {exc}"
                except subprocess.TimeoutExpired as exc:
                    error = f"step {d.step_no} ({d.step_title}): a command took over {exc.timeout:.0f}s"
                except Exception as exc:  # a bug in the demo itself: say where, keep the evidence
                    (work / "logs" / "demo-error.log").write_text(traceback.format_exc())
                    error = (f"step {d.step_no} ({d.step_title}): {type(exc).__name__}: {exc} "
                             "(traceback in logs/demo-error.log)")
                finally:
                    d.stop_all()
        except KeyboardInterrupt:
            interrupted = True
            d.stop_all()
            error = "interrupted"
    left = sweep_leftovers(work)
    d.step_no = STEPS
    if error is None:
        d.expect(not left, "no process left running" + (f": {', '.join(left)}" if left else ""))
        d.summary()
    elif left:
        console.print(f"[red]processes were left running and were killed: {left}[/]")
    failed = [c for c in d.checks if not c.ok]
    ok = error is None and not failed
    if as_json:
        click.echo(json.dumps({"ok": ok, "quick": quick, "faces_dir": str(d.faces_dir or ""),
                               "timings": d.timings, "error": error,
                               "failed": [f"step {c.step}: {c.what}" for c in failed],
                               "checks": len(d.checks)}, indent=2, sort_keys=True))
    if with_console and ok:
        interrupted = not explore(d, console)
    elif with_console:
        console.print("[red]the demo failed: no console to explore it[/]")
    if keep or not ok:
        console.print(f"demo directory kept: {work} (logs/ has every process's output and commands.log "
                      "every command)")
    else:
        if created:
            shutil.rmtree(work, ignore_errors=True)
        else:  # --dir was empty: leave it empty
            for child in work.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    if interrupted:
        console.print("[bold red]demo interrupted[/]; every process it started has been stopped")
    elif error is not None:
        console.print(f"[bold red]demo FAILED at {escape(error)}[/]")
    for c in failed:
        console.print(f"[bold red]demo FAILED: step {c.step}: {escape(c.what)}[/]")
    if ok:
        console.print(f"[bold green]demo OK[/]: {len(d.checks)} expectations held "
                      f"in {d.timings.get('total_s')}s")
    if interrupted:
        sys.exit(130)
    sys.exit(0 if ok else 1)


def explore(d: Demo, console: Console) -> bool:
    """The demo's hub again (same data) with `doorkeeper console` on it, until Ctrl-C or SIGTERM.

    Returns False only if the hub could not be started again. Prints the login URL alone on a
    stdout line (with --json after the JSON document)."""
    import threading

    from doorkeeper.tools.console.app import make_console
    from doorkeeper.tools.console.command import start_in_thread
    from doorkeeper.tools.console.hubapi import HubAPI

    running = None
    with terminate_as_interrupt():
        try:
            d.start_hub()
            the_console = make_console(HubAPI(d.hub_address, d.work / "hub" / "operator.key"), poll_s=2.0)
            running = start_in_thread(the_console, "127.0.0.1", 0)
            console.print(f"[bold]demo hub[/] running on {d.hub_address} with a web console; "
                          "Ctrl-C stops both")
            click.echo(f"console login (works once): {running.login_url()}")
            sys.stdout.flush()
            threading.Event().wait()
        except DemoError as exc:
            console.print(f"[red]could not start the hub again for the console: {escape(str(exc))}[/]")
            return False
        except KeyboardInterrupt:
            console.print("console and hub stopped")
        finally:
            if running is not None:
                running.stop()
            d.stop_all()
    return True
