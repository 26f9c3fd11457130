"""Signer liveness and the pool's quorum (coordinator.health) on SQLite and PostgreSQL, with
stand-in signers whose answers the tests choose."""

from __future__ import annotations

import urllib.request
from fractions import Fraction

import pytest
from sqlalchemy import Engine

from coordinator.config import LivenessConfig, PoolConfig
from coordinator.health import (
    DOWN,
    HEALTHY,
    MAINTENANCE,
    HealthBoard,
    Quorum,
    SignerState,
    quorum,
)
from coordinator.metrics import CoordinatorMetrics, MetricsServer
from coordinator.signers import CallError, Failure, SignerCallError
from coordinator.store import liveness as lstore
from coordinator.store.liveness import QUORUM_DEGRADED, QUORUM_OK
from pool.networks import REGTEST
from tests.factories import make_series, master_key
from tests.store_fixtures import add_active_series
from vpool.v1 import signer_pb2

SERIES = make_series(1, 2, [0, 1, 2])
IDS = ("signer-0", "signer-1", "signer-2")
CONFIG = LivenessConfig(health_interval_seconds=30.0, down_after_missed=2)
TWO_THIRDS = Fraction(2, 3)


class Signers:
    """Stands in for the signer pool: signer-i holds master key i; ``up`` ones answer."""

    signer_ids = IDS

    def __init__(self) -> None:
        self.up = set(IDS)
        self.info_calls = 0

    def health(self, signer_id: str, timeout: float) -> bool:
        if signer_id not in self.up:
            error = CallError(Failure.DOWN, "UNAVAILABLE", "connection refused")
            raise SignerCallError(signer_id, error)
        return True

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo:
        self.info_calls += 1
        fingerprint = master_key(IDS.index(signer_id)).fingerprint.hex()
        return signer_pb2.SignerInfo(signer_id=signer_id, master_fingerprint=fingerprint)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(engine: Engine, clock: Clock) -> HealthBoard:
    add_active_series(engine, SERIES)
    return HealthBoard(engine, CONFIG, REGTEST, IDS, clock)


def states(board: HealthBoard) -> list[str]:
    return [s.state for s in board.snapshot()]


def check(board: HealthBoard, signers: Signers, clock: Clock, seconds: float = 30.0) -> None:
    clock.now += seconds
    board.check(signers, 1.0)


def test_signers_are_down_until_first_checked_then_healthy(
    board: HealthBoard, clock: Clock
) -> None:
    assert [(s.state, s.detail) for s in board.snapshot()] == [(DOWN, "not checked yet")] * 3
    signers = Signers()
    check(board, signers, clock)
    first = board.snapshot()[0]
    assert (first.state, first.last_seen, first.missed, first.detail) == (
        HEALTHY, clock.now, 0, "",
    )  # fmt: skip
    assert first.fingerprint == master_key(0).fingerprint.hex()
    check(board, signers, clock)
    assert signers.info_calls == 3  # each fingerprint is learnt once
    assert board.quorum().state == QUORUM_OK


def test_a_signer_is_down_after_the_configured_missed_checks(
    board: HealthBoard, clock: Clock, engine: Engine
) -> None:
    signers = Signers()
    check(board, signers, clock)
    healthy_at = clock.now
    signers.up.discard("signer-2")
    check(board, signers, clock)
    missed_once = board.snapshot()[2]
    assert (missed_once.state, missed_once.missed, missed_once.last_seen) == (
        HEALTHY, 1, healthy_at,
    )  # fmt: skip
    assert missed_once.detail == "UNAVAILABLE: connection refused"
    check(board, signers, clock)
    assert states(board) == [HEALTHY, HEALTHY, DOWN]
    down_at = clock.now
    signers.up.add("signer-2")
    check(board, signers, clock)
    assert states(board) == [HEALTHY] * 3
    with engine.connect() as conn:
        history = lstore.signer_history(conn, "signer-2")
    assert [(c.state, c.at) for c in history] == [
        (HEALTHY, healthy_at), (DOWN, down_at), (HEALTHY, clock.now),
    ]  # fmt: skip


