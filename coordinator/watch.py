"""Wake-ups for the Watch streams (WatchWithdrawals, WatchDeposits), and the loop they run.

Writers in this process (the API, the round scheduler, the daemon loop) call ``notify`` after
they commit; a stream waiting for new events wakes at once. Streams also poll the store every
``POLL_SECONDS``, so a change made elsewhere (another coordinator on the same PostgreSQL, a
missed wake-up) is seen within that time: the store is the truth, the signal only a hint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

POLL_SECONDS = 1.0
T = TypeVar("T")


class ChangeSignal:
    """A counter of changes that waiters can block on; ``close`` releases every waiter for good."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._closed = False

    @property
    def generation(self) -> int:
        """Read it before looking at the store; pass it to ``wait``."""
        with self._condition:
            return self._generation

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float = POLL_SECONDS) -> None:
        """Return when a change after ``seen`` happened, on ``close``, or after ``timeout``."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._closed or self._generation != seen, timeout=timeout
            )


def follow(
    changes: ChangeSignal,
    context: Any,
    cursor: int,
    read: Callable[[int], Sequence[tuple[int, T]]],
    batch: int,
) -> Iterator[T]:
    """The messages of a Watch stream: ``read(cursor)`` gives up to ``batch`` (cursor, message)
    pairs after ``cursor``; when fewer come, wait for a change. Ends when the client goes away
    or the signal closes."""
    context.add_callback(changes.notify)  # wakes this stream when the client leaves
    while context.is_active() and not changes.closed:
        seen = changes.generation
        found = read(cursor)
        for _, message in found:
            yield message
        if found:
            cursor = found[-1][0]
        if len(found) < batch:
            changes.wait(seen)
