"""Door modes set at the hub: `shadow` (decide and record, never actuate) or `enforce`.

A door's mode lives in its site's `SiteConfig.door_modes`, so it reaches the door only
inside a signed, encrypted bundle and the state digest covers it. Only doors in SHADOW are
listed (a door not listed is in ENFORCE, as the contract says), sorted by device id: the
same set of shadow doors always serialises to the same bytes, so the digest does not depend
on the order in which operators switched doors. Setting a door back to ENFORCE removes its
entry; a site whose doors are all enforcing has the config bytes it had before any mode was
ever set.

A mode change is a site config change like the owner key: one new site version, made by
`apply_changes` (so while a staged rollout is open it is staged like any other change of the
site: a cut-over can itself be canaried).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from doorkeeper.hub.store import Device, HubStore, Site
from doorkeeper.hub.whitelist import InvalidRequest, Whitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb

if TYPE_CHECKING:  # devices.py reads modes through `shadow_doors`
    from doorkeeper.hub.devices import Devices

MODES: dict[int, str] = {pb.DOOR_MODE_ENFORCE: "enforce", pb.DOOR_MODE_SHADOW: "shadow"}


def mode_name(mode: int) -> str:
    """`shadow` or `enforce` (UNSPECIFIED is ENFORCE, as the contract says)."""
    return MODES.get(mode, "enforce") if mode else "enforce"


def shadow_doors(config: pb.SiteConfig) -> set[str]:
    """Device ids of the site's doors set to SHADOW at the hub."""
    return {e.device_id for e in config.door_modes if e.mode == pb.DOOR_MODE_SHADOW}


def mode_of(config: pb.SiteConfig, device_id: str) -> int:
    """The door's mode as set at the hub: SHADOW when listed so, else ENFORCE."""
    return pb.DOOR_MODE_SHADOW if device_id in shadow_doors(config) else pb.DOOR_MODE_ENFORCE


def with_mode(config: pb.SiteConfig, device_id: str, mode: int) -> pb.SiteConfig:
    """A copy of `config` with the door in `mode`: only SHADOW doors listed, by device id."""
    out = pb.SiteConfig()
    out.CopyFrom(config)
    shadow = shadow_doors(config)
    if mode == pb.DOOR_MODE_SHADOW:
        shadow.add(device_id)
    else:
        shadow.discard(device_id)
    del out.door_modes[:]
    out.door_modes.extend(pb.DoorModeEntry(device_id=d, mode=pb.DOOR_MODE_SHADOW) for d in sorted(shadow))
    return out


@dataclass(frozen=True)
class ModeChange:
    device: Device
    old: int
    new: int
    site: Site  # after the change (unchanged when old == new)

    @property
    def changed(self) -> bool:
        return self.old != self.new


class DoorModes:
    def __init__(self, store: HubStore, whitelist: Whitelist, devices: Devices) -> None:
        self.store = store
        self.whitelist = whitelist
        self.devices = devices

    def set(self, site_ref: str, device_ref: str, mode: int) -> ModeChange:
        """Put one door in `mode` (one new site version). Setting the mode a door already has
        changes nothing (no new version). Refuses, changing nothing: a mode other than SHADOW
        or ENFORCE (InvalidRequest), an unknown door (NotFound), a revoked door
        (InvalidRequest: it is refused on every call, so no bundle would reach it; `device
        replace` it first)."""
        if mode not in MODES:
            raise InvalidRequest("mode must be shadow or enforce")
        device = self.devices.find(site_ref, device_ref)
        if device.revoked_at is not None:
            raise InvalidRequest(f"door {device.name} is revoked; replace it (device replace) before "
                                 "setting its mode")
        site = self.store.get_site(device.site_id)
        config = self.whitelist.config(site)
        old = mode_of(config, device.device_id)
        if old == mode:
            return ModeChange(device, old, mode, site)
        after = self.whitelist.replace_config(site, with_mode(config, device.device_id, mode))
        return ModeChange(device, old, mode, after)
