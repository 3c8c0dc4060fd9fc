"""The hub's rollout job: fires scheduled starts and promotions, stops a rollout whose
auto-stop rule trips, and closes a promotion every door has applied (`Rollouts.tick`).

It runs on an APScheduler 3 `BackgroundScheduler`, every `interval_s`. Nothing it needs is
held by APScheduler: schedules and rollouts live in the hub store, so a restart (or another
replica) picks them up on its first pass, which runs at once on start. With several replicas
on one PostgreSQL, every replica runs the job, and each action is conditional on the rollout
row's `rev` (`HubStore.update_rollout`): the first replica to act wins, the others' passes
roll back and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from doorkeeper.hub.rollouts import Rollouts

log = logging.getLogger("doorkeeper.hub.rollout")
DEFAULT_INTERVAL_S = 5.0


class RolloutJob:
    def __init__(self, rollouts: Rollouts, wake: Callable[[str], None],
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.rollouts = rollouts
        self.wake = wake
        self.passes = 0
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(
            self.run_once, "interval", seconds=interval_s, id="rollouts",
            next_run_time=datetime.now(UTC),  # a schedule that fell due while the hub was down fires now
            # One pass at a time: a slow pass (an abort writing a big site) never overlaps the next.
            max_instances=1,
            # Passes missed while the process stalled become one pass, not a burst: each pass
            # reads the whole state from the store, so a second one in a row adds nothing.
            coalesce=True,
            # A late pass still runs however late it is: what it acts on (a schedule's time, a
            # rule's figures) is read when it runs, so lateness never makes it wrong, and
            # skipping it would only delay a due promotion or a needed stop by an interval.
            misfire_grace_time=None)

    def start(self) -> RolloutJob:
        self.scheduler.start()
        return self

    def close(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def run_once(self) -> list[str]:
        """One pass; wakes the watch streams of every site whose targets moved."""
        try:
            moved = self.rollouts.tick()
        except Exception:  # the store is down, say: the next pass tries again
            log.exception("rollout pass failed; the next one retries")
            return []
        finally:
            self.passes += 1
        for site_id in moved:
            self.wake(site_id)
        return moved
