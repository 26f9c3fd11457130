"""Refund rounds: deposits waiting for a refund → a refund manifest → ``pool.refunds`` PSBTs.

The builder of the round engine (coordinator.rounds) for ``RoundKind.REFUND``; the rules are
in docs/deposits-and-refunds.md ("Refund rounds"). A ``refund_pending`` deposit is refunded to,
in this order: the address an operator proposed (``AdminService.ProposeRefund``, accepted only
when there is no other destination, or after the signers refused the refund); the refund
address registered with its deposit address; its sender, when the deposit transaction's first
input spends a standard single-key or script output (``pool.refunds.sender_script``, from the
previous transaction as the node returns it). A deposit with none of these stays
``refund_pending``, its reason saying that it waits for an operator.

A build pins the node's tip and fee rate. ``build_refunds`` gives one transaction per deposit;
a refund that would pay less than the dust limit is left out and the deposit becomes ``dust``.
The deposits move to ``refund_proposed`` with their destination and refund transaction, then
``refund_signed`` once it is broadcast and ``refunded`` once it is confirmed (the round
completes at maturation). A signer's refusal of one refund (scope request, ``txid:vout``) puts
that deposit back to ``refund_pending`` with the refusal in its reason: it is not tried again
until an operator proposes a destination. An abandoned round puts its deposits back to
``refund_pending``; they are tried again once a round deadline has passed, and a deposit whose
refund some signer already signed is rebuilt byte for byte (the abandoned round's tip and fee
rate), because that signer signs no other spend of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, Engine

from coordinator.config import CoordinatorConfig
from coordinator.round_kinds import BuiltRound, ChainState, RefusedRequest, RequestKey
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import rounds as rstore
from coordinator.store.alerts import add_alert
from coordinator.store.deposits import Deposit, Refund, Status
from coordinator.store.rounds import NewRound, NewTransaction, RoundRecord, RoundStatus, TxStatus
from coordinator.store.schema import transaction
from pool.address import address_to_script_pubkey, script_pubkey_to_address
from pool.errors import VpoolError
from pool.psbt import Psbt
from pool.refunds import (
    RefundManifest,
    RefundPlan,
    RefundRequest,
    RefundSource,
    build_refunds,
    decode_refund_manifest,
    encode_refund_manifest,
    sender_script,
)
from pool.tx import OutPoint, Transaction
from pool.vocabulary import RoundKind

log = logging.getLogger(__name__)

WAITING_NOTE = "no refund destination: waiting for AdminService.ProposeRefund"
REFUSED_NOTE = "refund refused"
REORG_ALERT = "refund_reorged"
_NOTES = (WAITING_NOTE, REFUSED_NOTE)
_DEPOSIT_OF_TX = {
    TxStatus.BROADCAST: Status.REFUND_SIGNED,
    TxStatus.CONFIRMED: Status.REFUNDED,
    TxStatus.COMPLETED: Status.REFUNDED,
}
_FOLLOWED = (Status.REFUND_PROPOSED, Status.REFUND_SIGNED)
"""Deposit statuses that follow their refund transaction."""


class RawTransactions(Protocol):
    """The part of the chain backend (``coordinator.chain.BitcoinRPC``) senders are read from."""

    def raw_transaction(self, txid: str) -> bytes | None: ...


@dataclass(frozen=True)
class Sender:
    """Where a deposit came from: the output its transaction's first input spends."""

    script_pubkey: bytes
    prev_tx: bytes
    """The raw transaction holding that output (a sender refund's manifest carries it)."""


class Senders:
    """The sender of each deposit transaction, read from the node the first time it is asked
    for and remembered (a transaction's inputs never change); safe to use from any thread."""

    def __init__(self, chain: RawTransactions) -> None:
        self._chain = chain
        self._known: dict[str, Sender | None] = {}
        self._lock = threading.Lock()

    def lookup(self, deposit_tx: bytes) -> Sender | None:
        """The sender of ``deposit_tx``, or None when it has none of a standard type (or the
        node does not have the previous transaction); ``ChainError`` when the node fails."""
        tx = Transaction.parse(deposit_tx)
        with self._lock:
            if tx.txid_hex in self._known:
                return self._known[tx.txid_hex]
        sender = self._read(tx)
        with self._lock:
            self._known[tx.txid_hex] = sender
        return sender

    def known(self, deposit_txid: str) -> Sender | None:
        """The sender ``lookup`` found for the deposit transaction (None if not looked up)."""
        with self._lock:
            return self._known.get(deposit_txid)

    def keep_only(self, deposit_txids: Iterable[str]) -> None:
        """Forget every deposit transaction but these."""
        keep = set(deposit_txids)
        with self._lock:
            self._known = {txid: s for txid, s in self._known.items() if txid in keep}

    def _read(self, tx: Transaction) -> Sender | None:
        spent = tx.inputs[0].prevout
        if spent.txid == bytes(32):
            return None  # a coinbase has no sender
        raw = self._chain.raw_transaction(spent.txid_hex)
        if raw is None:
            return None
        try:
            script = sender_script(tx, Transaction.parse(raw))
        except VpoolError:
            return None
        return None if script is None else Sender(script, raw)


