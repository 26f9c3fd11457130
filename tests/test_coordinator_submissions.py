"""Group commit of submissions (coordinator.submissions), on SQLite and PostgreSQL: callers that
submit at once share transactions, and each gets exactly what one transaction per request gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select

from coordinator.config import PoolConfig
from coordinator.store import withdrawals as wstore
from coordinator.store.schema import withdrawal_events, withdrawals
from coordinator.submissions import SubmissionWriter
from coordinator.validation import WithdrawalBody
from tests.coordinator_harness import fund_pool
from tests.factories import BTC, p2wpkh
from vpool.rpc import RpcFailure

CALLERS = 24


def _body(request_id: str, amount: int = 100_000) -> WithdrawalBody:
    return WithdrawalBody(request_id, "bcrt1qbench", p2wpkh(request_id), amount, 0)


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _writer(engine: Engine, notified: list[int]) -> SubmissionWriter:
    fund_pool(engine, BTC)  # admission takes withdrawals up to what the pool holds
    return SubmissionWriter(
        engine, PoolConfig(), lambda: 1_700_000_000.0, lambda: notified.append(1)
    )


def test_concurrent_submissions_each_store_their_own_withdrawal(engine: Engine) -> None:
    writer = _writer(engine, [])
    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(lambda n: writer.submit("alice", _body(f"r{n}")), range(CALLERS)))
    assert [stored.request_id for stored, _ in answers] == [f"r{n}" for n in range(CALLERS)]
    assert [message.request_id for _, message in answers] == [f"r{n}" for n in range(CALLERS)]
    assert len({stored.id for stored, _ in answers}) == CALLERS
    assert _count(engine, withdrawals) == CALLERS
    assert _count(engine, withdrawal_events) == CALLERS


def test_one_request_id_submitted_at_once_by_many_callers_is_stored_once(engine: Engine) -> None:
    writer = _writer(engine, [])
    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(lambda _: writer.submit("alice", _body("same")), range(CALLERS)))
    assert len({stored.id for stored, _ in answers}) == 1
    assert _count(engine, withdrawals) == 1
    assert _count(engine, withdrawal_events) == 1


def test_the_same_request_id_of_two_clients_is_two_withdrawals(engine: Engine) -> None:
    writer = _writer(engine, [])
    alice, _ = writer.submit("alice", _body("r1"))
    bob, _ = writer.submit("bob", _body("r1"))
    assert alice.id != bob.id
    assert _count(engine, withdrawals) == 2


def test_a_resubmission_returns_the_stored_withdrawal_and_wakes_nobody(engine: Engine) -> None:
    notified: list[int] = []
    writer = _writer(engine, notified)
    first, _ = writer.submit("alice", _body("r1", 100_000))
    again, message = writer.submit("alice", _body("r1", 200_000))
    assert again == first
    assert message.amount_sat == 100_000
    assert notified == [1]


def test_the_answer_is_the_withdrawal_as_stored(engine: Engine) -> None:
    writer = _writer(engine, [])
    stored, _ = writer.submit("alice", _body("r1"))
    with engine.connect() as conn:
        assert wstore.get_by_id(conn, stored.id) == stored


def test_a_batch_admits_its_requests_in_order_against_one_budget(engine: Engine) -> None:
    writer = _writer(engine, [])
    writer.submit("alice", _body("first", BTC // 2))
    with pytest.raises(RpcFailure, match="spendable balance of 50000000 sat"):
        writer.submit("alice", _body("too much", BTC // 2 + 1))
    assert _count(engine, withdrawals) == 1
