"""When rounds run: withdrawal rounds on the timer, when the queue passes its threshold, or on
RunRoundNow; refund rounds at every tick, when deposits wait for one (the refund round's build
says whether any does: coordinator.refund_rounds). Never while rounds are paused or the pool's
quorum is degraded (too few signers are healthy: coordinator.health), except refund rounds with
``deposits.refund_while_degraded`` while at least m key holders are healthy (the seed's second
option: the signers that are up refund, the others check each refund against their own records
when they return, and a credited deposit is never refunded: m + (n - m + 1) > n).

The threshold counts pending withdrawals only: deferred ones already had a round (the pool lacked
funds) and wait for the timer, so a queue of deferred withdrawals does not start round after
round while nothing changes.

Every call into the round engine (``resume``, ``track``, ``run_round``, ``run_refunds``) goes
through one lock, so two rounds never run at once and a round never races the tracking of the
previous ones. The pause switch lives in the store (``settings``), so it survives a restart and
every coordinator process sharing the database obeys it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine

from coordinator.config import RoundsConfig
from coordinator.store.settings import rounds_paused
from coordinator.store.withdrawals import Status, count_with_status
from coordinator.watch import ChangeSignal

log = logging.getLogger(__name__)


class RoundsPaused(Exception):
    """An operator paused rounds."""


class RoundBusy(Exception):
    """A round is running already."""


class PoolDegraded(Exception):
    """The pool's quorum is degraded; the message says why."""


class Quorum(Protocol):
    """The part of ``coordinator.health.HealthBoard`` the scheduler asks."""

    def degraded_reason(self) -> str | None: ...

    def signers_up(self) -> bool:
        """At least m key holders of the active series are healthy."""
        ...


class Outcome(Protocol):
    """What running a round gave (coordinator.rounds.RoundOutcome)."""

    @property
    def round_id(self) -> str | None: ...

    @property
    def detail(self) -> str: ...


class RoundWork(Protocol):
    """The part of ``coordinator.rounds.RoundEngine`` the scheduler drives."""

    def run_round(self) -> Outcome: ...

    def run_refunds(self) -> Outcome: ...

    def resume(self) -> object: ...

    def track(self) -> object: ...

    def retry_waiting(self) -> object: ...

    def run_cancels(self) -> object: ...

    def cancel_round(self, round_id: str) -> Outcome: ...


class RoundScheduler:
    def __init__(
        self,
        work: RoundWork,
        engine: Engine,
        config: RoundsConfig,
        changes: ChangeSignal,
        quorum: Quorum,
        clock: Callable[[], float] = time.monotonic,
        refund_while_degraded: bool = False,
    ) -> None:
        self._refund_while_degraded = refund_while_degraded
        self._work = work
        self._engine = engine
        self._config = config
        self._changes = changes
        self._quorum = quorum
        self._clock = clock
        self._lock = threading.Lock()
        self._running = False
        self._last_start = clock()

    def paused(self) -> bool:
        with self._engine.connect() as conn:
            return rounds_paused(conn)

    def resume(self) -> None:
        """Finish or abandon the rounds a previous run left open."""
        with self._lock:
            self._work.resume()
        self._changes.notify()

    def exclusive(self, work: Callable[[], object]) -> None:
        """Run ``work`` (the transaction watcher, coordinator.watcher) under the lock rounds
        run under, so it never races a round or the tracking."""
        with self._lock:
            work()
        self._changes.notify()

    def run_now(self) -> Outcome:
        """Run a round at once; raises ``RoundsPaused``, ``RoundBusy`` or ``PoolDegraded``
        instead."""
        if self._running:
            raise RoundBusy("a round is already running")
        with self._lock:
            if self.paused():
                raise RoundsPaused("rounds are paused (AdminService.ResumeRounds starts them)")
            degraded = self._quorum.degraded_reason()
            if degraded is not None:
                raise PoolDegraded(f"{degraded}; no round is started until it is ok")
            return self._run(self._work.run_round)

    def cancel_round(self, round_id: str) -> Outcome:
        """AdminService.CancelRound, at once: one database transaction that abandons a signing
        round without signatures (``RoundEngine.cancel_round``), so it does not wait for the
        lock a round that polls its signers holds; that round sees it at its next poll."""
        outcome = self._work.cancel_round(round_id)
        self._changes.notify()
        return outcome

    def tick(self) -> None:
        """Follow the open rounds, ask the rounds that wait for signatures again (paused or
        not), then start a withdrawal round if one is due, and a refund round if deposits wait
        for one."""
        with self._lock:
            self._work.track()
            self._work.retry_waiting()
            self._changes.notify()
            if self.paused():
                return
            if self._quorum.degraded_reason() is not None:
                if self._refund_while_degraded and self._quorum.signers_up():
                    self._refunds()
                return
            self._work.run_cancels()  # cancel rounds (coordinator.cancels) for waiting cancels
            if self._due():
                outcome = self._run(self._work.run_round)
                log.info("round %s: %s", outcome.round_id or "-", outcome.detail)
            self._refunds()

    def _refunds(self) -> None:
        refunds = self._run(self._work.run_refunds, timed=False)
        if refunds.round_id is not None:
            log.info("refund round %s: %s", refunds.round_id, refunds.detail)

    def _due(self) -> bool:
        if self._clock() - self._last_start >= self._config.interval_seconds:
            return True
        with self._engine.connect() as conn:
            return count_with_status(conn, [Status.PENDING]) >= self._config.queue_threshold

    def _run(self, run: Callable[[], Outcome], timed: bool = True) -> Outcome:
        """Run a round; ``timed``: a withdrawal round, which restarts the timer."""
        self._running = True
        if timed:
            self._last_start = self._clock()
        try:
            return run()
        finally:
            self._running = False
            self._changes.notify()