def test_maintenance_holds_whatever_the_checks_say_and_counts_as_not_healthy(
    board: HealthBoard, clock: Clock
) -> None:
    signers = Signers()
    check(board, signers, clock)
    assert board.set_maintenance("signer-0", True).state == MAINTENANCE
    assert board.quorum().state == QUORUM_OK  # 2 of 3 left: only 1/3 down
    board.set_maintenance("signer-2", True)
    assert board.quorum().state == QUORUM_DEGRADED  # 1 of 3 left
    assert board.degraded_reason() == (
        "the pool is degraded: 1 of 3 signers of series 1 healthy; needs at least 2, and at "
        "least 2/3 of 3"
    )
    board.set_maintenance("signer-2", False)
    for _ in range(3):
        check(board, signers, clock)
    assert states(board) == [MAINTENANCE, HEALTHY, HEALTHY]
    assert board.set_maintenance("signer-0", False).state == HEALTHY
    assert board.quorum().state == QUORUM_OK
    board.set_maintenance("signer-1", True)
    signers.up.discard("signer-1")
    check(board, signers, clock)
    check(board, signers, clock)
    assert board.set_maintenance("signer-1", False).state == DOWN  # it stopped answering
    with pytest.raises(KeyError):
        board.set_maintenance("signer-9", True)


def state(i: int, health: str = HEALTHY) -> SignerState:
    return SignerState(f"s{i}", health, master_key(i).fingerprint.hex(), 1.0, "")


@pytest.mark.parametrize(
    ("m", "n", "healthy", "fraction", "expected"),
    [
        (2, 3, 3, TWO_THIRDS, QUORUM_OK),
        (2, 3, 2, TWO_THIRDS, QUORUM_OK),  # one of three down: not more than 1/3
        (2, 3, 1, TWO_THIRDS, QUORUM_DEGRADED),
        (2, 4, 3, TWO_THIRDS, QUORUM_OK),  # 3 >= 8/3
        (2, 4, 2, TWO_THIRDS, QUORUM_DEGRADED),
        (5, 7, 5, TWO_THIRDS, QUORUM_OK),  # 5 >= 14/3
        (4, 7, 4, TWO_THIRDS, QUORUM_DEGRADED),  # m is met, 3 of 7 down is more than 1/3
        (2, 3, 2, Fraction(1, 2), QUORUM_OK),
        (3, 4, 2, Fraction(0), QUORUM_DEGRADED),  # fewer than m
        (3, 4, 3, Fraction(0), QUORUM_OK),
    ],
)
def test_the_quorum_needs_m_and_at_least_the_fraction_of_n(
    m: int, n: int, healthy: int, fraction: Fraction, expected: str
) -> None:
    series = make_series(1, m, list(range(n)))
    states = [state(i, HEALTHY if i < healthy else DOWN) for i in range(n)]
    assert quorum(series, states, fraction).state == expected


def test_only_healthy_key_holders_count_and_each_once() -> None:
    others = [state(7), state(8)]  # healthy, but not key holders of SERIES
    again = SignerState("s0-copy", HEALTHY, master_key(0).fingerprint.hex(), 1.0, "")
    maintenance = state(1, MAINTENANCE)
    found = quorum(SERIES, [state(0), again, maintenance, *others], Fraction(0))
    assert found == Quorum(
        QUORUM_DEGRADED,
        "1 of 3 signers of series 1 healthy; needs at least 2, and at least 0 of 3",
    )
    none = quorum(None, [state(0), state(1), state(2)], TWO_THIRDS)
    assert none == Quorum(QUORUM_DEGRADED, "there is no active series")


def test_quorum_transitions_are_recorded_in_whole_seconds(
    board: HealthBoard, clock: Clock, engine: Engine
) -> None:
    signers = Signers()
    check(board, signers, clock, 30.7)
    signers.up -= {"signer-1", "signer-2"}
    check(board, signers, clock)
    check(board, signers, clock, 30.5)
    with engine.connect() as conn:
        history = lstore.quorum_history_of(conn)
    assert [(c.state, c.at) for c in history] == [
        (QUORUM_OK, 1_700_000_030.0),
        (QUORUM_DEGRADED, 1_700_000_091.0),
    ]
    assert history[1].detail.startswith("1 of 3 signers of series 1 healthy")


