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

An operator's cancel (AdminService.CancelRound of a signed or broadcast round,
``operator_cancels``) is the same cancel round for every withdrawal its unconfirmed
transactions pay, as cancel version 2: when the replacement confirms (``pool.maturation`` deep),
those withdrawals go back to the queue (``pending``) and a later round pays them; when the
original confirms, they complete. The signers pay a re-queued request again only once their own
node shows the replacement confirmed, and once (docs/signer-policy.md, "Cancel").

A cancel round's transactions reserve no input (the original round holds them) and pay no
withdrawal in the store (the original's outputs are the withdrawals' record), like the rungs of
the fee ladder.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from coordinator.store import cancels as cstore
from coordinator.store import rounds as rstore
from coordinator.store import sends as sstore
from coordinator.store import withdrawals as wstore
from coordinator.store.rounds import NewRound, NewTransaction, RoundStatus
from pool.cancel import (
    CANCEL_VERSION,
    OPERATOR_CANCEL_VERSION,
    CancelManifest,
    build_cancel,
    encode_cancel,
    is_cancel_manifest,
)
from pool.errors import VpoolError
from pool.manifest import MIN_LADDER_STEP, decode_manifest
from pool.vocabulary import RoundKind
from pool.withdrawal import build_round


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
        # an operator's cancel among them (AdminService.CancelRound): version 2, the signers
        # may pay the dropped requests again once the replacement confirmed; a client's cancel
        # in the same round stays the client's here (coordinator.watcher marks it cancelled)
        version = OPERATOR_CANCEL_VERSION if any(c.by_operator for c in keep) else CANCEL_VERSION
        requests = tuple((c.client_id, c.request_id) for c in keep)
        cancel = CancelManifest(original, rate, requests, version)
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


def operator_cancels(conn: Connection, seq: int) -> tuple[list[tuple[int, int]], list[str]]:
    """What an operator's cancel of round ``seq`` (signed or broadcast) would record: (withdrawal
    id, round seq) for every withdrawal paid by a live transaction of the round not in a block;
    or, when one of those transactions cannot be replaced, why (each naming the transaction).
    X2: a replacement needs change to take the dropped amounts back to the pool."""
    record = rstore.round_by_seq(conn, seq)
    if is_cancel_manifest(record.manifest):
        return [], [f"round {record.round_id} is itself a cancel round; cancel what it replaces"]
    original = decode_manifest(record.manifest)
    plan_change = {t.txid_hex: t.change is not None for t in build_round(original).transactions}
    txs = rstore.transactions(conn, seq)
    by_txid = {tx.txid: tx for tx in txs}
    live = rstore.live_versions(txs)
    unconfirmed = {
        by_txid[tx.txid].family
        for tx in live.values()
        if tx.block_height is None and tx.status is not rstore.TxStatus.CONFLICTED
    }
    cancels: list[tuple[int, int]] = []
    problems: list[str] = []
    for tx in txs:
        if tx.base_idx is not None or tx.family not in unconfirmed:
            continue
        paid = sorted({o.withdrawal_id for o in sstore.carried_outputs(conn, tx.txid)})
        if not paid:
            continue
        if not plan_change.get(tx.txid, False):
            problems.append(
                f"transaction {tx.txid} has no change output: a replacement without its "
                "payments has nothing to take the amounts back to the pool (rule X2)"
            )
            continue
        if cstore.sent_replacement(conn, tx.txid) is not None:
            problems.append(f"transaction {tx.txid} was already replaced by a cancel")
            continue
        cancels += [(w, seq) for w in paid]
    return cancels, problems
