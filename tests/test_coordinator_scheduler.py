"""When the daemon loop starts rounds: the timer, the queue threshold, the pause switch, the
quorum."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine

from coordinator.config import RoundsConfig
from coordinator.scheduler import PoolDegraded, RoundScheduler, RoundsPaused
from coordinator.store import withdrawals as wstore
from coordinator.store.schema import transaction
from coordinator.store.settings import set_rounds_paused
from coordinator.watch import ChangeSignal
from tests.coordinator_harness import StandInRounds

CONFIG = RoundsConfig(interval_seconds=60.0, queue_threshold=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _queue(engine: Engine, ids: range) -> None:
    """Pending withdrawals w-<i> for each i of ``ids``."""
    with transaction(engine) as conn:
        for i in ids:
            wstore.insert_withdrawal(
                conn,
                client_id="alice",
                request_id=f"w-{i}",
                address="bcrt1q...",
                script_pubkey=b"\x00\x14" + bytes(20),
                amount=10_000,
                extra_fee=0,
                now=time.time(),
            )


class Quorum:
    """Stands in for the health board: degraded while ``reason`` is set; ``up``: at least m key
    holders healthy."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.up = True

    def degraded_reason(self) -> str | None:
        return self.reason

    def signers_up(self) -> bool:
        return self.up


QUORUM = Quorum()


@pytest.fixture
def setup(engine: Engine) -> tuple[RoundScheduler, StandInRounds, Clock]:
    rounds, clock = StandInRounds(), Clock()
    QUORUM.reason, QUORUM.up = None, True
    return RoundScheduler(rounds, engine, CONFIG, ChangeSignal(), QUORUM, clock), rounds, clock


DEGRADED = "the pool is degraded: 2 of 4 signers of series 1 healthy"


def test_with_refund_while_degraded_refund_rounds_run_while_m_signers_are_up(
    engine: Engine,
) -> None:
    rounds, clock = StandInRounds(), Clock()
    QUORUM.reason, QUORUM.up = DEGRADED, True
    scheduler = RoundScheduler(
        rounds, engine, CONFIG, ChangeSignal(), QUORUM, clock, refund_while_degraded=True
    )
    _queue(engine, range(5))
    clock.now += 60
    scheduler.tick()
    assert (rounds.refund_runs, rounds.runs) == (1, 0)  # refunds only, never withdrawals


def test_with_refund_while_degraded_nothing_runs_with_fewer_than_m_signers_up(
    engine: Engine,
) -> None:
    rounds = StandInRounds()
    QUORUM.reason, QUORUM.up = DEGRADED, False
    scheduler = RoundScheduler(
        rounds, engine, CONFIG, ChangeSignal(), QUORUM, Clock(), refund_while_degraded=True
    )
    scheduler.tick()
    assert (rounds.refund_runs, rounds.runs) == (0, 0)


def test_with_refund_while_degraded_a_paused_pool_runs_no_refund_round(engine: Engine) -> None:
    rounds = StandInRounds()
    QUORUM.reason, QUORUM.up = DEGRADED, True
    scheduler = RoundScheduler(
        rounds, engine, CONFIG, ChangeSignal(), QUORUM, Clock(), refund_while_degraded=True
    )
    with transaction(engine) as conn:
        set_rounds_paused(conn, True)
    scheduler.tick()
    assert rounds.refund_runs == 0


def test_a_round_starts_when_the_interval_has_passed(
    setup: tuple[RoundScheduler, StandInRounds, Clock],
) -> None:
    scheduler, rounds, clock = setup
    scheduler.tick()
    clock.now += 59
    scheduler.tick()
    assert rounds.runs == 0
    clock.now += 1
    scheduler.tick()
    scheduler.tick()
    assert rounds.runs == 1  # the timer restarts with each round


def test_every_tick_asks_the_rounds_that_wait_for_signatures_again_even_when_paused(
    setup: tuple[RoundScheduler, StandInRounds, Clock], engine: Engine
) -> None:
    scheduler, rounds, _ = setup
    scheduler.tick()
    with transaction(engine) as conn:
        set_rounds_paused(conn, True)
    QUORUM.reason = "two signers are down"
    scheduler.tick()
    assert (rounds.retries, rounds.runs) == (2, 0)


def test_a_round_starts_when_the_queue_passes_the_threshold(
    setup: tuple[RoundScheduler, StandInRounds, Clock], engine: Engine
) -> None:
    scheduler, rounds, _ = setup
    _queue(engine, range(2))
    scheduler.tick()
    assert rounds.runs == 0
    _queue(engine, range(2, 3))
    scheduler.tick()
    assert rounds.runs == 1


def test_deferred_withdrawals_wait_for_the_timer(
    setup: tuple[RoundScheduler, StandInRounds, Clock], engine: Engine
) -> None:
    scheduler, rounds, clock = setup
    _queue(engine, range(5))
    with transaction(engine) as conn:
        ids = [w.id for w in wstore.queued(conn)]
        wstore.set_status(conn, ids, wstore.Status.DEFERRED, time.time(), detail="no funds")
    scheduler.tick()
    assert rounds.runs == 0
    clock.now += 60
    scheduler.tick()
    assert rounds.runs == 1


def test_paused_rounds_never_start(
    setup: tuple[RoundScheduler, StandInRounds, Clock], engine: Engine
) -> None:
    scheduler, rounds, clock = setup
    with transaction(engine) as conn:
        set_rounds_paused(conn, True)
    clock.now += 3600
    scheduler.tick()
    with pytest.raises(RoundsPaused):
        scheduler.run_now()
    assert rounds.runs == 0
    with transaction(engine) as conn:
        set_rounds_paused(conn, False)
    assert scheduler.run_now().detail == "stand-in: nothing to do"
    assert rounds.runs == 1


def test_no_round_starts_while_the_pool_is_degraded(
    setup: tuple[RoundScheduler, StandInRounds, Clock], engine: Engine
) -> None:
    scheduler, rounds, clock = setup
    QUORUM.reason = "the pool is degraded: 1 of 3 signers of series 1 healthy"
    _queue(engine, range(5))
    clock.now += 60
    scheduler.tick()
    with pytest.raises(PoolDegraded, match="1 of 3 signers of series 1 healthy; no round"):
        scheduler.run_now()
    assert rounds.runs == 0
    QUORUM.reason = None
    scheduler.tick()
    assert rounds.runs == 1


def test_refund_rounds_are_tried_at_every_tick_unless_paused_or_degraded(
    setup: tuple[RoundScheduler, StandInRounds, Clock], engine: Engine
) -> None:
    scheduler, rounds, _ = setup
    scheduler.tick()
    scheduler.tick()
    assert (rounds.refund_runs, rounds.runs) == (2, 0)  # refunds do not wait for the timer
    QUORUM.reason = "the pool is degraded: 1 of 3 signers of series 1 healthy"
    scheduler.tick()
    QUORUM.reason = None
    with transaction(engine) as conn:
        set_rounds_paused(conn, True)
    scheduler.tick()
    assert rounds.refund_runs == 2
