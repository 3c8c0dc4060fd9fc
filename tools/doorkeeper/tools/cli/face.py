"""`doorkeeper face ...`: operator tools to compare photos and calibrate a site's threshold.

Every expected failure (unreadable file, no face, bad CSV, path outside the image
folder, missing models) ends with a one-line `Error: ...` and exit code 1, never
a traceback. CSV file names are hostile input: absolute paths and any path that
resolves outside --images are refused.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS

MAX_PAIRS = 100_000
MAX_FIELD = 1024


@dataclass(frozen=True)
class _Embedded:
    embedding: np.ndarray
    face: dict[str, object]


def _engine(models: str | None):  # type: ignore[no-untyped-def]
    from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
    from doorkeeper.agent.face.models import ModelError

    try:
        return FaceEngine(EngineConfig(model_dir=models))
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc


def _embed_file(engine, path: Path, shown: str) -> _Embedded:  # type: ignore[no-untyped-def]
    """Largest face of one photo (detected at 640, no quality gates: this is a diagnostic)."""
    from doorkeeper.agent.face.engine import ENROL_DET_SIZE, ImageError, load_image

    try:
        image = load_image(path)
    except ImageError as exc:
        raise click.ClickException(f"{shown}: {str(exc).removeprefix(f'{path}: ')}") from exc
    faces = engine.detect(image, det_size=ENROL_DET_SIZE)
    if not faces:
        raise click.ClickException(f"{shown}: no face found")
    face = faces[0]
    described = {"file": shown, **face.describe(), "picked": "largest", "faces_found": len(faces)}
    return _Embedded(engine.embed(image, face), described)


def _threshold(value: float | None) -> float:
    from doorkeeper.agent.face.gallery import DEFAULT_THRESHOLD

    if value is None:
        return DEFAULT_THRESHOLD
    if not -1.0 <= value <= 1.0:
        raise click.BadParameter("must be between -1 and 1", param_hint="--threshold")
    return value


@click.group()
def face() -> None:
    """Compare photos and calibrate the match threshold (templates stay local)."""


@face.command()
@click.argument("a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="Cosine threshold (default: agent's).")
@click.option("--models", type=click.Path(file_okay=False), default=None, help="Model directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare(a: Path, b: Path, threshold: float | None, models: str | None, as_json: bool) -> None:
    """Cosine similarity of the largest face in photo A and in photo B."""
    limit = _threshold(threshold)
    engine = _engine(models)
    first, second = _embed_file(engine, a, str(a)), _embed_file(engine, b, str(b))
    similarity = float(np.dot(first.embedding, second.embedding))
    result = {
        "similarity": round(similarity, 6),
        "threshold": limit,
        "match": similarity >= limit,
        "face_a": first.face,
        "face_b": second.face,
        "model_id": engine.model_id,
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    verdict = "same person" if result["match"] else "different people"
    click.echo(f"{verdict}: similarity {similarity:.4f} (threshold {limit}); "
               f"A: {_face_words(first.face)}; B: {_face_words(second.face)}")


def _face_words(face: dict[str, object]) -> str:
    found = face["faces_found"]
    others = f", largest of {found} faces" if found != 1 else ""
    eyes = face["inter_ocular_px"]
    return f"{face['file']} (detector score {face['det_score']}, eyes {eyes} px apart{others})"


def _inside(root: Path, name: str, row: int) -> tuple[Path, str]:
    """Resolve a CSV file name under root; refuse absolute paths and any escape."""
    if not name or len(name) > MAX_FIELD or "\x00" in name:
        raise click.ClickException(f"pairs row {row}: empty, oversized or invalid file name")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")) or candidate.drive:
        raise click.ClickException(f"pairs row {row}: absolute path {name!r} refused")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise click.ClickException(f"pairs row {row}: {name!r} leaves the images folder, refused")
    return resolved, name


def _read_pairs(pairs: Path, root: Path) -> list[tuple[tuple[Path, str], tuple[Path, str], bool]]:
    rows: list[tuple[tuple[Path, str], tuple[Path, str], bool]] = []
    try:
        text = read_capped(pairs, LIMITS.max_csv_bytes, "pairs CSV").decode("utf-8")
        with io.StringIO(text, newline="") as stream:
            reader = csv.DictReader(stream)
            missing = {"file_x", "file_y", "Decision"} - set(reader.fieldnames or ())
            if missing:
                raise click.ClickException(f"{pairs}: missing columns {sorted(missing)}")
            for number, record in enumerate(reader, start=2):
                if len(rows) >= MAX_PAIRS:
                    raise click.ClickException(f"{pairs}: more than {MAX_PAIRS} pairs")
                decision = (record.get("Decision") or "").strip().lower()
                if decision not in ("yes", "no"):
                    raise click.ClickException(f"pairs row {number}: Decision must be Yes or No")
                x = _inside(root, (record.get("file_x") or "").strip(), number)
                y = _inside(root, (record.get("file_y") or "").strip(), number)
                rows.append((x, y, decision == "yes"))
    except TooLarge as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise click.ClickException(f"{pairs}: cannot read pairs CSV ({exc})") from exc
    if not rows:
        raise click.ClickException(f"{pairs}: no pairs")
    return rows


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold with the highest accuracy on these pairs (midpoint between scores)."""
    ordered = np.unique(scores)
    candidates = np.concatenate(
        [[ordered[0] - 1e-3], (ordered[:-1] + ordered[1:]) / 2.0, [ordered[-1] + 1e-3]]
    )
    accuracy = [float(np.mean((scores >= t) == same)) for t in candidates]
    best = max(accuracy)
    # Among equally accurate thresholds take the middle one: the widest safety gap.
    winners = candidates[np.array(accuracy) == best]
    return round(float(winners[len(winners) // 2]), 4)


def _embed_gated(engine, path: Path, shown: str, det_size: int) -> _Embedded | str:  # type: ignore[no-untyped-def]
    """The photo's template as the agent makes one: detected at ``det_size``, gated by the
    enrolment quality checks. A refusal (no face, several faces, too small, blurred, turned,
    cut off) is returned as its reason; an unreadable file stops the run (ClickException)."""
    from doorkeeper.agent.face.engine import ImageError, load_image
    from doorkeeper.agent.face.quality import EnrolmentError, template_from_image

    try:
        image = load_image(path)
    except ImageError as exc:
        raise click.ClickException(f"{shown}: {str(exc).removeprefix(f'{path}: ')}") from exc
    try:
        template = template_from_image(engine, image, shown, det_size=det_size)
    except EnrolmentError as exc:
        return f"{exc.reason}: {exc.detail}"
    described = {"file": shown, **template.face.describe(), "picked": "largest"}
    return _Embedded(template.embedding, described)


@face.command(name="eval")
@click.option("--pairs", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="Cosine threshold (default: agent's).")
@click.option("--det-size", type=click.IntRange(32, 1280), default=None,
              help="Detector input size (default: the agent's door detector size).")
@click.option("--models", type=click.Path(file_okay=False), default=None, help="Model directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate(
    pairs: Path, images: Path, threshold: float | None, det_size: int | None, models: str | None,
    as_json: bool,
) -> None:
    """Accuracy, FAR and FRR of labelled pairs (CSV: file_x,file_y,Decision Yes/No).

    Each photo is detected at the agent's detector size (``--det-size`` to change) and must
    pass the enrolment quality checks. A pair with a photo that has no usable face is a
    failed comparison: counted wrong in accuracy, a false reject when the pair is the same
    person, never an accept; how many, and why, is reported."""
    from doorkeeper.agent.face.engine import DEFAULT_DET_SIZE

    limit = _threshold(threshold)
    size = det_size or DEFAULT_DET_SIZE
    if not images.is_dir():
        raise click.ClickException(f"{images}: not a directory")
    root = images.resolve()
    rows = _read_pairs(pairs, root)
    engine = _engine(models)
    cache: dict[Path, _Embedded | str] = {}
    scores = np.full(len(rows), np.nan, dtype=np.float64)
    for i, (x, y, _) in enumerate(rows):
        for path, shown in (x, y):
            if path not in cache:
                cache[path] = _embed_gated(engine, path, shown, size)
        ex, ey = cache[x[0]], cache[y[0]]
        if isinstance(ex, _Embedded) and isinstance(ey, _Embedded):
            scores[i] = float(np.dot(ex.embedding, ey.embedding))
    same = np.array([row[2] for row in rows])
    usable = ~np.isnan(scores)
    accepted = usable & (np.nan_to_num(scores, nan=-2.0) >= limit)
    correct = usable & (accepted == same)
    genuine, impostor = int(same.sum()), int((~same).sum())
    failed = [
        {"file_x": x[1], "file_y": y[1], "decision": "Yes" if s else "No",
         "similarity": round(float(score), 6) if ok_usable else None,
         **({} if ok_usable else {"failed_comparison": "no usable face"})}
        for (x, y, s), score, ok, ok_usable in zip(rows, scores, correct, usable, strict=True)
        if not ok
    ]
    photos = {shown: cache[path] for x, y, _ in rows for path, shown in (x, y)}
    unusable = sorted((shown, why) for shown, why in photos.items() if isinstance(why, str))
    result = {
        "pairs": len(rows),
        "threshold": limit,
        "det_size": size,
        "quality_gates": "enrolment",
        "accuracy": round(float(np.mean(correct)), 6),
        "far": round(float((accepted & ~same).sum() / impostor), 6) if impostor else 0.0,
        "frr": round(float((~accepted & same).sum() / genuine), 6) if genuine else 0.0,
        "failed_comparisons": int((~usable).sum()),
        "unusable_photos": [{"file": f, "reason": r} for f, r in unusable],
        "best_threshold": best_threshold(scores[usable], same[usable]) if usable.any() else None,
        "min_genuine": round(float(scores[same & usable].min()), 6) if (same & usable).any() else None,
        "max_impostor": round(float(scores[~same & usable].max()), 6) if (~same & usable).any() else None,
        "failed": failed,
        "model_id": engine.model_id,
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"{len(rows)} pairs at threshold {limit}, detector {size}, enrolment gates")
    columns = ("accuracy", "far", "frr", "failed_comparisons", "best_threshold", "min_genuine",
               "max_impostor")
    for column in columns:
        table.add_column(column)
    table.add_row(*(str(result[c]) for c in columns))
    console = Console()
    console.print(table)
    for item in failed:
        console.print(f"[red]failed[/] {item}")
    for file, reason in unusable:
        console.print(f"[yellow]no usable face[/] {file}: {reason}")
