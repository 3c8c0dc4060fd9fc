"""Operator commands: sites, doors and fleet status, over signed gRPC calls."""

from __future__ import annotations

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
from doorkeeper.wire.capped import TooLarge, read_capped

STALE_POLICIES = {
    "keep-working": pb.STALE_POLICY_KEEP_WORKING,
    "always-allowed-only": pb.STALE_POLICY_ALWAYS_ALLOWED_ONLY,
    "cards-only": pb.STALE_POLICY_CARDS_ONLY,
}


@click.group()
def site() -> None:
    """Residential compounds (sites)."""


@site.command("add")
@click.argument("name")
@click.option("--offline-validity", default=7 * 24 * 3600, show_default=True,
              type=click.IntRange(60, 30 * 24 * 3600),
              help="Seconds a door may go without a fresh hub beacon before it is stale (60 to 2592000).")
@click.option("--stale-policy", type=click.Choice(sorted(STALE_POLICIES)), default="keep-working",
              show_default=True)
@click.option("--utc-offset", default="+00:00", show_default=True, help="Site local time, e.g. +08:00.")
@hub_options
@friendly
def site_add(name: str, offline_validity: int, stale_policy: str, utc_offset: str,
             hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Add a site; prints its id on the last line."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        info = change_call(client, ADMIN + "AddSite", pb.AddSiteRequest(
            name=name, offline_validity_s=offline_validity,
            stale_policy=STALE_POLICIES[stale_policy], utc_offset=utc_offset))
    console.print(f"site {info.name} created at version {info.version}")
    click.echo(info.site_id)


