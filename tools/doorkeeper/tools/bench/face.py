"""`doorkeeper bench verify` and `doorkeeper bench gallery`: face latency and memory.

Each measurement runs in a fresh Python subprocess pinned to one CPU core, with
onnxruntime at one intra-op thread and BLAS/OpenMP limited to one thread through
the environment (numpy's OpenBLAS reads it at import, so it must be set before
the process starts; threadpoolctl is not a dependency). Resident memory is read
with psutil inside that fresh process, so it is the real figure.

verify: frame-to-decision latency on a 1280x720 frame made by letterboxing a real
photo from ../shared/faces (face large, as at a door), at each detector size asked
(320 and 640 by default), ours and the baseline at the SAME size. Ours: detect,
pick the main face, gate, align, embed, search a 10,000-template gallery, decide.
Baseline, same run, same model files: insightface's own FaceAnalysis pointed at a
folder holding just those two files, embedding every face, then the largest face
searched in the same gallery. Every timed frame must decide the resident on both
paths (else the bench fails); a stranger's frame must be refused. The confirmed
decision is ``confirm_frames`` frames back to back, as the door confirms.
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

from doorkeeper.tools.bench.kit import cores, emit, pin, run_worker, stamp

REPO = Path(__file__).resolve().parents[4]  # tools/doorkeeper/tools/<pkg>/<module>.py
FACES_DIR = Path(os.environ.get("DOORKEEPER_FACES_DIR", REPO.parent / "shared" / "faces"))
FRAME_PHOTO = "obama/obama1.jpg"
STRANGER_PHOTO = "biden/biden1.jpg"
FRAME_SIZE = (1280, 720)
CONFIRM_FRAMES = 2  # the door's default (DoorOptions.confirm_frames)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def _run_worker(task: str, args: dict[str, Any]) -> dict[str, Any]:
    return run_worker("doorkeeper.tools.bench.face", task, args, label="bench", timeout=600,
                      core=cores()[1])


def _pin_one_core() -> list[int]:
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


def _timed(fn: Any, expect: str, what: str) -> float:
    """Milliseconds of one call of ``fn``; BenchError-like ClickException if it decided wrong."""
    start = time.perf_counter()
    got = fn()
    elapsed = (time.perf_counter() - start) * 1000
    if got != expect:
        raise click.ClickException(f"{what}: decided {got!r} on a timed frame, expected {expect!r}")
    return elapsed


def _summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(_percentile(times, 99), 2)}


def _verify_at(det_size: int, args: dict[str, Any], frames: dict[str, Any], resident: Any,
               vectors: Any) -> dict[str, Any]:
    """Ours and insightface's FaceAnalysis at one detector size, same frames, same gallery."""
    import onnxruntime as ort

    from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
    from doorkeeper.agent.face.gallery import Gallery
    from doorkeeper.agent.face.quality import check_frame

    engine = FaceEngine(EngineConfig(det_size=det_size))
    gallery = Gallery.build(engine.model_id, ((f"p{i}", engine.model_id, v) for i, v in enumerate(vectors)),
                            expected=len(vectors) + 1)
    gallery.add("resident", engine.model_id, resident)

    def ours(frame: Any) -> str:
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
        app.prepare(ctx_id=-1, det_size=(det_size, det_size))

        def theirs(frame: Any) -> str:
            faces = app.get(frame)  # detect, align and embed every face, as FaceAnalysis does
            if not faces:
                return "refused:no_face"
            main = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
            match = gallery.search(main.normed_embedding)
            return match.person_id or f"refused:{match.reason}"

        stranger = {"ours": ours(frames["stranger"]), "insightface": theirs(frames["stranger"])}
        if any(not v.startswith("refused") for v in stranger.values()):
            raise click.ClickException(f"det {det_size}: a stranger was admitted: {stranger}")
        frame = frames["resident"]
        for _ in range(3):  # warm-up: first runs allocate arenas
            ours(frame)
            theirs(frame)
        mine: list[float] = []
        base: list[float] = []
        confirmed: list[float] = []
        for _ in range(args["frames"]):  # interleaved, so drift hits both equally
            mine.append(_timed(lambda: ours(frame), "resident", f"ours det {det_size}"))
            base.append(_timed(lambda: theirs(frame), "resident", f"insightface det {det_size}"))
        for _ in range(args["episodes"]):  # the door decides after confirm_frames agreeing frames
            confirmed.append(sum(_timed(lambda: ours(frame), "resident", f"ours det {det_size}")
                                 for _ in range(args["confirm_frames"])))
    ours_summary, base_summary = _summary(mine), _summary(base)
    return {
        "ours": ours_summary,
        "insightface": base_summary,
        "ratio_p50": round(ours_summary["p50_ms"] / base_summary["p50_ms"], 3),
        "confirmed_decision": _summary(confirmed),
        "decision_every_timed_frame": "resident (granted), both paths",
        "stranger_frame_decision": stranger,
    }


