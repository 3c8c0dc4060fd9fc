"""The door's whitelist view, built by streaming the local whitelist (real hub, real SQLite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doorkeeper.agent.doorloop.whitelistview import CARD, GalleryCache
from doorkeeper.wire import templates as tmpl
from doorkeeper.wire.credentials import card_hash
from tests.harness import MODEL_ID, random_template, register_agent


def test_records_stream_in_pages_and_the_view_holds_every_person_once(hub, operator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(31)
    operator.add_site("oak")
    people = [operator.add_person("oak", templates=[random_template(rng)]) for _ in range(5)]
    carded = operator.add_person("oak", templates=[random_template(rng)], cards=["40000007"])
    agent = register_agent(operator, "oak", "front", tmp_path / "a")
    try:
        assert agent.syncer.sync_once().ok
        paged = [r.person_id for r in agent.whitelist.records(page=2)]  # 3 pages and a bit
        ids = sorted(p.person_id for p in [*people, carded])
        assert paged == ids == [r.person_id for r in agent.whitelist.records()]
        cache = GalleryCache(agent.whitelist, MODEL_ID)
        view = cache.view
        assert view.person_count == 6 and len(view.gallery) == 6
        assert view.version == agent.whitelist.version
        record = view.person(people[0].person_id)
        assert record is not None and not record.templates  # the gallery holds the template
        salt = view.salt
        assert [r.person_id for r in view.by_credential(CARD, card_hash(salt, "40000007"))] == [
            carded.person_id]
        stored = agent.whitelist.person(people[2].person_id)
        assert stored is not None
        probe = tmpl.decode(stored.templates[0])
        assert view.gallery.search(probe).person_id == people[2].person_id
        operator.remove_person(people[2].person_id)
        assert agent.syncer.sync_once().outcome == "applied"
        assert cache.refresh(agent.whitelist.version)
        assert cache.view.person(people[2].person_id) is None
        assert cache.view.gallery.search(probe).person_id is None
    finally:
        agent.close()