@site.command("list")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def site_list(as_json: bool, hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """List sites with version, persons and state digest."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        sites = client.call(ADMIN + "ListSites", pb.ListSitesRequest()).sites
    policies = {v: k for k, v in STALE_POLICIES.items()}
    rows = [{"site_id": s.site_id, "name": s.name, "version": s.version, "persons": s.person_count,
             "state_digest": s.state_digest.hex(), "log_owner_key_id": s.log_owner_key_id,
             "offline_validity_s": s.offline_validity_s,
             "stale_policy": policies.get(s.stale_policy, "keep-working")} for s in sites]
    if as_json:
        emit_json(rows)
        return
    console.print(human.table(
        ("site", "id", "version", "persons", "digest", "offline validity", "when stale", "log owner key"),
        ((r["name"], r["site_id"], r["version"], r["persons"], r["state_digest"][:12],
          human.duration(r["offline_validity_s"]), human.words(r["stale_policy"], ""),
          r["log_owner_key_id"]) for r in rows)))


@site.command("owner-key")
@click.option("--site", "site_ref", required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write a NEW private key (0600). Give it to the data owner; keep it off the hub.")
@click.option("--public-key", "public_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Set an existing owner public key (32 raw bytes, e.g. OWNER.key.pub) instead.")
@hub_options
@friendly
def site_owner_key(site_ref: str, out_path: Path | None, public_path: Path | None, hub_address: str,
                   operator_key: Path, tls_ca: Path | None) -> None:
    """Generate or set the key entry logs are sealed to (rotation: old records keep their old key)."""
    from doorkeeper.tools.cli.logs import generate_owner_key

    if bool(out_path) == bool(public_path):
        fail("give exactly one of --out (generate a new key pair) or --public-key (set an existing one)")
    if out_path is not None:
        public = generate_owner_key(out_path).public_key
        where = f"private key written to {out_path} (mode 0600); public key to {out_path}.pub"
    else:
        assert public_path is not None
        try:
            public = read_capped(public_path, 32, "public key file")
        except (OSError, TooLarge) as exc:
            fail(f"{public_path} must hold a 32-byte X25519 public key ({exc})")
        if len(public) != 32:
            fail(f"{public_path} must hold a 32-byte X25519 public key")
        where = f"public key from {public_path}; the private half stays with its owner"
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "SetOwnerKey",
                        pb.SetOwnerKeyRequest(site=site_ref, public_key=public))
    console.print(f"site owner key {r.key_id} set at version {r.version}; {where}")
    click.echo(r.key_id)


NOT_READY_EXIT = 3


@site.command("readiness")
@click.argument("site_ref", metavar="SITE")
@click.option("--since", type=human.When(), default="0",
              help="Count shadow decisions from this date or time (default: the last 7 days).")
@click.option("--max-refuse-rate", type=click.FloatRange(0.0, 1.0), default=None,
              help="Also not ready when a shadow door would have refused more than this share "
                   "(0 to 1) of its decisions.")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def site_readiness(site_ref: str, since: int, max_refuse_rate: float | None, as_json: bool,
                   hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """Before switching doors from shadow to enforce: residents without any credential or
    without consent, doors not on the current version or still in shadow, and each door's
    shadow would-refuse rate. Exit status 0 when ready, 3 when not (2 for a refused call)."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = client.call(ADMIN + "SiteReadiness", pb.SiteReadinessRequest(site=site_ref, since=since))
    over = [d.name for d in r.doors if max_refuse_rate is not None and d.mode == pb.DOOR_MODE_SHADOW
            and d.shadow_refuse_rate > max_refuse_rate]
    ready = r.ready and not over
    doc = {
        "site_id": r.site_id, "site_version": r.site_version, "ready": ready, "hub_ready": r.ready,
        "no_credential": [{"person_id": p.person_id, "name": p.name} for p in r.no_credential],
        "no_consent": [{"person_id": p.person_id, "name": p.name} for p in r.no_consent],
        "doors": [{"device_id": d.device_id, "name": d.name, "mode": mode_word(d.mode),
                   "reported_version": d.reported_version, "current": d.current,
                   "shadow_would_grant": d.shadow_would_grant, "shadow_would_refuse": d.shadow_would_refuse,
                   "shadow_refuse_rate": round(d.shadow_refuse_rate, 4)} for d in r.doors],
        "over_refuse_rate": over,
    }
    if as_json:
        emit_json(doc)
    else:
        _print_readiness(doc, max_refuse_rate)
    if not ready:
        raise SystemExit(NOT_READY_EXIT)


def _print_readiness(doc: dict[str, Any], max_refuse_rate: float | None) -> None:
    out = console.print
    for key, what in (
            ("no_credential", "with no usable credential (no card, no PIN, no face a door can use)"),
            ("no_consent", "with a face template but no consent record")):
        people = doc[key]
        out(f"{len(people)} resident(s) {what}" + (":" if people else ""), highlight=False, markup=False)
        for p in people:
            out(f"  {p['name']}  ({p['person_id']})", highlight=False, markup=False)
    out(human.table(
        ("door", "mode", "holds", "current", "would grant", "would refuse", "refuse rate"),
        ((d["name"], "SHADOW" if d["mode"] == "shadow" else "enforce",
          d["reported_version"] or "never reported",
          human.yes_no(d["current"]), d["shadow_would_grant"], d["shadow_would_refuse"],
          f"{d['shadow_refuse_rate']:.1%}" if d["shadow_would_grant"] + d["shadow_would_refuse"] else "-")
         for d in doc["doors"]),
        title=f"doors (site version {doc['site_version']})"))
    behind = [d["name"] for d in doc["doors"] if not d["current"]]
    shadow = [d["name"] for d in doc["doors"] if d["mode"] == "shadow"]
    if behind:
        out(f"not on version {doc['site_version']}: {', '.join(behind)}", highlight=False, markup=False)
    if shadow:
        out(f"still in shadow mode: {', '.join(shadow)} (switch with: doorkeeper device mode DOOR enforce)",
            highlight=False, markup=False)
    if not doc["doors"]:
        out("no doors: add and register the site's doors first", highlight=False, markup=False)
    if doc["doors"] and not doc["hub_ready"] and not (doc["no_credential"] or doc["no_consent"] or behind):
        out("nobody is enrolled: every door would refuse everyone", highlight=False, markup=False)
    if doc["over_refuse_rate"]:
        out(f"would refuse more than {max_refuse_rate:.1%}: {', '.join(doc['over_refuse_rate'])}",
            highlight=False, markup=False)
    out("READY" if doc["ready"] else "NOT READY", highlight=False, markup=False)


@site.command("history")
@click.argument("site_ref", metavar="SITE")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def site_history(site_ref: str, limit: int, as_json: bool, hub_address: str, operator_key: Path,
                 tls_ca: Path | None) -> None:
    """Each version of the site: when it was made and how fast its doors reported it or a later
    one. A door may jump over a version; after `rollout abort`, the doors held at the base jump
    from it to the restoring version, so a version the abort dropped counts as reached by doors
    that never held its content."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        versions = client.call(ADMIN + "VersionHistory",
                               pb.VersionHistoryRequest(site=site_ref, limit=limit)).versions
    rows = [{"version": v.version, "made_at": v.made_at or None, "persons": v.person_count,
             "state_digest": v.state_digest.hex(), "doors": v.doors_total, "doors_applied": v.doors_applied,
             "converge_half_s": None if v.converge_half_s < 0 else v.converge_half_s,
             "converge_all_s": None if v.converge_all_s < 0 else v.converge_all_s} for v in versions]
    if as_json:
        emit_json(rows)
        return

    def took(seconds: int | None) -> str:
        return "-" if seconds is None else f"{seconds} s"

    console.print(human.table(
        ("version", "made", "persons", "digest", "doors at it or later", "half of doors in", "all doors in"),
        ((r["version"], human.local_time(r["made_at"]), r["persons"], r["state_digest"][:12],
          f'{r["doors_applied"]} of {r["doors"]}', took(r["converge_half_s"]), took(r["converge_all_s"]))
         for r in rows)))


# DecisionHour counters grouped for a table a person reads (all of them are in --json).
_REFUSED = ("refused_unknown_face", "refused_not_allowed_now", "refused_expired", "refused_stale",
            "refused_ambiguous", "refused_credential", "refused_other")


@site.command("decisions")
@click.argument("site_ref", metavar="SITE")
@click.option("--door", "device_ref", default="", help="One door (name or id); default every door.")
@click.option("--since", type=human.When(), default=None,
              help="From this time (default: the last 48 hours).")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def site_decisions(site_ref: str, device_ref: str, since: int | None, as_json: bool, hub_address: str,
                   operator_key: Path, tls_ca: Path | None) -> None:
    """Hourly decision counts the doors reported: how many, of which kind; never who."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        doors = client.call(ADMIN + "DecisionCounts", pb.DecisionCountsRequest(
            site=site_ref, device=device_ref, since=since or 0)).doors
    counters = [f.name for f in pb.DecisionHour.DESCRIPTOR.fields if f.name != "hour"]
    rows = [{"door": d.name, "device_id": d.device_id, "hour": h.hour,
             **{c: getattr(h, c) for c in counters}} for d in doors for h in d.hours]
    if as_json:
        emit_json(rows)
        return

    def refusals(r: dict[str, Any]) -> str:
        parts = [f"{r[c]} {c.removeprefix('refused_').replace('_', ' ')}" for c in _REFUSED if r[c]]
        return ", ".join(parts) or "0"

    console.print(human.table(
        ("door", "hour", "face", "card", "PIN", "refused", "shadow: would grant", "would refuse"),
        ((r["door"], human.local_time(r["hour"]), r["granted_face"], r["granted_card"], r["granted_pin"],
          refusals(r), r["shadow_would_grant"], r["shadow_would_refuse"]) for r in rows)))
    if not rows:
        console.print("no decisions reported in that period")


