"""The round engine: waiting requests → manifest → PSBTs → signatures → transactions → chain.

One machine for every kind of round (``RoundKind``): withdrawal rounds pay queued withdrawals
(coordinator.withdrawal_rounds), refund rounds send deposits back (coordinator.refund_rounds).
A small builder per kind (coordinator.round_kinds.RoundBuilder) makes the manifest and the
PSBTs and moves that kind's requests along; every other step is the engine's, the same for all
kinds. One round, step by step; each step is committed to the store BEFORE its side effect:

1. Build (one database transaction): the builder makes the round from what waits at the pinned
   tip and fee rate; the round (status ``signing``, its kind) and its transactions are written,
   its inputs reserved, and its requests moved into it. Nothing has left the process yet.
2. Sign: every signer without a final answer is asked in parallel (``SignerPool``, with the
   round's kind, which selects the signer's policy), each call a short poll
   (``rounds.sign_deadline_seconds``). A signer whose device has been asked and has not answered
   says ``pending``; it, and signers that are down or overran the call, are asked again with the
   same request every ``rounds.poll_seconds`` until the round deadline
   (``rounds.round_deadline_seconds``, sized for a person at a device). Every signature is
   verified against its input's BIP143 sighash before it is stored; one bad signature, or an
   answer that leaves an input of its key unsigned without refusing it, makes the signer
   ``faulty`` for the round and all it sent is ignored. Each answer is stored with the
   signer's outcome (signed / refused / pending / down / timeout / faulty; the awaited ones with
   since when).
3. Finalize: as soon as every input of a transaction has m valid signatures, the transaction
   is finalized and stored (status ``signed``; its requests follow).
4. When the signers are done (or the deadline passed): every transaction signed → broadcast.
   A round with a signed transaction broadcasts it and waits for the others. **A round with any
   valid signature (or a signer whose device is still asked) is never abandoned nor rebuilt**:
   abandoning it would leave the signature behind, and every later round spending its coins with
   other outputs would be refused ``DOUBLE_SIGN``. It stays ``signing`` with its coins reserved
   and its requests in it, its detail says since when it waits, who signed and who is awaited
   (pool status shows it as an alert), and ``retry_waiting`` asks it again at every scheduler
   tick (signers that refused or were faulty included) until it has its signatures. A round
   without any signature: if signers refused single requests, the builder takes those out of
   the round (a withdrawal is ``rejected`` for final reasons, ``pending`` for transient ones; a
   deposit stays to be refunded, with the refusal), the round is abandoned and rebuilt once
   without them; else
   the round is abandoned (inputs released, requests put back, the detail says which signer
   failed how). m valid signatures on every input win over any refusal: the pool is m-of-n.
   ``cancel_round`` (AdminService.CancelRound) abandons a signing round without any signature at
   once, refuses one with a signature but no complete transaction, and cancels a signed or
   broadcast round by replacement (coordinator.cancels, an operator's cancel).
5. Broadcast: ``broadcast_at`` is stored (the intent), the transaction sent (a transaction the
   node already knows counts as sent), then the status ``broadcast`` stored.

``resume`` finishes what a previous process left open, whatever its kind; ``track`` (after each
scanner sync) moves transactions to ``confirmed`` and ``completed`` (at ``pool.maturation``
confirmations), back to ``broadcast`` when a reorganisation took them out of the chain (and
sends them again), and the requests and rounds along with them.

The decisions (who is asked, the verdict once the signers are done, what CancelRound may do)
are pure functions in ``coordinator.round_state``; this module is their driver: it reads the
round from the store, persists each change, then acts. Sleeping between polls is injected
(``sleep``), like the clock.

The engine is not thread-safe: one caller at a time (``coordinator.scheduler`` serializes), but
for ``cancel_round``, one database transaction that a polling round notices at its next poll.

Test hook: the named crash points of ``coordinator.crash_points`` (``VPOOL_CRASH_AT``): the
process kills itself with SIGKILL at that step; the crash-safety tests restart it and check that
nothing is lost or paid twice. Never set it in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import Connection, Engine

from coordinator.cancels import build_cancel_round, operator_cancels
from coordinator.chain import ChainError
from coordinator.config import CoordinatorConfig
from coordinator.crash_points import (
    AFTER_BROADCAST,
    AFTER_CANCEL_RECORDED,
    AFTER_COMPLETED,
    AFTER_CONFIRMED,
    AFTER_FINALIZED,
    AFTER_INPUTS_RESERVED,
    AFTER_ROUND_PERSISTED,
    AFTER_SIGNATURES_PERSISTED,
    AFTER_SIGNER_ANSWER_STORED,
    BEFORE_BROADCAST,
    crash_point,
)
from coordinator.refund_rounds import RefundBuilder, Senders
from coordinator.round_kinds import (
    CancelRefused,
    ChainState,
    RefusedRequest,
    RequestKey,
    RoundBuilder,
)
from coordinator.round_state import (
    CancelAction,
    RoundFacts,
    Verdict,
    cancel_action,
    conclude,
    request_refusals,
    to_ask,
)
from coordinator.signers import Failure, Refusal, SignResult
from coordinator.store import attestations as astore
from coordinator.store import cancels as cancel_store
from coordinator.store import chain as cstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.rounds import (
    TX_ORDER,
    Outcome,
    RoundRecord,
    RoundStatus,
    TxRecord,
    TxStatus,
)
from coordinator.store.schema import transaction
from coordinator.withdrawal_rounds import WithdrawalBuilder
from pool.cancel import is_cancel_manifest
from pool.errors import PsbtError
from pool.psbt import Psbt
from pool.roles import extract, finalize, verify_partial_sigs
from pool.script import parse_multisig_script
from pool.vocabulary import RoundKind
from vpool.v1.signer_pb2 import DeviceLimits

log = logging.getLogger(__name__)


_ROUND_OF_TX = {
    TxStatus.UNSIGNED: RoundStatus.SIGNING,
    TxStatus.SIGNED: RoundStatus.SIGNED,
    TxStatus.BROADCAST: RoundStatus.BROADCAST,
    TxStatus.CONFIRMED: RoundStatus.BROADCAST,
    TxStatus.COMPLETED: RoundStatus.COMPLETED,
    TxStatus.CONFLICTED: RoundStatus.COMPLETED,
}


class RoundChain(Protocol):
    """The part of the chain backend (``coordinator.chain.BitcoinRPC``) the engine uses."""

    def tip(self) -> tuple[int, str]: ...

    def estimate_fee_rate(self, target: int, floor: int, ceiling: int) -> int: ...

    def send_raw_transaction(self, raw: bytes) -> str: ...

    def raw_transaction(self, txid: str) -> bytes | None: ...


class RoundSigners(Protocol):
    """The part of ``coordinator.signers.SignerPool`` the engine uses."""

    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def sign_round_each(
        self,
        manifest: bytes,
        psbts: Sequence[bytes],
        deadline: float,
        signer_ids: Iterable[str] | None = None,
        kind: RoundKind = RoundKind.WITHDRAWAL,
    ) -> Iterable[tuple[str, SignResult]]: ...


@dataclass(frozen=True)
class RoundOutcome:
    """What ``run_round`` or ``run_refunds`` did: the round it ran (None when none) and why."""

    round_id: str | None
    detail: str


@dataclass(frozen=True)
class _Signing:
    """A round being signed: its identity and the PSBTs as sent to the signers."""

    record: RoundRecord
    manifest_hash: bytes
    psbts: tuple[Psbt, ...]
    raw_psbts: tuple[bytes, ...]


class RoundEngine:
    """Builds, signs, broadcasts and follows rounds of every kind; see the module docstring."""

    def __init__(
        self,
        config: CoordinatorConfig,
        engine: Engine,
        chain: RoundChain,
        signers: RoundSigners,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        device_limits: Callable[[], Iterable[DeviceLimits]] = tuple,
        after_round: Callable[[str], object] | None = None,
    ) -> None:
        """``device_limits``: the limits the signers' devices reported, as known (they cap the
        shape of each withdrawal transaction: coordinator.withdrawal_rounds.shape_caps).
        ``after_round(round_id)`` runs each time a round was asked for signatures
        (coordinator.audit_heads records the signers' audit heads there)."""
        self._after_round = after_round
        self._config = config
        self._sleep = sleep
        self._engine = engine
        self._chain = chain
        self._signers = signers
        self._clock = clock
        self._builders: dict[RoundKind, RoundBuilder] = {
            RoundKind.WITHDRAWAL: WithdrawalBuilder(config, device_limits),
            RoundKind.REFUND: RefundBuilder(config, engine, Senders(chain)),
        }

    # ------------------------------------------------------------------------ entry points

    def run_round(self) -> RoundOutcome:
        """Finish the open rounds, then build, sign and broadcast a new withdrawal round."""
        self._finish_open_rounds()
        return self._run(self._builders[RoundKind.WITHDRAWAL])

    def run_refunds(self) -> RoundOutcome:
        """Build, sign and broadcast a refund round when deposits wait for one
        (coordinator.refund_rounds); the open rounds hold other deposits than the new one."""
        return self._run(self._builders[RoundKind.REFUND])

    def run_cancels(self) -> list[RoundOutcome]:
        """Build and drive a cancel round (coordinator.cancels) for each round with cancels
        waiting; the cancels that cannot be done are dropped, with the reason in the
        withdrawal's detail (it follows its transaction)."""
        with self._engine.connect() as conn:
            seqs = sorted({c.round_seq for c in cancel_store.waiting_cancels(conn)})
        outcomes: list[RoundOutcome] = []
        for seq in seqs:
            try:
                fee_rate = self._chain_state().fee_rate
            except ChainError as exc:
                return [*outcomes, RoundOutcome(None, f"no cancel round built: {exc}")]
            now = self._clock()
            with transaction(self._engine) as conn:
                built = build_cancel_round(conn, seq, fee_rate, self._config.ladder.step)
                for withdrawal_id, why in built.dropped:
                    current = wstore.get_by_id(conn, withdrawal_id)
                    if current is not None and current.status not in wstore.FINAL:
                        detail = f"cancel not done: {why}"
                        wstore.set_status(conn, [withdrawal_id], current.status, now, detail=detail)
                cancel_store.drop_cancels(conn, [w for w, _ in built.dropped])
                if built.new is None:
                    continue
                new_seq = rstore.create_round(conn, built.new, now)
                cancel_store.set_cancel_round(conn, built.cancelled, new_seq)
            log.info("cancel round %s built for round %d", built.new.round_id, seq)
            outcomes.append(self._drive(new_seq))
        return outcomes

    def retry_waiting(self) -> list[RoundOutcome]:
        """At every scheduler tick: ask the signing rounds past their deadline (rounds that wait
        for signatures) again, each at most every ``rounds.poll_seconds``."""
        now = self._clock()
        with self._engine.connect() as conn:
            records = [
                r
                for r in rstore.open_rounds(conn)
                if r.status is RoundStatus.SIGNING
                and now >= self._deadline(r)
                and now - r.updated_at >= self._config.rounds.poll_seconds
            ]
        return [self._sign(r.seq) for r in records]

    def resume(self) -> list[RoundOutcome]:
        """At start: finish, broadcast or abandon every round a previous process left open."""
        return self._finish_open_rounds()

    def track(self) -> None:
        """After a scanner sync: confirmations, maturation and reorganisations."""
        with self._engine.connect() as conn:
            cursor = cstore.last_block(conn)
            tracked = rstore.tracked_transactions(conn)
        if cursor is not None:
            for tx in tracked:
                self._track_one(tx, cursor.height)

    def _run(self, builder: RoundBuilder) -> RoundOutcome:
        """Build a new round of the builder's kind and drive it."""
        try:
            if not builder.ready(self._clock()):
                return RoundOutcome(None, f"nothing waits for a {builder.kind} round")
            built = self._build(builder, rebuilt_from=None)
        except (ChainError, rstore.ReservationConflict) as exc:
            return RoundOutcome(None, f"no round built: {exc}")
        if isinstance(built, RoundOutcome):
            return built
        return self._drive(built)

    def _finish_open_rounds(self) -> list[RoundOutcome]:
        with self._engine.connect() as conn:
            records = rstore.open_rounds(conn)
        done = []
        for record in records:
            if record.status is RoundStatus.SIGNING:
                done.append(self._sign(record.seq))
            elif record.status is RoundStatus.SIGNED:
                sent = self._broadcast(record.seq)
                done.append(RoundOutcome(record.round_id, f"{sent} transactions broadcast"))
        return done

    # ------------------------------------------------------------------------ 1. build

    def _build(
        self,
        builder: RoundBuilder,
        rebuilt_from: int | None,
        before: Callable[[Connection, float], set[RequestKey]] | None = None,
    ) -> int | RoundOutcome:
        """Persist a new round (step 1); its seq, or why there is none.

        ``before`` runs first in the same database transaction (a rebuild abandons the round it
        replaces there) and names requests to leave out of this round.
        """
        chain = self._chain_state()
        now = self._clock()
        with transaction(self._engine) as conn:
            rstore.lock_for_build(conn, builder.kind)
            exclude = before(conn, now) if before is not None else set()
            built = builder.build(conn, chain, exclude, rebuilt_from, now)
            if isinstance(built, str):
                return RoundOutcome(None, built)
            seq = rstore.create_round(conn, replace(built.new, rebuilt_from=rebuilt_from), now)
            built.claim(conn, seq)
            crash_point(AFTER_INPUTS_RESERVED, builder.kind)
        log.info("%s", built.summary, extra={"round_id": built.new.round_id, "kind": builder.kind})
        return seq

    def _chain_state(self) -> ChainState:
        """The node's tip and fee rate, read before a build."""
        tip_height, tip_hash = self._chain.tip()
        chain = self._config.chain
        fee_rate = self._chain.estimate_fee_rate(
            chain.fee_target_blocks, chain.fee_floor, chain.fee_ceiling
        )
        return ChainState(tip_height, tip_hash, fee_rate)

    # ------------------------------------------------------------------------ 2-4. sign

    def _drive(self, seq: int) -> RoundOutcome:
        """Sign a freshly persisted round, then broadcast, rebuild or abandon it."""
        with self._engine.connect() as conn:
            kind = rstore.round_by_seq(conn, seq).kind
        crash_point(AFTER_ROUND_PERSISTED, kind)
        return self._sign(seq)

    def _sign(self, seq: int) -> RoundOutcome:
        signing = self._load(seq)
        self._collect(signing)
        outcome = self._conclude(signing.record.seq)
        if self._after_round is not None:
            try:
                self._after_round(signing.record.round_id)
            except Exception:  # the round is done; what follows it must not undo that
                log.exception("round %s: after the round", signing.record.round_id)
        return outcome

    def _load(self, seq: int) -> _Signing:
        with self._engine.connect() as conn:
            record = rstore.round_by_seq(conn, seq)
            raw = tuple(tx.psbt for tx in rstore.transactions(conn, seq))
        psbts = tuple(Psbt.parse(r) for r in raw)
        return _Signing(record, bytes.fromhex(record.round_id), psbts, raw)

    def _collect(self, signing: _Signing) -> None:
        """Ask the signers without a final answer, every ``rounds.poll_seconds``, until every
        transaction is signed, every signer has answered for good, the round is no longer
        ``signing`` (CancelRound), or the round deadline passes. A round past its deadline is
        asked once (at every scheduler tick), signers that refused included."""
        rounds = self._config.rounds
        deadline = self._deadline(signing.record)
        waiting = self._clock() >= deadline
        first = True
        while not self._finalize_ready(signing):
            ask = self._to_ask(signing.record.seq, waiting)
            if not ask:
                return
            if not first:
                if waiting:
                    return
                self._sleep(max(0.0, min(rounds.poll_seconds, deadline - self._clock())))
                if self._clock() >= deadline:
                    return
            first = False
            per_call = rounds.sign_deadline_seconds
            if not waiting:
                per_call = min(per_call, deadline - self._clock())
            answers = self._signers.sign_round_each(
                signing.record.manifest,
                signing.raw_psbts,
                per_call,
                ask,
                kind=signing.record.kind,
            )
            for signer_id, result in answers:
                self._record_answer(signing, signer_id, result)
                self._finalize_ready(signing)

    def _deadline(self, record: RoundRecord) -> float:
        return record.created_at + self._config.rounds.round_deadline_seconds

    def _to_ask(self, seq: int, waiting: bool) -> list[str]:
        """Configured signers without a final outcome in a signing round (none once the round
        is cancelled); ``waiting`` (past the deadline): every signer but those that signed
        everything they were asked or were faulty."""
        with self._engine.connect() as conn:
            if rstore.round_by_seq(conn, seq).status is not RoundStatus.SIGNING:
                return []
            found = rstore.outcomes(conn, seq)
        return to_ask(self._signers.signer_ids, found, waiting)

    def _record_answer(self, signing: _Signing, signer_id: str, result: SignResult) -> None:
        """Verify and store one signer's answer and its outcome."""
        seq, now = signing.record.seq, self._clock()
        fault = None if result.error is not None or result.pending else _fault(signing, result)
        with transaction(self._engine) as conn:
            before = {o.signer_id: o for o in rstore.outcomes(conn, seq)}.get(signer_id)
            if result.error is not None or result.pending:
                if result.error is not None:
                    timeout = result.error.failure is Failure.TIMEOUT
                    outcome = Outcome.TIMEOUT if timeout else Outcome.DOWN
                    detail = str(result.error)
                else:
                    outcome, detail = Outcome.PENDING, "its device has been asked"
                since = result.pending_since
                if since is None:
                    same = before is not None and before.outcome is outcome
                    since = before.since if same and before and before.since else now
                rstore.set_outcome(conn, seq, signer_id, outcome, now, detail=detail, since=since)
            elif fault is not None:
                rstore.set_outcome(
                    conn,
                    seq,
                    signer_id,
                    Outcome.FAULTY,
                    now,
                    detail=fault,
                    refusals=result.refusals,
                )
            else:
                found = [
                    (s.psbt_index, s.input_index, s.pubkey, s.signature) for s in result.signatures
                ]
                rstore.add_signatures(conn, seq, signer_id, found)
                if result.attestations:
                    txids = [tx.txid for tx in rstore.transactions(conn, seq)]
                    astore.add_attestations(
                        conn,
                        seq,
                        bytes.fromhex(signing.record.round_id),
                        txids,
                        signer_id,
                        result.attestations,
                        now,
                    )
                rstore.set_outcome(
                    conn,
                    seq,
                    signer_id,
                    Outcome.REFUSED if result.refusals else Outcome.SIGNED,
                    now,
                    signature_count=len(found),
                    detail=_refusal_summary(result.refusals),
                    refusals=result.refusals,
                )
        if fault is not None:
            log.warning(
                "round %s: signer %s is faulty: %s", signing.record.round_id, signer_id, fault
            )
        elif result.signatures:
            crash_point(AFTER_SIGNER_ANSWER_STORED, signing.record.kind)

    def _finalize_ready(self, signing: _Signing) -> bool:
        """Finalize the unsigned transactions with m signatures on every input; True when no
        transaction of the round is left unsigned."""
        seq = signing.record.seq
        with self._engine.connect() as conn:
            unsigned = [
                tx for tx in rstore.transactions(conn, seq) if tx.status is TxStatus.UNSIGNED
            ]
            stored = rstore.round_signatures(conn, seq)
        ready = [tx for tx in unsigned if _has_quorum(signing.psbts[tx.idx], tx.idx, stored)]
        if ready:
            crash_point(AFTER_SIGNATURES_PERSISTED, signing.record.kind)
            now = self._clock()
            with transaction(self._engine) as conn:
                for tx in ready:
                    raw = _finalized(signing.psbts[tx.idx], tx, stored)
                    rstore.set_final_tx(conn, seq, tx.idx, raw, now)
                self._follow(conn, seq, now)
            crash_point(AFTER_FINALIZED, signing.record.kind)
            log.info("round %s: %d transactions signed", signing.record.round_id, len(ready))
        return len(ready) == len(unsigned)

    def _conclude(self, seq: int) -> RoundOutcome:
        """After signing: act on ``round_state.conclude``'s verdict."""
        with self._engine.connect() as conn:
            record = rstore.round_by_seq(conn, seq)
            txs = rstore.transactions(conn, seq)
            outcomes = rstore.outcomes(conn, seq)
            signed_by = rstore.signers_that_signed(conn, seq)
        if record.status is RoundStatus.ABANDONED:
            return RoundOutcome(record.round_id, f"abandoned: {record.detail}")
        signed = sum(tx.status is not TxStatus.UNSIGNED for tx in txs)
        facts = RoundFacts(
            kind=record.kind,
            signer_ids=tuple(self._signers.signer_ids),
            m=_threshold(txs[0]),
            transactions=len(txs),
            signed_transactions=signed,
            signed_by=tuple(signed_by),
            outcomes=tuple(outcomes),
            rebuilt_from=record.rebuilt_from,
        )
        verdict = conclude(facts)
        if verdict is Verdict.BROADCAST:
            sent = self._broadcast(seq)
            bases = sum(tx.base_idx is None for tx in txs)
            return RoundOutcome(record.round_id, f"{sent} of {bases} transactions broadcast")
        if verdict is Verdict.PARTLY_SIGNED:
            self._broadcast(seq)
            detail = f"{signed} of {len(txs)} transactions signed; waiting for the signers"
            with transaction(self._engine) as conn:
                rstore.set_round_status(conn, seq, RoundStatus.SIGNING, self._clock(), detail)
            return RoundOutcome(record.round_id, detail)
        if verdict is Verdict.WAIT:
            return self._wait(record, signed_by, outcomes)
        refused = request_refusals(outcomes)
        if verdict is Verdict.REBUILD:
            if signed_by:
                log.warning(
                    "round %s: signed by %s, but signers refused its requests for good so that "
                    "it cannot reach m; rebuilt without them",
                    record.round_id,
                    ", ".join(signed_by),
                )
            return self._rebuild(record, refused)
        return self._abandon(record, outcomes, refused)

    def _wait(
        self,
        record: RoundRecord,
        signed_by: Sequence[str],
        outcomes: Sequence[rstore.OutcomeRecord],
    ) -> RoundOutcome:
        """Keep a round that got a signature (or whose signer's device is still asked) open: it
        is never abandoned, its coins stay reserved and its requests stay in it; it is asked
        again at every scheduler tick."""
        since = min(self._clock(), self._deadline(record))
        detail = rstore.waiting_detail(record.round_id, since, signed_by, outcomes)
        with transaction(self._engine) as conn:
            rstore.set_round_status(conn, record.seq, RoundStatus.SIGNING, self._clock(), detail)
        log.warning("%s round %s: %s", record.kind, record.round_id, detail)
        return RoundOutcome(record.round_id, detail)

    # ------------------------------------------------------------------------ cancel

    def cancel_round(self, round_id: str) -> RoundOutcome:
        """AdminService.CancelRound (``round_state.cancel_action``): abandon a signing round that
        has no valid signature now (its requests go back); for a signed or broadcast round,
        record an operator's cancel of every withdrawal its transactions not in a block pay
        (``coordinator.cancels.operator_cancels``): ``run_cancels`` builds the cancel round,
        asks the signers and broadcasts it, and the withdrawals go back to the queue once the
        replacement confirms. Raises ``CancelRefused`` (naming the reason, and the transaction
        when one cannot be replaced) otherwise, and ``KeyError`` for an unknown round.

        One database transaction; the engine's own loop sees the round abandoned at its next
        poll, and the scheduler builds the cancel round at its next tick."""
        builder_of = self._builders
        now = self._clock()
        with transaction(self._engine) as conn:
            record = rstore.get_round(conn, round_id)
            if record is None:
                raise KeyError(round_id)
            txs = rstore.transactions(conn, record.seq)
            signed = sum(tx.status is not TxStatus.UNSIGNED for tx in txs)
            signed_by = rstore.signers_that_signed(conn, record.seq)
            action = cancel_action(round_id, record.status, signed, signed_by)
            if not isinstance(action, CancelAction):
                raise CancelRefused(action)
            if action is CancelAction.REPLACE:
                detail = self._record_operator_cancel(conn, record, now)
            else:
                detail = "cancelled by an operator (no signature was given)"
                back = builder_of[record.kind].give_up(conn, record, detail, now)
                detail = f"abandoned: {detail}; {back} requests put back"
        if action is CancelAction.REPLACE:
            crash_point(AFTER_CANCEL_RECORDED, record.kind)
        log.warning("%s round %s: %s", record.kind, round_id, detail)
        return RoundOutcome(round_id, detail)

    def _record_operator_cancel(self, conn: Connection, record: RoundRecord, now: float) -> str:
        """Record the operator's cancels of a signed or broadcast round; the round's detail."""
        if record.kind is not RoundKind.WITHDRAWAL:
            raise CancelRefused(
                f"round {record.round_id} is a {record.kind} round: only withdrawal rounds are "
                "cancelled by replacement"
            )
        cancels, problems = operator_cancels(conn, record.seq)
        if problems:
            raise CancelRefused(f"round {record.round_id}: " + "; ".join(problems))
        if not cancels:
            raise CancelRefused(
                f"round {record.round_id} has no transaction out of a block that pays a "
                "withdrawal: nothing left to cancel"
            )
        recorded = 0
        for withdrawal_id, seq in cancels:
            recorded += cancel_store.request_cancel(conn, withdrawal_id, seq, now, by_operator=True)
            current = wstore.get_by_id(conn, withdrawal_id)
            if current is not None and current.status not in wstore.FINAL:
                wstore.set_status(
                    conn, [withdrawal_id], current.status, now,
                    detail="cancelled by an operator: its transaction is to be replaced by one "
                    "without it; queued again once the replacement confirms, completed if the "
                    "original does",
                )  # fmt: skip
        detail = (
            f"replacement requested: an operator cancelled {len(cancels)} withdrawals "
            f"({recorded} newly) of its unconfirmed transactions; a cancel round without them "
            "is built, signed and broadcast at the next scheduler tick, and they are queued "
            "again once it confirms"
        )
        rstore.set_round_detail(conn, record.seq, detail, now)
        return detail

    # ------------------------------------------------------------------------ refusals, abandon

    def _rebuild(
        self, record: RoundRecord, refused: dict[RequestKey, RefusedRequest]
    ) -> RoundOutcome:
        """Abandon the round and build it again without the refused requests (once); a cancel
        round is abandoned (its withdrawals follow their transactions)."""
        if is_cancel_manifest(record.manifest):
            with self._engine.connect() as conn:
                outcomes = rstore.outcomes(conn, record.seq)
            return self._abandon(record, outcomes, refused)
        detail = f"rebuilt without {len(refused)} refused requests"
        builder = self._builders[record.kind]

        def replace_round(conn: Connection, now: float) -> set[RequestKey]:
            left_out = builder.apply_refusals(conn, record.seq, refused, now)
            builder.give_up(conn, record, detail, now)
            return left_out

        log.info("round %s: %s", record.round_id, detail)
        try:
            built = self._build(builder, record.seq, before=replace_round)
        except (ChainError, rstore.ReservationConflict) as exc:
            with self._engine.connect() as conn:
                outcomes = rstore.outcomes(conn, record.seq)
            self._abandon(record, outcomes, refused)
            return RoundOutcome(None, f"{detail}, but no round built: {exc}")
        if isinstance(built, RoundOutcome):
            return RoundOutcome(None, f"{detail}; {built.detail}")
        return self._drive(built)

    def _abandon(
        self,
        record: RoundRecord,
        outcomes: Sequence[rstore.OutcomeRecord],
        refused: dict[RequestKey, RefusedRequest],
    ) -> RoundOutcome:
        """Give the round up cleanly; the detail names what each signer did."""
        summary = _outcome_summary(self._signers.signer_ids, outcomes)
        detail = f"too few valid signatures by the round deadline: {summary}"
        builder = self._builders[record.kind]
        now = self._clock()
        with transaction(self._engine) as conn:
            builder.apply_refusals(conn, record.seq, refused, now)
            back = builder.give_up(conn, record, detail, now)
        log.warning(
            "%s round %s abandoned, %d requests put back: %s",
            record.kind,
            record.round_id,
            back,
            detail,
        )
        return RoundOutcome(record.round_id, f"abandoned: {detail}")

    # ------------------------------------------------------------------------ 5. broadcast

    def _broadcast(self, seq: int) -> int:
        """Send the round's signed transactions; how many of its transactions are out."""
        with self._engine.connect() as conn:
            txs = rstore.transactions(conn, seq)
        out = 0
        for tx in txs:
            if tx.base_idx is not None:
                continue  # a rung of the fee ladder: the watcher sends it when it is due
            if tx.status is TxStatus.SIGNED:
                out += self._send(tx)
            else:
                out += TX_ORDER[tx.status] >= TX_ORDER[TxStatus.BROADCAST]
        return out

    def _send(self, tx: TxRecord) -> bool:
        """Intent stored, transaction sent, status stored; False when the node refused it."""
        assert tx.final_tx is not None
        with transaction(self._engine) as conn:
            rstore.mark_broadcasting(conn, tx.round_seq, tx.idx, self._clock())
            kind = rstore.round_by_seq(conn, tx.round_seq).kind
        crash_point(BEFORE_BROADCAST, kind)
        if not self._push(tx):
            return False
        crash_point(AFTER_BROADCAST, kind)
        now = self._clock()
        with transaction(self._engine) as conn:
            rstore.set_tx_status(conn, tx.round_seq, tx.idx, TxStatus.BROADCAST)
            self._follow(conn, tx.round_seq, now)
        log.info("transaction %s broadcast", tx.txid, extra={"txid": tx.txid})
        return True

    def _push(self, tx: TxRecord) -> bool:
        """Hand the transaction to the node (one it already has counts as sent); a refusal
        is written in the round's detail and the transaction is sent again later."""
        assert tx.final_tx is not None
        try:
            self._chain.send_raw_transaction(tx.final_tx)
        except ChainError as exc:
            log.warning("transaction %s not sent: %s", tx.txid, exc)
            with transaction(self._engine) as conn:
                detail = f"transaction {tx.txid} not sent yet: {exc}"
                rstore.set_round_detail(conn, tx.round_seq, detail, self._clock())
            return False
        return True

    # ------------------------------------------------------------------------ tracking

    def _track_one(self, tx: TxRecord, tip_height: int) -> None:
        """Move one transaction along its confirmations, or back to ``broadcast`` (and to the
        node again) when a reorganisation took it out of the chain."""
        if tx.block_height is not None:
            done = tx.confirmations(tip_height) >= self._config.pool.maturation
            status = TxStatus.COMPLETED if done else TxStatus.CONFIRMED
        elif tx.status is TxStatus.CONFIRMED:
            status = TxStatus.BROADCAST
        else:
            return
        if status is not tx.status:
            now = self._clock()
            with transaction(self._engine) as conn:
                rstore.set_tx_status(conn, tx.round_seq, tx.idx, status)
                self._follow(conn, tx.round_seq, now)
                kind = rstore.round_by_seq(conn, tx.round_seq).kind
            crash_point(AFTER_COMPLETED if status is TxStatus.COMPLETED else AFTER_CONFIRMED, kind)
        if tx.block_height is None:
            log.warning("transaction %s left the chain; sending it again", tx.txid)
            self._push(tx)

    def set_transaction_status(
        self,
        tx: TxRecord,
        status: TxStatus,
        before: Callable[[Connection, float], None] | None = None,
    ) -> None:
        """For the transaction watcher (coordinator.watcher): store the status it found for
        ``tx`` (``broadcast`` once it sent it, or after a reorganisation took a completed one
        out; ``conflicted``), after ``before`` in the same database transaction, and bring the
        round and its requests along."""
        now = self._clock()
        with transaction(self._engine) as conn:
            if before is not None:
                before(conn, now)
            rstore.set_tx_status(conn, tx.round_seq, tx.idx, status)
            self._follow(conn, tx.round_seq, now)

    def _follow(self, conn: Connection, seq: int, now: float) -> None:
        """Bring the round's requests (its builder's business) and the round itself to where
        its transactions are."""
        record = rstore.round_by_seq(conn, seq)
        self._builders[record.kind].follow(conn, seq, now)
        txs = list(rstore.live_versions(rstore.transactions(conn, seq)).values())
        least = min((tx.status for tx in txs), key=TX_ORDER.__getitem__)
        if record.status is not _ROUND_OF_TX[least]:
            rstore.set_round_status(conn, seq, _ROUND_OF_TX[least], now)


# --------------------------------------------------------------------------- helpers


def _with_signatures(psbt: Psbt, by_input: Mapping[int, Mapping[bytes, bytes]]) -> Psbt:
    """``psbt`` with partial signatures added (input index → public key → signature)."""
    inputs = list(psbt.inputs)
    for index, sigs in by_input.items():
        merged = {**inputs[index].partial_sigs, **sigs}
        inputs[index] = replace(inputs[index], partial_sigs=merged)
    return replace(psbt, inputs=tuple(inputs))


def _fault(signing: _Signing, result: SignResult) -> str | None:
    """Why a signer's answer is faulty (a bad signature, or one for nothing), or None."""
    if result.manifest_hash != signing.manifest_hash:
        return "answered for another manifest"
    grouped: dict[int, dict[int, dict[bytes, bytes]]] = {}
    for s in result.signatures:
        psbt = signing.psbts[s.psbt_index] if s.psbt_index < len(signing.psbts) else None
        if psbt is None or s.input_index >= len(psbt.inputs):
            return (
                f"a signature for PSBT {s.psbt_index} input {s.input_index}, which does not exist"
            )
        by_key = grouped.setdefault(s.psbt_index, {}).setdefault(s.input_index, {})
        if s.pubkey in by_key:
            return f"two signatures for PSBT {s.psbt_index} input {s.input_index} by one key"
        by_key[s.pubkey] = s.signature
    for index, by_input in grouped.items():
        try:
            checked = verify_partial_sigs(_with_signatures(signing.psbts[index], by_input))
        except PsbtError as exc:
            return f"PSBT {index}: malformed signature entry: {exc}"
        for input_index, pubkey, valid in checked:
            if not valid:
                return (
                    f"PSBT {index} input {input_index}: the signature for key {pubkey.hex()} does "
                    "not verify against the input's sighash"
                )
    if not result.refusals:
        return _unsigned_inputs(signing.psbts, grouped)
    return None


def _unsigned_inputs(
    psbts: Sequence[Psbt], grouped: Mapping[int, Mapping[int, Mapping[bytes, bytes]]]
) -> str | None:
    """Why an answer that signed some inputs and refused nothing is faulty: an input its key
    (the master fingerprints of the keys it signed with) belongs to has no signature from it.
    Its valid signatures would be stored as a final ``signed``, never asked again, and a round
    short of m signatures on that input would wait forever."""
    fingerprints = {
        psbts[p].inputs[i].bip32_derivations[pubkey].fingerprint
        for p, by_input in grouped.items()
        for i, by_key in by_input.items()
        for pubkey in by_key
        if pubkey in psbts[p].inputs[i].bip32_derivations
    }
    wanted = signed = 0
    for p, psbt in enumerate(psbts):
        for i, psbt_input in enumerate(psbt.inputs):
            for pubkey, origin in psbt_input.bip32_derivations.items():
                if origin.fingerprint in fingerprints:
                    wanted += 1
                    signed += pubkey in grouped.get(p, {}).get(i, {})
    if signed < wanted:
        return f"signed {signed} of the {wanted} inputs its key is in, refused none of the others"
    return None


def _has_quorum(
    psbt: Psbt, tx_idx: int, stored: Mapping[tuple[int, int], Mapping[bytes, bytes]]
) -> bool:
    """Every input has signatures by m distinct keys of its witness script."""
    for index, psbt_input in enumerate(psbt.inputs):
        assert psbt_input.witness_script is not None
        m, keys = parse_multisig_script(psbt_input.witness_script)
        have = stored.get((tx_idx, index), {})
        if sum(key in have for key in keys) < m:
            return False
    return True


def _finalized(
    psbt: Psbt, tx: TxRecord, stored: Mapping[tuple[int, int], Mapping[bytes, bytes]]
) -> bytes:
    """The network serialization of the transaction, finalized from the stored signatures."""
    by_input = {i: stored.get((tx.idx, i), {}) for i in range(len(psbt.inputs))}
    final = extract(finalize(_with_signatures(psbt, by_input)))
    if final.txid_hex != tx.txid:
        raise RuntimeError(f"finalized transaction {final.txid_hex} is not {tx.txid}")
    return final.serialize()


def _refusal_summary(refusals: Sequence[Refusal]) -> str:
    return "; ".join(f"{r.reason_code}: {r.message}" for r in refusals)


def _outcome_summary(signer_ids: Sequence[str], outcomes: Sequence[rstore.OutcomeRecord]) -> str:
    """One phrase per configured signer: what it did in the round."""
    by_id = {o.signer_id: o for o in outcomes}
    parts = []
    for signer_id in signer_ids:
        o = by_id.get(signer_id)
        if o is None:
            parts.append(f"{signer_id} not asked")
        elif o.outcome is Outcome.SIGNED:
            parts.append(f"{signer_id} signed ({o.signatures} signatures)")
        else:
            parts.append(f"{signer_id} {o.outcome.value}: {o.detail}")
    return "; ".join(parts)


def _threshold(tx: TxRecord) -> int:
    """m: the signatures every input of the round's transactions needs."""
    witness_script = Psbt.parse(tx.psbt).inputs[0].witness_script
    assert witness_script is not None
    return parse_multisig_script(witness_script)[0]
