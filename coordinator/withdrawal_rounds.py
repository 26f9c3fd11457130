"""Withdrawal rounds: the queued withdrawals → a round manifest → ``pool.withdrawal`` PSBTs.

The builder of the round engine (coordinator.rounds) for ``RoundKind.WITHDRAWAL``. A build
reads the queued withdrawals, the eligible unreserved UTXOs (change and credited deposits), the
pinned tip, the fee rate and the change index; paid withdrawals move ``in_round``, the others
``deferred``, and the change index advances. A withdrawal follows the least advanced of the
transactions that pay it. A request refused for good is ``rejected``; otherwise it goes back to
the queue. An abandoned round gives its change indexes back, so that the same manifest, built
again, reopens it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from sqlalchemy import Connection

from coordinator.config import CoordinatorConfig, RoundsConfig
from coordinator.round_kinds import BuiltRound, ChainState, RefusedRequest, RequestKey
from coordinator.store import chain as cstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.cancels import cancel_rounds_of, drop_cancels
from coordinator.store.rounds import TX_ORDER, NewRound, NewTransaction, RoundRecord, TxStatus
from coordinator.store.withdrawals import Status, Withdrawal
from pool.cancel import is_cancel_manifest
from pool.ladder import Rung
from pool.manifest import Manifest, WithdrawalRequest, decode_manifest, encode_manifest
from pool.series import CHANGE, SeriesState
from pool.vocabulary import RoundKind
from pool.withdrawal import (
    PlannedTransaction,
    RequestStatus,
    RoundPlan,
    build_round,
    eligible_inputs,
)
from vpool.v1.signer_pb2 import DeviceLimits

log = logging.getLogger(__name__)

DEFERRED_REASON = "not enough confirmed pool funds after fees"

_WITHDRAWAL_OF_TX = {
    TxStatus.SIGNED: Status.SIGNED,
    TxStatus.BROADCAST: Status.BROADCAST,
    TxStatus.CONFIRMED: Status.CONFIRMED,
    TxStatus.COMPLETED: Status.COMPLETED,
}
_FOLLOWED = (Status.IN_ROUND, Status.SIGNED, Status.BROADCAST, Status.CONFIRMED)
"""Withdrawal statuses that follow their transactions."""

_LOGGED = (Status.BROADCAST, Status.COMPLETED)
"""Withdrawal statuses logged when reached (with amount and destination)."""

_ByKey = dict[RequestKey, Withdrawal]


class WithdrawalBuilder:
    """The withdrawal kind of round (module docstring)."""

    kind = RoundKind.WITHDRAWAL

    def __init__(
        self,
        config: CoordinatorConfig,
        device_limits: Callable[[], Iterable[DeviceLimits]] = tuple,
    ) -> None:
        """``device_limits``: the limits the signers' devices reported (GetInfo), as known."""
        self._config = config
        self._device_limits = device_limits

    def ready(self, now: float) -> bool:
        """Always: the build itself says when no withdrawal waits."""
        return True

    def build(
        self,
        conn: Connection,
        chain: ChainState,
        exclude: set[RequestKey],
        rebuilt_from: int | None,
        now: float,
    ) -> BuiltRound | str:
        """Defer what the pool cannot pay; the round paying the rest, or why there is none."""
        queued = [w for w in wstore.queued(conn) if (w.client_id, w.request_id) not in exclude]
        queued = queued[: self._config.rounds.max_requests]
        if not queued:
            return "no withdrawals waiting"
        manifest = self._manifest(conn, queued, chain)
        if manifest is None:
            return "the pool has no active series"
        plan = build_round(manifest)
        by_key = {(w.client_id, w.request_id): w for w in queued}
        deferred = _defer(conn, plan, by_key, now)
        if not plan.transactions:
            return f"{deferred} withdrawals deferred: {DEFERRED_REASON}"
        new = NewRound(
            round_id=plan.manifest_hash.hex(),
            manifest=encode_manifest(manifest),
            transactions=tuple(_new_transaction(t, plan, by_key) for t in plan.transactions)
            + tuple(_new_rung(r, plan) for r in plan.rungs),
            kind=RoundKind.WITHDRAWAL,
        )
        summary = (
            f"round {new.round_id} built: {len(plan.transactions)} transactions, "
            f"{sum(len(t.inputs) for t in plan.transactions)} inputs, "
            f"{len(queued) - deferred} withdrawals paid, {deferred} deferred"
        )
        return BuiltRound(new, lambda c, seq: _claim(c, seq, manifest, plan, by_key, now), summary)

    def _manifest(
        self, conn: Connection, queued: Sequence[Withdrawal], chain: ChainState
    ) -> Manifest | None:
        """The manifest of the store at the pinned tip (None without an active series)."""
        network, pool = self._config.network, self._config.pool
        series = cstore.all_series(conn, network)
        active = [s.id for s in series if s.state is SeriesState.ACTIVE]
        if not active:
            return None
        manifest = Manifest(
            network=network.name,
            series=tuple(series),
            utxos=tuple(
                cstore.eligible_utxos(conn, chain.tip_height, pool.min_conf, pool.coinbase_maturity)
            ),
            tip_height=chain.tip_height,
            tip_hash=bytes.fromhex(chain.tip_hash),
            fee_rate=chain.fee_rate,
            change_index=((active[0], cstore.next_index(conn, active[0], CHANGE)),),
            dust_limit=pool.dust_limit,
            max_weight=pool.max_weight,
            min_conf=pool.min_conf,
            requests=tuple(
                WithdrawalRequest(w.client_id, w.request_id, w.script_pubkey, w.amount, w.extra_fee)
                for w in queued
            ),
            ladder_rungs=self._config.ladder.rungs,
            ladder_step=self._config.ladder.manifest_step(),
            **shape_caps(self._config.rounds, self._device_limits()),
        )
        return within_inputs(manifest, self._config.rounds.max_inputs)

    def follow(self, conn: Connection, seq: int, now: float) -> None:
        """Each withdrawal of the round is as far as the least advanced transaction paying it."""
        for withdrawal_id, statuses in rstore.withdrawal_progress(conn, seq).items():
            target = _WITHDRAWAL_OF_TX.get(min(statuses, key=TX_ORDER.__getitem__))
            current = wstore.get_by_id(conn, withdrawal_id)
            if target is None or current is None or current.round_seq != seq:
                continue
            if current.status in _FOLLOWED:
                wstore.set_status(conn, [withdrawal_id], target, now)
                if target is not current.status and target in _LOGGED:
                    log.info(
                        "withdrawal %s",
                        target.value,
                        extra={"withdrawal_id": f"{current.client_id}/{current.request_id}",
                               "client_id": current.client_id, "amount_sat": current.amount,
                               "destination": current.address, "round_seq": seq,
                               "status": target.value},
                    )  # fmt: skip

    def apply_refusals(
        self, conn: Connection, seq: int, refused: Mapping[RequestKey, RefusedRequest], now: float
    ) -> set[RequestKey]:
        """Reject (final reasons) or requeue (transient ones) the refused withdrawals of the
        round; the requeued ones, which its rebuild leaves out."""
        requeued: set[RequestKey] = set()
        for key, entry in refused.items():
            found = wstore.get_by_request(conn, *key)
            if found is None or found.round_seq != seq:
                continue
            status = Status.REJECTED if entry.final else Status.PENDING
            reason = "; ".join(entry.reasons)
            wstore.set_status(conn, [found.id], status, now, detail=reason, clear_round=True)
            if not entry.final:
                requeued.add(key)
        return requeued

    def give_up(self, conn: Connection, record: RoundRecord, detail: str, now: float) -> int:
        """Abandon the round and give back the change indexes it took (so that the same
        manifest, built again, reopens it); how many withdrawals went back to the queue."""
        back = rstore.abandon_round(conn, record.seq, detail, now)
        if is_cancel_manifest(record.manifest):  # a cancel round (coordinator.cancels)
            forget_cancels(conn, record.seq, f"cancel round abandoned: {detail}", now)
            return 0
        manifest = decode_manifest(record.manifest)
        active = manifest.active_series.id
        taken_to = build_round(manifest).next_change_index
        rstore.rewind_change_index(conn, active, taken_to, manifest.next_change_index(active))
        return len(back)