@click.group()
def device() -> None:
    """Door terminals."""


@device.command("add")
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@click.option("--name", required=True, help="Door name, unique within the site.")
@click.option("--ttl", default=24 * 3600, show_default=True, type=click.IntRange(60, 30 * 24 * 3600),
              help="Token lifetime in seconds (60 to 2592000).")
@hub_options
@friendly
def device_add(site_ref: str, name: str, ttl: int, hub_address: str, operator_key: Path,
               tls_ca: Path | None) -> None:
    """Create a door and print its one-time registration token (alone on the last line)."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "AddDevice",
                        pb.AddDeviceRequest(site=site_ref, name=name, token_ttl_s=ttl))
    from doorkeeper.wire import token as tokens

    pinned = tokens.Token.parse(r.token).hub_fingerprint_text
    console.print(f"door {name} ({r.device_id}); token valid until {human.local_time(r.expires_at)} "
                  f"({human.ago(r.expires_at)}), usable once; it pins hub key {pinned}",
                  highlight=False, markup=False)
    click.echo(r.token)


@device.command("list")
@click.option("--site", "site_ref", default="", help="Site name or id (default: every site).")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def device_list(site_ref: str, as_json: bool, hub_address: str, operator_key: Path,
                tls_ca: Path | None) -> None:
    """Doors: name, id, state (waiting for registration, active, revoked), last seen."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        devices = client.call(ADMIN + "Fleet", pb.FleetRequest(site=site_ref)).devices
    rows = [{"device_id": d.device_id, "name": d.name, "site_id": d.site_id, "state": _door_state(d),
             "registered": d.registered, "revoked_at": d.revoked_at or None, "created_at": d.created_at,
             "last_seen": d.last_seen or None, "reported_version": d.reported_version} for d in devices]
    if as_json:
        emit_json(rows)
        return
    console.print(human.table(
        ("door", "id", "state", "added", "last seen", "holds version"),
        ((r["name"], r["device_id"], _state_words(r), human.local_time(r["created_at"]),
          human.seen(r["last_seen"]), r["reported_version"]) for r in rows)))


