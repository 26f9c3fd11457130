"""The fee ledger as clients read it: each client's share of each signed transaction's fee.

The round engine writes ``fee_shares`` with the round (coordinator.store.rounds); a share counts
here once its transaction is signed, as only then is the fee certain to be paid.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, or_, select

from coordinator.store.rounds import TxStatus
from coordinator.store.schema import fee_shares, round_transactions, rounds


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
        query.order_by(fee_shares.c.round_seq.desc(), fee_shares.c.txid.desc()).limit(limit)
    ).all()
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