def shape_caps(rounds: RoundsConfig, devices: Iterable[DeviceLimits]) -> dict[str, int]:
    """The manifest's caps on each transaction: the smallest of the configured caps and of the
    signers' device limits, 0 where none is set. Payments: a person's ``max_reviewed_payments``,
    and a device's ``max_outputs`` less the change output."""
    inputs, payments = [rounds.max_tx_inputs], [rounds.max_tx_payments]
    for limits in devices:
        inputs.append(limits.max_inputs)
        payments += [limits.max_reviewed_payments, max(limits.max_outputs - 1, 0)]
    return {
        "max_tx_inputs": min((cap for cap in inputs if cap), default=0),
        "max_tx_payments": min((cap for cap in payments if cap), default=0),
    }


def forget_cancels(conn: Connection, cancel_round_seq: int, detail: str, now: float) -> None:
    """The cancels a cancel round was for are dropped (each withdrawal follows its
    transaction), the reason in their detail."""
    ids = [w for w, seq in cancel_rounds_of(conn) if seq == cancel_round_seq]
    for withdrawal_id in ids:
        current = wstore.get_by_id(conn, withdrawal_id)
        if current is not None and current.status not in wstore.FINAL:
            wstore.set_status(conn, [withdrawal_id], current.status, now, detail=detail)
    drop_cancels(conn, ids)