@dataclass(frozen=True)
class _Refund:
    """A deposit with its destination."""

    deposit: Deposit
    address: str
    source: RefundSource
    script_pubkey: bytes
    prev_tx: bytes


def outpoint_key(deposit: Deposit) -> str:
    """A deposit as signers name it in a refusal: ``txid:vout``."""
    return f"{deposit.txid}:{deposit.vout}"


def base_reason(reason: str) -> str:
    """A deposit's reason without the note a refund round added to it."""
    cuts = [i for note in _NOTES if (i := reason.find(f"; {note}")) >= 0]
    return reason[: min(cuts)] if cuts else reason


def _noted(reason: str, note: str) -> str:
    return f"{base_reason(reason)}; {note}"


def refusals_of(conn: Connection, deposit: Deposit) -> list[str]:
    """The signers' refusals of the deposit's last refund attempt (empty when none)."""
    seq = deposit.refund.round_seq
    if seq is None:
        return []
    key = outpoint_key(deposit)
    return [
        f"{r.reason_code} by {o.signer_id}"
        for o in rstore.outcomes(conn, seq)
        for r in o.refusals
        if r.scope == "request" and r.request_id == key
    ]


def needs_sender(deposit: Deposit) -> bool:
    """Neither an operator's proposal nor a registered refund address: the sender decides."""
    proposed = deposit.refund.source == RefundSource.OPERATOR and bool(deposit.refund.address)
    return not proposed and not deposit.registered_refund_address


