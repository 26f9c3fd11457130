"""Counts and sums the coordinator's metrics and status page read from the store (one query
each, grouped in the database)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from coordinator.store.schema import (
    blocks,
    deposits,
    round_transactions,
    rounds,
    utxos,
    withdrawals,
)

REFUND_STATUSES = ("refund_pending", "refund_proposed", "refund_signed", "refunded")


@dataclass(frozen=True)
class CountSum:
    count: int
    sat: int


def rounds_by_status(conn: Connection) -> dict[tuple[str, str], int]:
    """(kind, status) → rounds."""
    rows = conn.execute(
        select(rounds.c.kind, rounds.c.status, func.count()).group_by(
            rounds.c.kind, rounds.c.status
        )
    ).all()
    return {(str(k), str(s)): int(n) for k, s, n in rows}


def round_durations(conn: Connection) -> list[tuple[str, float]]:
    """(kind, seconds from built to its last transaction sent) of every round whose
    transactions were all sent."""
    sent = (
        select(
            round_transactions.c.round_seq,
            func.max(round_transactions.c.broadcast_at).label("last"),
            func.count(round_transactions.c.broadcast_at).label("sent"),
            func.count().label("all"),
        )
        .group_by(round_transactions.c.round_seq)
        .subquery()
    )
    rows = conn.execute(
        select(rounds.c.kind, rounds.c.created_at, sent.c.last)
        .join(sent, sent.c.round_seq == rounds.c.seq)
        .where(sent.c.sent == sent.c.all)
    ).all()
    return [(str(kind), max(0.0, float(last) - float(created))) for kind, created, last in rows]


def withdrawals_by_status(conn: Connection) -> dict[str, CountSum]:
    rows = conn.execute(
        select(withdrawals.c.status, func.count(), func.coalesce(func.sum(withdrawals.c.amount), 0))
        .group_by(withdrawals.c.status)
    ).all()  # fmt: skip
    return {str(s): CountSum(int(n), int(v)) for s, n, v in rows}


def deposits_by_status(conn: Connection) -> dict[str, CountSum]:
    rows = conn.execute(
        select(deposits.c.status, func.count(), func.coalesce(func.sum(deposits.c.value), 0))
        .group_by(deposits.c.status)
    ).all()  # fmt: skip
    return {str(s): CountSum(int(n), int(v)) for s, n, v in rows}


def unconfirmed_transactions(conn: Connection) -> list[tuple[str, float]]:
    """(txid, sent at) of the round transactions sent and not in a block yet."""
    rows = conn.execute(
        select(round_transactions.c.txid, round_transactions.c.broadcast_at).where(
            round_transactions.c.status == "broadcast",
            round_transactions.c.broadcast_at.is_not(None),
        )
    ).all()
    return [(str(t), float(at)) for t, at in rows]


def last_block_time(conn: Connection) -> int | None:
    """The header time of the last processed block (None before the first)."""
    row = conn.execute(select(blocks.c.time).order_by(blocks.c.height.desc()).limit(1)).first()
    return None if row is None else int(row[0])


def balance_history(conn: Connection, points: int = 120) -> list[tuple[int, int, int]]:
    """(height, block time, satoshis) of the pool's outputs in the chain at up to ``points``
    heights spread over the processed blocks (every pool output counts, reserved or not, from
    its block until the block that spends it)."""
    heights = conn.execute(select(func.min(blocks.c.height), func.max(blocks.c.height))).one()
    if heights[0] is None:
        return []
    first, last = int(heights[0]), int(heights[1])
    step = max(1, (last - first) // max(1, points - 1))
    wanted = sorted({*range(first, last + 1, step), last})
    times = dict(
        conn.execute(select(blocks.c.height, blocks.c.time).where(blocks.c.height.in_(wanted)))
        .tuples()
        .all()
    )
    changes: dict[int, int] = {}
    for value, height, spent in conn.execute(
        select(utxos.c.value, utxos.c.height, utxos.c.spent_height)
    ).tuples():
        changes[int(height)] = changes.get(int(height), 0) + int(value)
        if spent is not None:
            changes[int(spent)] = changes.get(int(spent), 0) - int(value)
    history, balance, moves = [], 0, sorted(changes.items())
    i = 0
    for height in wanted:
        while i < len(moves) and moves[i][0] <= height:
            balance += moves[i][1]
            i += 1
        history.append((height, int(times.get(height, 0)), balance))
    return history
