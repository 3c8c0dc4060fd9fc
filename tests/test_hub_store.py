"""One contract suite for every HubStore backend (SQLite and PostgreSQL), and their migrations."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from doorkeeper.hub.hubkeys import HubKeys
from doorkeeper.hub.publisher import Publisher
from doorkeeper.hub.sqlite_store import SqliteHubStore
from doorkeeper.hub.store import (
    AuditEntry,
    BundleMeta,
    CallRecord,
    ChangeSet,
    Conflict,
    Device,
    DeviceReport,
    HubStore,
    NotFound,
    Operator,
    PersonRow,
    PersonWrite,
    Site,
    Token,
)
from doorkeeper.hub.whitelist import Whitelist
from doorkeeper.wire import digest


def _site(name: str = "oak", site_id: str = "s1") -> Site:
    chash = digest.record_hash(b"config")
    return Site(site_id, name, 1, digest.state_digest(chash, []), 0, b"sealed-config", chash, 100)


def _person(pid: str, payload: bytes = b"rec") -> PersonWrite:
    return PersonWrite(pid, b"name", b"sealed-" + payload, digest.record_hash(payload))


class HubStoreContract:
    """Subclass with a `store` fixture returning a fresh backend."""

    def test_sites_are_unique_by_name(self, store: HubStore) -> None:
        store.create_site(_site())
        with pytest.raises(Conflict):
            store.create_site(_site(site_id="s2"))
        assert store.get_site("oak") == store.get_site("s1")
        with pytest.raises(NotFound):
            store.get_site("elm")

    def test_each_change_is_one_version_with_a_fresh_digest(self, store: HubStore) -> None:
        store.create_site(_site())
        a, b = "a" * 32, "b" * 32
        site = store.apply_changes("s1", ChangeSet(upserts=(_person(b, b"2"), _person(a, b"1"))), now=1)
        assert (site.version, site.person_count) == (2, 2)
        expected = digest.state_digest(digest.record_hash(b"config"),
                                       [(a, digest.record_hash(b"1")), (b, digest.record_hash(b"2"))])
        assert site.state_digest == expected
        site = store.apply_changes("s1", ChangeSet(removes=(a,)), now=2)
        assert (site.version, site.person_count) == (3, 1)
        with store.reading("s1") as view:
            changed = view.changed_since(1)
            assert changed is not None and sorted(changed.person_ids) == [a, b] and not changed.config
            assert [pid for pid, _ in view.records()] == [b]
            assert list(view.records([a, b])) == [(a, None), (b, b"sealed-2")]

    def test_a_failing_change_changes_nothing(self, store: HubStore) -> None:
        store.create_site(_site())
        before = store.apply_changes("s1", ChangeSet(upserts=(_person("a" * 32),)), now=1)
        with pytest.raises(NotFound):
            store.apply_changes("s1", ChangeSet(upserts=(_person("c" * 32),), removes=("x" * 32,)), now=2)
        assert store.get_site("s1") == before
        with store.reading("s1") as view:
            assert [pid for pid, _ in view.records()] == ["a" * 32]

    def test_a_credential_belongs_to_one_person_per_site(self, store: HubStore) -> None:
        store.create_site(_site())
        a = PersonWrite("a" * 32, b"n", b"r", digest.record_hash(b"r"), (("pin", b"p" * 32),))
        b = PersonWrite("b" * 32, b"n", b"r", digest.record_hash(b"r"), (("pin", b"p" * 32),))
        before = store.apply_changes("s1", ChangeSet(upserts=(a,)), now=1)
        with pytest.raises(Conflict):
            store.apply_changes("s1", ChangeSet(upserts=(b,)), now=2)
        assert store.get_site("s1") == before
        store.apply_changes("s1", ChangeSet(upserts=(replace(a, credentials=()),)), now=3)  # A drops it
        store.apply_changes("s1", ChangeSet(upserts=(b,)), now=4)  # now B may hold it

    def test_compaction_sends_old_devices_to_snapshots(self, store: HubStore) -> None:
        store.create_site(_site())
        for i in range(3):
            store.apply_changes("s1", ChangeSet(upserts=(_person(f"{i:032x}"),)), now=i)
        store.compact("s1", keep_after_version=3)
        with store.reading("s1") as view:
            assert view.changed_since(2) is None
            changed = view.changed_since(3)
            assert changed is not None and changed.person_ids == [f"{2:032x}"]

    def test_tokens_bind_until_registration_completes_and_only_before_expiry(self, store: HubStore) -> None:
        store.create_site(_site())
        store.create_device(Device("d1", "s1", "front", 1), Token("t1", "s1", "d1", b"h", expires_at=50))
        with pytest.raises(Conflict):
            store.bind_token_keys("t1", b"s" * 32, b"b" * 32, now=60)
        assert store.get_device("d1").sign_public is None
        store.create_device(Device("d2", "s1", "back", 1), Token("t2", "s1", "d2", b"h", expires_at=50))
        device = store.bind_token_keys("t2", b"s" * 32, b"b" * 32, now=10)
        assert device.sign_public == b"s" * 32 and device.registered_at is None
        assert store.get_token("t2").used_at is None  # bound, not spent: a retry rebinds
        device = store.bind_token_keys("t2", b"x" * 32, b"y" * 32, now=11)
        assert device.sign_public == b"x" * 32
        assert store.complete_registration("d2", now=12)
        assert store.get_token("t2").used_at == 12 and store.get_device("d2").registered_at == 12
        assert store.complete_registration("d2", now=13)  # idempotent: a racing first call
        assert store.get_device("d2").registered_at == 12
        with pytest.raises(Conflict):
            store.bind_token_keys("t2", b"z" * 32, b"w" * 32, now=14)
        assert store.get_device("d2").sign_public == b"x" * 32
        with pytest.raises(Conflict):
            store.create_device(Device("d3", "s1", "back", 1), Token("t3", "s1", "d3", b"h", 50))

    def test_nonces_are_spent_once_per_principal_and_forgotten_when_expired(self, store: HubStore) -> None:
        assert store.spend_nonce("p1", b"n1", expires_at=100.0, now=1.0)
        assert not store.spend_nonce("p1", b"n1", expires_at=100.0, now=2.0)  # replay
        assert store.spend_nonce("p2", b"n1", expires_at=100.0, now=2.0)  # another principal's
        for i in range(200):  # many calls in flight: none pushes another out
            assert store.spend_nonce("p1", i.to_bytes(4, "big"), expires_at=100.0, now=3.0)
        assert not store.spend_nonce("p1", (0).to_bytes(4, "big"), expires_at=100.0, now=4.0)
        # Expired rows go, once past the slack for replicas' clocks (the MAC's expiry refuses
        # their nonces before they get here); not before: another replica may still accept them.
        from doorkeeper.hub.sqlrows import NONCE_PURGE_SLACK_S

        assert not store.spend_nonce("p1", b"n1", expires_at=900.0, now=101.0)
        assert store.spend_nonce("p1", b"n1", expires_at=900.0, now=101.0 + NONCE_PURGE_SLACK_S)

    def test_bundles_are_cached_once_and_pruned(self, store: HubStore) -> None:
        store.create_site(_site())
        meta = BundleMeta("b1", "s1", 2, 0, 5, b"h" * 32, (b"1" * 32, b"2" * 32), (3, 4), b"k",
                          b"d" * 32, 7, 1)
        assert store.put_bundle(meta, [b"abc", b"defg"]) == meta
        again = BundleMeta("b2", "s1", 2, 0, 5, b"x" * 32, (b"3" * 32,), (1,), b"k", b"d" * 32, 7, 1)
        assert store.put_bundle(again, [b"z"]) == meta
        assert store.find_bundle("s1", 2, 0, 5) == meta
        assert store.find_bundle_by_hash("s1", b"h" * 32) == meta
        assert store.find_bundle_by_hash("s2", b"h" * 32) is None
        assert store.read_chunk("b1", 1) == b"defg"
        assert store.prune_bundles("s1", below_version=6) == 1
        with pytest.raises(NotFound):
            store.read_chunk("b1", 0)

    def test_one_builder_per_site_at_a_time(self, store: HubStore) -> None:
        """A second builder of the same site (another thread here; another replica on a shared
        store) waits for the first; another site's builder does not."""
        order: list[str] = []
        first_in = threading.Event()
        release = threading.Event()

        def first() -> None:
            with store.building("s1"):
                first_in.set()
                release.wait(30)
                order.append("first done")

        def second() -> None:
            with store.building("s1"):
                order.append("second in")

        a = threading.Thread(target=first)
        a.start()
        assert first_in.wait(30)
        b = threading.Thread(target=second)
        b.start()
        with store.building("s2"):  # another site: not held up
            order.append("other site")
        release.set()
        a.join(30)
        b.join(30)
        assert order == ["other site", "first done", "second in"]

    def test_two_hubs_on_one_store_build_a_bundle_once(self, store: HubStore, tmp_path: Path) -> None:
        """Two publishers (two hub replicas) asked for the same bundle at once: one builds it,
        the other waits on the store's build lock and serves the same bundle."""
        hub_keys = HubKeys.create(tmp_path / "keys")
        site = Whitelist(store, hub_keys).add_site("oak")
        builds: list[str] = []

        def slow_publisher() -> Publisher:
            publisher = Publisher(store, hub_keys)
            build = publisher._build

            def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
                builds.append("built")
                time.sleep(0.3)  # widen the window in which a second builder could start
                return build(*args, **kwargs)

            publisher._build = counted  # type: ignore[method-assign]
            return publisher

        publishers = [slow_publisher(), slow_publisher()]
        got: list[BundleMeta | None] = []
        threads = [threading.Thread(target=lambda p=p: got.append(p.bundle_for(site.site_id, 0)))
                   for p in publishers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for p in publishers:
            p.close()
        assert builds == ["built"]
        assert len(got) == 2 and got[0] is not None and got[1] is not None
        assert got[0].bundle_id == got[1].bundle_id

    def test_latest_reports_of_a_site_in_one_read(self, store: HubStore) -> None:
        store.create_site(_site())
        store.create_site(_site("elm", "s2"))
        doors = (("d1", "s1", "front"), ("d2", "s1", "back"), ("d3", "s2", "gate"), ("d4", "s1", "side"))
        for device_id, site_id, name in doors:
            store.create_device(Device(device_id, site_id, name, 1),
                                Token(f"t{device_id}", site_id, device_id, b"h", expires_at=50))
        for device_id, version in (("d1", 3), ("d1", 4), ("d2", 2), ("d3", 9)):  # d4 never reported
            store.record_report(DeviceReport(device_id, version, b"d" * 32, 2, 10 + version, 9, b"m", b"s"))
        reports = store.latest_reports("s1")
        assert {k: r.version for k, r in reports.items()} == {"d1": 4, "d2": 2}
        assert reports["d1"] == store.latest_report("d1")
        assert store.latest_reports("nowhere") == {}

    def test_reports_operators_and_audit(self, store: HubStore) -> None:
        report = DeviceReport("d1", 3, b"d" * 32, 2, 10, 9, b"m", b"s", outbox_backlog=4)
        store.record_report(report)
        store.record_report(DeviceReport("d1", 4, b"e" * 32, 2, 11, 9, b"m", b"s"))
        latest = store.latest_report("d1")
        assert latest is not None and latest.version == 4
        assert store.latest_report("d2") is None
        op = Operator("k1", b"p" * 32, "admin", "ann", 1)
        store.add_operator(op)
        assert store.get_operator("k1") == op
        with pytest.raises(Conflict):
            store.add_operator(op)
        store.audit(AuditEntry(1, "ann", "site.add", "oak"))
        store.audit(AuditEntry(2, "ann", "person.add", "x"))
        assert [e.action for e in store.list_audit()] == ["person.add", "site.add"]

    def test_an_atomic_block_commits_all_of_it_or_nothing(self, store: HubStore) -> None:
        store.create_site(_site())
        before = store.get_site("s1")
        with pytest.raises(RuntimeError), store.atomic():
            store.apply_changes("s1", ChangeSet(upserts=(_person("a" * 32),)), now=1)
            store.remember_call("ann", "req-00001", CallRecord("m", b"h", b"r"), now=1)
            raise RuntimeError("the audit entry could not be written")
        assert store.get_site("s1") == before
        assert store.recall_call("ann", "req-00001") is None
        with store.atomic():
            # A refused step inside rolls back only itself; the block goes on.
            with pytest.raises(NotFound):
                store.apply_changes("s1", ChangeSet(removes=("x" * 32,)), now=2)
            after = store.apply_changes("s1", ChangeSet(upserts=(_person("a" * 32),)), now=2)
            store.audit(AuditEntry(2, "ann", "person.add", "a"))
        assert store.get_site("s1") == after and after.version == before.version + 1
        assert [e.action for e in store.list_audit()] == ["person.add"]

    def test_read_modify_write_of_a_site_in_atomic_blocks_loses_nothing(self, store: HubStore) -> None:
        """Two operator changes to one site's config at once (say through two replicas), each
        reading the site inside its atomic block and writing back a changed copy: the second
        reads what the first wrote, so neither change is lost."""
        store.create_site(_site())
        first_read = threading.Event()

        def change(tag: bytes) -> None:
            with store.atomic():
                site = store.get_site("s1")
                if tag == b"A":
                    first_read.set()
                    time.sleep(0.3)  # widen the window in which the other change could read
                config = site.config_sealed + tag
                store.apply_changes("s1", ChangeSet(config_sealed=config,
                                                    config_hash=digest.record_hash(config)), now=1)

        a = threading.Thread(target=change, args=(b"A",))
        a.start()
        assert first_read.wait(30)
        b = threading.Thread(target=change, args=(b"B",))
        b.start()
        a.join(30)
        b.join(30)
        site = store.get_site("s1")
        assert site.config_sealed == b"sealed-configAB" and site.version == 3

    def test_one_request_id_sent_twice_at_once_changes_once(self, store: HubStore) -> None:
        """A client retrying through another replica while its first call is still running:
        the second call waits for the first and finds its answer (AuditedChanges' pattern)."""
        store.create_site(_site())
        first_recalled = threading.Event()
        outcomes: dict[str, object] = {}

        def call(name: str) -> None:
            with store.atomic():
                prior = store.recall_call("ann", "req-00042")
                if name == "first":
                    first_recalled.set()
                    time.sleep(0.3)  # widen the window in which the second call could slip in
                if prior is not None:
                    outcomes[name] = "answered from memory"
                    return
                store.apply_changes("s1", ChangeSet(upserts=(_person(f"{name:0>32}"),)), now=1)
                store.remember_call("ann", "req-00042", CallRecord("m", b"h", name.encode()), now=1)
                outcomes[name] = "changed"

        first = threading.Thread(target=call, args=("first",))
        first.start()
        assert first_recalled.wait(30)
        second = threading.Thread(target=call, args=("second",))
        second.start()
        first.join(30)
        second.join(30)
        assert outcomes == {"first": "changed", "second": "answered from memory"}
        assert store.get_site("s1").version == 2

    def test_a_call_is_remembered_per_principal_and_request_id(self, store: HubStore) -> None:
        record = CallRecord("doorkeeper.v1.AddPersonRequest", b"h" * 32, b"sealed")
        store.remember_call("ann", "req-00001", record, now=100)
        assert store.recall_call("ann", "req-00001") == record
        assert store.recall_call("bob", "req-00001") is None
        with pytest.raises(Exception):  # the backend's own unique-key error
            store.remember_call("ann", "req-00001", record, now=101)

    def test_concurrent_writers_get_consecutive_versions(self, store: HubStore) -> None:
        """Two writers at once (two replicas' worth of threads): no version twice, none skipped."""
        store.create_site(_site())
        results: list[int] = []

        def writer(tag: str) -> None:
            for i in range(10):
                site = store.apply_changes("s1", ChangeSet(upserts=(_person(f"{tag}{i:031x}"),)), now=i)
                results.append(site.version)

        threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(2, 22))
        assert store.get_site("s1").person_count == 20
        assert store.site_versions() == {"s1": 21}

    def test_a_nonce_raced_by_many_callers_is_spent_once(self, store: HubStore) -> None:
        wins: list[bool] = []
        threads = [threading.Thread(target=lambda: wins.append(
            store.spend_nonce("p1", b"same", expires_at=100.0, now=1.0))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False] * 7 + [True]

    def test_persons_read_back_by_site_and_id(self, store: HubStore) -> None:
        store.create_site(_site())
        store.create_site(_site("elm", "s2"))
        a, b, c = "a" * 32, "b" * 32, "c" * 32
        store.apply_changes("s1", ChangeSet(upserts=(_person(b), _person(a))), now=1)
        store.apply_changes("s2", ChangeSet(upserts=(_person(c),)), now=1)
        rows = store.list_persons("s1")
        assert [r.person_id for r in rows] == [a, b]
        assert rows[0] == PersonRow(a, "s1", b"name", b"sealed-rec", 2)
        assert store.get_person(c).site_id == "s2"
        with pytest.raises(NotFound):
            store.get_person("d" * 32)
        assert store.list_persons("nowhere") == []

    def test_a_revoked_door_keeps_its_name_and_a_replaced_one_its_id(self, store: HubStore) -> None:
        store.create_site(_site())
        store.create_device(Device("d1", "s1", "front", 1), Token("t1", "s1", "d1", b"h", expires_at=50))
        store.bind_token_keys("t1", b"s" * 32, b"b" * 32, now=10)
        store.complete_registration("d1", now=11)
        store.create_device(Device("d2", "s1", "back", 1), Token("t2", "s1", "d2", b"h", expires_at=50))
        revoked = store.revoke_device("d2", now=20)
        assert revoked.revoked_at == 20 and store.get_token("t2").used_at == 20  # token spent too
        assert store.revoke_device("d2", now=30).revoked_at == 20
        with pytest.raises(Conflict):
            store.bind_token_keys("t2", b"s" * 32, b"b" * 32, now=31)
        replaced = store.replace_device("d1", Token("t3", "s1", "d1", b"h3", expires_at=90))
        assert (replaced.device_id, replaced.name) == ("d1", "front")
        assert replaced.sign_public is None and replaced.registered_at is None and replaced.revoked_at is None
        assert store.get_token("t3").used_at is None
        assert store.bind_token_keys("t3", b"n" * 32, b"m" * 32, now=40).sign_public == b"n" * 32
        with pytest.raises(NotFound):
            store.revoke_device("nope", now=1)
        with pytest.raises(NotFound):
            store.replace_device("nope", Token("t4", "s1", "nope", b"h", expires_at=90))

    def test_device_keys_say_which_doors_still_hold_their_keys(self, store: HubStore) -> None:
        store.create_site(_site())
        for n in (1, 2, 3):
            store.create_device(Device(f"d{n}", "s1", f"door{n}", 1),
                                Token(f"t{n}", "s1", f"d{n}", b"h", expires_at=50))
            store.bind_token_keys(f"t{n}", bytes([n]) * 32, b"b" * 32, now=10)
        store.create_device(Device("d4", "s1", "door4", 1), Token("t4", "s1", "d4", b"h", expires_at=50))
        assert store.device_keys(["d1", "d2", "d3", "d4", "nope"]) == {
            "d1": b"\x01" * 32, "d2": b"\x02" * 32, "d3": b"\x03" * 32, "d4": None}
        store.revoke_device("d2", now=20)
        store.replace_device("d3", Token("t5", "s1", "d3", b"h", expires_at=90))
        assert store.device_keys(["d1", "d2", "d3"]) == {"d1": b"\x01" * 32, "d2": None, "d3": None}
        store.bind_token_keys("t5", b"n" * 32, b"m" * 32, now=40)
        assert store.device_keys(["d3"]) == {"d3": b"n" * 32}
        assert store.device_keys([]) == {}

    def test_operators_are_listed_and_revoked_not_forgotten(self, store: HubStore) -> None:
        store.add_operator(Operator("k1", b"p" * 32, "admin", "ann", 1))
        store.add_operator(Operator("k2", b"q" * 32, "auditor", "bob", 2))
        assert [o.name for o in store.list_operators()] == ["ann", "bob"]
        assert store.revoke_operator("k2", now=5).revoked_at == 5
        assert store.revoke_operator("k2", now=6).revoked_at == 5
        assert store.get_operator("k2").revoked_at == 5 and store.get_operator("k1").revoked_at is None
        with pytest.raises(NotFound):
            store.revoke_operator("k3", now=7)

    def test_audit_entries_keep_their_chain_fields_in_seq_order(self, store: HubStore) -> None:
        assert store.last_audit() is None
        for seq in (1, 2, 3):
            store.audit(AuditEntry(seq, "ann", "x", str(seq), seq=seq, prev_hash=bytes([seq - 1]) * 32,
                                   entry_hash=bytes([seq]) * 32, key_id="k", signature=b"s" * 64))
        last = store.last_audit()
        assert last is not None and last.seq == 3 and last.entry_hash == b"\x03" * 32
        page = store.audit_page(after_seq=1, limit=5)
        assert [e.seq for e in page] == [2, 3] and page[0].prev_hash == b"\x01" * 32
        assert [e.seq for e in store.audit_page(after_seq=0, limit=2)] == [1, 2]
        store.audit(AuditEntry(9, "ann", "unchained", ""))  # no seq: the next position
        assert [e.seq for e in store.list_audit(limit=2)] == [4, 3]

    @pytest.mark.parametrize("read", ["person", "operators"])
    def test_a_read_inside_a_change_waits_for_another_replicas_open_change(
            self, store: HubStore, replica: HubStore, read: str) -> None:
        """What a change decides from (the person it updates, the admins left) is read after
        a change already open on another replica commits, never before: no lost update, no
        two last admins revoked at once. (SQLite: one writer; PostgreSQL: locks.)"""
        store.create_site(_site())
        pid = "a" * 32
        store.apply_changes("s1", ChangeSet(upserts=(_person(pid),)), now=1)
        store.add_operator(Operator("k1", b"p" * 32, "admin", "ann", 1))
        store.add_operator(Operator("k2", b"q" * 32, "admin", "bob", 2))
        first_read, second_started = threading.Event(), threading.Event()
        seen: list[object] = []

        def decide(target: HubStore) -> object:
            if read == "person":
                return target.get_person(pid).record_sealed
            return sorted(o.key_id for o in target.list_operators() if o.revoked_at is None)

        def first() -> None:
            with store.atomic():
                decide(store)
                first_read.set()
                second_started.wait(30)
                time.sleep(0.5)  # the second change is now waiting (or, unlocked, has read)
                if read == "person":
                    store.apply_changes("s1", ChangeSet(upserts=(_person(pid, b"new"),)), now=2)
                else:
                    store.revoke_operator("k1", now=2)

        def second() -> None:
            first_read.wait(30)
            second_started.set()
            with replica.atomic():
                seen.append(decide(replica))

        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert seen == ([b"sealed-new"] if read == "person" else [["k2"]])

    def test_two_replicas_appending_audit_at_once_extend_one_chain(
            self, store: HubStore, replica: HubStore, tmp_path: Path) -> None:
        """Four writers over two stores (two hub replicas on one database) append at once:
        every entry chains off the one before it; no seq twice, none lost, none refused."""
        from doorkeeper.hub.audit import AuditedChanges
        from doorkeeper.v1 import doorkeeper_pb2 as pb
        from doorkeeper.wire.auditchain import verify_chain

        hub_keys = HubKeys.create(tmp_path / "keys")
        errors: list[BaseException] = []

        def writer(target: HubStore, tag: str) -> None:
            changes = AuditedChanges(target, hub_keys)
            try:
                for i in range(12):
                    changes.record("ann", "log.pull", f"{tag}{i}")
            except BaseException as exc:  # reported below, with the chain
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(target, tag))
                   for target, tag in ((store, "a"), (replica, "b"), (store, "c"), (replica, "d"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        entries = store.audit_page(after_seq=0, limit=1000)
        assert [e.seq for e in entries] == list(range(1, 49))
        assert sorted(e.detail for e in entries) == sorted(f"{t}{i}" for t in "abcd" for i in range(12))
        records = [pb.AuditRecord(seq=e.seq, at=e.at, principal=e.principal, action=e.action,
                                  detail=e.detail, prev_hash=e.prev_hash, entry_hash=e.entry_hash,
                                  key_id=e.key_id, signature=e.signature) for e in entries]
        assert verify_chain(records, {hub_keys.key_id: hub_keys.pair.sign_public}) == (48, None)

    def test_a_rollout_takes_its_base_and_only_one_is_open_per_site(self, store: HubStore) -> None:
        from doorkeeper.hub.store import Rollout

        store.create_site(_site())
        a, b = "a" * 32, "b" * 32
        base = store.apply_changes("s1", ChangeSet(upserts=(_person(a, b"1"), _person(b, b"2"))), now=1)
        r = store.start_rollout(Rollout("r1", "s1", "staged", 50, "ann", stage=("d1",),
                                        auto_stop="offline>1"))
        assert (r.state, r.base_version, r.base_digest, r.base_person_count) == \
            ("staged", base.version, base.state_digest, 2)
        assert (r.base_config_sealed, r.stage, r.started_at, r.rev) == (b"sealed-config", ("d1",), 50, 0)
        store.apply_changes("s1", ChangeSet(removes=(a,), upserts=(_person(b, b"3"),)), now=2)
        assert [(p.person_id, p.record_sealed, p.record_hash) for p in store.rollout_persons("r1")] == \
            [(a, b"sealed-1", digest.record_hash(b"1")), (b, b"sealed-2", digest.record_hash(b"2"))]
        with pytest.raises(Conflict):
            store.start_rollout(Rollout("r2", "s1", "scheduled", 60, "bob", scheduled_at=99))
        assert store.get_rollout("s1") == r and store.open_rollouts() == [r]

    def test_rollout_updates_are_conditional_and_closing_drops_the_base(self, store: HubStore) -> None:
        from doorkeeper.hub.store import Rollout

        store.create_site(_site())
        store.apply_changes("s1", ChangeSet(upserts=(_person("a" * 32),)), now=1)
        r = store.start_rollout(Rollout("r1", "s1", "staged", 50, "ann", stage=("d1",)))
        grown = replace(r, stage=("d1", "d2"), stage_started_at=70)
        assert store.update_rollout(grown, expect_rev=0)
        assert not store.update_rollout(replace(r, state="aborted"), expect_rev=0)  # lost the race
        now = store.get_rollout("s1")
        assert now is not None and (now.rev, now.stage, now.state) == (1, ("d1", "d2"), "staged")
        closed = replace(now, state="completed", closed_at=80)
        assert store.update_rollout(closed, expect_rev=1)
        assert store.rollout_persons("r1") == [] and store.open_rollouts() == []
        assert store.get_rollout("s1") == replace(closed, rev=2)
        # A new rollout on the site is allowed once the last one is closed; it is the one shown.
        again = store.start_rollout(Rollout("r2", "s1", "scheduled", 90, "ann", stage=("d1",),
                                            scheduled_at=200, scheduled_action="start"))
        assert again.base_version == 0 and store.get_rollout("s1") == again
        staged = store.stage_rollout("r2", expect_rev=0, now=200)
        assert staged is not None and staged.state == "staged" and staged.base_version == 2
        assert (staged.scheduled_at, staged.scheduled_action) == (0, "")
        assert len(store.rollout_persons("r2")) == 1
        assert store.stage_rollout("r2", expect_rev=0, now=201) is None  # fired once only

    def test_pruning_keeps_a_staged_rollouts_base_snapshot(self, store: HubStore) -> None:
        from doorkeeper.hub.store import Rollout

        store.create_site(_site())
        store.apply_changes("s1", ChangeSet(upserts=(_person("a" * 32),)), now=1)  # v2
        for bid, to in (("base", 2), ("older", 1)):
            store.put_bundle(BundleMeta(bid, "s1", 2, 0, to, bid.encode() * 4, (b"1" * 32,), (3,), b"k",
                                        b"d" * 32, 1, 1), [b"abc"])
        store.start_rollout(Rollout("r1", "s1", "staged", 50, "ann", stage=("d1",)))
        store.apply_changes("s1", ChangeSet(upserts=(_person("b" * 32),)), now=2)  # v3
        assert store.prune_bundles("s1", below_version=3) == 1
        assert store.find_bundle("s1", 2, 0, 2) is not None and store.find_bundle("s1", 2, 0, 1) is None


class TestSqliteHubStore(HubStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        s = SqliteHubStore(tmp_path / "hub.db")
        yield s
        s.close()

    @pytest.fixture
    def replica(self, store: SqliteHubStore):  # type: ignore[no-untyped-def]
        """A second store on the same file (as a second hub process would open it)."""
        s = SqliteHubStore(store.path)
        yield s
        s.close()


class TestPgHubStore(HubStoreContract):
    @pytest.fixture
    def store(self, pg_url: str):  # type: ignore[no-untyped-def]
        from doorkeeper.hub.pg_store import PgHubStore

        s = PgHubStore(pg_url)
        yield s
        s.close()

    @pytest.fixture
    def replica(self, store: HubStore, pg_url: str):  # type: ignore[no-untyped-def]
        """A second replica: its own store and connection pool on the same database."""
        from doorkeeper.hub.pg_store import PgHubStore

        s = PgHubStore(pg_url, pool_size=4)
        yield s
        s.close()

    def test_a_connection_broken_in_the_pool_is_unavailable_once_then_replaced(  # type: ignore[no-untyped-def]
            self, store: HubStore, pg_url: str, monkeypatch) -> None:
        """A connection lent out again at once is not checked first (`_IdleCheck`): if the server
        dropped it meanwhile, that one call fails as `Unavailable` (retry; the hub answers
        UNAVAILABLE), the pool discards it, and the next call gets a new connection. One that sat
        idle is checked and replaced before use, with no failure."""
        import psycopg

        from doorkeeper.hub import pg_store
        from doorkeeper.hub.store import Unavailable

        def drop_connections() -> None:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND pid <> pg_backend_pid()")

        monkeypatch.setattr(pg_store, "CHECK_IDLE_S", 3600.0)  # "just returned", however slow the run
        assert store.latest_report("d1") is None
        drop_connections()
        with pytest.raises(Unavailable):
            store.latest_report("d1")
        assert store.latest_report("d1") is None

        monkeypatch.setattr(pg_store, "CHECK_IDLE_S", -1.0)  # every connection counts as idle: checked
        drop_connections()
        assert store.latest_report("d1") is None

        # An operator change (`atomic()`) on a connection dropped while it sat in the pool: the
        # same Unavailable (UNAVAILABLE, retry), not a raw psycopg error (gRPC UNKNOWN).
        monkeypatch.setattr(pg_store, "CHECK_IDLE_S", 3600.0)
        assert store.latest_report("d1") is None
        drop_connections()
        with pytest.raises(Unavailable), store.atomic():  # type: ignore[attr-defined]
            store.list_sites()
        for _ in range(20):  # each other pooled connection the server dropped fails once too
            try:
                with store.atomic():  # type: ignore[attr-defined]
                    assert store.list_sites() == []
                break
            except Unavailable:
                continue
        else:
            pytest.fail("the pool never replaced its dropped connections")


@pytest.mark.parametrize("start", [1, 2])
def test_sqlite_store_migrates_an_older_database_and_keeps_its_rows(tmp_path: Path, start: int) -> None:
    """Today's unversioned file (schema 1) is recorded as 1, then migrated to the latest;
    a version 2 file (before revocations and the audit chain) gets only what it lacks."""
    from doorkeeper.hub import sqlite_store

    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as db:
        db.executescript(sqlite_store.SCHEMA_V1)  # what a hub before versioning wrote
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite_store.migrate_sqlite(conn, "hub", sqlite_store.MIGRATIONS[:start])
    conn.execute("INSERT INTO operators VALUES ('k1', x'00', 'admin', 'ann', 1)")
    conn.execute("INSERT INTO audit(at, principal, action, detail) VALUES (5, 'ann', 'site.add', 'oak')")
    indexed = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'requests_by_at'").fetchone()
    assert bool(indexed) == (start >= 2)
    conn.close()
    store = SqliteHubStore(path)
    latest = sqlite_store.MIGRATIONS[-1][0]
    assert store.schema_version == latest
    assert store.get_operator("k1").name == "ann" and store.get_operator("k1").revoked_at is None
    assert store.list_audit() == [AuditEntry(5, "ann", "site.add", "oak", seq=1)]  # empty chain fields
    assert store.revoke_operator("k1", now=9).revoked_at == 9
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'requests_by_at'").fetchone()
        row = db.execute("SELECT version FROM schema_version WHERE component = 'hub'").fetchone()
        assert row == (latest,)
    store.close()


def test_a_database_from_a_newer_hub_is_refused(tmp_path: Path) -> None:
    from doorkeeper.hub.migrations import SchemaTooNew

    SqliteHubStore(tmp_path / "hub.db").close()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaTooNew):
        SqliteHubStore(tmp_path / "hub.db")


@pytest.mark.parametrize("start", [1, 2])
def test_pg_store_migrates_from_an_older_version(pg_url: str, start: int) -> None:
    """From version 1 or 2 to the latest, keeping rows (from empty: every contract test)."""
    import psycopg

    from doorkeeper.hub import pg_store

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version(component TEXT PRIMARY KEY,"
                     " version INTEGER NOT NULL, applied_at BIGINT NOT NULL)")
        for _, sql in pg_store.HUB_MIGRATIONS[:start]:  # what that version wrote
            conn.execute(sql)  # type: ignore[arg-type]
        conn.execute("INSERT INTO schema_version VALUES ('hub', %s, 0)", (start,))
        conn.execute("INSERT INTO operators VALUES ('k1', '\\x00', 'admin', 'ann', 1)")
        conn.execute("INSERT INTO audit(at, principal, action, detail) VALUES (5, 'ann', 'site.add', 'oak')")
    store = pg_store.PgHubStore(pg_url)
    latest = {"hub": pg_store.HUB_MIGRATIONS[-1][0], "logs": pg_store.LOGS_MIGRATIONS[-1][0]}
    assert store.schema_versions == latest
    assert store.get_operator("k1").name == "ann" and store.get_operator("k1").revoked_at is None
    assert store.list_audit() == [AuditEntry(5, "ann", "site.add", "oak", seq=1)]  # empty chain fields
    assert store.revoke_operator("k1", now=9).revoked_at == 9
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'requests_by_at'").fetchone()
        # Opening again (a second replica) finds nothing to do.
        assert pg_store.migrate(conn) == latest
