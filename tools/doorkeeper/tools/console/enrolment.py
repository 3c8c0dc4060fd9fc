"""Faces for the console: templates made here from uploaded photos, and bulk imports.

The photo bytes stay in this process's memory (Starlette spools an upload over 1 MiB to a
temporary file that is deleted when the request ends); they are decoded, gated by the same
enrolment quality checks as `doorkeeper person add --photo`, and only the 512-d template
goes to the hub. The face models load once, on the first photo, and one photo is processed
at a time.

A bulk import (a CSV and the photos it names) runs in a background thread as an `ImportJob`
whose progress a page polls; rows are prepared and sent by `cli.bulk`, exactly as
`doorkeeper person import` does.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from doorkeeper.tools.cli import bulk
from doorkeeper.tools.console.hubapi import HubAPI, HubError
from doorkeeper.v1 import doorkeeper_pb2 as pb

MAX_PHOTO_BYTES = 20 * 1024 * 1024
MAX_JOBS = 20


class PhotoRefused(Exception):
    """The photo cannot be enrolled: unreadable, no face, several faces, poor quality."""


class FaceMaker:
    """The agent's face engine in the console process (loaded on first use)."""

    def __init__(self, model_dir: str | None = None) -> None:
        self.model_dir = model_dir
        self._engine: Any = None
        self._lock = threading.Lock()

    def engine(self) -> Any:
        from doorkeeper.agent.face.engine import EngineConfig, FaceEngine

        if self._engine is None:
            self._engine = FaceEngine(EngineConfig(model_dir=self.model_dir))
        return self._engine

    def template(self, data: bytes, name: str) -> pb.Template:
        """One template from one photo's bytes; PhotoRefused says why not."""
        from doorkeeper.agent.face.engine import ImageError, decode_image
        from doorkeeper.agent.face.models import ModelError
        from doorkeeper.agent.face.quality import EnrolmentError, template_from_image
        from doorkeeper.wire import templates as tmpl

        if len(data) > MAX_PHOTO_BYTES:
            raise PhotoRefused(f"{name}: over {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
        try:
            image = decode_image(data, name)
            with self._lock:
                made = template_from_image(self.engine(), image, name)
        except ImageError as exc:
            raise PhotoRefused(str(exc)) from None
        except EnrolmentError as exc:
            raise PhotoRefused(f"{name}: {exc.detail}") from None
        except ModelError as exc:
            raise PhotoRefused(f"face models unavailable: {exc}") from None
        return tmpl.encode(made.embedding, made.model_id)


class UploadTemplater(bulk.Templater):
    """`bulk.Templater` over uploaded photos (kept in memory) instead of a folder.

    A row's photo names are matched by their file name, or by the path under the chosen
    folder as the browser sent it; a name that matches nothing refuses that row."""

    def __init__(self, photos: dict[str, bytes], faces: FaceMaker) -> None:
        super().__init__(Path("/"), None)  # no folder: every photo is in `photos`
        # A folder picked in the browser arrives as FOLDER/NAME (and FOLDER/SUB/NAME): a row may
        # name a photo as NAME, SUB/NAME or FOLDER/SUB/NAME.
        self.photos: dict[str, bytes] = {}
        for sent, data in photos.items():
            parts = PurePosixPath(sent).parts
            for key in (sent, "/".join(parts[1:]), parts[-1] if parts else sent):
                if key:
                    self.photos.setdefault(key, data)
        self.faces = faces

    def templates(self, row: bulk.Row) -> list[pb.Template]:
        out = []
        if row.fields.get("template_file", "").strip():
            raise ValueError("template_file is not supported by the console; use the command line")
        for name in bulk.values(row.fields.get("photo", "")):
            data = self.photos.get(name)
            if data is None:
                raise ValueError(f"photo {name!r} was not among the uploaded files")
            try:
                out.append(self.faces.template(data, name))
            except PhotoRefused as exc:
                raise ValueError(str(exc)) from None
        return out


@dataclass
class ImportJob:
    job_id: str
    site: str
    site_name: str
    total: int
    prepared: int = 0
    done: bool = False
    error: str = ""
    rows: list[bulk.Row] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for r in self.rows if r.outcome == k) for k in ("imported", "skipped", "refused")}

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "total": self.total,
            "prepared": self.prepared,
            "done": self.done,
            "error": self.error,
            **self.counts(),
        }


class Imports:
    """Running and finished bulk imports of this console (in memory, the last MAX_JOBS)."""

    def __init__(self, api: HubAPI, faces: FaceMaker) -> None:
        self.api = api
        self.faces = faces
        self._jobs: dict[str, ImportJob] = {}
        self._lock = threading.Lock()

    def start(
        self,
        site: str,
        site_name: str,
        csv_text: str,
        photos: dict[str, bytes],
        allow_duplicate_face: bool,
        on_done: Any = None,
    ) -> ImportJob:
        """Parse the CSV now (bulk.ImportFileError refuses the whole file) and import in the background."""
        rows = bulk.parse_rows(csv_text, "the CSV file")
        job = ImportJob(secrets.token_urlsafe(12), site, site_name, len(rows), rows=rows)
        templater = UploadTemplater(photos, self.faces)

        def advance(_row: bulk.Row) -> None:
            job.prepared += 1

        def work() -> None:
            try:
                summary = bulk.run_import(
                    lambda request: self.api.change("ImportPersons", request),
                    site,
                    rows,
                    templater,
                    allow_duplicate_face,
                    on_prepared=advance,
                )
                job.versions = summary.versions
            except HubError as exc:
                job.error = str(exc)
            finally:
                job.done = True
                photos.clear()
                templater.photos.clear()
                if on_done is not None:
                    on_done()

        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > MAX_JOBS:
                del self._jobs[next(iter(self._jobs))]
        threading.Thread(target=work, name=f"console-import-{job.job_id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> ImportJob | None:
        with self._lock:
            return self._jobs.get(job_id)
