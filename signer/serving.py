"""When this signer was serving: intervals of its health being SERVING (node and device fine),
kept in its own store and reported in GetInfo (``SignerInfo.serving``).

A coordinator that was itself stopped while signers went down has no health checks of that time;
it asks each signer for these intervals and judges the deposits mined meanwhile by them. The
end of an interval is the last moment the signer knew it was serving (written every
``HEARTBEAT_SECONDS`` while it serves, so a crash shortens it by at most that); the interval in
progress ends "now" in GetInfo.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

HEARTBEAT_SECONDS = 2.0
"""How often the end of the current interval is written."""
REPORTED = 1000
"""How many intervals GetInfo reports, the latest."""


class ServingStore(Protocol):
    def open_serving(self, now: float) -> int: ...

    def extend_serving(self, interval_id: int, now: float) -> None: ...

    def serving_intervals(self, limit: int) -> list[tuple[int, float, float]]: ...


class ServingLog:
    def __init__(
        self,
        store: ServingStore,
        clock: Callable[[], float],
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._current: int | None = None
        self._written = 0.0

    def note(self, serving: bool) -> None:
        """What the health is now (called at every probe)."""
        now = self._clock()
        with self._lock:
            if not serving:
                self._current = None  # it ended at the last write: all that is known
            elif self._current is None:
                self._current, self._written = self._store.open_serving(now), now
            elif now - self._written >= self._heartbeat:
                self._store.extend_serving(self._current, now)
                self._written = now

    def intervals(self) -> list[tuple[float, float]]:
        """(from, until) in unix seconds, oldest first; the one in progress ends now."""
        rows = self._store.serving_intervals(REPORTED)
        with self._lock:
            current = self._current
        now = self._clock()
        return [(a, max(b, now) if i == current else b) for i, a, b in rows]