def within_inputs(manifest: Manifest, max_inputs: int) -> Manifest:
    """The manifest with at most ``max_inputs`` UTXOs, the first in spending order (rules E1-E3):
    a round spends those before any other, so the plan changes only if it needed more."""
    if len(manifest.utxos) <= max_inputs:
        return manifest
    return replace(manifest, utxos=tuple(eligible_inputs(manifest)[:max_inputs]))


def _defer(conn: Connection, plan: RoundPlan, by_key: _ByKey, now: float) -> int:
    """Mark the requests the plan could not pay as deferred; how many there are."""
    ids = [
        by_key[(o.client_id, o.request_id)].id
        for o in plan.requests
        if o.status is RequestStatus.DEFERRED
    ]
    wstore.set_status(conn, ids, Status.DEFERRED, now, detail=DEFERRED_REASON, clear_round=True)
    return len(ids)


def _claim(
    conn: Connection, seq: int, manifest: Manifest, plan: RoundPlan, by_key: _ByKey, now: float
) -> None:
    """Move the paid withdrawals into round ``seq`` and advance the change index."""
    for outcome in plan.requests:
        if outcome.status is not RequestStatus.DEFERRED:
            wstore.set_status(
                conn,
                [by_key[(outcome.client_id, outcome.request_id)].id],
                Status.IN_ROUND,
                now,
                round_seq=seq,
                split=outcome.status is RequestStatus.SPLIT,
            )
    cstore.advance_index(conn, manifest.active_series.id, CHANGE, plan.next_change_index)


def _new_rung(rung: Rung, plan: RoundPlan) -> NewTransaction:
    """A rung of the fee ladder: signed with the round, sent only by the watcher. Its inputs
    are its transaction's (reserved once) and its outputs are not recorded as paying the
    withdrawals: the withdrawals follow whichever version of the transaction is live."""
    return NewTransaction(
        txid=rung.txid_hex,
        psbt=rung.psbt.serialize(),
        fee=rung.fee,
        inputs=(),
        outputs=(),
        fee_shares=rung.fee_shares,
        base_idx=rung.of,
        rung=rung.step,
    )


def _new_transaction(
    planned: PlannedTransaction, plan: RoundPlan, by_key: _ByKey
) -> NewTransaction:
    txid = planned.txid_hex
    return NewTransaction(
        txid=txid,
        psbt=planned.psbt.serialize(),
        fee=planned.fee,
        inputs=tuple((u.outpoint.txid_hex, u.outpoint.vout) for u in planned.inputs),
        outputs=tuple(
            (by_key[(o.client_id, o.request_id)].id, paid.vout, paid.amount)
            for o in plan.requests
            for paid in o.outputs
            if paid.txid_hex == txid
        ),
        fee_shares=planned.fee_shares,
    )
