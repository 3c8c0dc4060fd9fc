"""`doorkeeper bench import`: persons enrolled per second by `person import`, from photos and
from template files, against a real hub process on loopback (SQLite file, gRPC, signed calls).

Templates: N random unit vectors saved as .npy files, one row each, N/2000 batches. Photos:
the shared test photos cycled under distinct names (with --allow-duplicate-face, since a
face repeats), templates computed here with the face models loaded once.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from doorkeeper.tools.bench.kit import emit, free_port
from doorkeeper.tools.bench.soak import _hub_process

PHOTOS = ("obama/obama1.jpg", "obama/obama2.jpg", "biden/biden1.jpg", "biden/biden2.jpg",
          "kit_harington/kit1.jpg", "rose_leslie/rose1.jpg", "alex_lacamoire/alex1.jpg",
          "lin_manuel_miranda/lin1.png")


def _faces_dir() -> Path:
    default = Path(__file__).resolve().parents[4].parent / "shared" / "faces"
    return Path(os.environ.get("DOORKEEPER_FACES_DIR", default))


def _run(address: str, operator_key: Path, site: str, csv_text: str, root: Path,
         allow: bool) -> dict[str, Any]:
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
    from doorkeeper.tools.cli import bulk
    from doorkeeper.wire import keys

    csv_path = root / f"{site}.csv"
    csv_path.write_text(csv_text)
    key = SigningKey(keys.read_private(operator_key))
    rows = bulk.read_rows(csv_path)
    with HubClient(address, keys.key_id(bytes(key.verify_key)), key, timeout_s=300) as client:
        began = time.perf_counter()
        summary = bulk.run_import(lambda r: client.call(ADMIN + "ImportPersons", r), site, rows,
                                  bulk.Templater(root, None), allow)
        seconds = time.perf_counter() - began
    return {"rows": len(rows), "imported": summary.count("imported"), "refused": summary.count("refused"),
            "batches": summary.batches, "seconds": round(seconds, 2),
            "seconds_making_templates": round(summary.seconds_templates, 2),
            "per_s": round(summary.count("imported") / seconds, 1)}


def bench_import(templates: int, photos: int, workdir: Path) -> dict[str, Any]:
    from nacl.signing import SigningKey

    from doorkeeper.agent.sync.hubclient import ADMIN, HubClient
    from doorkeeper.hub.server import init_hub
    from doorkeeper.v1 import doorkeeper_pb2 as pb
    from doorkeeper.wire import keys

    operator_key = init_hub(workdir / "hub")
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = _hub_process(workdir / "hub", port)
    try:
        key = SigningKey(keys.read_private(operator_key))
        with HubClient(address, keys.key_id(bytes(key.verify_key)), key) as op:
            for site in ("templates", "photos"):
                op.call(ADMIN + "AddSite", pb.AddSiteRequest(name=site))
        out: dict[str, Any] = {}
        if templates:
            root = workdir / "t"
            root.mkdir()
            rng = np.random.default_rng(7)
            lines = ["name,template_file,consent"]
            for i in range(templates):
                np.save(root / f"{i}.npy", rng.standard_normal(512).astype(np.float32))
                lines.append(f"Resident {i},{i}.npy,bench consent {i}")
            run = _run(address, operator_key, "templates", "\n".join(lines) + "\n", root, False)
            out["templates"] = run
            out["templates_per_s"] = run["per_s"]
            out["templates_50k_estimate_s"] = round(50_000 / run["per_s"], 1) if run["per_s"] else None
        if photos:
            faces = _faces_dir()
            lines = ["name,photo,consent"] + [
                f"Photo resident {i},{PHOTOS[i % len(PHOTOS)]},bench consent {i}" for i in range(photos)]
            run = _run(address, operator_key, "photos", "\n".join(lines) + "\n", faces, True)
            out["photos"] = run
            out["photos_per_s"] = run["per_s"]
        return out
    finally:
        proc.terminate()
        proc.wait(60)


@click.command("import")
@click.option("--templates", default=5000, show_default=True, help="Persons from template files (0 = skip).")
@click.option("--photos", default=40, show_default=True, help="Persons from photos (0 = skip).")
@click.option("--json", "as_json", is_flag=True)
def import_command(templates: int, photos: int, as_json: bool) -> None:
    """Persons enrolled per second by `person import` (photos_per_s, templates_per_s)."""
    with tempfile.TemporaryDirectory(prefix="dk-bench-import-") as tmp:
        result = bench_import(templates, photos, Path(tmp))
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    emit(result, as_json, "person import")
