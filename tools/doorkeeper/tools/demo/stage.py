"""The stage the demo's story plays on, and the words it is told in.

`Stage` owns the demo directory and everything running in it: the hub process, the three
`Door`s, door-3's `LinkProxy`, the operator's command line (every `doorkeeper ...` command is
run as its own process and logged to ``logs/commands.log``), the expectations checked so far
and the live screen. The story itself (the eight steps) is `demostory.Demo`, a `Stage`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from doorkeeper.tools.demo.cast import Member
from doorkeeper.tools.demo.procs import SUCCESS, DemoError, Door, Proc, Seen, free_port, port_open
from doorkeeper.tools.demo.proxy import LinkProxy

SITE = "oak"
DOORS = ("door-1", "door-2", "door-3")
PROXIED = "door-3"  # its link to the hub runs through the LinkProxy
DIRECT = tuple(d for d in DOORS if d != PROXIED)
STEPS = 8


@dataclass
class Check:
    step: int
    what: str
    ok: bool


class Stage:
    """The demo's processes, commands, expectations and screen (see the module docstring)."""

    def __init__(self, work: Path, console: Console, quick: bool) -> None:
        self.work = work
        self.console = console
        self.quick = quick
        self.pace = 0.0 if quick else 0.6  # pauses a human can follow; --quick drops them
        self.port = free_port()
        self.hub_address = f"127.0.0.1:{self.port}"
        self.hub: Proc | None = None
        self.hub_up = False
        self.proxy: LinkProxy | None = None
        self.doors = {name: Door(name, work) for name in DOORS}
        self.cast: list[Member] = []
        self.labels: dict[str, str] = {}  # person id -> display label (agents know no names)
        self.checks: list[Check] = []
        self.seen: list[Seen] = []  # every decision the doors made for someone the demo showed them
        self.step_no = 0
        self.step_title = "starting"
        self.activity = ""
        self.activity_since = time.monotonic()
        self.blank = b""  # the empty door frame (JPEG)
        (work / "logs").mkdir()
        self._cmdlog = work / "logs" / "commands.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOORKEEPER_")}
        env.update(DOORKEEPER_HUB=self.hub_address,
                   DOORKEEPER_OPERATOR_KEY=str(work / "hub" / "operator.key"),
                   PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.env = env
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("starting", total=STEPS)

    # ------------------------------------------------------------------ plumbing
    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)  # a line stays one line in logs

    def busy(self, text: str) -> None:
        self.activity, self.activity_since = text, time.monotonic()

    def step(self, n: int, title: str) -> None:
        self.step_no, self.step_title = n, title
        self.progress.update(self.task, description=f"step {n}/{STEPS}: {title}", completed=n - 1)
        self.console.rule(f"[bold cyan]Step {n}/{STEPS} · {escape(title)}", align="left")

    def expect(self, ok: bool, what: str, failed: str | None = None) -> bool:
        """Record and show one expectation: ``what`` when it held, ``failed`` (or ``what``) if not."""
        text = what if ok or failed is None else failed
        self.checks.append(Check(self.step_no, text, ok))
        mark = "[green]✓[/]" if ok else "[bold red]✗ FAILED:[/]"
        self.say(f"  {mark} {escape(text)}")
        return ok

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.work)) if path.is_relative_to(self.work) else str(path)

    def shown(self, args: tuple[str | Path, ...]) -> str:
        """A command line as a person would type it, paths relative to the demo directory."""
        return "doorkeeper " + " ".join(self.rel(a) if isinstance(a, Path) else a for a in args)

    def spawn(self, name: str, *args: str | Path, on_line: Callable[[str, str], None] | None = None) -> Proc:
        """Start a long-running `doorkeeper ARGS` process (logged to logs/NAME.log)."""
        shown = self.shown(args)
        with open(self._cmdlog, "a", encoding="utf-8") as f:
            f.write(f"$ {shown} &   # output in logs/{name}.log\n")
        argv = [sys.executable, "-m", "doorkeeper", *map(str, args)]
        return Proc(name, argv, self.env, self.work, self.work / "logs" / f"{name}.log", on_line)

    def cli(self, *args: str | Path, check: bool = True,
            timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """Run `doorkeeper ARGS` as its own process (absolute paths; shown relative)."""
        argv = [str(a) for a in args]
        shown = self.shown(args)
        self.busy(f"$ {shown}")
        result = subprocess.run([sys.executable, "-m", "doorkeeper", *argv], env=self.env,
                                cwd=self.work, capture_output=True, text=True, timeout=timeout, check=False)
        with open(self._cmdlog, "a", encoding="utf-8") as f:
            f.write(f"$ {shown}\n{result.stdout}{result.stderr}# exit {result.returncode}\n")
        if check and result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise DemoError(f"`{shown[:80]}` failed (exit {result.returncode}): {last}")
        return result

    def cli_json(self, *args: str | Path) -> Any:
        return json.loads(self.cli(*args).stdout)

    def last_line(self, result: subprocess.CompletedProcess[str]) -> str:
        lines = result.stdout.strip().splitlines()
        if not lines:
            raise DemoError(f"no output from `{' '.join(map(str, result.args[3:6]))}`")
        return lines[-1].strip()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float,
             interval: float = 0.25) -> float | None:
        """Seconds until ``predicate()`` held, or None after ``timeout``."""
        self.busy(what)
        t0 = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(interval)

    def member(self, role: str, index: int = 0) -> Member:
        group = [m for m in self.cast if m.role == role]
        return group[index % len(group)]

    # ------------------------------------------------------------------ processes
    def start_hub(self) -> None:
        self.hub = self.spawn("hub", "hub", "serve", "--data", self.work / "hub",
                              "--listen", self.hub_address, "--beacon-interval", "2")
        listening = self.wait("waiting for the hub to listen",
                              lambda: port_open(self.port) or not self.hub_proc.running, 30)
        if listening is None or not self.hub_proc.running:
            raise DemoError(f"the hub did not start on {self.hub_address} (see logs/hub.log)")
        self.hub_up = True

    @property
    def hub_proc(self) -> Proc:
        assert self.hub is not None
        return self.hub

    def start_agent(self, door: Door) -> None:
        door.started_at = time.monotonic()
        door.proc = self.spawn(door.name, "agent", "run", "--data", door.data,
                               "--camera", f"hotfolder:{door.camera}", "--door", "sim",
                               "--card-reader", door.card_reader, "--poll-interval", "2",
                               "--heartbeat-interval", "2", "--upload-interval", "2",
                               # the demo maps ids to names on screen; doors log '-' by default
                               "--log-person-ids", "--metrics-listen", "off", on_line=door.on_line)

    def present(self, door_name: str, who: Member, want: str, note: str = "") -> Seen | None:
        """Two frames of ``who`` then an empty frame (or their card on the reader); returns
        the door's decision and checks it against ``want`` (granted to them, or refused)."""
        door = self.doors[door_name]
        while not door.events.empty():  # a decision nobody asked for: show it, do not count it
            stray = door.events.get_nowait()
            self.say(f"  [yellow]unexpected decision at {door_name}: {stray.result}[/]")
        if who.card:
            door.swipe(who.card)
        else:
            for jpeg in who.next_frames(2):
                door.drop(who.key, jpeg)
            door.drop("empty", self.blank)
        self.busy(f"{who.label} at {door_name}")
        timeout = 30.0
        deadline = time.monotonic() + timeout
        got: Seen | None = None
        while got is None and time.monotonic() < deadline:
            try:
                got = door.events.get(timeout=0.5)
            except queue.Empty:
                if not door.alive():
                    break
        if got is None:
            self.expect(False, f"{door_name} decided nothing for {who.label} within {timeout:.0f}s")
            return None
        if want == "granted":
            ok = got.result == "granted" and got.person_id == who.person_id
        else:
            ok = got.result != "granted"
        seen = replace(got, shown=who.label)
        door.decisions.append(seen)
        self.seen.append(seen)
        said = self.labels.get(seen.person_id, "no match") if seen.result == "granted" else seen.reason
        colour = "green" if seen.result == "granted" else "red"
        mark = "[green]✓[/]" if ok else "[bold red]✗ FAILED (expected " + want + ")[/]"
        self.say(f"  {mark} {door_name}  {escape(who.label):<30} → [{colour}]{seen.result.upper():<7}[/] "
                 f"{escape(said):<16} sim {seen.similarity_text}  {seen.latency_text:>6}  v{seen.version}  "
                 f"[dim]{escape(note)}[/]")
        self.checks.append(Check(self.step_no, f"{door_name}: {who.label} {want} ({note or 'decision'})", ok))
        if self.pace:
            time.sleep(self.pace)
        return seen

    def connected_apply(self, version: int, changed: float, why: str, timeout: float = 20.0) -> float:
        """Wait for the directly connected doors to decide on ``version``; the slower one's delay."""
        waits = []
        for name in DIRECT:
            door = self.doors[name]
            self.busy(f"waiting for {name} to apply v{version}")
            left = max(0.0, changed + timeout - time.monotonic())  # one deadline for both doors
            ok = door.wait_version(version, left)
            waits.append(time.monotonic() - changed)
            self.expect(ok, f"{name} applied v{version} {waits[-1]:.1f}s after the change{why}",
                        f"{name} did not apply v{version} within {timeout:.0f}s of the change "
                        f"(still v{door.version}; logs/{name}.log)")
        return round(max(waits), 2)

    def status(self, name: str, timeout: int = 2) -> dict[str, Any]:
        """`agent status --json` of one door (it reads the door's own files; ``timeout`` seconds
        for its probe of the hub)."""
        return dict(self.cli_json("agent", "status", "--data", self.doors[name].data, "--json",
                                  "--timeout", str(timeout)))

    def statuses(self) -> dict[str, dict[str, Any]]:
        """`agent status --json` of every door, in parallel."""
        with ThreadPoolExecutor(len(DOORS)) as pool:
            return dict(zip(DOORS, pool.map(self.status, DOORS), strict=True))

    def site(self) -> dict[str, Any]:
        rows = self.cli_json("site", "list", "--json")
        for row in rows:
            if row["name"] == SITE:
                return dict(row)
        raise DemoError(f"site {SITE} not in `site list`")

    def fleet(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.cli_json("fleet", "--site", SITE, "--json")}

    def status_table(self, statuses: dict[str, dict[str, Any]], site: dict[str, Any] | None) -> None:
        table = Table("door", "talks to", "hub reachable", "whitelist", "persons", "state digest",
                      "same as hub", title="agent status --json" + (" vs site list --json" if site else ""))
        for name, s in statuses.items():
            same = "-"
            if site is not None:
                ok = s["version"] == site["version"] and s["state_digest"] == site["state_digest"]
                same = "[green]yes[/]" if ok else "[red]no[/]"
            table.add_row(name, s["hub"] + (" (proxy)" if name == PROXIED else ""),
                          "[green]yes[/]" if s["hub_reachable"] else "[red]NO (offline)[/]",
                          f"v{s['version']}", str(s["persons"]), s["state_digest"][:16], same)
        if site is not None:
            table.add_row("[bold]hub", self.hub_address, "-", f"v{site['version']}", str(site["persons"]),
                          site["state_digest"][:16], "")
        self.console.print(table)

    def stop_all(self, report: bool = False) -> None:
        """Agents first (their final upload needs the hub), then the hub, then the proxy."""
        doors = [d for d in self.doors.values() if d.proc is not None]
        with ThreadPoolExecutor(max(1, len(doors))) as pool:
            hows = dict(zip([d.name for d in doors], pool.map(lambda d: d.proc.stop(15), doors), strict=True))
        hub_how = self.hub.stop(20) if self.hub is not None else "not started"
        self.hub_up = False
        if self.proxy is not None:
            self.proxy.close()
        if report:
            for name, how in hows.items():
                self.expect(how == "stopped by SIGTERM", f"{name} {how}")
            self.expect(hub_how == "stopped by SIGTERM", f"hub {hub_how}")
            for d in doors:
                self.expect(d.stdout_grants == sum(1 for s in d.decisions if s.result == "granted"),
                            f"{d.name} printed {d.stdout_grants} '{SUCCESS}' lines, one per grant")
                self.expect(not d.threads_died, f"{d.name}: no agent thread died",
                            f"{d.name}: agent thread(s) {', '.join(d.threads_died)} died with an "
                            f"exception (traceback in logs/{d.name}.log)")

    # ------------------------------------------------------------------ display
    def render(self) -> RenderableType:
        table = Table("door", "link", "whitelist", "in front of the door", "door says", "similarity",
                      "latency", "granted", "refused")
        for name, d in self.doors.items():
            last = d.decisions[-1] if d.decisions else None
            link = d.link if self.hub_up else f"{d.link}, hub down"
            link_style = "red" if "CUT" in link or "down" in link else "green"
            said = "-"
            if last is not None:
                said = (f"[green]GRANTED {escape(self.labels.get(last.person_id, ''))}[/]"
                        if last.result == "granted" else f"[red]{last.result.upper()}[/]")
            table.add_row(name, f"[{link_style}]{link}[/]", f"v{d.version}",
                          escape(last.shown) if last else "-", said,
                          last.similarity_text if last else "-", last.latency_text if last else "-",
                          str(sum(1 for s in d.decisions if s.result == "granted")),
                          str(sum(1 for s in d.decisions if s.result != "granted")))
        activity = Text(f"  {self.activity}  ({time.monotonic() - self.activity_since:.1f}s)", style="dim")
        return Group(self.progress, activity, table)

