"""What the transaction watcher (coordinator.watcher) reads and writes: the round transactions
it watches, the spends of their inputs, the withdrawals they carry, and its record of re-sends
(table ``transaction_sends``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from coordinator.store import rounds as rstore
from coordinator.store.rounds import RoundStatus, TxRecord, TxStatus
from coordinator.store.schema import (
    round_transactions,
    rounds,
    transaction_sends,
    utxos,
    withdrawal_outputs,
    withdrawals,
)


@dataclass(frozen=True)
class Send:
    txid: str
    at: float
    accepted: bool
    detail: str


@dataclass(frozen=True)
class Spend:
    """A pool output one of a transaction's inputs spends, spent by another transaction."""

    txid: str
    vout: int
    spent_txid: str
    spent_height: int


@dataclass(frozen=True)
class CarriedOutput:
    """An output of a round transaction that pays (part of) a withdrawal."""

    withdrawal_id: int
    vout: int
    amount: int
    script_pubkey: bytes


def watched_transactions(conn: Connection) -> list[TxRecord]:
    """Round transactions not in a block that should be: ``signed`` ones of rounds the engine
    broadcasts (status signed or broadcast, or an intent to send stored), ``broadcast`` ones,
    and ``completed`` ones a reorganisation took out of the chain (their round may be
    completed). ``confirmed`` ones out of the chain are the round engine's (``track``)."""
    c = round_transactions.c
    sendable = or_(
        c.broadcast_at.is_not(None),
        rounds.c.status.in_([RoundStatus.SIGNED.value, RoundStatus.BROADCAST.value]),
    )
    rows = conn.execute(
        select(c.round_seq, c.idx)
        .join(rounds, rounds.c.seq == c.round_seq)
        .where(
            and_(
                c.block_height.is_(None),
                rounds.c.status != RoundStatus.ABANDONED.value,
                or_(
                    and_(c.status == TxStatus.SIGNED.value, sendable),
                    c.status.in_([TxStatus.BROADCAST.value, TxStatus.COMPLETED.value]),
                ),
                or_(c.base_idx.is_(None), c.broadcast_at.is_not(None)),  # rungs once sent
            )
        )
        .order_by(c.round_seq, c.idx)
    ).all()
    found: list[TxRecord] = []
    for seq, idx in rows:
        found.extend(tx for tx in rstore.transactions(conn, int(seq)) if tx.idx == int(idx))
    return found


def conflicting_spends(
    conn: Connection, txid: str, outpoints: Iterable[tuple[str, int]]
) -> list[Spend]:
    """The inputs (txid, vout) of transaction ``txid`` that a block shows spent by another."""
    found = []
    for prev_txid, vout in outpoints:
        row = conn.execute(
            select(utxos.c.spent_txid, utxos.c.spent_height).where(
                and_(utxos.c.txid == prev_txid, utxos.c.vout == vout)
            )
        ).first()
        if row is None or row.spent_txid is None or str(row.spent_txid) == txid:
            continue
        found.append(Spend(prev_txid, vout, str(row.spent_txid), int(row.spent_height)))
    return found


def release_inputs(conn: Connection, seq: int, outpoints: Iterable[tuple[str, int]]) -> None:
    """Unreserve the unspent ones of these outputs held by round ``seq``."""
    for prev_txid, vout in outpoints:
        conn.execute(
            update(utxos)
            .where(
                and_(
                    utxos.c.txid == prev_txid,
                    utxos.c.vout == vout,
                    utxos.c.reserved_round == seq,
                    utxos.c.spent_txid.is_(None),
                )
            )
            .values(reserved_round=None)
        )


def carried_outputs(conn: Connection, txid: str) -> list[CarriedOutput]:
    """The outputs of round transaction ``txid`` that pay withdrawals, in output order."""
    rows = conn.execute(
        select(
            withdrawal_outputs.c.withdrawal_id,
            withdrawal_outputs.c.vout,
            withdrawal_outputs.c.amount,
            withdrawals.c.script_pubkey,
        )
        .join(withdrawals, withdrawals.c.id == withdrawal_outputs.c.withdrawal_id)
        .where(withdrawal_outputs.c.txid == txid)
        .order_by(withdrawal_outputs.c.vout)
    ).all()
    return [
        CarriedOutput(int(r.withdrawal_id), int(r.vout), int(r.amount), bytes(r.script_pubkey))
        for r in rows
    ]


def record_send(conn: Connection, txid: str, accepted: bool, detail: str, now: float) -> None:
    conn.execute(
        insert(transaction_sends).values(txid=txid, at=now, accepted=accepted, detail=detail)
    )


def sends_of(conn: Connection, txid: str) -> list[Send]:
    """The watcher's sends of ``txid``, oldest first."""
    rows = conn.execute(
        select(transaction_sends)
        .where(transaction_sends.c.txid == txid)
        .order_by(transaction_sends.c.id)
    ).all()
    return [Send(str(r.txid), float(r.at), bool(r.accepted), str(r.detail)) for r in rows]


def resend_count(conn: Connection, txid: str) -> int:
    """How many times the watcher sent ``txid`` again and the node took it."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(transaction_sends)
            .where(and_(transaction_sends.c.txid == txid, transaction_sends.c.accepted))
        ).scalar_one()
    )
