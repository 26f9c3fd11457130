"""Rounds, their transactions, signatures, signer outcomes and fee shares.

Every function takes a Connection; the caller owns the transaction. ``create_round`` writes a
round, its transactions, withdrawal outputs and fee shares and reserves its inputs: the engine
calls it in the same transaction that moves the withdrawals into the round, so a round exists
with all of that or not at all. Withdrawal statuses change only through
``coordinator.store.withdrawals.set_status``.

A round is named by its manifest hash (hex), its round id, and has a kind (``RoundKind``:
withdrawal rounds pay withdrawals, refund rounds send deposits back). Building the same
manifest again (a round abandoned and retried before anything changed) reopens the abandoned
round rather than creating a second one with the same id: its signer outcomes start afresh, its
signatures stay (they are valid: the transactions are the same). A transaction of an abandoned
round that a new round builds again, byte for byte (same inputs, outputs and locktime), moves to
the new round (txids are unique).

Signer outcomes keep their refusals as JSON in the ``detail`` column:
``{"detail": "...", "refusals": [{"scope": ..., "reason_code": ..., ...}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Connection, Row, and_, delete, func, insert, select, update

from coordinator.signers import Refusal
from coordinator.store import withdrawals as wstore
from coordinator.store.deposits import Status as DepositStatus
from coordinator.store.schema import (
    deposits,
    fee_shares,
    round_transactions,
    rounds,
    series_indexes,
    signatures,
    signer_outcomes,
    utxos,
    withdrawal_outputs,
    withdrawals,
)
from pool.series import CHANGE
from pool.vocabulary import RoundKind


class RoundStatus(StrEnum):
    SIGNING = "signing"
    """Persisted with its inputs reserved; signatures being collected."""
    SIGNED = "signed"
    """Every transaction has m valid signatures and is finalized."""
    BROADCAST = "broadcast"
    """Every transaction was sent to the network."""
    COMPLETED = "completed"
    """Every transaction reached the maturation depth."""
    ABANDONED = "abandoned"
    """Given up; inputs released."""


OPEN_ROUNDS = (RoundStatus.SIGNING, RoundStatus.SIGNED, RoundStatus.BROADCAST)


class TxStatus(StrEnum):
    UNSIGNED = "unsigned"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    CONFLICTED = "conflicted"
    """Its inputs were spent by another transaction, in a block at the maturation depth: it can
    never confirm (coordinator.watcher). Final; ranked last, so a round with other
    transactions is as far as those."""


TX_ORDER = {status: rank for rank, status in enumerate(TxStatus)}
"""Progress order of transaction statuses (a withdrawal is as far as its least advanced one)."""


class Outcome(StrEnum):
    """What one signer did in a round."""

    SIGNED = "signed"
    REFUSED = "refused"
    DOWN = "down"
    TIMEOUT = "timeout"
    FAULTY = "faulty"
    """Returned a signature that does not verify: everything it sent is ignored."""
    PENDING = "pending"
    """Its device was asked and has not answered yet (a person may be reviewing the round): it
    is asked again with the same request."""


FINAL_OUTCOMES = (Outcome.SIGNED, Outcome.REFUSED, Outcome.FAULTY)
"""Outcomes after which a signer is not asked again for the same round (while the round is
within its deadline; a round waiting past it asks refusing signers again: coordinator.rounds)."""

AWAITED_OUTCOMES = (Outcome.PENDING, Outcome.TIMEOUT, Outcome.DOWN)
"""Outcomes of signers the round still waits for."""


class ReservationConflict(RuntimeError):
    """An input of a new round is spent or reserved by another round."""


@dataclass(frozen=True)
class NewTransaction:
    """A transaction of a round being created."""

    txid: str
    psbt: bytes
    fee: int
    inputs: tuple[tuple[str, int], ...]
    """(txid, vout) of each input, to reserve."""
    outputs: tuple[tuple[int, int, int], ...]
    """(withdrawal id, vout, amount) of each output paying a withdrawal."""
    fee_shares: tuple[tuple[str, int], ...]
    """(client id, satoshis)."""
    base_idx: int | None = None
    """For a rung of the fee ladder: the index of the transaction it replaces."""
    rung: int = 0
    replaces: str | None = None
    """For a cancel round's transaction: the txid of the transaction it replaces."""


