"""The demo's story: eight steps on the `Stage`, each ending in checked expectations.

1. a hub, site oak, three registered doors (door-3 through the `LinkProxy`), residents enrolled;
2. the doors start, load the whitelist and verify residents and strangers;
3. door-3's link is shown to run through the proxy;
4. the link is cut; a resident is revoked and a newcomer added: door-1/2 apply it, door-3
   keeps deciding on its last whitelist;
5. the hub is stopped (the doors keep deciding) and restarted; a card holder is added;
6. the link is restored and every door converges on the hub's version and digest;
7. the entry logs are uploaded, pulled, decrypted and verified with the owner's key;
8. everything stops; `summary` prints the per-door results and the timings.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from doorkeeper.tools.demo.cast import CastBuilder, Member, find_faces_dir
from doorkeeper.tools.demo.proxy import LinkProxy
from doorkeeper.tools.demo.stage import DIRECT, DOORS, PROXIED, SITE, STEPS, Stage

CONSENT = "demo resident, consent form signed at the site office"

class Demo(Stage):
    """The story: eight steps on the `Stage`, each ending in checked expectations."""

    def __init__(self, work: Path, console: Console, quick: bool) -> None:
        super().__init__(work, console, quick)
        self.started = time.monotonic()
        self.faces_dir = find_faces_dir()
        self.timings: dict[str, Any] = {}
        self.target_version = 0  # the version every door must reach after the outage
        self.final_status: dict[str, dict[str, Any]] = {}
        self.uploaded: Counter[str] = Counter()

    def run(self) -> None:
        self.setup()
        self.enrol()
        self.verify()
        self.link()
        self.cut_and_change()
        self.hub_outage()
        self.restore()
        self.logs()
        self.shutdown()

    def setup(self) -> None:
        self.step(1, "hub, site, doors and residents")
        t0 = time.monotonic()
        self.cli("hub", "init", "--data", self.work / "hub")
        self.start_hub()
        self.say(f"  hub serving on {self.hub_address} (process {self.hub_proc.pid}, SQLite in hub/)")
        self.cli("site", "add", SITE)
        self.cli("site", "owner-key", "--site", SITE, "--out", self.work / "owner.key")
        self.say("  site [bold]oak[/] created; the data owner's log key pair is owner.key "
                 "(private, kept off the hub)")
        self.proxy = LinkProxy(self.hub_address).start()
        self.doors[PROXIED].link = "proxy"

        def register(name: str) -> None:
            token = self.last_line(self.cli("device", "add", "--site", SITE, "--name", name))
            address = self.proxy.address if name == PROXIED and self.proxy else self.hub_address
            self.cli("agent", "init", "--data", self.doors[name].data, "--token", token, "--hub", address)

        with ThreadPoolExecutor(len(DOORS)) as pool:
            list(pool.map(register, DOORS))
        self.say(f"  3 doors registered with one-time tokens; {PROXIED} through the demo's TCP proxy "
                 f"{self.proxy.address}")
        self.timings["setup_s"] = round(time.monotonic() - t0, 2)

    def enrol(self) -> None:
        self.busy("cropping faces, preparing door frames")
        t0 = time.monotonic()
        builder = CastBuilder(self.work, frames_per_member=3 if self.quick else 5)
        self.cast, notes = builder.build(self.faces_dir)
        self.blank = builder.blank_frame()
        del builder  # the demo's own face engine is not needed any more
        self.timings["cast_preparation_s"] = round(time.monotonic() - t0, 2)
        self.cast.append(Member("card", "Cleaner (card only)", "cardholder", "card 40123456, no face scan",
                                "-", card="40123456"))
        table = Table("who", "role", title="cast")
        table.add_column("enrolled from", overflow="fold")
        table.add_column("door frames", overflow="fold")
        for m in self.cast:
            role = {"newcomer": "added in step 4", "cardholder": "added in step 5"}.get(m.role, m.role)
            table.add_row(m.label, role, m.origin, f"{len(m.frames)} · {m.frames_from}" if m.frames else "-")
        self.console.print(table)
        for note in notes:
            self.say(f"  [yellow]note:[/] {escape(note)}")
        self.say(f"  photos and frames live only in {self.work}/photos and cameras/, never in the repository")
        residents = [m for m in self.cast if m.role == "resident"]
        t0 = time.monotonic()

        def add(m: Member) -> None:
            assert m.photo is not None
            m.person_id = self.last_line(self.cli("person", "add", "--site", SITE, "--name", m.label,
                                                  "--photo", m.photo, "--consent", CONSENT))
            self.labels[m.person_id] = m.label

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(add, residents))
        took = time.monotonic() - t0
        self.timings["enrolment_s"] = round(took, 2)
        self.timings["enrolment_persons"] = len(residents)
        self.say(f"  enrolled {len(residents)} residents with `person add --photo` in {took:.1f}s "
                 "(templates computed here; photos never leave this machine)")
        self.expect(all(m.person_id for m in residents), "every resident has a person id")

    def verify(self) -> None:
        self.step(2, "three doors start and verify faces")
        site = self.site()
        for door in self.doors.values():
            self.start_agent(door)
        for door in self.doors.values():
            ok = door.wait_version(site["version"], 60)
            self.expect(ok, f"{door.name} loaded whitelist v{site['version']} ({site['persons']} persons)",
                        f"{door.name} did not load whitelist v{site['version']} within 60s "
                        f"(logs/{door.name}.log)")
        firsts = {d.name: round((d.first_view_at or time.monotonic()) - d.started_at, 2)
                  for d in self.doors.values()}
        self.timings["first_sync_s"] = max(firsts.values())
        self.timings["first_sync_per_door_s"] = firsts
        per_door = ", ".join(f"{k} {v:.1f}s" for k, v in firsts.items())
        self.say(f"  agent start → first whitelist applied: {per_door} (includes loading the face models)")
        x, r1, r2 = self.member("resident", 0), self.member("resident", 1), self.member("resident", 2)
        s1, s2 = self.member("stranger", 0), self.member("stranger", 1)
        self.present("door-1", x, "granted")
        self.present("door-1", s1, "refused", "not enrolled")
        self.present("door-2", r1, "granted")
        self.present("door-2", s2, "refused", "not enrolled")
        self.present("door-3", x, "granted", "via proxy")
        self.present("door-3", r2, "granted", "via proxy")
        # Frames nobody checked beforehand: the door's recognition alone decides these two.
        grant, stranger = self.member("unchecked-resident"), self.member("unchecked-stranger")
        grant.person_id = next(m.person_id for m in self.cast if m.key == grant.same_as)
        self.present("door-1", grant, "granted", "frame not pre-checked")
        self.present("door-2", stranger, "refused", "frame not pre-checked")

    def link(self) -> None:
        self.step(3, "door-3's link runs through a proxy the demo controls")
        assert self.proxy is not None
        st = self.statuses()
        self.status_table(st, self.site())
        self.expect(st[PROXIED]["hub"] == self.proxy.address,
                    f"{PROXIED} knows the hub as {self.proxy.address}")
        self.expect(all(s["hub_reachable"] for s in st.values()), "every door reaches the hub")
        self.expect(self.proxy.live_connections > 0,
                    f"{PROXIED} holds {self.proxy.live_connections} live connection(s) through the proxy")

    def cut_and_change(self) -> None:
        self.step(4, f"cut {PROXIED}'s link; revoke a resident and add one at the hub")
        assert self.proxy is not None
        old = self.site()
        n = self.proxy.cut()
        self.doors[PROXIED].link = "CUT"
        self.say(f"  [bold red]link cut[/]: {n} live connection(s) reset; new ones refused")
        x, newcomer = self.member("resident", 0), self.member("newcomer")
        assert newcomer.photo is not None
        self.cli("person", "remove", x.person_id)
        self.say(f"  revoked {x.label} (`person remove`)")
        newcomer.person_id = self.last_line(self.cli("person", "add", "--site", SITE,
                                                     "--name", newcomer.label, "--photo", newcomer.photo,
                                                     "--consent", CONSENT))
        self.labels[newcomer.person_id] = newcomer.label
        changed = time.monotonic()
        site = self.site()
        self.target_version = site["version"]
        self.say(f"  added {newcomer.label} (`person add --photo`); "
                 f"site oak v{old['version']} → v{site['version']}")
        self.timings["propagation_s"] = self.connected_apply(site["version"], changed, "")
        st = self.statuses()
        self.status_table(st, site)
        self.expect(not st[PROXIED]["hub_reachable"], f"{PROXIED} says the hub is unreachable (offline)")
        self.expect(st[PROXIED]["version"] == old["version"],
                    f"{PROXIED} keeps its last whitelist v{st[PROXIED]['version']}")
        fleet = self.fleet()
        self.expect(not fleet[PROXIED]["in_sync"] and all(fleet[d]["in_sync"] for d in DIRECT),
                    f"`fleet` (what doors reported): door-1/2 in sync at v{site['version']}, "
                    f"{PROXIED} still reports v{fleet[PROXIED]['reported_version']}")
        self.present("door-1", x, "refused", "revoked")
        self.present("door-2", newcomer, "granted", "newly added")
        self.present("door-3", x, "granted", "OFFLINE: last whitelist still admits the revoked resident")
        self.present("door-3", newcomer, "refused", "OFFLINE: does not know the newcomer yet")

    def hub_outage(self) -> None:
        self.step(5, "stop the hub; doors keep deciding; restart it; one more change")
        t0 = time.monotonic()
        how = self.hub_proc.stop(timeout=20)
        self.hub_up = False
        self.timings["hub_stop_s"] = round(time.monotonic() - t0, 2)
        self.expect(how == "stopped by SIGTERM", f"hub {how} in {self.timings['hub_stop_s']:.1f}s "
                    "(graceful: in-flight calls finish)")
        down = time.monotonic()
        self.present("door-1", self.member("resident", 1), "granted", "hub down")
        self.present("door-2", self.member("stranger", 0), "refused", "hub down")
        self.present("door-3", self.member("resident", 2), "granted", "hub down, link cut")
        st = self.status("door-1", timeout=1)
        self.expect(not st["hub_reachable"], "door-1 says the hub is unreachable while it is down")
        self.timings["hub_down_s"] = round(time.monotonic() - down, 2)
        restart_wall = time.time()
        t0 = time.monotonic()
        self.start_hub()
        self.say(f"  hub restarted (process {self.hub_proc.pid}) on the same address and database")
        since = math.ceil(restart_wall)

        def back() -> bool:
            f = self.fleet()
            return all(f[d]["last_seen"] >= since and f[d]["in_sync"] for d in DIRECT)

        took = self.wait("waiting for door-1 and door-2 to report to the new hub process", back, 45, 0.5)
        self.expect(took is not None, "door-1 and door-2 reported in sync to the restarted hub"
                    + (f" {time.monotonic() - t0:.1f}s after the restart" if took is not None else ""))
        self.timings["hub_reconnect_s"] = round(time.monotonic() - t0, 2)
        card = self.member("cardholder")
        card.person_id = self.last_line(self.cli("person", "add", "--site", SITE, "--name", card.label,
                                                 "--card", card.card))
        self.labels[card.person_id] = card.label
        changed = time.monotonic()
        site = self.site()
        self.target_version = site["version"]
        self.say(f"  added {card.label} (`person add --card`, no photo); site oak now v{site['version']}")
        self.timings["propagation_after_restart_s"] = self.connected_apply(
            site["version"], changed, " (its sync survived the hub restart)")
        self.present("door-1", card, "granted", "card; declined face scanning")
        self.present("door-3", card, "refused", "OFFLINE: card not on its whitelist yet")

    def restore(self) -> None:
        self.step(6, f"restore {PROXIED}'s link; every door converges")
        assert self.proxy is not None
        self.proxy.restore()
        self.doors[PROXIED].link = "proxy"
        t0 = time.monotonic()
        self.busy(f"waiting for {PROXIED} to catch up")
        ok = self.doors[PROXIED].wait_version(self.target_version, 45)
        took = time.monotonic() - t0
        self.timings["convergence_after_outage_s"] = round(took, 2)
        self.expect(ok, f"{PROXIED} applied v{self.target_version} {took:.1f}s after the link came back",
                    f"{PROXIED} did not apply v{self.target_version} within 45s of the link coming back "
                    f"(still v{self.doors[PROXIED].version}; logs/{PROXIED}.log)")
        if ok:
            self.wait("waiting for every door to report in sync",
                      lambda: all(r["in_sync"] for r in self.fleet().values()), 30, 0.5)
        site = self.site()
        st = self.statuses()
        self.final_status = st
        self.status_table(st, site)
        for name, s in st.items():
            held = f"v{s['version']}, digest {s['state_digest'][:12]}"
            self.expect(s["version"] == site["version"] and s["state_digest"] == site["state_digest"]
                        and s["hub_reachable"], f"{name}: {held} = the hub's",
                        f"{name} holds {held}, the hub v{site['version']}, "
                        f"digest {site['state_digest'][:12]}")
        self.present("door-3", self.member("resident", 0), "refused", "revocation arrived")
        self.present("door-3", self.member("newcomer"), "granted", "newcomer arrived")
        self.present("door-3", self.member("cardholder"), "granted", "card holder arrived")

    def logs(self) -> None:
        self.step(7, "entry logs: upload, pull, decrypt and verify with the owner key")
        last = max(s.at for s in self.seen)
        want = {name: len(d.decisions) for name, d in self.doors.items()}

        def uploaded() -> bool:
            f = self.fleet()
            return all(f[name]["logs_watermark"] >= n for name, n in want.items())

        took = self.wait("waiting for the doors to upload their entry logs", uploaded, 45, 0.5)
        self.timings["upload_s"] = round(time.monotonic() - last, 2)
        self.expect(took is not None, f"the hub holds every door's records ({sum(want.values())}) "
                    f"{self.timings['upload_s']:.1f}s after the last decision")
        export = self.work / "oak.dklogs"
        t0 = time.monotonic()
        self.cli("logs", "pull", "--site", SITE, "--out", export)
        owner = self.work / "owner.key"
        rows = json.loads(self.cli("logs", "decrypt", "--owner-key", owner, export, "--json").stdout)
        verify = self.cli("logs", "verify", "--owner-key", owner, export, check=False)
        self.timings["logs_pull_decrypt_verify_s"] = round(time.monotonic() - t0, 2)
        names = {d: n for n, d in ((n, s["device_id"]) for n, s in self.final_status.items())}
        door3 = [r for r in rows if names.get(r["device_id"]) == PROXIED]
        title = (f"logs decrypt --owner-key owner.key oak.dklogs: {len(rows)} entries, "
                 f"{PROXIED}'s {len(door3)} shown")
        table = Table("door", "seq", "decision", "credential", "person (owner's view)", "similarity",
                      "whitelist", "reason", title=title)
        for r in sorted(door3, key=lambda r: int(r["seq"])):
            table.add_row(names.get(r["device_id"], r["device_id"][:8]), str(r["seq"]), r["decision"],
                          r["credential"], self.labels.get(r["person_id"], "-"), f"{r['similarity']:.2f}",
                          f"v{r['whitelist_version']}", r["reason"])
        self.console.print(table)
        for line in verify.stdout.strip().splitlines():
            device = line.split(" device ")[-1].split(" ")[0] if " device " in line else ""
            self.say(f"  {escape(line.replace(device, names.get(device, device)) if device else line)}")
        self.uploaded = Counter(names.get(r["device_id"], "?") for r in rows)
        logged = Counter((names.get(r["device_id"], "?"), r["decision"], r["person_id"]) for r in rows)
        shown = Counter((s.door, s.result, s.person_id) for s in self.seen)
        self.expect(logged == shown,
                    f"the owner's log has exactly the {len(self.seen)} decisions the doors printed",
                    f"the owner's log ({len(rows)} entries) differs from what the doors printed "
                    f"({len(self.seen)} decisions)")
        gaps = [ln for ln in verify.stdout.splitlines() if not ln.endswith(" 0 gaps")]
        self.expect(verify.returncode == 0 and not gaps and verify.stdout.count("OK device") == len(DOORS),
                    "logs verify: every chain OK, 0 gaps")

    def shutdown(self) -> None:
        self.step(8, "stop everything; summary")
        self.stop_all(report=True)

    def summary(self) -> None:
        self.progress.update(self.task, completed=STEPS)
        table = Table("door", "link", "version", "digest", "granted", "denied", "unknown", "logs uploaded",
                      "loop p50 / p99", title="summary")
        for name, d in self.doors.items():
            st = self.final_status.get(name, {})
            results = Counter(s.result for s in d.decisions)
            loop = d.loop_stats
            table.add_row(name, "proxy" if name == PROXIED else "direct", f"v{st.get('version', d.version)}",
                          st.get("state_digest", "")[:12], str(results["granted"]), str(results["denied"]),
                          str(results["unknown"]), str(self.uploaded[name]),
                          f"{loop.get('p50_ms')} / {loop.get('p99_ms')} ms" if loop else "-")
        self.console.print(table)
        lat = sorted(s.latency_ms for s in self.seen if s.latency_ms is not None and s.credential == "face")
        if lat:
            self.timings["verify_latency_p50_ms"] = round(statistics.median(lat), 1)
            self.timings["verify_latency_max_ms"] = round(lat[-1], 1)
        loops = [d.loop_stats.get("p50_ms") for d in self.doors.values() if d.loop_stats]
        self.timings["loop_frame_p50_ms"] = [x for x in loops if x is not None]
        self.timings["decisions"] = len(self.seen)
        self.timings["total_s"] = round(time.monotonic() - self.started, 1)
        t = Table("timing", "value", title="timings")
        labels = [
            ("enrolment_s", "enrolment (`person add --photo`, parallel)", "s"),
            ("first_sync_s", "agent start → first whitelist applied (slowest door)", "s"),
            ("verify_latency_p50_ms", "verification latency p50 (frame → decision)", "ms"),
            ("propagation_s", "whitelist change → connected doors applied", "s"),
            ("hub_stop_s", "hub graceful stop", "s"),
            ("hub_reconnect_s", "hub restart → doors reporting in sync", "s"),
            ("propagation_after_restart_s", "change after the restart → connected doors applied", "s"),
            ("convergence_after_outage_s", f"{PROXIED} link restored → converged", "s"),
            ("upload_s", "last decision → every entry log at the hub", "s"),
            ("logs_pull_decrypt_verify_s", "logs pull + decrypt + verify", "s"),
            ("total_s", "whole demo", "s"),
        ]
        for key, label, unit in labels:
            if key in self.timings:
                t.add_row(label, f"{self.timings[key]} {unit}")
        self.console.print(t)
