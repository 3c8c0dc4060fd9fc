"""Writers that run on the power-loss disk and say what they were told is stored.

`python -m doorkeeper.tools.powerloss.workers KIND ARGS...` writes in a loop and prints one
line per acknowledged write, flushed, *after* the write returned: ``A <key> <content>``. The
trial (`trials.py`) reads these lines, cuts the power, and compares them with what is on the
disk afterwards. A line printed means the program would have told its caller "stored".

- ``sqlite DB SYNCHRONOUS JOURNAL_MODE``: plain SQLite inserts (validates the file system).
- ``outbox DIR``: the agent's entry-log outbox (`Outbox.append`).
- ``whitelist AGENT_DIR``: the agent's sync loop; one line per version applied.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

READY = "R"


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def sqlite_worker(db: Path, synchronous: str, journal_mode: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS records(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    say(READY)
    tag = os.getpid()
    i = 0
    while True:
        body = f"{tag}-{i}"
        cur = conn.execute("INSERT INTO records(body) VALUES (?)", (body,))
        say("A", cur.lastrowid, body)
        i += 1


def outbox_worker(root: Path) -> None:
    from doorkeeper.tools.powerloss.trials import OutboxRig

    rig = OutboxRig(root)
    outbox = rig.open()
    say(READY)
    tag = os.getpid()
    i = 0
    while True:
        entry = rig.entry(f"p{tag}-{i}")
        result = outbox.append(entry)
        if result.written:
            say("A", result.seq, entry.person_id)
        i += 1


def whitelist_worker(agent_dir: Path) -> None:
    from doorkeeper.agent.sync.identity import AgentFiles
    from doorkeeper.agent.sync.syncer import Syncer
    from doorkeeper.agent.sync.whitelist import LocalWhitelist

    files = AgentFiles(agent_dir)
    whitelist = LocalWhitelist(files.whitelist, files.storage_key())
    syncer = Syncer(files, whitelist)
    say(READY)
    while True:
        result = syncer.sync_once()
        if result.outcome == "applied":
            say("A", result.version, whitelist.state_digest.hex())
        elif not result.ok:
            time.sleep(0.05)


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "sqlite":
        sqlite_worker(Path(args[0]), args[1], args[2])
    elif kind == "outbox":
        outbox_worker(Path(args[0]))
    elif kind == "whitelist":
        whitelist_worker(Path(args[0]))
    else:
        raise SystemExit(f"unknown worker {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