@dataclass(frozen=True)
class NewRound:
    round_id: str
    """The manifest hash, hex."""
    manifest: bytes
    transactions: tuple[NewTransaction, ...]
    rebuilt_from: int | None = None
    kind: RoundKind = RoundKind.WITHDRAWAL


@dataclass(frozen=True)
class RoundRecord:
    seq: int
    round_id: str
    manifest: bytes
    status: RoundStatus
    rebuilt_from: int | None
    detail: str
    created_at: float
    updated_at: float
    kind: RoundKind


@dataclass(frozen=True)
class TxRecord:
    round_seq: int
    idx: int
    txid: str
    psbt: bytes
    final_tx: bytes | None
    fee: int
    status: TxStatus
    block_height: int | None
    block_hash: str | None
    broadcast_at: float | None
    base_idx: int | None = None
    """A rung of the fee ladder: the index of the round's transaction it replaces."""
    rung: int = 0
    """0 for the transaction itself."""
    replaces: str | None = None
    """A cancel round's transaction: the txid of the transaction it replaces."""

    @property
    def family(self) -> int:
        """The index of the transaction this is a version of (itself or one of its rungs)."""
        return self.idx if self.base_idx is None else self.base_idx

    def confirmations(self, tip_height: int) -> int:
        """Confirmations at ``tip_height`` (0 while not in a block)."""
        if self.block_height is None:
            return 0
        return max(0, tip_height - self.block_height + 1)


@dataclass(frozen=True)
class OutcomeRecord:
    signer_id: str
    outcome: Outcome
    signatures: int
    """How many valid signatures it gave."""
    detail: str
    refusals: tuple[Refusal, ...]
    at: float
    since: float | None = None
    """For an awaited signer (``AWAITED_OUTCOMES``): since when it has been in that state (for
    ``pending``: since when its device has been asked)."""

    @property
    def awaited(self) -> str:
        """What the round waits for from this signer, in words ("" when nothing)."""
        if self.outcome not in AWAITED_OUTCOMES:
            return ""
        since = "" if self.since is None else f" since {utc_text(self.since)}"
        if self.outcome is Outcome.PENDING:
            return f"awaiting approval on {self.signer_id}'s device{since}"
        return f"awaiting {self.signer_id} ({self.outcome.value}){since}"


