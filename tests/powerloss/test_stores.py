"""Power cuts against the real stores: nothing anyone was told is stored may be lost.

Each trial cuts at random moments (after a random number of acknowledged writes), reboots the
disk, and compares the CONTENTS the writer was told were stored with what is there. The hub test
failed before the hub store ran `synchronous=FULL` (every acknowledged change lost, and their
version numbers confirmed again for other persons). The others guard stores that were already
FULL; each fails when its store is set back to NORMAL (outbox, hub logs) or OFF (the whitelist,
which also checkpoints after every apply). `doorkeeper bench durability` is the long form.
"""

from __future__ import annotations

from pathlib import Path

from doorkeeper.tools.powerloss.tally import Tally
from doorkeeper.tools.powerloss.trials import hub_logs_trial, hub_trial, outbox_trial, whitelist_trial


def _nothing_lost(tally: Tally) -> None:
    assert tally.cuts > 0 and tally.acknowledged > 0, tally.figures()
    figures = tally.figures()
    assert (figures["lost"], figures["reissued_versions"], figures["duplicated"],
            figures["integrity_failures"]) == (0, 0, 0, 0), figures


def test_hub_store_keeps_every_acknowledged_change_and_never_reissues_a_version(disk: Path) -> None:
    _nothing_lost(hub_trial(disk, cuts=3, records=15, seed=1))


def test_hub_log_store_keeps_every_acknowledged_upload(disk: Path) -> None:
    _nothing_lost(hub_logs_trial(disk, cuts=3, records=15, seed=4))


def test_agent_outbox_keeps_every_acknowledged_record(disk: Path) -> None:
    _nothing_lost(outbox_trial(disk, cuts=3, records=100, seed=2))


def test_agent_whitelist_keeps_every_applied_version(disk: Path) -> None:
    _nothing_lost(whitelist_trial(disk, cuts=3, records=5, seed=3))
