"""Store records as the API's messages (vpool.v1): the one place that maps one onto the other."""

from __future__ import annotations

from sqlalchemy import Connection

from coordinator.health import SignerState
from coordinator.signers import NETWORK_CODES, Refusal
from coordinator.store import cancels as cancel_store
from coordinator.store import deposits as dstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.audit_heads import AuditHead
from coordinator.store.chain import Balance, last_block
from pool.address import script_pubkey_to_address
from pool.networks import Network
from pool.series import Series
from vpool.v1 import common_pb2, coordinator_pb2, signer_pb2

WITHDRAWAL_STATUSES = {
    status: coordinator_pb2.WithdrawalStatus.Value(f"WITHDRAWAL_STATUS_{status.name}")
    for status in wstore.Status
}
STATUS_OF_CODE = {code: status for status, code in WITHDRAWAL_STATUSES.items()}
_SCOPES = {
    "round": signer_pb2.Refusal.SCOPE_ROUND,
    "request": signer_pb2.Refusal.SCOPE_REQUEST,
    "input": signer_pb2.Refusal.SCOPE_INPUT,
}
DEPOSIT_STATUSES = {
    status: coordinator_pb2.DepositStatus.Value(f"DEPOSIT_STATUS_{status.name}")
    for status in dstore.Status
}
DEPOSIT_STATUS_OF_CODE = {code: status for status, code in DEPOSIT_STATUSES.items()}
ROUND_STATUSES = {
    status: coordinator_pb2.RoundStatus.Value(f"ROUND_STATUS_{status.name}")
    for status in rstore.RoundStatus
}


def network_code(network: Network) -> common_pb2.Network:
    return NETWORK_CODES[network.name]


def tip_height(conn: Connection) -> int:
    """The height of the last processed block (0 before the first)."""
    block = last_block(conn)
    return 0 if block is None else block.height


