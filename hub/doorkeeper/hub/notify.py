"""Wake the watch streams of a site when its whitelist changes, and end the streams of a
door that was revoked or replaced.

Changes are committed in worker threads; the streams wait on asyncio events in
the server's loop. A change committed through another replica (PostgreSQL store)
arrives through `pg_store.PgChangeListener` (LISTEN/NOTIFY, and a reconcile of every
site's version after each reconnect and every reconcile interval); each watch stream
also re-reads the site every beacon interval.

Revocations travel the same way, so a watch stream never reads its door's row after it
opened (the interceptor read it then): `end_device` ends every stream of one door at once
(called by the replica that revoked or replaced it, and by the LISTEN session for a door
revoked through another replica), and `end_stale` compares the keys of the doors holding
streams with the store's (the listener runs it with every reconcile, so a lost
notification ends a revoked door's stream within that interval too).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable


class Watcher:
    """One watch stream's subscription: woken by its site's changes; `ended` once its door
    is revoked or its keys replaced (the stream then returns)."""

    __slots__ = ("device_id", "ended", "event", "sign_public", "site_id")

    def __init__(self, site_id: str, device_id: str, sign_public: bytes | None) -> None:
        self.site_id = site_id
        self.device_id = device_id
        self.sign_public = sign_public
        self.event = asyncio.Event()
        self.ended = False


class SiteNotifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._generation: defaultdict[str, int] = defaultdict(int)
        # device id -> its open streams; written on the loop, copied under the lock by
        # `end_stale` in the listener's thread.
        self._devices: defaultdict[str, set[Watcher]] = defaultdict(set)
        self._devices_lock = threading.Lock()
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

    def watch(self, site_id: str, device_id: str, sign_public: bytes | None) -> Watcher:
        """Subscribe one door's stream: its site's changes and its own revocation."""
        watcher = Watcher(site_id, device_id, sign_public)
        self._events[site_id].add(watcher.event)
        with self._devices_lock:
            self._devices[device_id].add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.unsubscribe(watcher.site_id, watcher.event)
        with self._devices_lock:
            streams = self._devices.get(watcher.device_id)
            if streams is not None:
                streams.discard(watcher)
                if not streams:
                    del self._devices[watcher.device_id]

    def watchers(self, site_id: str) -> int:
        return len(self._events.get(site_id, ()))

    def notify(self, site_id: str) -> None:
        """Safe to call from any thread."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._set, site_id)

    def end_device(self, device_id: str, unless_key: bytes | None = None) -> None:
        """End the streams of `device_id` (revoked or replaced), except those opened with
        `unless_key` (None: all). Safe to call from any thread."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._end, device_id, unless_key)

    def end_stale(self, keys_of: Callable[[Iterable[str]], dict[str, bytes | None]]) -> int:
        """Ask `keys_of` (the store: device id -> its current signing key, None when revoked
        or unbound) about every door holding a stream here, and end the streams whose door
        no longer holds the key they were opened with. Blocking: call it off the loop.
        The number of doors whose streams are ended."""
        with self._devices_lock:
            held = {device_id: {w.sign_public for w in streams}
                    for device_id, streams in self._devices.items()}
        if not held:
            return 0
        current = keys_of(list(held))
        stale = [(device_id, current.get(device_id)) for device_id, keys in held.items()
                 if keys - {current.get(device_id)}]
        for device_id, key in stale:
            self.end_device(device_id, unless_key=key)
        return len(stale)

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

    def _end(self, device_id: str, unless_key: bytes | None) -> None:
        with self._devices_lock:
            streams = list(self._devices.get(device_id, ()))
        for watcher in streams:
            if unless_key is None or watcher.sign_public != unless_key:
                watcher.ended = True
                watcher.event.set()
