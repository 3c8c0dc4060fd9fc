"""People of a site: search, add with a photo, edit, remove, and bulk import.

A photo is read from the upload into memory, turned into a template here (`enrolment`), and
dropped with the request; only the template is sent (AddPerson / UpdatePerson).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from doorkeeper.tools.cli import bulk
from doorkeeper.tools.cli.human import parse_when
from doorkeeper.tools.console.app import MAX_FORM_FILES, Console
from doorkeeper.tools.console.enrolment import MAX_PHOTO_BYTES, PhotoRefused
from doorkeeper.tools.console.fleetpages import canary_list
from doorkeeper.tools.console.hubapi import HubError
from doorkeeper.v1 import doorkeeper_pb2 as pb

MAX_CSV_UPLOAD = 16 * 1024 * 1024


class FormError(HubError):
    """The form itself is wrong (refused before any hub call)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400, "INVALID_ARGUMENT")


def text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def when_field(form: FormData, name: str, end_of_day: bool = False) -> int:
    value = text(form, name)
    if not value:
        return 0
    try:
        return parse_when(value, end_of_day=end_of_day)
    except ValueError as exc:
        raise FormError(f"{name.replace('_', ' ')}: {exc}") from None


MAX_PHOTOS_PER_PERSON = 10
MAX_PHOTOS_TOTAL = 1 << 30  # photos are held in memory while their templates are made


async def photo_bytes(form: FormData, name: str = "photo", most: int = 100_000) -> list[tuple[str, bytes]]:
    """The uploaded files of field `name`, read into memory; more than `most` is a FormError."""
    items = [i for i in form.getlist(name) if isinstance(i, UploadFile) and i.filename]
    if len(items) > most:
        raise FormError(f"at most {most} photos at once")
    out = []
    total = 0
    for item in items:
        data = await item.read(MAX_PHOTO_BYTES + 1)
        await item.close()
        total += len(data)
        if total > MAX_PHOTOS_TOTAL:
            raise FormError(f"over {MAX_PHOTOS_TOTAL >> 20} MiB of photos in one upload; import in parts")
        out.append((item.filename or "", data))
    return out


