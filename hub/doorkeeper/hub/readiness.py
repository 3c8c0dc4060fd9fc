"""Cut-over readiness of a site: who and what would be locked out if its doors enforced now.

Run before switching doors from shadow to enforce (`site readiness S`). It lists:
- residents with no credential a door of the site can use: no card, no PIN, and no face
  template (or only templates of models that none of the site's doors reports running);
- residents with a face template but no consent record (enrolled before consent was asked
  for: their templates must not be used until a consent record is added or they are removed);
- every active door: its mode as set at the hub, what it last reported holding, whether that
  is the site's current version (with the right digest), and its shadow decisions (the hourly
  counts without identities that its signed manifests carried, as the hub keeps them,
  `doorkeeper.hub.decisions`) with the would-refuse rate.

`ready` is true only when no resident is without a credential or consent and every active
door holds the current version. Doors in shadow mode do not block it: the report is what an
operator reads before switching them; their would-refuse rate is shown for that decision
(`site readiness --max-refuse-rate` turns a rate into a failing exit code). Names come from
the sealed person profiles the hub already shows operators; nothing here leaves the hub
except to an operator whose role may list persons.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from doorkeeper.hub.decisions import FUTURE_SLACK_S, HOUR, totals
from doorkeeper.hub.doormodes import shadow_doors
from doorkeeper.hub.store import DecisionRow, HubStore
from doorkeeper.hub.whitelist import Whitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb

DEFAULT_WINDOW_S = 7 * 24 * 3600


def _by_name(p: pb.ReadinessPerson) -> tuple[str, str]:
    return p.name.casefold(), p.person_id


class Readiness:
    def __init__(self, store: HubStore, whitelist: Whitelist, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.whitelist = whitelist
        self.clock = clock

    def report(self, site_ref: str, since: int = 0) -> pb.SiteReadinessResponse:
        """The readiness of one site (NotFound for an unknown site). `since`: shadow
        decisions counted from then (0: the last 7 days)."""
        site = self.store.get_site(site_ref)
        config = self.whitelist.config(site)
        now = int(self.clock())
        since = since or now - DEFAULT_WINDOW_S
        since -= since % HOUR  # the hour holding `since` counts whole
        out = pb.SiteReadinessResponse(site_id=site.site_id, site_version=site.version)
        shadow = shadow_doors(config)
        models: set[str] = set()
        # Revoked doors are refused on every call: they decide nothing for this site any more.
        devices = [d for d in self.store.list_devices(site.site_id) if d.revoked_at is None]
        hours: dict[str, list[DecisionRow]] = {}
        for device_id, counts in self.store.decision_rows([d.device_id for d in devices], since,
                                                       now + FUTURE_SLACK_S):
            hours.setdefault(device_id, []).append(counts)
        reports = self.store.latest_reports(site.site_id)
        for device in devices:
            report = reports.get(device.device_id)
            door = pb.ReadinessDoor(
                device_id=device.device_id, name=device.name,
                mode=pb.DOOR_MODE_SHADOW if device.device_id in shadow else pb.DOOR_MODE_ENFORCE)
            if report is not None:
                door.reported_version = report.version
                door.current = report.version == site.version and report.state_digest == site.state_digest
                model = pb.Manifest.FromString(report.manifest).model_id
                if model:
                    models.add(model)
            t = totals(hours.get(device.device_id, ()))
            door.shadow_would_grant, door.shadow_would_refuse = t.shadow_would_grant, t.shadow_would_refuse
            shadow_total = t.shadow_would_grant + t.shadow_would_refuse
            door.shadow_refuse_rate = t.shadow_would_refuse / shadow_total if shadow_total else 0.0
            out.doors.append(door)
        no_credential: list[pb.ReadinessPerson] = []
        no_consent: list[pb.ReadinessPerson] = []
        for row in self.store.list_persons(site.site_id):
            record = self.whitelist.record(row.record_sealed)
            profile = self.whitelist.profile(row.name_sealed)
            person = pb.ReadinessPerson(person_id=row.person_id, name=profile.name)
            usable_faces = [t for t in record.templates if not models or t.model_id in models]
            if not (usable_faces or record.card_hashes or record.pin_hashes):
                no_credential.append(person)
            if record.templates and not profile.consent.strip():
                no_consent.append(person)
        out.no_credential.extend(sorted(no_credential, key=_by_name))
        out.no_consent.extend(sorted(no_consent, key=_by_name))
        out.doors.sort(key=lambda d: (d.name.casefold(), d.device_id))
        # A site with no door or nobody enrolled is not ready to enforce anything: every door
        # would refuse everyone, or there is no door to switch.
        out.ready = (bool(out.doors) and site.person_count > 0 and not out.no_credential
                     and not out.no_consent and all(d.current for d in out.doors))
        return out