def _worker_verify(args: dict[str, Any]) -> dict[str, Any]:
    from doorkeeper.agent.face.engine import FaceEngine
    from doorkeeper.agent.face.quality import enrol

    pinned = _pin_one_core()
    faces = Path(args["faces"])
    frames = {"resident": _door_frame(faces / FRAME_PHOTO), "stranger": _door_frame(faces / STRANGER_PHOTO)}
    [resident] = enrol(FaceEngine(), [faces / "obama" / "obama2.jpg"])
    vectors = _random_templates(args["gallery"] - 1, seed=7)
    by_size = {str(d): _verify_at(d, args, frames, resident.embedding, vectors) for d in args["det_sizes"]}
    return {
        "det_sizes": by_size,
        "frames": args["frames"],
        "confirm_frames": args["confirm_frames"],
        "confirmed_episodes": args["episodes"],
        "gallery_templates": args["gallery"],
        "frame": f"{FRAME_PHOTO} letterboxed to {FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
        "stranger_frame": f"{STRANGER_PHOTO} letterboxed the same way (not timed; must be refused)",
        "ours_path": "detect at det size, main face, quality gate, norm_crop, ArcFace, 1:N search, decision",
        "insightface_path": "FaceAnalysis.get (detect, align and embed every face) at the same det size, "
                            "same two model files, largest face, same 1:N search, decision",
        "confirmed_decision_excludes": "the camera's interval between the confirm frames",
        "batch": 1,
        "threads": {"onnxruntime_intra_op": 1, "onnxruntime_inter_op": 1, "blas": 1},
        "pinned_cores": pinned,
        "model_id": resident.model_id,
    }


def _worker_search(args: dict[str, Any]) -> dict[str, Any]:
    from doorkeeper.agent.face.gallery import Gallery

    pinned = _pin_one_core()
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
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(_percentile(times, 99), 3),
            "row_dtype": str(gallery._vectors.dtype), "int8": gallery._int8 is not None, "pinned": pinned}


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
@click.option("--frames", type=click.IntRange(1), default=None, help="Timed frames per path and size "
              "(default 100; 5 with --quick).")
@click.option("--det-size", "det_sizes", type=click.IntRange(32), multiple=True,
              help="Detector input size; repeatable (default: 320 and 640).")
@click.option("--gallery", "gallery_size", type=click.IntRange(2), default=None,
              help="Templates searched (default 10000; 1000 with --quick).")
@click.option("--quick", is_flag=True, help="Small sizes, for tests.")
@click.option("--json", "as_json", is_flag=True)
def verify(frames: int | None, det_sizes: tuple[int, ...], gallery_size: int | None, quick: bool,
           as_json: bool) -> None:
    """Frame-to-decision latency, ours vs insightface FaceAnalysis at equal detector sizes, one core."""
    args = {"faces": str(faces_dir()), "frames": frames or (5 if quick else 100),
            "det_sizes": list(det_sizes or (320, 640)),
            "gallery": gallery_size or (1_000 if quick else 10_000),
            "confirm_frames": CONFIRM_FRAMES, "episodes": 3 if quick else 30}
    result = _run_worker("_verify", args)
    result["sizes"] = {"det_sizes": args["det_sizes"], "frames": args["frames"], "gallery": args["gallery"]}
    result.update(stamp())
    emit(result, as_json)


@click.command()
@click.option("--templates", type=click.IntRange(2), default=None,
              help="Templates searched (default 100000; 40000 with --quick).")
@click.option("--queries", type=click.IntRange(1), default=None, help="Timed searches (default 200).")
@click.option("--persons", type=click.IntRange(1), default=None,
              help="Gallery size for RSS (default 10000; 1000 with --quick).")
@click.option("--quick", is_flag=True, help="Small sizes, for tests.")
@click.option("--json", "as_json", is_flag=True)
def gallery(templates: int | None, queries: int | None, persons: int | None, quick: bool,
            as_json: bool) -> None:
    """1:N search p50 over random templates, and agent RSS with a whitelist, one core."""
    templates = templates or (40_000 if quick else 100_000)
    queries = queries or (20 if quick else 200)
    persons = persons or (1_000 if quick else 10_000)
    search = _run_worker("_search", {"templates": templates, "queries": queries})
    rss = _run_worker("_rss", {"persons": persons, "faces": str(faces_dir())})
    result = {
        "search_p50_ms": search["p50_ms"],
        "search_p99_ms": search["p99_ms"],
        "search_templates": templates,
        "search_queries": queries,
        "search_row_dtype": search["row_dtype"],
        "search_int8_prefilter": search["int8"],
        "engine_and_gallery_rss_mb": rss["rss_mb"],
        "rss_persons": persons,
        "batch": 1,
        "threads": {"onnxruntime_intra_op": 1, "blas": 1},
        "pinned_cores": search["pinned"],
        "sizes": {"templates": templates, "persons": persons, "queries": queries},
        **stamp(),
    }
    emit(result, as_json)


if __name__ == "__main__":
    task, raw = sys.argv[1], sys.argv[2]
    print(json.dumps(_WORKERS[task](json.loads(raw))))