def routes(console: Console) -> list[tuple[str, Any, list[str]]]:
    def doors_of(site: str) -> list[pb.DeviceStatus]:
        return [d for d in console.api.fleet(site) if not d.revoked_at]

    async def people(request: Request) -> Response:
        site_ref = request.path_params["site"]
        search = request.query_params.get("q", "")[:200]

        def load() -> dict[str, Any]:
            site = console.api.site(site_ref)
            listed = console.api.read("ListPersons", pb.ListPersonsRequest(site=site.site_id, search=search))
            return {"site": site, "persons": listed.persons, "q": search, "doors": doors_of(site.site_id)}

        return await console.page(request, "people.html", load)

    def templates_for(photos: list[tuple[str, bytes]]) -> list[pb.Template]:
        try:
            return [console.faces.template(data, name) for name, data in photos]
        except PhotoRefused as exc:
            raise FormError(f"photo refused: {exc}") from None

    async def send_person(request: Request, back: str, method: str, build: Any, done: Any) -> Response:
        """A person change with any uploaded photos: `build(form, with_photos)` makes the request
        (a FormError refuses the form), the photos become templates here, the photos are dropped."""
        form = await request.form(max_files=MAX_PHOTOS_PER_PERSON + 1)
        photos: list[tuple[str, bytes]] = []
        try:
            photos.extend(await photo_bytes(form, most=MAX_PHOTOS_PER_PERSON))
            req = build(form, bool(photos))
            made = await run_in_threadpool(templates_for, photos)
            (req.templates if method == "AddPerson" else req.add_templates).extend(made)
            r = await run_in_threadpool(console.api.change, method, req)
        except HubError as exc:
            return console.refused(request, exc, back)
        finally:
            photos.clear()
        return console.done(request, done(req, r), back)

    async def person_add(request: Request) -> Response:
        site = request.path_params["site"]

        def build(form: FormData, with_photos: bool) -> pb.AddPersonRequest:
            name, consent = text(form, "name"), text(form, "consent")
            if not name:
                raise FormError("a person needs a name")
            if with_photos and not consent:
                raise FormError("a face needs a consent record (who consented, how, reference)")
            return pb.AddPersonRequest(
                site=site,
                name=name,
                cards=canary_list(text(form, "cards")),
                pins=canary_list(text(form, "pins")),
                doors=[d for d in form.getlist("doors") if isinstance(d, str) and d],
                valid_from=when_field(form, "valid_from"),
                valid_until=when_field(form, "valid_until", True),
                always_allowed=text(form, "always_allowed") == "on",
                consent=consent,
                allow_duplicate_face=text(form, "allow_duplicate_face") == "on",
            )

        return await send_person(
            request,
            f"/sites/{site}/people",
            "AddPerson",
            build,
            lambda req, r: f"{req.name} added (site version {r.version})",
        )

    async def person_page(request: Request) -> Response:
        person_id = request.path_params["person_id"]

        def load() -> dict[str, Any]:
            p = console.api.read("GetPerson", pb.GetPersonRequest(person_id=person_id))
            return {"p": p, "site_id": p.site_id, "doors": doors_of(p.site_id)}

        return await console.page(request, "person.html", load)

    async def person_update(request: Request) -> Response:
        person_id = request.path_params["person_id"]

        def build(form: FormData, with_photos: bool) -> pb.UpdatePersonRequest:
            req = pb.UpdatePersonRequest(
                person_id=person_id,
                name=text(form, "name"),
                consent=text(form, "consent"),
                replace_templates=text(form, "replace_faces") == "on",
            )
            if text(form, "set_validity") == "on":
                req.set_validity = True
                req.valid_from = when_field(form, "valid_from")
                req.valid_until = when_field(form, "valid_until", True)
            if text(form, "set_doors") == "on":
                req.set_doors = True
                req.doors.extend(d for d in form.getlist("doors") if isinstance(d, str) and d)
            if text(form, "set_cards") == "on":
                req.set_cards = True
                req.cards.extend(canary_list(text(form, "cards")))
            if text(form, "set_pins") == "on":
                req.set_pins = True
                req.pins.extend(canary_list(text(form, "pins")))
            if with_photos and not req.consent:
                raise FormError("a new face needs a consent record (who consented, how, reference)")
            return req

        return await send_person(
            request,
            f"/people/{person_id}",
            "UpdatePerson",
            build,
            lambda req, r: f"person updated (site version {r.version})",
        )

    async def person_remove(request: Request) -> Response:
        person_id = request.path_params["person_id"]
        try:
            p = await run_in_threadpool(
                console.api.read, "GetPerson", pb.GetPersonRequest(person_id=person_id)
            )
            r = await run_in_threadpool(
                console.api.change, "RemovePerson", pb.RemovePersonRequest(person_id=person_id)
            )
        except HubError as exc:
            return console.refused(request, exc, f"/people/{person_id}")
        return console.done(
            request, f"{p.name} removed (site version {r.version})", f"/sites/{p.site_id}/people"
        )

    async def import_form(request: Request) -> Response:
        site_ref = request.path_params["site"]
        return await console.page(
            request, "import.html", lambda: {"site": console.api.site(site_ref), "columns": bulk.COLUMNS}
        )

    async def import_start(request: Request) -> Response:
        site = request.path_params["site"]
        back = f"/sites/{site}/import"
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=10_000)
        upload = form.get("csv")
        photos: dict[str, bytes] = {}
        try:
            photos.update(await photo_bytes(form, "photos", most=MAX_FORM_FILES))
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise FormError("choose a CSV file")
            raw = await upload.read(MAX_CSV_UPLOAD + 1)
            if len(raw) > MAX_CSV_UPLOAD:
                raise FormError("the CSV file is too large")
            try:
                csv_text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise FormError("the CSV file is not UTF-8 text") from None
            info = await run_in_threadpool(console.api.site, site)
            try:
                job = console.imports.start(
                    info.site_id,
                    info.name,
                    csv_text,
                    photos,
                    text(form, "allow_duplicate_face") == "on",
                    on_done=console.watch.poke,
                )
            except bulk.ImportFileError as exc:
                raise FormError(str(exc)) from None
        except HubError as exc:
            photos.clear()
            return console.refused(request, exc, back)
        return console.done(request, f"import of {job.total} rows started", f"/imports/{job.job_id}")

    async def import_page(request: Request) -> Response:
        job = console.imports.get(request.path_params["job_id"])
        if job is None:
            return console.refused(
                request, HubError("no such import (the console keeps the last 20)", 404, "NOT_FOUND")
            )
        return console.render(request, "import_job.html", {"job": job})

    async def import_json(request: Request) -> Response:
        job = console.imports.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such import"}, status_code=404)
        return JSONResponse(job.as_json())

    return [
        ("/sites/{site}/people", people, ["GET"]),
        ("/sites/{site}/people", person_add, ["POST"]),
        ("/people/{person_id}", person_page, ["GET"]),
        ("/people/{person_id}", person_update, ["POST"]),
        ("/people/{person_id}/remove", person_remove, ["POST"]),
        ("/sites/{site}/import", import_form, ["GET"]),
        ("/sites/{site}/import", import_start, ["POST"]),
        ("/imports/{job_id}", import_page, ["GET"]),
        ("/imports/{job_id}/progress", import_json, ["GET"]),
    ]