class RefundBuilder:
    """The refund kind of round (module docstring)."""

    kind = RoundKind.REFUND

    def __init__(self, config: CoordinatorConfig, engine: Engine, senders: Senders) -> None:
        self._config = config
        self._engine = engine
        self._senders = senders

    def ready(self, now: float) -> bool:
        """Look the senders up (the node, outside any transaction) and note the deposits left
        without a destination; True when a deposit can be refunded now."""
        with self._engine.connect() as conn:
            pending = dstore.refund_pending(conn)
        for d in pending:
            if needs_sender(d) and d.deposit_tx:
                self._senders.lookup(d.deposit_tx)
        self._senders.keep_only(d.txid for d in pending)
        with self._engine.connect() as conn:
            unnoted = self._unnoted(conn, pending)
            found = self._select(conn, pending, now, None)[0]
        if unnoted:
            self._note_waiting(now)
        return bool(found)

    def build(
        self,
        conn: Connection,
        chain: ChainState,
        exclude: set[RequestKey],
        rebuilt_from: int | None,
        now: float,
    ) -> BuiltRound | str:
        """The refund round of the deposits that can be refunded now, or why there is none."""
        pending = [d for d in dstore.refund_pending(conn) if ("", outpoint_key(d)) not in exclude]
        refunds, pinned = self._select(conn, pending, now, rebuilt_from)
        if not refunds:
            return "no deposit can be refunded now"
        manifest = self._manifest(conn, refunds, chain, pinned)
        plan = build_refunds(manifest)
        dust = _mark_dust(conn, plan, now)
        if not plan.transactions:
            return f"{dust} refunds would pay less than the dust limit: the deposits are dust"
        by_outpoint = {(r.deposit.txid, r.deposit.vout): r for r in refunds}
        new = NewRound(
            round_id=plan.manifest_hash.hex(),
            manifest=encode_refund_manifest(manifest),
            transactions=tuple(
                NewTransaction(
                    t.txid_hex, t.psbt.serialize(), t.fee, (_outpoint(t.refund),), (), ()
                )
                for t in plan.transactions
            ),
            kind=RoundKind.REFUND,
        )
        summary = (
            f"refund round {new.round_id} built: {len(plan.transactions)} refunds, "
            f"{dust} deposits dust"
        )
        return BuiltRound(new, lambda c, seq: _claim(c, seq, plan, by_outpoint, now), summary)

    def _select(
        self, conn: Connection, pending: Sequence[Deposit], now: float, rebuilt_from: int | None
    ) -> tuple[list[_Refund], int | None]:
        """The refunds to build now and the abandoned round whose tip and fee rate they keep
        (None: the node's). A rebuild takes the refunds of the round it replaces."""
        found: list[tuple[int | None, _Refund]] = []
        for d in pending:
            refund = self._destination(d)
            if refund is not None and not refusals_of(conn, d):
                found.append((d.refund.round_seq, refund))
        if rebuilt_from is not None:
            return [r for attempt, r in found if attempt == rebuilt_from], rebuilt_from
        fresh: list[_Refund] = []
        pinned: dict[int, list[_Refund]] = {}
        for attempt, refund in found:
            if attempt is None:
                fresh.append(refund)
            elif self._may_retry(rstore.round_by_seq(conn, attempt), now):
                if dstore.refund_signers(conn, refund.deposit):
                    pinned.setdefault(attempt, []).append(refund)
                else:
                    fresh.append(refund)
        if pinned:
            first = min(pinned)
            return pinned[first], first
        return fresh, None

    def _may_retry(self, attempt: RoundRecord, now: float) -> bool:
        """A round abandoned at least a round deadline ago."""
        wait = self._config.rounds.round_deadline_seconds
        return attempt.status is RoundStatus.ABANDONED and attempt.updated_at + wait <= now

    def _destination(self, d: Deposit) -> _Refund | None:
        """Where the deposit is refunded (module docstring), or None."""
        network = self._config.network
        if not needs_sender(d):
            proposed = d.refund.source == RefundSource.OPERATOR and bool(d.refund.address)
            address = d.refund.address if proposed else d.registered_refund_address
            source = RefundSource.OPERATOR if proposed else RefundSource.REGISTERED
            script = address_to_script_pubkey(address, network)
            return _Refund(d, address, source, script, b"")
        sender = self._senders.known(d.txid)
        if sender is None:
            return None
        address = script_pubkey_to_address(sender.script_pubkey, network) or ""
        return _Refund(d, address, RefundSource.SENDER, sender.script_pubkey, sender.prev_tx)

    def _unnoted(self, conn: Connection, pending: Sequence[Deposit]) -> list[Deposit]:
        """The deposits without a destination whose reason does not say so yet."""
        return [
            d
            for d in pending
            if self._destination(d) is None
            and not refusals_of(conn, d)
            and _noted(d.reason, WAITING_NOTE) != d.reason
        ]

    def _note_waiting(self, now: float) -> None:
        """Deposits without a destination say so in their reason, for operators."""
        with transaction(self._engine) as conn:
            for d in self._unnoted(conn, dstore.refund_pending(conn)):
                reason = _noted(d.reason, WAITING_NOTE)
                dstore.set_status(conn, d.txid, d.vout, Status.REFUND_PENDING, now, reason=reason)
                log.warning("deposit %s:%d: %s", d.txid, d.vout, WAITING_NOTE)

    def _manifest(
        self,
        conn: Connection,
        refunds: Sequence[_Refund],
        chain: ChainState,
        pinned: int | None,
    ) -> RefundManifest:
        """The refund manifest at the node's tip and fee rate, or at those of ``pinned``."""
        tip_height, tip_hash = chain.tip_height, bytes.fromhex(chain.tip_hash)
        fee_rate = chain.fee_rate
        if pinned is not None:
            before = decode_refund_manifest(rstore.round_by_seq(conn, pinned).manifest)
            tip_height, tip_hash, fee_rate = before.tip_height, before.tip_hash, before.fee_rate
        wanted = {r.deposit.series_id for r in refunds}
        series = [s for s in cstore.all_series(conn, self._config.network) if s.id in wanted]
        return RefundManifest(
            network=self._config.network.name,
            series=tuple(series),
            tip_height=tip_height,
            tip_hash=tip_hash,
            fee_rate=fee_rate,
            dust_limit=self._config.pool.dust_limit,
            refunds=tuple(
                RefundRequest(
                    outpoint=OutPoint.from_hex(r.deposit.txid, r.deposit.vout),
                    value=r.deposit.value,
                    series_id=r.deposit.series_id,
                    index=r.deposit.index,
                    deposit_tx=r.deposit.deposit_tx,
                    prev_tx=r.prev_tx,
                    destination=r.script_pubkey,
                    source=r.source,
                )
                for r in refunds
            ),
        )

    def follow(self, conn: Connection, seq: int, now: float) -> None:
        """Each deposit of the round follows its refund transaction: ``refund_signed`` once it
        is broadcast, ``refunded`` once confirmed. A refunded deposit whose refund a
        reorganisation took out stays refunded, with an alert (the refund is sent again)."""
        for tx in rstore.transactions(conn, seq):
            d = _deposit_of(conn, tx.psbt)
            target = _DEPOSIT_OF_TX.get(tx.status)
            if d is None or d.refund.txid != tx.txid or target is None or d.status is target:
                continue
            if d.status in _FOLLOWED:
                detail = f"refund {tx.txid} {tx.status.value}"
                dstore.set_status(conn, d.txid, d.vout, target, now, detail=detail)
                log.info(
                    "deposit %s",
                    target.value,
                    extra={"outpoint": outpoint_key(d), "amount_sat": d.value,
                           "destination": d.refund.address, "txid": tx.txid,
                           "client_id": d.client_id, "user_id": d.user_id, "round_seq": seq},
                )  # fmt: skip
            elif d.status is Status.REFUNDED:
                alert = (
                    f"the refund {tx.txid} of deposit {outpoint_key(d)} left the chain after "
                    "the deposit was refunded; it is sent again"
                )
                add_alert(conn, REORG_ALERT, alert, now)
                log.warning("%s: %s", REORG_ALERT, alert)

    def apply_refusals(
        self, conn: Connection, seq: int, refused: Mapping[RequestKey, RefusedRequest], now: float
    ) -> set[RequestKey]:
        """Refused deposits go back to ``refund_pending`` with the refusals in their reason."""
        left_out: set[RequestKey] = set()
        for key, entry in refused.items():
            d = _deposit_named(conn, key[1])
            if d is None or d.refund.round_seq != seq or d.status is not Status.REFUND_PROPOSED:
                continue
            reason = _noted(d.reason, f"{REFUSED_NOTE}: {'; '.join(entry.reasons)}")
            dstore.set_status(conn, d.txid, d.vout, Status.REFUND_PENDING, now, reason=reason)
            left_out.add(key)
        return left_out

    def give_up(self, conn: Connection, record: RoundRecord, detail: str, now: float) -> int:
        """Abandon the round; its deposits wait for a refund again, their refund attempt kept
        (module docstring); how many went back."""
        rstore.abandon_round(conn, record.seq, detail, now)
        back = 0
        for tx in rstore.transactions(conn, record.seq):
            d = _deposit_of(conn, tx.psbt)
            if d is None or d.refund.round_seq != record.seq:
                continue
            if d.status is Status.REFUND_PROPOSED:
                event = f"refund round {record.round_id} abandoned"
                dstore.set_status(conn, d.txid, d.vout, Status.REFUND_PENDING, now, detail=event)
                back += 1
        return back


