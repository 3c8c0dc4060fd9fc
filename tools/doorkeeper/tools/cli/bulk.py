"""Bulk enrolment from a CSV file: `doorkeeper person import` (and `doorkeeper bench import`).

Columns: name, card, pin, photo, template_file, valid_from, valid_until, doors, consent.
card, pin, photo, template_file and doors hold one or more values separated by `;`.
File names are hostile input: they resolve under --photos (default: the CSV's folder);
absolute names and names leading outside are refused, per row.

Templates are made here (the face models load once, for the first photo); photos never
leave this machine. Rows travel in batches; each batch is one ImportPersons call and one
new site version. Each row stands alone and gets one result: imported, skipped (the same
person is already present, so a rerun changes nothing) or refused with its reason.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorkeeper.tools.cli.human import parse_when
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire.capped import TooLarge, read_capped
from doorkeeper.wire.limits import LIMITS

COLUMNS = ("name", "card", "pin", "photo", "template_file", "valid_from", "valid_until", "doors", "consent")
MAX_ROWS = 1_000_000
BATCH_BYTES = 3 * 1024 * 1024  # under gRPC's 4 MiB message cap
OUTCOMES = {pb.ImportResult.OUTCOME_IMPORTED: "imported", pb.ImportResult.OUTCOME_SKIPPED: "skipped",
            pb.ImportResult.OUTCOME_REFUSED: "refused"}


class ImportFileError(Exception):
    """The CSV as a whole cannot be used (unreadable, missing columns, too big)."""


@dataclass
class Row:
    line: int
    name: str
    fields: dict[str, str]
    request: pb.AddPersonRequest | None = None
    outcome: str = ""  # imported, skipped, refused
    reason: str = ""
    person_id: str = ""


@dataclass
class Summary:
    rows: list[Row] = field(default_factory=list)
    batches: int = 0
    versions: list[int] = field(default_factory=list)
    seconds_templates: float = 0.0
    seconds_total: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.rows if r.outcome == outcome)


def read_rows(csv_path: Path) -> list[Row]:
    """Parse the CSV; refuses the whole file (ImportFileError) only when it cannot be read."""
    try:
        text = read_capped(csv_path, LIMITS.max_csv_bytes, "import CSV").decode("utf-8-sig")
    except TooLarge as exc:
        raise ImportFileError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"{csv_path}: cannot read ({exc})") from None
    return parse_rows(text, str(csv_path))


def parse_rows(text: str, csv_path: str) -> list[Row]:
    """`read_rows` on text already read (the console's upload); `csv_path` names it in errors."""
    if len(text) > LIMITS.max_csv_bytes:
        raise ImportFileError(f"{csv_path}: over the {LIMITS.max_csv_bytes}-byte CSV limit")
    rows: list[Row] = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in reader.fieldnames or ()]
        unknown = sorted(set(header) - set(COLUMNS))
        if "name" not in header or unknown:
            raise ImportFileError(f"{csv_path}: columns must include name and be among {', '.join(COLUMNS)}"
                                  + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        reader.fieldnames = header
        for record in reader:
            if len(rows) >= MAX_ROWS:
                raise ImportFileError(f"{csv_path}: more than {MAX_ROWS} rows")
            fields = {k: (v or "").strip() for k, v in record.items() if isinstance(k, str)}
            rows.append(Row(reader.line_num, fields.get("name", ""), fields))
    except csv.Error as exc:
        raise ImportFileError(f"{csv_path}: {exc}") from None
    if not rows:
        raise ImportFileError(f"{csv_path}: no rows")
    return rows


def values(text: str) -> list[str]:
    return [v.strip() for v in text.split(";") if v.strip()]


def _inside(root: Path, name: str) -> Path:
    if len(name) > 1024 or "\x00" in name:
        raise ValueError("invalid file name")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")):
        raise ValueError(f"absolute path {name!r} refused")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ValueError(f"{name!r} leads outside {root}, refused")
    return resolved


class Templater:
    """Makes templates for rows; face models load once, on the first photo."""

    def __init__(self, root: Path, model_dir: Path | None, model_id: str = "") -> None:
        self.root = root
        self.model_dir = model_dir
        self._model_id = model_id
        self._engine: Any = None

    def model_id(self) -> str:
        if not self._model_id:
            from doorkeeper.agent.face.models import locate_models

            self._model_id = locate_models(str(self.model_dir) if self.model_dir else None).model_id
        return self._model_id

    def engine(self) -> Any:
        if self._engine is None:
            from doorkeeper.agent.face.engine import EngineConfig, FaceEngine

            self._engine = FaceEngine(EngineConfig(model_dir=str(self.model_dir) if self.model_dir else None))
        return self._engine

    def templates(self, row: Row) -> list[pb.Template]:
        from doorkeeper.agent.face.quality import enrol
        from doorkeeper.wire import templates as tmpl

        out = []
        for name in values(row.fields.get("template_file", "")):
            out.append(tmpl.encode(tmpl.load_npy(str(_inside(self.root, name))), self.model_id()))
        photos = [_inside(self.root, name) for name in values(row.fields.get("photo", ""))]
        if photos:
            out.extend(tmpl.encode(t.embedding, t.model_id) for t in enrol(self.engine(), photos))
        return out


def prepare(row: Row, templater: Templater) -> None:
    """Fill `row.request`, or refuse the row with its reason (files, photos, times)."""
    from doorkeeper.agent.face.models import ModelError
    from doorkeeper.agent.face.quality import EnrolmentError
    from doorkeeper.wire.templates import TemplateError

    f = row.fields
    try:
        if not row.name:
            raise ValueError("no name")
        valid_from = parse_when(f["valid_from"]) if f.get("valid_from") else 0
        valid_until = parse_when(f["valid_until"], end_of_day=True) if f.get("valid_until") else 0
        if valid_until and valid_until <= time.time():
            raise ValueError(f"valid_until {f['valid_until']} is in the past")
        templates = templater.templates(row)
        if templates and not f.get("consent"):
            raise ValueError("a face needs a consent record (consent column)")
        row.request = pb.AddPersonRequest(
            name=row.name, templates=templates, cards=values(f.get("card", "")),
            pins=values(f.get("pin", "")),
            doors=values(f.get("doors", "")), valid_from=valid_from, valid_until=valid_until,
            consent=f.get("consent", ""))
    except (ValueError, OSError, TooLarge, TemplateError, EnrolmentError, ModelError) as exc:
        row.outcome, row.reason = "refused", str(exc)


def batches(rows: list[Row], max_rows: int = LIMITS.max_import_rows,
            max_bytes: int = BATCH_BYTES) -> Iterator[list[Row]]:
    """Prepared rows in groups that fit one call."""
    group: list[Row] = []
    size = 0
    for row in rows:
        if row.request is None:
            continue
        length = row.request.ByteSize() + 8
        if group and (len(group) >= max_rows or size + length > max_bytes):
            yield group
            group, size = [], 0
        group.append(row)
        size += length
    if group:
        yield group


def run_import(call: Callable[[pb.ImportPersonsRequest], pb.ImportPersonsResponse], site: str,
               rows: list[Row], templater: Templater, allow_duplicate_face: bool = False,
               on_row: Callable[[Row], None] | None = None,
               on_prepared: Callable[[Row], None] | None = None) -> Summary:
    """Prepare every row (templates made here), send them in batches, record each result."""
    summary = Summary(rows)
    started = time.perf_counter()
    for row in rows:
        prepare(row, templater)
        if row.request is not None:
            row.request.allow_duplicate_face = allow_duplicate_face
        if on_prepared is not None:
            on_prepared(row)
    summary.seconds_templates = time.perf_counter() - started
    position = {id(row): i for i, row in enumerate(rows)}
    shown = 0

    def show(upto: int) -> None:  # result lines in file order, as soon as they are known
        nonlocal shown
        for row in rows[shown:upto]:
            if on_row is not None:
                on_row(row)
        shown = max(shown, upto)

    for group in batches(rows):
        response = call(pb.ImportPersonsRequest(site=site, persons=[r.request for r in group if r.request]))
        summary.batches += 1
        summary.versions.append(response.version)
        for row, result in zip(group, response.results, strict=True):
            row.outcome, row.reason, row.person_id = OUTCOMES.get(result.outcome, "refused"), result.reason, \
                result.person_id
            if 0 < result.other_row <= len(group):  # the hub counts rows of its request
                row.reason += f" (row {group[result.other_row - 1].line})"
        show(position[id(group[-1])] + 1)
    show(len(rows))
    summary.seconds_total = time.perf_counter() - started
    return summary


def result_line(row: Row) -> str:
    head = f"row {row.line} {row.name or '(no name)'}: {row.outcome}"
    if row.outcome == "imported":
        return f"{head} {row.person_id}"
    if row.outcome == "skipped":
        return f"{head}: {row.reason} ({row.person_id})"
    return f"{head}: {row.reason}"