class WithdrawalViews:
    """Builds Withdrawal messages on one connection, reading each round once per instance."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._tip = tip_height(conn)
        self._rounds: dict[int, tuple[str, dict[str, rstore.TxRecord]]] = {}

    def _round(self, seq: int) -> tuple[str, dict[str, rstore.TxRecord]]:
        if seq not in self._rounds:
            round_id = rstore.round_by_seq(self._conn, seq).round_id
            versions = rstore.transactions(self._conn, seq)
            live = rstore.live_versions(versions)
            # each version's txid → the live one (fee ladder, or a cancel round's replacement
            # once sent): outputs follow the version that pays
            txs = {
                tx.txid: cancel_store.live_replacement(self._conn, live[tx.family])
                for tx in versions
            }
            self._rounds[seq] = (round_id, txs)
        return self._rounds[seq]

    def message(self, w: wstore.Withdrawal) -> coordinator_pb2.Withdrawal:
        """The withdrawal as it is now, with its round, outputs and confirmations."""
        out = coordinator_pb2.Withdrawal(
            client_id=w.client_id,
            request_id=w.request_id,
            address=w.address,
            amount_sat=w.amount,
            extra_fee_sat=w.extra_fee,
            status=WITHDRAWAL_STATUSES[w.status],
            split=w.split,
            reason=w.reason,
            created_unix=int(w.created_at),
            updated_unix=int(w.updated_at),
        )
        if w.round_seq is None:
            return out
        round_id, txs = self._round(w.round_seq)
        out.round_id = round_id
        paid = wstore.outputs_of(self._conn, w.id)
        out.outputs.extend(
            coordinator_pb2.PaidOutput(
                txid=txs[txid].txid if txid in txs else txid, vout=vout, amount_sat=amount
            )
            for txid, vout, amount in paid
        )
        paying = [txs[txid] for txid in {txid for txid, _, _ in paid} if txid in txs]
        if paying:
            out.confirmations = min(tx.confirmations(self._tip) for tx in paying)
        return out

    def event(self, event: wstore.Event) -> coordinator_pb2.WithdrawalEvent:
        """The event, with its withdrawal as the event recorded it: its status, reason and time
        (an event marked PENDING never carries COMPLETED, nor a later refusal's reason); a
        status that has no round carries no round, outputs or confirmations, and one not yet
        confirmed no confirmations. Its amounts and destination never change."""
        withdrawal = wstore.get_by_id(self._conn, event.withdrawal_id)
        assert withdrawal is not None  # events reference withdrawals
        message = self.message(withdrawal)
        message.status = WITHDRAWAL_STATUSES[event.status]
        message.reason = event.detail
        message.updated_unix = int(event.at)
        if event.status in _WITHOUT_ROUND:
            message.round_id = ""
            del message.outputs[:]
        if event.status not in _CONFIRMED:
            message.confirmations = 0
        return coordinator_pb2.WithdrawalEvent(
            cursor=event.cursor,
            status=WITHDRAWAL_STATUSES[event.status],
            withdrawal=message,
            at_unix=int(event.at),
        )


_WITHOUT_ROUND = frozenset(
    {wstore.Status.PENDING, wstore.Status.DEFERRED, wstore.Status.CANCELLED, wstore.Status.EXPIRED}
)
"""Statuses of a withdrawal outside any round (a deferred one may have left an abandoned one)."""
_CONFIRMED = frozenset({wstore.Status.CONFIRMED, wstore.Status.COMPLETED, wstore.Status.REJECTED})
"""Statuses whose withdrawal's confirmations an event shows (as they are now)."""


class DepositViews:
    """Builds Deposit messages on one connection."""

    def __init__(self, conn: Connection, network: Network) -> None:
        self._conn = conn
        self._network = network
        self._tip = tip_height(conn)

    def message(self, d: dstore.Deposit) -> coordinator_pb2.Deposit:
        """The deposit as it is now, with its confirmations."""
        on_chain = d.status not in (dstore.Status.REMOVED, dstore.Status.REORGED)
        return coordinator_pb2.Deposit(
            txid=d.txid,
            vout=d.vout,
            amount_sat=d.value,
            address=script_pubkey_to_address(d.script_pubkey, self._network) or "",
            user_id=d.user_id,
            status=DEPOSIT_STATUSES[d.status],
            reason=d.reason,
            height=d.height,
            confirmations=max(0, self._tip - d.height + 1) if on_chain else 0,
            refund_address=d.refund.address,
            refund_source=d.refund.source,
            refund_txid=d.refund.txid or "",
            refund_signed_by=dstore.refund_signers(self._conn, d),
            acknowledged_by=dstore.acknowledged_by(self._conn, d),
            created_unix=int(d.created_at),
            updated_unix=int(d.updated_at),
        )

    def event(self, event: dstore.Event) -> coordinator_pb2.DepositEvent:
        """The event, with its deposit as it is now but for its status and time, which are the
        ones the event recorded (its detail is the event's own: ``in block N``, a reason)."""
        deposit = dstore.get(self._conn, event.txid, event.vout)
        assert deposit is not None  # deposits are never deleted
        message = self.message(deposit)
        message.status = DEPOSIT_STATUSES[event.status]
        message.updated_unix = int(event.at)
        return coordinator_pb2.DepositEvent(
            cursor=event.cursor,
            status=DEPOSIT_STATUSES[event.status],
            deposit=message,
            at_unix=int(event.at),
        )


def series_balance(series: Series, balance: Balance) -> coordinator_pb2.SeriesBalance:
    return coordinator_pb2.SeriesBalance(
        series_id=series.id,
        state=series.state.value,
        confirmed_sat=balance.confirmed,
        unconfirmed_sat=balance.unconfirmed,
        utxo_count=balance.count,
        m=series.m,
        n=series.n,
    )


def signer_health(
    state: SignerState, head: AuditHead | None = None
) -> coordinator_pb2.SignerHealth:
    """A signer's health, with its audit head as last recorded (coordinator.audit_heads)."""
    health = coordinator_pb2.SignerHealth(
        signer_id=state.signer_id,
        state=state.state,
        fingerprint=state.fingerprint,
        last_seen_unix=int(state.last_seen),
        detail=state.detail,
    )
    if head is not None:
        health.audit_seq, health.audit_head = head.seq, head.head
        health.audit_recorded_unix = int(head.at)
    return health


def round_summary(summary: rstore.RoundSummary) -> coordinator_pb2.RoundSummary:
    return coordinator_pb2.RoundSummary(
        round_id=summary.round_id,
        status=ROUND_STATUSES[summary.status],
        transactions=summary.transactions,
        withdrawals=summary.withdrawals,
        fee_sat=summary.fee,
        created_unix=int(summary.created_at),
    )


def round_message(view: rstore.RoundView, tip: int) -> coordinator_pb2.Round:
    record = view.record
    return coordinator_pb2.Round(
        round_id=record.round_id,
        status=ROUND_STATUSES[record.status],
        manifest=record.manifest,
        transactions=[
            coordinator_pb2.RoundTransaction(
                txid=tx.txid,
                fee_sat=tx.fee,
                status=tx.status.value,
                confirmations=tx.confirmations(tip),
                psbt=tx.psbt,
                raw_tx=tx.final_tx or b"",
            )
            for tx in view.transactions
        ],
        signers=[
            coordinator_pb2.SignerOutcome(
                signer_id=o.signer_id,
                outcome=o.outcome.value,
                signatures=o.signatures,
                refusals=[_refusal(r) for r in o.refusals],
                detail=o.detail,
                awaited_since_unix=int(o.since or 0) if o.awaited else 0,
                awaited=o.awaited,
            )
            for o in view.outcomes
        ],
        created_unix=int(record.created_at),
        updated_unix=int(record.updated_at),
        detail=record.detail,
        rebuilt_from=view.rebuilt_from_id,
        signed_by=list(view.signed_by),
    )


def _refusal(refusal: Refusal) -> signer_pb2.Refusal:
    message = signer_pb2.Refusal(
        scope=_SCOPES.get(refusal.scope, signer_pb2.Refusal.SCOPE_UNSPECIFIED),
        reason_code=refusal.reason_code,
        message=refusal.message,
        client_id=refusal.client_id,
        request_id=refusal.request_id,
    )
    if refusal.psbt_index is not None:
        message.psbt_index = refusal.psbt_index
    if refusal.input_index is not None:
        message.input_index = refusal.input_index
    return message
