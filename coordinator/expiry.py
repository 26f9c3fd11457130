"""Expiry: a withdrawal ``deferred`` for longer than ``rounds.withdrawal_expiry_seconds`` becomes
``expired``, final, with a reason; it is never paid and leaves the queue.

The time counts from its first deferral (a deferred withdrawal is tried by every round and
deferred again while the pool lacks funds). Only a withdrawal that is ``deferred`` when the check
runs expires: one a round took meanwhile is left alone (the store's transition rule,
coordinator.store.withdrawals.expire). The daemon loop runs the check at every step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine

from coordinator.store import withdrawals as wstore
from coordinator.store.schema import transaction

log = logging.getLogger(__name__)


def expiry_reason(deferred_since: float, expiry_seconds: float) -> str:
    return (
        f"deferred since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(deferred_since))}, "
        f"longer than the pool's withdrawal expiry of {expiry_seconds:g} s "
        "(rounds.withdrawal_expiry_seconds): the pool lacked the funds to pay it"
    )


class Expiry:
    def __init__(
        self, engine: Engine, expiry_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._expiry_seconds = expiry_seconds
        self._clock = clock

    def run(self) -> int:
        """Expire the withdrawals deferred too long; how many expired."""
        now = self._clock()
        cutoff = now - self._expiry_seconds
        with self._engine.connect() as conn:  # a read first: no write lock at every step
            if not wstore.deferred_since_before(conn, cutoff):
                return 0
        expired = 0
        with transaction(self._engine) as conn:
            for found, since in wstore.deferred_since_before(conn, cutoff):
                reason = expiry_reason(since, self._expiry_seconds)
                if wstore.expire(conn, found.id, reason, now):
                    expired += 1
                    log.info(
                        "client %s: withdrawal %r expired: %s",
                        found.client_id,
                        found.request_id,
                        reason,
                    )
        return expired
