"""The transaction watcher: every round transaction that should be on its way to a block is
checked against the node at every new block, and at start (the daemon loop drives it, after the
scanner has caught up with the node's tip, under the round scheduler's lock).

For each transaction not in a block (coordinator.store.sends.watched_transactions):

- in the node's mempool, or known to the node in a block the scanner has not read yet: nothing;
- a reorganisation took it out after it was ``completed``: back to ``broadcast`` (its round too;
  its withdrawals stay ``completed``, which is final) with an alert ``transaction-reorged``, then
  handled as below (``confirmed`` ones out of the chain are the round engine's ``track``);
- an input spent by another transaction in a block: once that block has ``pool.maturation``
  confirmations the transaction is ``conflicted`` (final; its other inputs are released) and
  each withdrawal it carried is marked ``completed`` when the conflicting transaction pays it
  (an output to its destination of the amount this transaction paid it, each output matching
  one payment, outputs paying the conflicting transaction's own withdrawals when it is a round
  transaction of the pool excluded), ``cancelled`` when a client cancelled it, else queued
  again (``pending``: an operator's cancel, or an unknown conflict); an alert
  ``transaction-conflicted`` says which;
- a version of a transaction that a rung of its fee ladder superseded
  (``coordinator.store.rounds.live_versions``) is never sent again; once the rung's block has
  ``pool.maturation`` confirmations it is ``conflicted`` (no alert: its own rung paid it);
- otherwise it is sent again (``signed`` ones of rounds the engine broadcasts, too: stored as
  ``broadcast`` once the node takes them).

First the fee ladder (pool/ladder.py) is climbed: a transaction whose live version is rung k
(0: the transaction itself), sent (whether the node took it or refused it) and still not in a
block at height
``locktime + (k + 1) × ladder.bump_after_blocks`` (its locktime is its round's pinned tip), is
replaced by rung k + 1: its intent stored, sent, then stored ``broadcast`` (a refusal is recorded
and alerted as above, and the rung is sent again at the next block). When there is no rung
k + 1 (or no ladder at all: ``ladder.rungs`` = 0, or no change to lower), the alert
``ladder-spent`` is raised once (a child paying for its parent from the change
output is a new ceremony, not built here). Every send is recorded (``transaction_sends``): taken,
  or refused with the node's reason, which also raises an alert ``transaction-refused`` (once
  per distinct reason).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from coordinator.chain import ChainError, ChainUnavailable
from coordinator.config import CoordinatorConfig
from coordinator.crash_points import WATCHER_BEFORE_RESEND, crash_point
from coordinator.store import cancels as cancel_store
from coordinator.store import chain as cstore
from coordinator.store import rounds as rstore
from coordinator.store import sends as sstore
from coordinator.store import withdrawals as wstore
from coordinator.store.alerts import add_alert, has_alert
from coordinator.store.rounds import TxRecord, TxStatus
from coordinator.store.schema import transaction
from pool.tx import Transaction
from pool.vocabulary import RoundKind

log = logging.getLogger(__name__)

REORG_ALERT = "transaction-reorged"
REFUSED_ALERT = "transaction-refused"
CONFLICT_ALERT = "transaction-conflicted"
LADDER_SPENT_ALERT = "ladder-spent"


class WatcherChain(Protocol):
    """The part of ``coordinator.chain.BitcoinRPC`` the watcher asks."""

    def tip(self) -> tuple[int, str]: ...

    def mempool_entry(self, txid: str) -> dict[str, Any] | None: ...

    def raw_transaction(self, txid: str) -> bytes | None: ...

    def send_raw_transaction(self, raw: bytes) -> str: ...


class TransactionStatuses(Protocol):
    """The part of ``coordinator.rounds.RoundEngine`` that stores what the watcher found."""

    def set_transaction_status(
        self,
        tx: TxRecord,
        status: TxStatus,
        before: Callable[[Connection, float], None] | None = None,
    ) -> None: ...


class TransactionWatcher:
    def __init__(
        self,
        config: CoordinatorConfig,
        engine: Engine,
        chain: WatcherChain,
        statuses: TransactionStatuses,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._maturation = config.pool.maturation
        self._bump_after = config.ladder.bump_after_blocks
        self._engine = engine
        self._chain = chain
        self._statuses = statuses
        self._clock = clock
        self._checked_tip: str | None = None

    def check(self) -> None:
        """Check every watched transaction when the node has a new tip the scanner has read
        (and at the first call)."""
        height, tip = self._chain.tip()
        if tip == self._checked_tip:
            return
        with self._engine.connect() as conn:
            cursor = cstore.last_block(conn)
            watched = sstore.watched_transactions(conn)
        if cursor is None or cursor.hash != tip:
            return  # the scanner has not read this tip yet: block heights would be stale
        for seq in sorted({tx.round_seq for tx in watched}):
            self._climb(seq, height)  # first: a version due for a bump is not sent again
        for tx in watched:
            self._check_one(tx, height)
        self._checked_tip = tip

    def _check_one(self, tx: TxRecord, tip_height: int) -> None:
        assert tx.final_tx is not None
        if tx.status is TxStatus.COMPLETED:
            self._reopen(tx)
        if self._chain.mempool_entry(tx.txid) is not None:
            return
        if self._chain.raw_transaction(tx.txid) is not None:
            return  # in a block the scanner reads next, or in the mempool meanwhile
        parsed = Transaction.parse(tx.final_tx)
        outpoints = [(i.prevout.txid_hex, i.prevout.vout) for i in parsed.inputs]
        with self._engine.connect() as conn:
            spends = sstore.conflicting_spends(conn, tx.txid, outpoints)
            versions = rstore.transactions(conn, tx.round_seq)
        if spends:
            deepest = min(s.spent_height for s in spends)
            if tip_height - deepest + 1 >= self._maturation:
                spender = spends[0].spent_txid
                own = {v.txid for v in versions if v.family == tx.family}
                with self._engine.connect() as conn:
                    cancel = cancel_store.sent_replacement(conn, tx.txid)
                self._conflicted(tx, spender, outpoints, quiet=spender in own or spender == cancel)
            return
        if rstore.is_superseded(tx, versions):
            return  # a rung of its fee ladder replaced it
        with self._engine.connect() as conn:
            if cancel_store.sent_replacement(conn, tx.txid) is not None:
                return  # a cancel round's replacement of it was sent (coordinator.cancels)
        self._send(tx)

    def _climb(self, seq: int, tip_height: int) -> None:
        """The fee ladder of round ``seq`` (module docstring)."""
        with self._engine.connect() as conn:
            versions = rstore.transactions(conn, seq)
        laddered = {v.family for v in versions if v.base_idx is not None}
        for family, live in sorted(rstore.live_versions(versions).items()):
            sent = live.status is TxStatus.BROADCAST or live.broadcast_at is not None
            if live.block_height is not None or not sent or live.status is TxStatus.CONFLICTED:
                continue  # in a block, not sent yet (the engine sends it), or settled
            assert live.final_tx is not None
            parsed = Transaction.parse(live.final_tx)
            due = parsed.locktime + (live.rung + 1) * self._bump_after
            if tip_height < due:
                continue
            outpoints = [(i.prevout.txid_hex, i.prevout.vout) for i in parsed.inputs]
            with self._engine.connect() as conn:
                if sstore.conflicting_spends(conn, live.txid, outpoints):
                    continue  # in a block already (the scanner reads it), or conflicted
                base = next(v for v in versions if v.idx == family)
                if cancel_store.sent_replacement(conn, base.txid) is not None:
                    continue  # a cancel round replaces it (coordinator.cancels)
            above = [
                v for v in versions if v.family == family and v.rung == live.rung + 1 and v.final_tx
            ]
            if above:
                self._bump(live, above[0], tip_height)
            else:
                self._ladder_spent(live, tip_height, family in laddered)

    def _bump(self, live: TxRecord, rung: TxRecord, tip_height: int) -> None:
        """Replace ``live`` by the next rung of its ladder."""
        assert rung.final_tx is not None
        why = (
            f"rung {rung.rung} replacing {live.txid}, unconfirmed at height {tip_height} "
            f"({self._bump_after} blocks per rung)"
        )
        with transaction(self._engine) as conn:
            rstore.mark_broadcasting(conn, rung.round_seq, rung.idx, self._clock())
        try:
            self._chain.send_raw_transaction(rung.final_tx)
        except ChainUnavailable:
            raise
        except ChainError as exc:
            self._refused(rung, f"{why}; the node refused it: {exc}")
            return
        with transaction(self._engine) as conn:
            sstore.record_send(conn, rung.txid, True, why, self._clock())
        self._statuses.set_transaction_status(rung, TxStatus.BROADCAST)
        log.warning("fee ladder: transaction %s sent as %s", rung.txid, why)

    def _ladder_spent(self, live: TxRecord, tip_height: int, laddered: bool) -> None:
        """Alert once: the transaction is still unconfirmed and has no rung left."""
        ladder = (
            "its fee ladder has no rung left"
            if laddered
            else "it has no fee ladder (ladder.rungs = 0, or no change to lower)"
        )
        detail = (
            f"transaction {live.txid} (rung {live.rung}) is still unconfirmed and {ladder}: "
            "bump it with a child spending its change (a new signing ceremony)"
        )
        with transaction(self._engine) as conn:
            if has_alert(conn, LADDER_SPENT_ALERT, detail):
                return
            add_alert(conn, LADDER_SPENT_ALERT, detail, self._clock())
        log.warning("%s: %s (height %d)", LADDER_SPENT_ALERT, detail, tip_height)

    def _reopen(self, tx: TxRecord) -> None:
        """A completed transaction out of the chain: back to broadcast, with an alert."""
        detail = (
            f"transaction {tx.txid} left the chain after it completed (a reorganisation); "
            "it is back to broadcast and sent again"
        )

        def alert(conn: Connection, now: float) -> None:
            add_alert(conn, REORG_ALERT, detail, now)

        self._statuses.set_transaction_status(tx, TxStatus.BROADCAST, alert)
        log.warning("%s: %s", REORG_ALERT, detail)

    def _send(self, tx: TxRecord) -> None:
        """Send again; record what the node said."""
        assert tx.final_tx is not None
        why = "in neither the node's mempool nor a block"
        if tx.status is TxStatus.SIGNED:
            why = "signed, not sent yet"
            with transaction(self._engine) as conn:
                rstore.mark_broadcasting(conn, tx.round_seq, tx.idx, self._clock())
        crash_point(WATCHER_BEFORE_RESEND)
        try:
            self._chain.send_raw_transaction(tx.final_tx)
        except ChainUnavailable:
            raise
        except ChainError as exc:
            self._refused(tx, f"{why}; the node refused it: {exc}")
            return
        with transaction(self._engine) as conn:
            sstore.record_send(conn, tx.txid, True, f"{why}: sent again", self._clock())
        if tx.status is TxStatus.SIGNED:
            self._statuses.set_transaction_status(tx, TxStatus.BROADCAST)
        log.warning("transaction %s was %s: sent again", tx.txid, why)

    def _refused(self, tx: TxRecord, reason: str) -> None:
        now = self._clock()
        with transaction(self._engine) as conn:
            refused_before = {s.detail for s in sstore.sends_of(conn, tx.txid) if not s.accepted}
            sstore.record_send(conn, tx.txid, False, reason, now)
            rstore.set_round_detail(conn, tx.round_seq, f"transaction {tx.txid}: {reason}", now)
            if reason not in refused_before:
                add_alert(conn, REFUSED_ALERT, f"transaction {tx.txid}: {reason}", now)
        log.warning("%s: transaction %s: %s", REFUSED_ALERT, tx.txid, reason)

    def _conflicted(
        self, tx: TxRecord, spender: str, outpoints: list[tuple[str, int]], quiet: bool = False
    ) -> None:
        """Its inputs went to ``spender`` for good: settle the withdrawals it carried (no alert
        when ``quiet``: the spender is a version of the same transaction, a rung)."""
        raw = self._chain.raw_transaction(spender)
        if raw is None:
            raise ChainError(None, f"the node does not give transaction {spender} (txindex?)")
        paid_outputs = Counter((o.script_pubkey, o.value) for o in Transaction.parse(raw).outputs)

        def settle(conn: Connection, now: float) -> None:
            for own in sstore.carried_outputs(conn, spender):  # a round of ours pays those
                paid_outputs[(own.script_pubkey, own.amount)] -= 1
            record = rstore.round_by_seq(conn, tx.round_seq)
            sstore.release_inputs(conn, tx.round_seq, outpoints)
            summary = ["no withdrawal"]
            if record.kind is RoundKind.WITHDRAWAL:
                summary = self._settle_withdrawals(conn, tx, spender, paid_outputs, now)
            detail = (
                f"transaction {tx.txid} can never confirm: its inputs were spent by {spender}; "
                + ", ".join(summary)
            )
            if quiet:
                log.info("transaction %s superseded: %s", tx.txid, detail)
                return
            add_alert(conn, CONFLICT_ALERT, detail, now)
            log.warning("%s: %s", CONFLICT_ALERT, detail)

        self._statuses.set_transaction_status(tx, TxStatus.CONFLICTED, settle)

    def _settle_withdrawals(
        self,
        conn: Connection,
        tx: TxRecord,
        spender: str,
        paid_outputs: Counter[tuple[bytes, int]],
        now: float,
    ) -> list[str]:
        by_withdrawal: dict[int, list[sstore.CarriedOutput]] = {}
        for carried in sstore.carried_outputs(conn, tx.txid):
            by_withdrawal.setdefault(carried.withdrawal_id, []).append(carried)
        summary = []
        for withdrawal_id, carried_outputs in sorted(by_withdrawal.items()):
            paid = True
            for carried in carried_outputs:
                key = (carried.script_pubkey, carried.amount)
                if paid_outputs[key] > 0:
                    paid_outputs[key] -= 1
                else:
                    paid = False
            current = wstore.get_by_id(conn, withdrawal_id)
            if current is None or current.round_seq != tx.round_seq:
                continue
            if paid:
                detail = f"paid by transaction {spender}, which spent the inputs of {tx.txid}"
                wstore.set_status(
                    conn, [withdrawal_id], wstore.Status.COMPLETED, now, detail=detail
                )
                summary.append(f"withdrawal {current.request_id!r} paid by it")
            elif (
                cancel_store.client_cancel(conn, withdrawal_id)
                and current.status not in wstore.FINAL
            ):
                detail = (
                    f"cancelled by the client: transaction {spender}, which replaced {tx.txid}, "
                    "does not pay it"
                )
                wstore.set_status(
                    conn, [withdrawal_id], wstore.Status.CANCELLED, now, detail=detail
                )
                summary.append(f"withdrawal {current.request_id!r} cancelled")
            elif current.status in wstore.FINAL:
                summary.append(
                    f"withdrawal {current.request_id!r} was {current.status.value} but the chain "
                    "does not pay it: look at it"
                )
            else:
                # an operator's cancel (AdminService.CancelRound) lands here too: the chain
                # shows the replacement confirmed (pool.maturation deep), so the original can
                # never pay it; a later round does (the signers check the same on their nodes)
                by = ""
                if cancel_store.has_cancel(conn, withdrawal_id):
                    by = "an operator's cancel: "
                    # settled: a later round pays it, and may be cancelled again (by anyone)
                    cancel_store.drop_cancels(conn, [withdrawal_id])
                detail = (
                    f"{by}its transaction {tx.txid} was replaced by {spender}, which does not "
                    "pay it: queued again"
                )
                wstore.set_status(
                    conn, [withdrawal_id], wstore.Status.PENDING, now, detail=detail,
                    clear_round=True,
                )  # fmt: skip
                summary.append(f"withdrawal {current.request_id!r} queued again")
        return summary or ["no withdrawal"]
