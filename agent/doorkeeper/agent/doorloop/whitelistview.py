"""The door's in-memory view of its local whitelist: face gallery, person records, credentials.

A door decision must never wait on SQLite, the whitelist's lock (held for a whole bundle
apply) or a gallery build. So everything a decision reads is built off the decision thread
into one immutable :class:`WhitelistView` (gallery, records, card/PIN index, site config and
version together) and published by swapping a single reference. A decision reads
``cache.view`` once and uses that snapshot throughout, so it never mixes two versions.

``GalleryCache.refresh`` is the sync's ``on_applied`` hook: it runs on the sync thread,
builds a complete new view and swaps it in. The frame processed after the swap sees the new
view; a person removed by that sync is then neither in the gallery nor in the records, so
it is refused at that very frame. A published view is never mutated.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from doorkeeper.agent.doorloop.policy import door_mode, mode_name
from doorkeeper.agent.face.engine import EMBEDDING_DIM
from doorkeeper.agent.face.gallery import (
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    INT8_MIN_TEMPLATES,
    Gallery,
)
from doorkeeper.agent.sync.whitelist import LocalWhitelist
from doorkeeper.v1 import doorkeeper_pb2 as pb
from doorkeeper.wire import templates as tmpl

log = logging.getLogger(__name__)

CARD = "card"
PIN = "pin"


@dataclass(frozen=True)
class WhitelistView:
    """One consistent, read-only snapshot of the whitelist for deciding.

    ``version`` is the whitelist version read *before* the records, so a view is never
    labelled newer than its contents (a later ``refresh`` with the newer version rebuilds).
    Records are kept serialised without their templates (the gallery has those) and parsed
    on lookup: a few bytes per person instead of a message object each.
    The two lookup methods have the shapes `doorkeeper.agent.doorloop.policy` expects.
    """

    version: int
    config: pb.SiteConfig | None
    gallery: Gallery
    records: Mapping[str, bytes]
    credentials: Mapping[tuple[str, bytes], tuple[str, ...]]
    bad_templates: int = 0
    hub_mode: int = pb.DOOR_MODE_ENFORCE  # this door's mode in `config` (`policy.door_mode`)

    @property
    def person_count(self) -> int:
        return len(self.records)

    def person(self, person_id: str) -> pb.PersonRecord | None:
        """The record of a person in this view (without templates), or None (revoked or never known)."""
        raw = self.records.get(person_id)
        return None if raw is None else pb.PersonRecord.FromString(raw)

    def by_credential(self, kind: str, cred_hash: bytes) -> Sequence[pb.PersonRecord]:
        """Every person holding a card ("card") or PIN ("pin") with this keyed hash."""
        found = (self.person(pid) for pid in self.credentials.get((kind, bytes(cred_hash)), ()))
        return [record for record in found if record is not None]

    @property
    def salt(self) -> bytes:
        """The site's credential salt (empty before the first sync)."""
        return bytes(self.config.credential_salt) if self.config is not None else b""