def test_states_and_quorum_survive_a_restart_until_the_next_check(
    board: HealthBoard, clock: Clock, engine: Engine
) -> None:
    signers = Signers()
    check(board, signers, clock)
    signers.up = {"signer-0"}
    check(board, signers, clock)
    check(board, signers, clock)
    outage = clock.now
    board.set_maintenance("signer-0", True)
    assert board.quorum().state == QUORUM_DEGRADED

    restarted = HealthBoard(engine, CONFIG, REGTEST, IDS, clock)
    assert states(restarted) == [MAINTENANCE, DOWN, DOWN]
    assert restarted.quorum().state == QUORUM_DEGRADED
    assert restarted.degraded_reason() is not None
    clock.now += 3600  # the coordinator was stopped for an hour: still degraded then
    with engine.connect() as conn:
        assert lstore.quorum_at(conn, clock.now) == QUORUM_DEGRADED
    signers.up = set(IDS)
    restarted.set_maintenance("signer-0", False)
    check(restarted, signers, clock)
    assert restarted.quorum().state == QUORUM_OK
    with engine.connect() as conn:
        assert lstore.quorum_at(conn, outage + 10) == QUORUM_DEGRADED
        assert lstore.quorum_at(conn, clock.now) == QUORUM_OK
        assert [c.state for c in lstore.signer_history(conn, "signer-1")] == [
            HEALTHY, DOWN, HEALTHY,
        ]  # fmt: skip


def test_a_new_active_series_is_seen_and_judged_at_the_next_check(
    engine: Engine, clock: Clock
) -> None:
    board = HealthBoard(engine, CONFIG, REGTEST, IDS, clock)
    signers = Signers()
    check(board, signers, clock)
    assert board.quorum() == Quorum(QUORUM_DEGRADED, "there is no active series")
    assert not board.series_changed()
    add_active_series(engine, SERIES)
    assert board.series_changed()
    check(board, signers, clock, 1.0)
    assert (board.quorum().state, board.series_changed()) == (QUORUM_OK, False)


def test_metrics_show_the_quorum_the_signers_and_the_queue(
    board: HealthBoard, clock: Clock, engine: Engine
) -> None:
    signers = Signers()
    signers.up -= {"signer-1", "signer-2"}
    check(board, signers, clock)
    collector = CoordinatorMetrics(engine, board, REGTEST, PoolConfig())
    metrics = MetricsServer("127.0.0.1:0", collector).start()
    try:
        with urllib.request.urlopen(f"http://{metrics.address}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        metrics.stop()
    samples = set(text.splitlines())
    assert {
        "vpool_quorum_ok 0",
        'vpool_signer_healthy{signer="signer-0"} 1',
        'vpool_signer_healthy{signer="signer-1"} 0',
        'vpool_signer_healthy{signer="signer-2"} 0',
        "vpool_queue_length 0",
        "vpool_coordinator_active 1",
    } <= samples


def test_the_grpc_health_follows_the_quorum_and_the_node_and_comes_back(
    board: HealthBoard, clock: Clock
) -> None:
    signers, published = Signers(), []
    check(board, signers, clock)
    assert board.publish(published.append) is None
    signers.up -= {"signer-1", "signer-2"}
    for _ in range(CONFIG.down_after_missed):
        check(board, signers, clock)
    degraded = board.publish(published.append)
    assert degraded is not None and degraded.startswith("the pool is degraded: 1 of 3 signers")
    signers.up |= {"signer-1", "signer-2"}
    check(board, signers, clock)
    board.note_node("ChainError: connection refused")
    assert board.publish(published.append) == (
        "the node does not answer: ChainError: connection refused"
    )
    board.note_node(None)
    assert board.publish(published.append) is None
    assert [reason is None for reason in published] == [True, False, False, True]
    assert published[1] == degraded  # the gRPC health is given the reason (vpool.health)


def test_signers_up_counts_m_healthy_key_holders_even_while_the_pool_is_degraded(
    engine: Engine, clock: Clock
) -> None:
    add_active_series(engine, SERIES)
    strict = LivenessConfig(down_after_missed=1, quorum_fraction=Fraction(1))
    board = HealthBoard(engine, strict, REGTEST, IDS, clock)
    signers = Signers()
    signers.up -= {"signer-2"}
    check(board, signers, clock)
    assert board.degraded_reason() is not None  # 2 of 3, and all 3 are required
    assert board.signers_up()  # but m = 2 of them are healthy
    signers.up -= {"signer-1"}
    check(board, signers, clock)
    assert not board.signers_up()
