"""Withdrawal statuses and their events, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from coordinator.store import withdrawals as store
from coordinator.store.schema import make_engine, withdrawal_events
from coordinator.store.withdrawals import Status


def _new(engine: Engine, request_id: str = "r1") -> int:
    with engine.begin() as conn:
        return store.insert_withdrawal(
            conn,
            client_id="alice",
            request_id=request_id,
            address="bcrt1qexample",
            script_pubkey=b"\x00\x14" + bytes(20),
            amount=10_000,
            extra_fee=0,
            now=1.0,
        ).id


def _statuses(engine: Engine, withdrawal_id: int) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(withdrawal_events.c.status)
            .where(withdrawal_events.c.withdrawal_id == withdrawal_id)
            .order_by(withdrawal_events.c.cursor)
        )
        return [r.status for r in rows]


def test_every_transition_appends_one_event(engine: Engine) -> None:
    wid = _new(engine)
    with engine.begin() as conn:
        store.set_status(conn, [wid], Status.IN_ROUND, 2.0, round_seq=1)
        store.set_status(conn, [wid], Status.SIGNED, 3.0)
    assert _statuses(engine, wid) == ["pending", "in_round", "signed"]


def test_setting_the_same_status_again_appends_nothing(engine: Engine) -> None:
    wid = _new(engine)
    with engine.begin() as conn:
        store.set_status(conn, [wid], Status.PENDING, 2.0)
    assert _statuses(engine, wid) == ["pending"]


@pytest.mark.parametrize(
    "final", [Status.CANCELLED, Status.REJECTED, Status.COMPLETED, Status.EXPIRED]
)
def test_a_final_status_is_never_left(engine: Engine, final: Status) -> None:
    wid = _new(engine)
    with engine.begin() as conn:
        if final is Status.EXPIRED:
            store.set_status(conn, [wid], Status.DEFERRED, 1.5)
        store.set_status(conn, [wid], final, 2.0)
    with pytest.raises(ValueError, match="final"), engine.begin() as conn:
        store.set_status(conn, [wid], Status.IN_ROUND, 3.0, round_seq=1)
    with engine.connect() as conn:
        found = store.get_by_id(conn, wid)
    assert found is not None and found.status is final


def test_sqlite_transactions_begin_before_their_first_read(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with eng.begin() as conn:
        conn.exec_driver_sql("SELECT 1")
        assert conn.connection.driver_connection.in_transaction  # type: ignore[union-attr]
    eng.dispose()


@pytest.mark.parametrize("status", [Status.PENDING, Status.IN_ROUND, Status.BROADCAST])
def test_only_a_deferred_withdrawal_expires(engine: Engine, status: Status) -> None:
    wid = _new(engine)
    with engine.begin() as conn:
        store.set_status(conn, [wid], status, 2.0, round_seq=1)
    with pytest.raises(ValueError, match="only a deferred withdrawal expires"), engine.begin() as c:
        store.set_status(c, [wid], Status.EXPIRED, 3.0)
    with engine.begin() as conn:
        assert not store.expire(conn, wid, "too long", 3.0)
    assert _statuses(engine, wid)[-1] == status.value


def test_expiry_counts_from_the_first_deferral(engine: Engine) -> None:
    wid = _new(engine)
    with engine.begin() as conn:
        store.set_status(conn, [wid], Status.DEFERRED, 10.0, detail="short")
        store.set_status(conn, [wid], Status.IN_ROUND, 20.0, round_seq=1)
        store.set_status(conn, [wid], Status.DEFERRED, 30.0, detail="short", clear_round=True)
    with engine.connect() as conn:
        assert [(w.id, at) for w, at in store.deferred_since_before(conn, 11.0)] == [(wid, 10.0)]
        assert store.deferred_since_before(conn, 10.0) == []


def test_an_expired_withdrawal_is_final_with_its_reason_and_claims_nothing(engine: Engine) -> None:
    wid = _new(engine)
    other = _new(engine, "r2")
    with engine.begin() as conn:
        store.set_status(conn, [wid], Status.DEFERRED, 2.0)
        assert store.claimed_amount(conn) == 20_000
        assert store.expire(conn, wid, "deferred too long", 3.0)
        assert store.claimed_amount(conn) == 10_000
        found = store.get_by_id(conn, wid)
    assert found is not None
    assert (found.status, found.reason) == (Status.EXPIRED, "deferred too long")
    assert other != wid
