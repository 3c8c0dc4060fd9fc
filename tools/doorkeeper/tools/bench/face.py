"""`doorkeeper bench verify` and `doorkeeper bench gallery`: face latency and memory.

Each measurement runs in a fresh Python subprocess pinned to one CPU core, with
onnxruntime at one intra-op thread and BLAS/OpenMP limited to one thread through
the environment (numpy's OpenBLAS reads it at import, so it must be set before
the process starts; threadpoolctl is not a dependency). Resident memory is read
with psutil inside that fresh process, so it is the real figure.

verify: frame-to-decision latency on a 1280x720 frame made by letterboxing a real
photo from ../shared/faces (face large, as at a door). Ours: detect at the
engine's det size, pick the main face, gate, align, embed, search a 10,000-template
gallery, decide. Baseline, same run, same model files: insightface's own
FaceAnalysis pointed at a folder holding just those two files, det_size 640,
embedding every face.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from doorkeeper.tools.bench.kit import cores, emit, pin, run_worker

REPO = Path(__file__).resolve().parents[4]  # tools/doorkeeper/tools/<pkg>/<module>.py
FACES_DIR = Path(os.environ.get("DOORKEEPER_FACES_DIR", REPO.parent / "shared" / "faces"))
FRAME_PHOTO = "obama/obama1.jpg"
FRAME_SIZE = (1280, 720)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def _run_worker(task: str, args: dict[str, Any]) -> dict[str, Any]:
    return run_worker("doorkeeper.tools.bench.face", task, args, label="bench", timeout=600)


def _pin_one_core() -> int:
    return pin(cores()[1])


def _door_frame(photo: Path) -> Any:
    """The photo scaled to the frame height and centred on a 1280x720 grey canvas."""
    import cv2
    import numpy as np

    from doorkeeper.agent.face.engine import load_image

    image = load_image(photo)
    width, height = FRAME_SIZE
    scale = min(height / image.shape[0], width / image.shape[1])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.full((height, width, 3), 127, dtype=np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


def _random_templates(count: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 512), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _worker_verify(args: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
    from doorkeeper.agent.face.gallery import Gallery
    from doorkeeper.agent.face.quality import check_frame, enrol

    core = _pin_one_core()
    faces = Path(args["faces"])
    frame = _door_frame(faces / FRAME_PHOTO)
    engine = FaceEngine(EngineConfig(det_size=args["det_size"]))
    [resident] = enrol(engine, [faces / "obama" / "obama2.jpg"])
    vectors = _random_templates(args["gallery"] - 1, seed=7)
    gallery = Gallery.build(
        engine.model_id,
        ((f"p{i}", engine.model_id, v) for i, v in enumerate(vectors)),
        expected=args["gallery"],
    )
    gallery.add("resident", engine.model_id, resident.embedding)

    def ours() -> str:
        check = check_frame(engine, frame)
        if not check.ok or check.aligned is None:
            return f"refused:{check.reason}"
        match = gallery.search(engine.embed_aligned(check.aligned))
        return match.person_id or f"refused:{match.reason}"

    from insightface.app import FaceAnalysis

    with tempfile.TemporaryDirectory() as folder:
        for path in (engine.files.detector, engine.files.recognizer):
            os.symlink(path, Path(folder) / path.name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        app = FaceAnalysis(name=folder, providers=["CPUExecutionProvider"], sess_options=options)
        app.prepare(ctx_id=-1, det_size=(640, 640))

        def theirs() -> int:
            return len(app.get(frame))

        decision = ours()
        found = theirs()
        for _ in range(3):  # warm-up: first runs allocate arenas
            ours()
            theirs()
        mine: list[float] = []
        base: list[float] = []
        for _ in range(args["frames"]):  # interleaved, so drift hits both equally
            start = time.perf_counter()
            ours()
            mine.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            theirs()
            base.append((time.perf_counter() - start) * 1000)
    p50, bp50 = statistics.median(mine), statistics.median(base)
    return {
        "p50_ms": round(p50, 2),
        "p99_ms": round(_percentile(mine, 99), 2),
        "baseline_p50_ms": round(bp50, 2),
        "baseline_p99_ms": round(_percentile(base, 99), 2),
        "ratio": round(p50 / bp50, 3),
        "frames": args["frames"],
        "det_size": args["det_size"],
        "baseline_det_size": 640,
        "gallery_templates": len(gallery),
        "decision": decision,
        "baseline_faces": found,
        "frame": f"{FRAME_PHOTO} letterboxed to {FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
        "cpu": core,
        "model_id": engine.model_id,
    }


def _worker_search(args: dict[str, Any]) -> dict[str, Any]:
    from doorkeeper.agent.face.gallery import Gallery

    _pin_one_core()
    n = args["templates"]
    vectors = _random_templates(n, seed=11)
    gallery = Gallery.build("bench", ((f"p{i}", "bench", v) for i, v in enumerate(vectors)),
                            expected=n)
    queries = _random_templates(args["queries"], seed=12)
    gallery.search(queries[0])  # builds the int8 index once, as the agent's first frame would
    times = []
    for query in queries:
        start = time.perf_counter()
        gallery.search(query)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(statistics.median(times), 3),
            "p99_ms": round(_percentile(times, 99), 3)}


def _worker_rss(args: dict[str, Any]) -> dict[str, Any]:
    import psutil

    from doorkeeper.agent.face.engine import FaceEngine
    from doorkeeper.agent.face.gallery import Gallery
    from doorkeeper.agent.face.quality import check_frame

    _pin_one_core()
    engine = FaceEngine()
    n = args["persons"]
    gallery = Gallery.build(
        engine.model_id,
        ((f"p{i}", engine.model_id, v) for i, v in enumerate(_random_templates(n, seed=13))),
        expected=n,
    )
    frame = _door_frame(Path(args["faces"]) / FRAME_PHOTO)
    for _ in range(3):  # the sessions' arenas grow on first runs: count them
        check = check_frame(engine, frame)
        if check.aligned is not None:
            gallery.search(engine.embed_aligned(check.aligned))
    return {"rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1), "persons": n}


_WORKERS = {"_verify": _worker_verify, "_search": _worker_search, "_rss": _worker_rss}


def faces_dir() -> Path:
    """The test photos (../shared/faces or DOORKEEPER_FACES_DIR); ClickException when absent."""
    if not (FACES_DIR / FRAME_PHOTO).is_file():
        raise click.ClickException(f"face photos not found at {FACES_DIR} (set DOORKEEPER_FACES_DIR)")
    return FACES_DIR


@click.command()
@click.option("--frames", default=100, show_default=True, help="Timed frames per path.")
@click.option("--det-size", default=None, type=int, help="Detector input (default: engine's).")
@click.option("--gallery", "gallery_size", default=10_000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def verify(frames: int, det_size: int | None, gallery_size: int, as_json: bool) -> None:
    """Frame-to-decision latency, ours vs insightface FaceAnalysis, one core."""
    from doorkeeper.agent.face.engine import DEFAULT_DET_SIZE

    args = {"faces": str(faces_dir()), "frames": max(1, frames),
            "det_size": det_size or DEFAULT_DET_SIZE, "gallery": max(2, gallery_size)}
    emit(_run_worker("_verify", args), as_json)


@click.command()
@click.option("--templates", default=100_000, show_default=True)
@click.option("--queries", default=200, show_default=True)
@click.option("--persons", default=10_000, show_default=True, help="Gallery size for RSS.")
@click.option("--json", "as_json", is_flag=True)
def gallery(templates: int, queries: int, persons: int, as_json: bool) -> None:
    """1:N search p50 over random templates, and agent RSS with a whitelist, one core."""
    search = _run_worker("_search", {"templates": max(2, templates), "queries": max(1, queries)})
    rss = _run_worker("_rss", {"persons": max(1, persons), "faces": str(faces_dir())})
    result = {
        "search_100k_p50_ms": search["p50_ms"],
        "search_p99_ms": search["p99_ms"],
        "templates": templates,
        "rss_10k_mb": rss["rss_mb"],
        "persons": persons,
    }
    emit(result, as_json)


if __name__ == "__main__":
    task, raw = sys.argv[1], sys.argv[2]
    print(json.dumps(_WORKERS[task](json.loads(raw))))