class GalleryCache:
    """Builds :class:`WhitelistView` snapshots and publishes the newest by reference swap.

    Thread use: ``view`` may be read from any thread at any time without locking;
    ``refresh`` may be called from any thread (builds are serialised among themselves,
    never against readers). Construction builds the first view synchronously.
    """

    def __init__(
        self,
        whitelist: LocalWhitelist,
        model_id: str,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        device_id: str = "",
    ) -> None:
        """``device_id`` picks this door's entry in the site config's door modes."""
        self.whitelist = whitelist
        self.device_id = device_id
        self.model_id = model_id
        self.threshold = threshold
        self.margin = margin
        self.refreshes = 0
        self.refresh_failures = 0
        self._build_lock = threading.Lock()
        self._reported_models: set[str] = set()
        with self._build_lock:
            self._view = self._build()

    @property
    def view(self) -> WhitelistView:
        """The newest published snapshot (one atomic attribute read)."""
        return self._view

    def refresh(self, version: int | None = None) -> bool:
        """Rebuild from the whitelist and publish; the sync's ``on_applied`` hook.

        With ``version`` equal to the published view's version nothing is rebuilt (returns
        False). Never raises: the sync thread must not die because of the door. When a
        build fails (storage trouble), the error is logged and counted and the previous view
        stays published; the next refresh tries again.
        """
        with self._build_lock:
            if version is not None and version == self._view.version:
                return False
            try:
                view = self._build()
            except Exception:  # storage, decryption or decode trouble: keep deciding on the last view
                self.refresh_failures += 1
                log.exception("whitelist view refresh failed; doors keep deciding on version %d",
                              self._view.version)
                return False
            previous, self._view = self._view, view
            self.refreshes += 1
        log.info("door gallery: version %d -> %d, %d persons, %d templates",
                 previous.version, view.version, view.person_count, len(view.gallery))
        if view.hub_mode != previous.hub_mode:
            log.warning("door mode set by the hub: %s (was %s), from version %d",
                        mode_name(view.hub_mode).upper(), mode_name(previous.hub_mode).upper(), view.version)
        return True

    def _build(self) -> WhitelistView:
        """A view of the whitelist as it is now. Streams the records once: each is decrypted,
        its templates go straight into a preallocated gallery matrix and the rest is kept
        serialised, so no second copy of the whole whitelist exists at any moment. Should an
        apply land during the scan (the version moved), the scan starts over."""
        for _ in range(3):
            version = self.whitelist.version
            view = self._scan(version)
            if self.whitelist.version == version:
                return view
            del view  # free it before the next scan
        log.warning("whitelist kept changing during the view build; the next refresh rebuilds")
        return self._scan(self.whitelist.version)

    def _scan(self, version: int) -> WhitelistView:
        config = self.whitelist.site_config()
        records: dict[str, bytes] = {}
        credentials: dict[tuple[str, bytes], list[str]] = defaultdict(list)
        # One template per person is the usual case; more grow the matrix in modest steps.
        gallery = Gallery(self.model_id, threshold=self.threshold, margin=self.margin,
                          capacity=max(1, self.whitelist.person_count))
        bad = 0
        for record in self.whitelist.records():
            for template in record.templates:
                if template.model_id != self.model_id:
                    gallery.skipped[template.model_id] = gallery.skipped.get(template.model_id, 0) + 1
                    continue
                try:
                    gallery.add(record.person_id, template.model_id, tmpl.decode(template))
                except (tmpl.TemplateError, ValueError) as exc:
                    bad += 1
                    log.warning("person %s: template skipped: %s", record.person_id, exc)
            record.ClearField("templates")
            records[record.person_id] = record.SerializeToString()
            for cred_hash in record.card_hashes:
                credentials[(CARD, bytes(cred_hash))].append(record.person_id)
            for cred_hash in record.pin_hashes:
                credentials[(PIN, bytes(cred_hash))].append(record.person_id)
        self._report_foreign(gallery)
        if len(gallery) >= INT8_MIN_TEMPLATES:
            # The int8 index is built lazily by the first search: pay for it here, not at the door.
            probe = np.zeros(EMBEDDING_DIM, dtype=np.float32)
            probe[0] = 1.0
            gallery.search(probe)
        return WhitelistView(
            version=version,
            config=config,
            gallery=gallery,
            records=MappingProxyType(records),
            credentials=MappingProxyType({key: tuple(v) for key, v in credentials.items()}),
            bad_templates=bad,
            hub_mode=door_mode(config, self.device_id),
        )

    def _report_foreign(self, gallery: Gallery) -> None:
        """Log the gallery's skip message once per foreign model id (not on every rebuild)."""
        for model_id, message in zip(sorted(gallery.skipped), gallery.skip_messages(), strict=True):
            if model_id not in self._reported_models:
                self._reported_models.add(model_id)
                log.warning("door gallery: %s", message)