def utc_text(at: float) -> str:
    """A unix time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting_detail(
    round_id: str, since: float, signed_by: Sequence[str], outcomes: Sequence[OutcomeRecord]
) -> str:
    """The alert of a round that waits for signatures: since when, who signed, who is awaited."""
    who = ", ".join(signed_by) if signed_by else "none yet"
    awaited = "; ".join(o.awaited for o in outcomes if o.awaited)
    text = (
        f"round {round_id} waits for signatures since {utc_text(since)}; signers that signed: {who}"
    )
    return f"{text}; {awaited}" if awaited else text


@dataclass(frozen=True)
class RoundSummary:
    round_id: str
    status: RoundStatus
    transactions: int
    withdrawals: int
    fee: int
    created_at: float


@dataclass(frozen=True)
class RoundView:
    """A round in full, for AdminService.GetRound."""

    record: RoundRecord
    rebuilt_from_id: str
    """The round id this one replaced ("" if none)."""
    transactions: tuple[TxRecord, ...]
    outcomes: tuple[OutcomeRecord, ...]
    signed_by: tuple[str, ...] = ()
    """The signers with at least one valid signature stored in the round."""


# --------------------------------------------------------------------------- rows


_OUT = (TxStatus.BROADCAST, TxStatus.CONFIRMED, TxStatus.COMPLETED)


def live_versions(txs: Sequence[TxRecord]) -> dict[int, TxRecord]:
    """Each transaction of a round (by index) → its live version among itself and its fee
    ladder's rungs: the one in a block if any; else the highest rung sent (its intent stored,
    or the node took it); else the transaction itself. The withdrawals, the round and the fee
    statements follow the live version; the others are superseded (never sent again)."""
    live: dict[int, TxRecord] = {}
    for tx in txs:
        best = live.get(tx.family)
        if best is None or _ahead(tx, best):
            live[tx.family] = tx
    return live


def _ahead(tx: TxRecord, other: TxRecord) -> bool:
    if (tx.block_height is None) != (other.block_height is None):
        return tx.block_height is not None
    if tx.block_height is not None:
        return False  # two versions in blocks: only across a reorganisation; keep the first
    taken, other_taken = _sent(tx), _sent(other)
    if taken != other_taken:
        return taken
    if taken:
        return tx.rung > other.rung
    return tx.base_idx is None and other.base_idx is not None


def _sent(tx: TxRecord) -> bool:
    return tx.broadcast_at is not None or tx.status in _OUT


def is_superseded(tx: TxRecord, txs: Sequence[TxRecord]) -> bool:
    """Is ``tx`` (one of ``txs``, its round's transactions) not the live version of its
    transaction (``live_versions``)?"""
    return live_versions(txs)[tx.family].idx != tx.idx


def _round_from_row(row: Row[tuple[object, ...]]) -> RoundRecord:
    m = row._mapping
    return RoundRecord(
        seq=int(m["seq"]),
        round_id=str(m["manifest_hash"]),
        manifest=bytes(m["manifest"]),
        status=RoundStatus(m["status"]),
        rebuilt_from=None if m["rebuilt_from"] is None else int(m["rebuilt_from"]),
        detail=str(m["detail"]),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
        kind=RoundKind(m["kind"]),
    )


def tx_from_row(row: Row[tuple[object, ...]]) -> TxRecord:
    """A ``round_transactions`` row as a record."""
    return _tx_from_row(row)


def _tx_from_row(row: Row[tuple[object, ...]]) -> TxRecord:
    m = row._mapping
    return TxRecord(
        round_seq=int(m["round_seq"]),
        idx=int(m["idx"]),
        txid=str(m["txid"]),
        psbt=bytes(m["psbt"]),
        final_tx=None if m["final_tx"] is None else bytes(m["final_tx"]),
        fee=int(m["fee"]),
        status=TxStatus(m["status"]),
        block_height=None if m["block_height"] is None else int(m["block_height"]),
        block_hash=None if m["block_hash"] is None else str(m["block_hash"]),
        broadcast_at=None if m["broadcast_at"] is None else float(m["broadcast_at"]),
        base_idx=None if m["base_idx"] is None else int(m["base_idx"]),
        rung=int(m["rung"] or 0),
        replaces=None if m["replaces"] is None else str(m["replaces"]),
    )


def _outcome_from_row(row: Row[tuple[object, ...]]) -> OutcomeRecord:
    m = row._mapping
    doc = json.loads(str(m["detail"]) or "{}")
    return OutcomeRecord(
        signer_id=str(m["signer_id"]),
        outcome=Outcome(m["outcome"]),
        signatures=int(m["signatures"]),
        detail=str(doc.get("detail", "")),
        refusals=tuple(Refusal(**r) for r in doc.get("refusals", [])),
        at=float(m["at"]),
        since=None if doc.get("since") is None else float(doc["since"]),
    )


# --------------------------------------------------------------------------- creating


def lock_for_build(conn: Connection, kind: RoundKind) -> None:
    """Take the locks a round build of ``kind`` needs before it reads anything.

    PostgreSQL: the queued withdrawals' rows (a concurrent cancel waits, or is seen), or the
    rows of the deposits waiting for a refund (a concurrent ProposeRefund waits, or is seen).
    SQLite transactions hold the writer lock from their first statement (``make_engine``).
    """
    if conn.dialect.name != "postgresql":
        return
    if kind is RoundKind.REFUND:
        pending = deposits.c.status == DepositStatus.REFUND_PENDING.value
        conn.execute(select(deposits.c.txid).where(pending).with_for_update())
        return
    queued = [s.value for s in wstore.QUEUED]
    conn.execute(select(withdrawals.c.id).where(withdrawals.c.status.in_(queued)).with_for_update())


def create_round(conn: Connection, new: NewRound, now: float) -> int:
    """Write the round (status signing) and reserve its inputs; return its sequence number.

    Reopens an abandoned round with the same id. Raises ``ReservationConflict`` when an input
    is spent or reserved, and ``ValueError`` when an open round has the same id.
    """
    existing = get_round(conn, new.round_id)
    if existing is None:
        seq = int(
            conn.execute(
                insert(rounds)
                .values(
                    manifest_hash=new.round_id,
                    manifest=new.manifest,
                    status=RoundStatus.SIGNING.value,
                    rebuilt_from=new.rebuilt_from,
                    kind=new.kind.value,
                    detail="",
                    created_at=now,
                    updated_at=now,
                )
                .returning(rounds.c.seq)
            ).scalar_one()
        )
    elif existing.status is RoundStatus.ABANDONED:
        seq = existing.seq
        _clear_transactions(conn, seq)
        conn.execute(delete(signer_outcomes).where(signer_outcomes.c.round_seq == seq))
        conn.execute(
            update(rounds)
            .where(rounds.c.seq == seq)
            .values(
                status=RoundStatus.SIGNING.value,
                rebuilt_from=new.rebuilt_from,
                detail=f"reopened (abandoned before: {existing.detail})",
                created_at=now,
                updated_at=now,
            )
        )
    else:
        raise ValueError(f"round {new.round_id} is already {existing.status}")
    _take_over_txids(conn, [t.txid for t in new.transactions], new.round_id)
    for idx, tx in enumerate(new.transactions):
        _add_transaction(conn, seq, idx, tx, now)
    return seq


def _clear_transactions(conn: Connection, seq: int) -> None:
    """Remove a round's transactions, outputs and fee shares (its signatures stay)."""
    conn.execute(delete(withdrawal_outputs).where(withdrawal_outputs.c.round_seq == seq))
    conn.execute(delete(fee_shares).where(fee_shares.c.round_seq == seq))
    conn.execute(delete(round_transactions).where(round_transactions.c.round_seq == seq))


def _take_over_txids(conn: Connection, txids: Sequence[str], round_id: str) -> None:
    """Move transactions that abandoned rounds built byte for byte to the new round."""
    rows = conn.execute(
        select(round_transactions.c.round_seq, round_transactions.c.txid, rounds.c.status)
        .join(rounds, rounds.c.seq == round_transactions.c.round_seq)
        .where(round_transactions.c.txid.in_(list(txids)))
    ).all()
    for round_seq, txid, status in rows:
        if status != RoundStatus.ABANDONED.value:
            raise ValueError(f"transaction {txid} belongs to round {round_seq}, which is {status}")
        conn.execute(delete(withdrawal_outputs).where(withdrawal_outputs.c.txid == txid))
        conn.execute(delete(fee_shares).where(fee_shares.c.txid == txid))
        conn.execute(delete(round_transactions).where(round_transactions.c.txid == txid))
        old = conn.execute(select(rounds.c.detail).where(rounds.c.seq == round_seq)).scalar_one()
        conn.execute(
            update(rounds)
            .where(rounds.c.seq == round_seq)
            .values(detail=f"{old}; transaction {txid} rebuilt in round {round_id}")
        )


def _add_transaction(conn: Connection, seq: int, idx: int, tx: NewTransaction, now: float) -> None:
    conn.execute(
        insert(round_transactions).values(
            round_seq=seq,
            idx=idx,
            txid=tx.txid,
            psbt=tx.psbt,
            fee=tx.fee,
            status=TxStatus.UNSIGNED.value,
            base_idx=tx.base_idx,
            rung=tx.rung,
            replaces=tx.replaces,
        )
    )
    for txid, vout in tx.inputs:
        reserved = conn.execute(
            update(utxos)
            .where(
                and_(
                    utxos.c.txid == txid,
                    utxos.c.vout == vout,
                    utxos.c.spent_txid.is_(None),
                    utxos.c.reserved_round.is_(None),
                )
            )
            .values(reserved_round=seq)
        )
        if reserved.rowcount != 1:
            raise ReservationConflict(f"input {txid}:{vout} is spent or reserved")
    wstore.record_outputs(conn, seq, ((w, tx.txid, vout, amount) for w, vout, amount in tx.outputs))
    for client_id, amount in tx.fee_shares:
        conn.execute(
            insert(fee_shares).values(
                txid=tx.txid, client_id=client_id, round_seq=seq, amount=amount, at=now
            )
        )


# --------------------------------------------------------------------------- reading


def get_round(conn: Connection, round_id: str) -> RoundRecord | None:
    row = conn.execute(select(rounds).where(rounds.c.manifest_hash == round_id)).first()
    return None if row is None else _round_from_row(row)


def round_by_seq(conn: Connection, seq: int) -> RoundRecord:
    row = conn.execute(select(rounds).where(rounds.c.seq == seq)).first()
    if row is None:
        raise KeyError(f"no round {seq}")
    return _round_from_row(row)


def open_rounds(conn: Connection) -> list[RoundRecord]:
    """Rounds not completed nor abandoned, oldest first."""
    rows = conn.execute(
        select(rounds)
        .where(rounds.c.status.in_([s.value for s in OPEN_ROUNDS]))
        .order_by(rounds.c.seq)
    ).all()
    return [_round_from_row(r) for r in rows]


def transactions(conn: Connection, seq: int) -> list[TxRecord]:
    """The round's transactions, in order."""
    rows = conn.execute(
        select(round_transactions)
        .where(round_transactions.c.round_seq == seq)
        .order_by(round_transactions.c.idx)
    ).all()
    return [_tx_from_row(r) for r in rows]


def tracked_transactions(conn: Connection) -> list[TxRecord]:
    """Transactions of open rounds that are signed and not yet completed."""
    statuses = [TxStatus.SIGNED.value, TxStatus.BROADCAST.value, TxStatus.CONFIRMED.value]
    rows = conn.execute(
        select(round_transactions)
        .join(rounds, rounds.c.seq == round_transactions.c.round_seq)
        .where(
            and_(
                round_transactions.c.status.in_(statuses),
                rounds.c.status.in_([s.value for s in OPEN_ROUNDS]),
            )
        )
        .order_by(round_transactions.c.round_seq, round_transactions.c.idx)
    ).all()
    return [_tx_from_row(r) for r in rows]


def round_signatures(conn: Connection, seq: int) -> dict[tuple[int, int], dict[bytes, bytes]]:
    """Stored (valid) signatures: (transaction, input) → public key → signature."""
    rows = conn.execute(select(signatures).where(signatures.c.round_seq == seq)).all()
    found: dict[tuple[int, int], dict[bytes, bytes]] = {}
    for r in rows:
        found.setdefault((int(r.tx_idx), int(r.input_idx)), {})[bytes(r.pubkey)] = bytes(
            r.signature
        )
    return found


def signers_that_signed(conn: Connection, seq: int) -> list[str]:
    """The signers with at least one stored (valid) signature in the round, by name."""
    rows = conn.execute(
        select(signatures.c.signer_id)
        .where(signatures.c.round_seq == seq)
        .distinct()
        .order_by(signatures.c.signer_id)
    ).all()
    return [str(r.signer_id) for r in rows]


def outcomes(conn: Connection, seq: int) -> list[OutcomeRecord]:
    rows = conn.execute(
        select(signer_outcomes)
        .where(signer_outcomes.c.round_seq == seq)
        .order_by(signer_outcomes.c.signer_id)
    ).all()
    return [_outcome_from_row(r) for r in rows]


def withdrawal_progress(conn: Connection, seq: int) -> dict[int, list[TxStatus]]:
    """Withdrawal id → the statuses of the live versions (``live_versions``) of the round's
    transactions that pay it."""
    rows = conn.execute(
        select(withdrawal_outputs.c.withdrawal_id, round_transactions.c.idx)
        .join(round_transactions, round_transactions.c.txid == withdrawal_outputs.c.txid)
        .where(withdrawal_outputs.c.round_seq == seq)
    ).all()
    live = live_versions(transactions(conn, seq)) if rows else {}
    progress: dict[int, list[TxStatus]] = {}
    for withdrawal_id, idx in rows:
        progress.setdefault(int(withdrawal_id), []).append(live[int(idx)].status)
    return progress


# --------------------------------------------------------------------------- writing


def add_signatures(
    conn: Connection, seq: int, signer_id: str, found: Iterable[tuple[int, int, bytes, bytes]]
) -> int:
    """Store verified (transaction, input, public key, signature) entries not stored yet."""
    known = round_signatures(conn, seq)
    rows = []
    for tx_idx, input_idx, pubkey, signature in found:
        if pubkey in known.get((tx_idx, input_idx), {}):
            continue
        rows.append(
            {
                "round_seq": seq,
                "tx_idx": tx_idx,
                "input_idx": input_idx,
                "pubkey": pubkey,
                "signature": signature,
                "signer_id": signer_id,
            }
        )
        known.setdefault((tx_idx, input_idx), {})[pubkey] = signature
    if rows:  # one statement for the whole answer (executemany), not one per signature
        conn.execute(insert(signatures), rows)
    added = len(rows)
    return added


def set_outcome(
    conn: Connection,
    seq: int,
    signer_id: str,
    outcome: Outcome,
    now: float,
    *,
    signature_count: int = 0,
    detail: str = "",
    refusals: Sequence[Refusal] = (),
    since: float | None = None,
) -> None:
    """Record (or replace) what a signer did in the round (``since``: see OutcomeRecord)."""
    doc: dict[str, object] = {"detail": detail, "refusals": [asdict(r) for r in refusals]}
    if since is not None:
        doc["since"] = since
    values = {
        "outcome": outcome.value,
        "signatures": signature_count,
        "detail": json.dumps(doc),
        "at": now,
    }
    where = and_(signer_outcomes.c.round_seq == seq, signer_outcomes.c.signer_id == signer_id)
    if conn.execute(update(signer_outcomes).where(where).values(values)).rowcount == 0:
        conn.execute(insert(signer_outcomes).values(round_seq=seq, signer_id=signer_id, **values))


def set_round_status(
    conn: Connection, seq: int, status: RoundStatus, now: float, detail: str | None = None
) -> None:
    values: dict[str, object] = {"status": status.value, "updated_at": now}
    if detail is not None:
        values["detail"] = detail
    conn.execute(update(rounds).where(rounds.c.seq == seq).values(values))


def set_round_detail(conn: Connection, seq: int, detail: str, now: float) -> None:
    conn.execute(update(rounds).where(rounds.c.seq == seq).values(detail=detail, updated_at=now))


def set_final_tx(conn: Connection, seq: int, idx: int, raw: bytes, now: float) -> None:
    """The finalized transaction: status signed; its fee shares are dated now."""
    txid = _update_tx(conn, seq, idx, final_tx=raw, status=TxStatus.SIGNED.value)
    conn.execute(update(fee_shares).where(fee_shares.c.txid == txid).values(at=now))


def mark_broadcasting(conn: Connection, seq: int, idx: int, now: float) -> None:
    """Record the intent to send (before sending): from now on the round is never abandoned."""
    conn.execute(
        update(round_transactions)
        .where(
            and_(
                round_transactions.c.round_seq == seq,
                round_transactions.c.idx == idx,
                round_transactions.c.broadcast_at.is_(None),
            )
        )
        .values(broadcast_at=now)
    )


def set_tx_status(conn: Connection, seq: int, idx: int, status: TxStatus) -> None:
    _update_tx(conn, seq, idx, status=status.value)


def _update_tx(conn: Connection, seq: int, idx: int, **values: object) -> str:
    where = and_(round_transactions.c.round_seq == seq, round_transactions.c.idx == idx)
    conn.execute(update(round_transactions).where(where).values(values))
    return str(conn.execute(select(round_transactions.c.txid).where(where)).scalar_one())


def abandon_round(conn: Connection, seq: int, detail: str, now: float) -> list[int]:
    """Give the round up: inputs released, fee shares dropped, its withdrawals back to pending.

    Returns the ids of the withdrawals put back in the queue.
    """
    for tx in transactions(conn, seq):
        if tx.final_tx is not None or tx.broadcast_at is not None:
            raise ValueError(
                f"round {seq}: transaction {tx.txid} is signed; it cannot be abandoned"
            )
    set_round_status(conn, seq, RoundStatus.ABANDONED, now, detail)
    conn.execute(update(utxos).where(utxos.c.reserved_round == seq).values(reserved_round=None))
    conn.execute(delete(fee_shares).where(fee_shares.c.round_seq == seq))
    back = [w.id for w in wstore.in_round(conn, seq) if w.status is wstore.Status.IN_ROUND]
    wstore.set_status(conn, back, wstore.Status.PENDING, now, clear_round=True)
    return back


def rewind_change_index(conn: Connection, series_id: int, taken_to: int, back_to: int) -> bool:
    """Give back the change indexes ``back_to .. taken_to - 1`` that an abandoned round took,
    unless a later round (or the scanner) has moved the index since; True when given back."""
    done = conn.execute(
        update(series_indexes)
        .where(
            and_(
                series_indexes.c.series_id == series_id,
                series_indexes.c.branch == CHANGE,
                series_indexes.c.next_index == taken_to,
            )
        )
        .values(next_index=back_to)
    )
    return done.rowcount == 1


# --------------------------------------------------------------------------- admin views


def _summaries(conn: Connection, records: Sequence[RoundRecord]) -> list[RoundSummary]:
    seqs = [r.seq for r in records]
    txs = {}  # the live versions (fee ladder): one per transaction, its fee the one paid
    for seq in seqs:
        live = live_versions(transactions(conn, seq)).values()
        txs[seq] = (len(live), sum(tx.fee for tx in live))
    paid_rows = conn.execute(
        select(
            withdrawal_outputs.c.round_seq,
            func.count(func.distinct(withdrawal_outputs.c.withdrawal_id)),
        )
        .where(withdrawal_outputs.c.round_seq.in_(seqs))
        .group_by(withdrawal_outputs.c.round_seq)
    ).all()
    paid = {int(seq): int(count) for seq, count in paid_rows}
    return [
        RoundSummary(
            round_id=r.round_id,
            status=r.status,
            transactions=txs.get(r.seq, (0, 0))[0],
            withdrawals=paid.get(r.seq, 0),
            fee=txs.get(r.seq, (0, 0))[1],
            created_at=r.created_at,
        )
        for r in records
    ]


def list_rounds(conn: Connection, limit: int, before_seq: int | None = None) -> list[RoundSummary]:
    """Rounds newest first; page with ``before_seq`` (the seq of the last one seen)."""
    query = select(rounds)
    if before_seq is not None:
        query = query.where(rounds.c.seq < before_seq)
    rows = conn.execute(query.order_by(rounds.c.seq.desc()).limit(limit)).all()
    return _summaries(conn, [_round_from_row(r) for r in rows])


def round_seq_of(conn: Connection, round_id: str) -> int | None:
    """The sequence number of a round id (for paging tokens)."""
    found = get_round(conn, round_id)
    return None if found is None else found.seq


def round_view(conn: Connection, round_id: str) -> RoundView | None:
    """One round in full: record, transactions, signer outcomes (None if unknown)."""
    record = get_round(conn, round_id)
    if record is None:
        return None
    rebuilt_from_id = ""
    if record.rebuilt_from is not None:
        rebuilt_from_id = round_by_seq(conn, record.rebuilt_from).round_id
    return RoundView(
        record=record,
        rebuilt_from_id=rebuilt_from_id,
        transactions=tuple(transactions(conn, record.seq)),
        outcomes=tuple(outcomes(conn, record.seq)),
        signed_by=tuple(signers_that_signed(conn, record.seq)),
    )


def signing_notes(
    conn: Connection, round_deadline_seconds: float, now: float
) -> tuple[list[str], list[str]]:
    """For pool status: (alerts of the rounds that wait for signatures past their deadline or
    with a signature, awaited signers of every signing round as "round X: awaiting ...")."""
    alerts: list[str] = []
    awaiting: list[str] = []
    for record in open_rounds(conn):
        if record.status is not RoundStatus.SIGNING:
            continue
        found = outcomes(conn, record.seq)
        awaiting += [f"round {record.round_id}: {o.awaited}" for o in found if o.awaited]
        signed_by = signers_that_signed(conn, record.seq)
        deadline = record.created_at + round_deadline_seconds
        if now >= deadline:
            alerts.append(waiting_detail(record.round_id, deadline, signed_by, found))
    return alerts, awaiting
