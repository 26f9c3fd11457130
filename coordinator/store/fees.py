"""The fee ledger as clients read it: each client's share of each signed transaction's fee.

The round engine writes ``fee_shares`` with the round (coordinator.store.rounds); a share counts
here once its transaction is signed, as only then is the fee certain to be paid. Of a
transaction and the rungs of its fee ladder (pool/ladder.py), each with its own shares, only the
live version counts (``coordinator.store.rounds.live_versions``): the one that confirmed, else
the one sent last; likewise between a transaction and a cancel round's replacement of it
(``coordinator.store.cancels.is_live_across_cancels``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, or_, select

from coordinator.store.cancels import is_live_across_cancels
from coordinator.store.rounds import TxRecord, TxStatus, live_versions, transactions
from coordinator.store.schema import fee_shares, round_transactions, rounds
from pool.manifest import MAX_LADDER_RUNGS


@dataclass(frozen=True)
class FeeNotice:
    round_seq: int
    round_id: str
    txid: str
    amount: int
    at: float


def fee_notices(
    conn: Connection, client_id: str, limit: int, after: tuple[int, str] | None = None
) -> list[FeeNotice]:
    """The client's shares of signed transactions, newest round first (then by txid, descending);
    page with ``after`` = (round_seq, txid) of the last notice seen."""
    query = (
        select(fee_shares, rounds.c.manifest_hash)
        .join(rounds, rounds.c.seq == fee_shares.c.round_seq)
        .join(round_transactions, round_transactions.c.txid == fee_shares.c.txid)
        .where(
            and_(
                fee_shares.c.client_id == client_id,
                round_transactions.c.status != TxStatus.UNSIGNED.value,
            )
        )
    )
    if after is not None:
        seq, txid = after
        query = query.where(
            or_(
                fee_shares.c.round_seq < seq,
                and_(fee_shares.c.round_seq == seq, fee_shares.c.txid < txid),
            )
        )
    rows = conn.execute(
        query.order_by(fee_shares.c.round_seq.desc(), fee_shares.c.txid.desc()).limit(
            limit * (1 + MAX_LADDER_RUNGS)  # at most one live version of 1 + rungs per share
        )
    ).all()
    live: dict[int, set[str]] = {}

    def is_live(seq: int, txid: str) -> bool:
        if seq not in live:
            versions: dict[int, TxRecord] = live_versions(transactions(conn, seq))
            live[seq] = {tx.txid for tx in versions.values() if is_live_across_cancels(conn, tx)}
        return txid in live[seq]

    rows = [r for r in rows if is_live(int(r.round_seq), str(r.txid))][:limit]
    return [
        FeeNotice(
            round_seq=int(r.round_seq),
            round_id=str(r.manifest_hash),
            txid=str(r.txid),
            amount=int(r.amount),
            at=float(r.at),
        )
        for r in rows
    ]
