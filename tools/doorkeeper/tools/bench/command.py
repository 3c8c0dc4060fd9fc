"""`doorkeeper bench ...`: each benchmark lives in its own module."""

from __future__ import annotations

from doorkeeper.tools.cli import LazyGroup

bench = LazyGroup(
    name="bench",
    help="Measure speed and memory; prints JSON with --json (see BENCHMARKS.md).",
    lazy={
        "agent": ("doorkeeper.tools.bench.agent", "agent"),
        "sync": ("doorkeeper.tools.bench.sync", "sync"),
        "verify": ("doorkeeper.tools.bench.face", "verify"),
        "gallery": ("doorkeeper.tools.bench.face", "gallery"),
        "logs": ("doorkeeper.tools.bench.logs", "logs"),
        "logmask": ("doorkeeper.tools.bench.logmask", "logmask"),
        "soak": ("doorkeeper.tools.bench.soak", "soak_command"),
        "store": ("doorkeeper.tools.bench.store", "store"),
        "import": ("doorkeeper.tools.bench.importing", "import_command"),
        "durability": ("doorkeeper.tools.bench.durability", "durability"),
        "fleet": ("doorkeeper.tools.bench.fleet", "fleet"),
        "manifest": ("doorkeeper.tools.bench.manifest", "manifest"),
        "rollout": ("doorkeeper.tools.bench.rollout", "rollout"),
        "console": ("doorkeeper.tools.bench.console", "console_command"),
    },
)
