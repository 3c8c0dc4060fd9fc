"""Operator input is hostile too: every refused change leaves the site exactly as it was."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from doorkeeper.v1 import doorkeeper_pb2 as pb
from tests.harness import MODEL_ID, random_template

GOOD = random_template(np.random.default_rng(1))


@pytest.mark.parametrize(("kw", "message"), [
    ({}, "needs a face template, a card or a PIN"),
    ({"name": "", "cards": ["CARD0001"]}, "person name"),
    ({"name": "x" * 201, "cards": ["CARD0001"]}, "AddPersonRequest.name: at most 200 characters"),
    ({"templates": [pb.Template(model_id=MODEL_ID, dim=512, vector=b"\x00" * 1024, encoding=1)]},
     "bad template"),
    ({"templates": [pb.Template(model_id=MODEL_ID, dim=128, vector=b"\x01" * 256, encoding=1)]},
     "bad template"),
    ({"templates": [GOOD] * 17}, "AddPersonRequest.templates: at most 16 items"),
    ({"cards": ["1' OR '1'='1"]}, "card number"),
    ({"cards": ["../../etc/passwd"]}, "card number"),
    ({"pins": ["12a4"]}, "PIN"),
    ({"cards": ["CARD0001"], "doors": ["front; rm -rf /"]}, "door name"),
    ({"cards": ["CARD0001"], "schedules": [pb.Schedule(start_minute=600, end_minute=600)]}, "admit nobody"),
    ({"cards": ["CARD0001"], "schedules": [pb.Schedule(start_minute=2000, end_minute=10)]}, "within a day"),
    ({"cards": ["CARD0001"], "valid_from": 200, "valid_until": 100}, "validity window"),
])
def test_refused_person_changes_nothing(hub, operator, kw: dict, message: str) -> None:  # type: ignore[type-arg]
    operator.add_site("oak")
    before = hub.hub.store.get_site("oak")
    request = {"name": "Resident", **kw}
    if kw.get("templates"):
        request["consent"] = "Resident, form 1"  # the template itself is what is refused
    with pytest.raises(grpc.RpcError) as err:
        operator.call("AddPerson", pb.AddPersonRequest(site="oak", **request))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert "1' OR" not in err.value.details()  # a refused credential is never echoed
    assert hub.hub.store.get_site("oak") == before


@pytest.mark.parametrize("name", ["", "a" * 65, "oak/../../etc", "oak\x00", "'; DROP TABLE sites;--"])
def test_bad_site_names_are_refused(hub, operator, name: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        operator.add_site(name)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert hub.hub.store.list_sites() == []


def test_removing_an_unknown_person_changes_nothing(hub, operator) -> None:
    operator.add_site("oak")
    before = hub.hub.store.get_site("oak")
    for bad, code in (("f" * 32, grpc.StatusCode.NOT_FOUND), ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as err:
            operator.remove_person(bad)
        assert err.value.code() == code
    assert hub.hub.store.get_site("oak") == before


def test_audit_log_names_the_operator_for_every_change(hub, operator) -> None:
    operator.add_site("oak")
    person = operator.add_person("oak", templates=[GOOD])
    operator.remove_person(person.person_id)
    entries = hub.hub.store.list_audit()
    actions = [(e.action, e.principal.startswith("operator:first-admin:")) for e in entries]
    assert actions == [("person.remove", True), ("person.add", True), ("site.add", True)]


def test_a_card_or_pin_another_resident_holds_is_refused(hub, operator) -> None:
    operator.add_site("oak")
    first = operator.add_person("oak", name="Ann", cards=["CARD0001"], pins=["482913"])
    before = hub.hub.store.get_site("oak")
    for kw in ({"cards": ["card0001"]}, {"pins": ["482913"]}):  # cards are case-insensitive
        with pytest.raises(grpc.RpcError) as err:
            operator.add_person("oak", name="Bob", **kw)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "482913" not in err.value.details() and "CARD0001" not in err.value.details()
    assert hub.hub.store.get_site("oak") == before
    # Once Ann is removed, her card and PIN are free again; other sites never collide.
    operator.remove_person(first.person_id)
    operator.add_person("oak", name="Bob", cards=["CARD0001"], pins=["482913"])
    operator.add_site("elm")
    operator.add_person("elm", name="Cy", cards=["CARD0001"], pins=["482913"])
