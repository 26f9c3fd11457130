"""Cancels of withdrawals that sit in signed transactions (coordinator.cancels): what a client
asked for, the cancel round that replaces the transaction, and which transactions a sent
replacement supersedes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, insert, select, update

from coordinator.store.rounds import RoundStatus, TxRecord, tx_from_row
from coordinator.store.schema import round_transactions, rounds, withdrawal_cancels, withdrawals


@dataclass(frozen=True)
class CancelRequest:
    withdrawal_id: int
    client_id: str
    request_id: str
    round_seq: int
    """The round whose transaction pays the withdrawal."""
    by_operator: bool = False
    """An operator's cancel (AdminService.CancelRound): queued again, not cancelled, when the
    replacement confirms."""


def request_cancel(
    conn: Connection, withdrawal_id: int, round_seq: int, now: float, by_operator: bool = False
) -> bool:
    """Record a client's (or an operator's) cancel, once; False when it was recorded before.
    A client's cancel of a withdrawal an operator cancelled makes it the client's (cancelled,
    not queued again, when the replacement confirms)."""
    found = conn.execute(
        select(withdrawal_cancels.c.by_operator).where(
            withdrawal_cancels.c.withdrawal_id == withdrawal_id
        )
    ).first()
    if found is not None:
        if found[0] and not by_operator:
            conn.execute(
                update(withdrawal_cancels)
                .where(withdrawal_cancels.c.withdrawal_id == withdrawal_id)
                .values(by_operator=False)
            )
            return True
        return False
    conn.execute(
        insert(withdrawal_cancels).values(
            withdrawal_id=withdrawal_id,
            round_seq=round_seq,
            requested_at=now,
            by_operator=by_operator,
        )
    )
    return True


def client_cancel(conn: Connection, withdrawal_id: int) -> bool:
    """Did the client cancel this withdrawal (not an operator)?"""
    found = conn.execute(
        select(withdrawal_cancels.c.by_operator).where(
            withdrawal_cancels.c.withdrawal_id == withdrawal_id
        )
    ).first()
    return found is not None and not found[0]


def has_cancel(conn: Connection, withdrawal_id: int) -> bool:
    found = conn.execute(
        select(withdrawal_cancels.c.withdrawal_id).where(
            withdrawal_cancels.c.withdrawal_id == withdrawal_id
        )
    ).first()
    return found is not None


def waiting_cancels(conn: Connection) -> list[CancelRequest]:
    """Cancels no cancel round was built for yet, oldest first."""
    rows = conn.execute(
        select(
            withdrawal_cancels.c.withdrawal_id,
            withdrawals.c.client_id,
            withdrawals.c.request_id,
            withdrawal_cancels.c.round_seq,
            withdrawal_cancels.c.by_operator,
        )
        .join(withdrawals, withdrawals.c.id == withdrawal_cancels.c.withdrawal_id)
        .where(withdrawal_cancels.c.cancel_round_seq.is_(None))
        .order_by(withdrawal_cancels.c.requested_at, withdrawal_cancels.c.withdrawal_id)
    ).all()
    return [CancelRequest(int(r[0]), str(r[1]), str(r[2]), int(r[3]), bool(r[4])) for r in rows]


def set_cancel_round(conn: Connection, withdrawal_ids: list[int], seq: int) -> None:
    conn.execute(
        update(withdrawal_cancels)
        .where(withdrawal_cancels.c.withdrawal_id.in_(withdrawal_ids))
        .values(cancel_round_seq=seq)
    )


def cancel_rounds_of(conn: Connection) -> list[tuple[int, int]]:
    """(withdrawal id, cancel round seq) of the cancels a cancel round was built for."""
    rows = conn.execute(
        select(withdrawal_cancels.c.withdrawal_id, withdrawal_cancels.c.cancel_round_seq).where(
            withdrawal_cancels.c.cancel_round_seq.is_not(None)
        )
    ).all()
    return [(int(r[0]), int(r[1])) for r in rows]


def drop_cancels(conn: Connection, withdrawal_ids: list[int]) -> None:
    """Forget cancels that cannot be done (the withdrawal's transaction is in a block, or no
    replacement can be built): the withdrawal follows its transaction."""
    conn.execute(
        withdrawal_cancels.delete().where(withdrawal_cancels.c.withdrawal_id.in_(withdrawal_ids))
    )


def is_live_across_cancels(conn: Connection, tx: TxRecord) -> bool:
    """Between a transaction and the cancel round's replacement of it, the one that counts
    (fee statements): the one in a block; else the replacement once sent; else the original."""
    if tx.block_height is not None:
        return True
    if tx.replaces is not None:
        original = conn.execute(
            select(round_transactions.c.block_height).where(
                round_transactions.c.txid == tx.replaces
            )
        ).first()
        in_block = original is not None and original[0] is not None
        return tx.broadcast_at is not None and not in_block
    return sent_replacement(conn, tx.txid) is None


def live_replacement(conn: Connection, tx: TxRecord) -> TxRecord:
    """``tx``, or the cancel round's transaction replacing it when that one counts
    (``is_live_across_cancels``)."""
    txid = sent_replacement(conn, tx.txid)
    if txid is None or tx.block_height is not None:
        return tx
    row = conn.execute(select(round_transactions).where(round_transactions.c.txid == txid)).first()
    if row is None:
        return tx
    return tx_from_row(row)


def sent_replacement(conn: Connection, txid: str) -> str | None:
    """The txid of a cancel round's transaction replacing ``txid`` that was sent (its intent
    stored), in a round not abandoned: the transaction it replaces is never sent again."""
    row = conn.execute(
        select(round_transactions.c.txid)
        .join(rounds, rounds.c.seq == round_transactions.c.round_seq)
        .where(
            and_(
                round_transactions.c.replaces == txid,
                round_transactions.c.broadcast_at.is_not(None),
                rounds.c.status != RoundStatus.ABANDONED.value,
            )
        )
        .limit(1)
    ).first()
    return None if row is None else str(row[0])
