"""Wake the watch streams of a site when its whitelist changes.

Changes are committed in worker threads; the streams wait on asyncio events in
the server's loop. A change committed through another replica (PostgreSQL store)
arrives through `pg_store.PgChangeListener` (LISTEN/NOTIFY, and a reconcile of every
site's version after each reconnect and every reconcile interval); each watch stream
also re-reads the store every beacon interval.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class SiteNotifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._generation: defaultdict[str, int] = defaultdict(int)
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, site_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events[site_id].add(event)
        return event

    def unsubscribe(self, site_id: str, event: asyncio.Event) -> None:
        self._events[site_id].discard(event)
        if not self._events[site_id]:
            del self._events[site_id]

    def watchers(self, site_id: str) -> int:
        return len(self._events.get(site_id, ()))

    def notify(self, site_id: str) -> None:
        """Safe to call from any thread."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._set, site_id)

    def close(self) -> None:
        """Shutting down: wake every watch stream so it ends instead of holding the grace period."""
        self.closed = True
        for events in list(self._events.values()):
            for event in list(events):
                event.set()

    def generation(self, site_id: str) -> int:
        """How many times `site_id` was notified (on the loop): a store read started at the
        current generation started after every change this replica was told of."""
        return self._generation[site_id]

    def _set(self, site_id: str) -> None:
        self._generation[site_id] += 1
        for event in list(self._events.get(site_id, ())):
            event.set()
