"""Cancel and replace: a client's cancel of a withdrawal whose transaction is signed and not in
a block becomes a cancel round (pool/cancel.py): the original round's manifest, the cancelled
requests and a higher fee rate; its transactions replace the original ones without the
cancelled payments. The signers accept it only as a safe replacement of what they signed
(docs/signer-policy.md, "Cancel").

Both versions are tracked until one confirms (coordinator.watcher): once a replacement is sent
the original is never sent again; when the replacement confirms, the original is settled from
what the chain pays (the kept withdrawals completed, the cancelled ones ``cancelled``); when the
original confirms instead, the cancelled withdrawal was paid and completes. Nothing is queued
again, so nothing is paid twice.

A cancel round's transactions reserve no input (the original round holds them) and pay no
withdrawal in the store (the original's outputs are the withdrawals' record), like the rungs of
the fee ladder.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from coordinator.store import cancels as cstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.rounds import NewRound, NewTransaction, RoundStatus
from pool.cancel import CancelManifest, build_cancel, encode_cancel, is_cancel_manifest
from pool.errors import VpoolError
from pool.manifest import MIN_LADDER_STEP, decode_manifest
from pool.vocabulary import RoundKind


@dataclass(frozen=True)
class CancelBuild:
    new: NewRound | None
    cancelled: list[int]
    """Withdrawal ids the round cancels (its ``cancel_round_seq``)."""
    dropped: list[tuple[int, str]]
    """Withdrawal ids whose cancel cannot be done, and why."""


def build_cancel_round(
    conn: Connection, original_seq: int, fee_rate: int, step: int
) -> CancelBuild:
    """The cancel round for the waiting cancels of round ``original_seq`` at ``fee_rate`` (or
    more: the rate of the highest version sent, fee ladder included, plus ``step``)."""
    waiting = [c for c in cstore.waiting_cancels(conn) if c.round_seq == original_seq]
    record = rstore.round_by_seq(conn, original_seq)
    if is_cancel_manifest(record.manifest) or record.status not in (
        RoundStatus.SIGNED,
        RoundStatus.BROADCAST,
    ):
        why = f"its round is {record.status.value}"
        return CancelBuild(None, [], [(c.withdrawal_id, why) for c in waiting])
    original = decode_manifest(record.manifest)
    live = rstore.live_versions(rstore.transactions(conn, original_seq))
    paying = {
        w: {txid for txid, _, _ in wstore.outputs_of(conn, w)}
        for w in (c.withdrawal_id for c in waiting)
    }
    by_txid = {tx.txid: tx for tx in rstore.transactions(conn, original_seq)}
    keep, dropped = [], []
    for request in waiting:
        ids = paying[request.withdrawal_id]
        versions = [live[by_txid[t].family] for t in ids if t in by_txid]
        if not versions:
            dropped.append((request.withdrawal_id, "no transaction of its round pays it"))
        elif any(v.block_height is not None for v in versions):
            dropped.append((request.withdrawal_id, "its transaction is in a block already"))
        else:
            keep.append(request)
    if not keep:
        return CancelBuild(None, [], dropped)
    top_rung = max(v.rung for v in live.values())
    rate = max(
        fee_rate,
        original.fee_rate + top_rung * original.ladder_step + max(step, MIN_LADDER_STEP),
    )
    try:
        cancel = CancelManifest(original, rate, tuple((c.client_id, c.request_id) for c in keep))
        plan = build_cancel(cancel)
    except VpoolError as exc:
        return CancelBuild(None, [], dropped + [(c.withdrawal_id, str(exc)) for c in keep])
    new = NewRound(
        round_id=plan.manifest_hash.hex(),
        manifest=encode_cancel(cancel),
        transactions=tuple(
            NewTransaction(
                txid=t.txid_hex,
                psbt=t.psbt.serialize(),
                fee=t.fee,
                inputs=(),
                outputs=(),
                fee_shares=t.fee_shares,
                replaces=t.replaced_txid,
            )
            for t in plan.transactions
        ),
        kind=RoundKind.WITHDRAWAL,
    )
    return CancelBuild(new, [c.withdrawal_id for c in keep], dropped)