def _door_state(d: pb.DeviceStatus) -> str:
    if d.revoked_at:
        return "revoked"
    return "active" if d.registered else "waiting"


def _state_words(r: dict[str, Any]) -> str:
    if r["state"] == "revoked":
        return f"revoked {human.local_time(r['revoked_at'])}"
    return "active" if r["state"] == "active" else "waiting for registration"


@device.command("revoke")
@click.argument("device_ref")
@click.option("--site", "site_ref", default="", help="Site name or id, to name the door by its name.")
@hub_options
@friendly
def device_revoke(device_ref: str, site_ref: str, hub_address: str, operator_key: Path,
                  tls_ca: Path | None) -> None:
    """Revoke a door by id, or by name with --site: its key is refused on every call from now on
    (a stolen terminal can neither fetch, report nor upload). Fleet shows it revoked."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "RevokeDevice",
                        pb.RevokeDeviceRequest(site=site_ref, device=device_ref))
    console.print(f"door {r.device_id} revoked at {human.local_time(r.revoked_at)}", highlight=False)
    click.echo(r.device_id)


DOOR_MODES = {"shadow": pb.DOOR_MODE_SHADOW, "enforce": pb.DOOR_MODE_ENFORCE}


def mode_word(mode: int) -> str:
    """`shadow` or `enforce` (UNSPECIFIED means ENFORCE, as the contract says)."""
    return "shadow" if mode == pb.DOOR_MODE_SHADOW else "enforce"


@device.command("mode")
@click.argument("device_ref", metavar="DOOR")
@click.argument("mode", type=click.Choice(sorted(DOOR_MODES)))
@click.option("--site", "site_ref", default="", help="Site name or id, to name the door by its name.")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def device_mode(device_ref: str, mode: str, site_ref: str, as_json: bool, hub_address: str,
                operator_key: Path, tls_ca: Path | None) -> None:
    """Set a door to shadow (decide and record, never actuate) or enforce, at the hub.

    The mode reaches the door inside the next signed bundle (a new site version; while a
    staged rollout of the site is open it is staged like any other change of the site).
    Setting the mode a door already has changes nothing. Audited. An installer's
    `agent run --shadow` still forces shadow on that terminal."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "SetDeviceMode",
                        pb.SetDeviceModeRequest(site=site_ref, device=device_ref, mode=DOOR_MODES[mode]))
    if as_json:
        emit_json({"device_id": r.device_id, "mode": mode_word(r.mode), "version": r.version})
        return
    console.print(f"door {device_ref} ({r.device_id}) set to {mode_word(r.mode)}; site version {r.version} "
                  "carries it (fleet shows when the door reports acting on it)",
                  highlight=False, markup=False)
    click.echo(r.device_id)


@device.command("replace")
@click.argument("name")
@click.option("--site", "site_ref", required=True, help="Site name or id.")
@click.option("--ttl", default=24 * 3600, show_default=True, type=click.IntRange(60, 30 * 24 * 3600),
              help="Token lifetime in seconds (60 to 2592000).")