def _outpoint(refund: RefundRequest) -> tuple[str, int]:
    return refund.outpoint.txid_hex, refund.outpoint.vout


def _deposit_of(conn: Connection, psbt: bytes) -> Deposit | None:
    """The deposit a refund transaction spends (its one input)."""
    spent = Psbt.parse(psbt).tx.inputs[0].prevout
    return dstore.get(conn, spent.txid_hex, spent.vout)


def _deposit_named(conn: Connection, request_id: str) -> Deposit | None:
    """The deposit named ``txid:vout`` in a refusal (None for anything else)."""
    txid, _, vout = request_id.partition(":")
    if len(txid) != 64 or not vout.isdigit():
        return None
    return dstore.get(conn, txid, int(vout))


def _mark_dust(conn: Connection, plan: RefundPlan, now: float) -> int:
    """Deposits whose refund would pay less than the dust limit become dust; how many."""
    for outpoint, reason in plan.skipped:
        dstore.set_status(conn, outpoint.txid_hex, outpoint.vout, Status.DUST, now, reason=reason)
    return len(plan.skipped)


def _claim(
    conn: Connection,
    seq: int,
    plan: RefundPlan,
    by_outpoint: Mapping[tuple[str, int], _Refund],
    now: float,
) -> None:
    """Move the refunded deposits into round ``seq`` with their destination and transaction."""
    for t in plan.transactions:
        r = by_outpoint[_outpoint(t.refund)]
        refund = Refund(r.address, r.source.value, seq, t.txid_hex)
        detail = (
            f"{t.amount} sat to {r.address} ({r.source.value}), fee {t.fee} sat, in {t.txid_hex}"
        )
        dstore.set_status(
            conn,
            r.deposit.txid,
            r.deposit.vout,
            Status.REFUND_PROPOSED,
            now,
            reason=base_reason(r.deposit.reason),
            detail=detail,
            refund=refund,
        )