@hub_options
@friendly
def device_replace(name: str, site_ref: str, ttl: int, hub_address: str, operator_key: Path,
                   tls_ca: Path | None) -> None:
    """A new one-time token for an existing door (a new terminal): same name, id and history;
    the old keys are refused from now on. Prints the token alone on the last line."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        r = change_call(client, ADMIN + "ReplaceDevice",
                        pb.ReplaceDeviceRequest(site=site_ref, name=name, token_ttl_s=ttl))
    console.print(f"door {name} ({r.device_id}): old keys revoked; token valid until "
                  f"{human.local_time(r.expires_at)}, usable once", highlight=False, markup=False)
    click.echo(r.token)


@click.command()
@click.option("--site", "site_ref", default="")
@click.option("--json", "as_json", is_flag=True)
@hub_options
@friendly
def fleet(site_ref: str, as_json: bool, hub_address: str, operator_key: Path, tls_ca: Path | None) -> None:
    """What each door reported it holds (signed manifests), never what was merely queued."""
    with operator_client(hub_address, operator_key, tls_ca) as client:
        devices = client.call(ADMIN + "Fleet", pb.FleetRequest(site=site_ref)).devices
    rows = [{
        "device_id": d.device_id, "name": d.name, "site_id": d.site_id, "registered": d.registered,
        "reported_version": d.reported_version, "site_version": d.site_version, "in_sync": d.in_sync,
        "target_version": d.target_version,
        "digest_mismatch": d.digest_mismatch, "reported_digest": d.reported_digest.hex(),
        "behind": d.behind, "known_version": d.known_version,
        "last_seen": d.last_seen, "stale": d.stale, "last_error": d.last_error,
        "outbox_backlog": d.outbox_backlog, "logs_watermark": d.logs_watermark,
        "revoked_at": d.revoked_at or None,
        "logs_gaps": d.logs_gaps, "logs_error": d.logs_error, "clock_skew_s": d.clock_skew_s,
        "mode": mode_word(d.mode),
        "reported_mode": mode_word(d.reported_mode) if d.reported_at else None,
        "pending_version": d.pending_version, "pending_effective_at": d.pending_effective_at,
        "refused_version": d.refused_version, "refused_reason": d.refused_reason,
    } for d in devices]
    if as_json:
        emit_json(rows)
        return
    console.print(human.table(
        ("door", "registered", "holds", "site", "in sync", "mode", "last seen", "stale", "backlog", "error"),
        ((r["name"], human.yes_no(r["registered"]), r["reported_version"], _site_word(r), _sync_word(r),
          _mode_words(r), human.seen(r["last_seen"]), human.yes_no(r["stale"]), r["outbox_backlog"],
          _problem(r)[:60]) for r in rows)))
    shadow = [r["name"] for r in rows if "shadow" in (r["mode"], r["reported_mode"]) and not r["revoked_at"]]
    if shadow:
        console.print(f"{len(shadow)} door(s) in SHADOW mode (deciding, never opening): {', '.join(shadow)}",
                      highlight=False, markup=False)


def _mode_words(r: dict[str, Any]) -> str:
    """The mode set at the hub in capitals when shadow; the door's own word when it differs
    (a bundle not yet applied, or an installer's --shadow flag)."""
    mode = "SHADOW" if r["mode"] == "shadow" else "enforce"
    if r["reported_mode"] is not None and r["reported_mode"] != r["mode"]:
        mode += f" (door: {r['reported_mode'].upper() if r['reported_mode'] == 'shadow' else 'enforce'})"
    return mode


def _problem(r: dict[str, Any]) -> str:
    """What an operator should look at first: a refused bundle, a held one, then errors."""
    if r["refused_version"]:
        return f"refused v{r['refused_version']}: {r['refused_reason']}"
    if r["pending_version"]:
        return f"v{r['pending_version']} held until {human.local_time(r['pending_effective_at'])}"
    return str(r["last_error"] or r["logs_error"])


def _site_word(r: dict[str, Any]) -> str:
    """The site's version; during a staged rollout, the version a held door is served."""
    if r["target_version"] and r["target_version"] != r["site_version"]:
        return f"{r['site_version']} (held at {r['target_version']}: rollout)"
    return str(r["site_version"])


def _sync_word(r: dict[str, Any]) -> str:
    if r["revoked_at"]:
        return "REVOKED"
    if r["in_sync"]:
        return "yes"
    if r["digest_mismatch"]:
        return "no: wrong digest, resyncing"
    return f"behind (hub has {r['known_version']})" if r["behind"] else "no"
