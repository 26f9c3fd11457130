"""Deposit addresses handed out, deposits (outputs paying a receive address), and their events.

``set_status`` is the one place a deposit's status changes: it appends the event WatchDeposits
streams in the same transaction, so a watcher sees every transition once and in order (as
coordinator.store.withdrawals.set_status). The statuses and the rules that choose them are in
docs/deposits-and-refunds.md; final statuses are left only when a reorganisation removes the
deposit's block: ``credited`` and ``refunded`` become ``reorged``, ``dust`` becomes ``removed``.

A deposit row is never deleted: a reorganisation marks it ``removed`` (before it was credited or
refunded) or ``reorged`` (after), and if the same output is mined again ``add_deposit`` brings it
back (``removed`` → ``seen``, to be classified again; ``reorged`` → the status it had).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    insert,
    or_,
    select,
    update,
)

from coordinator.store.schema import (
    addresses,
    deposit_acknowledgements,
    deposit_addresses,
    deposit_events,
    deposits,
    round_transactions,
    signatures,
)


class Status(StrEnum):
    SEEN = "seen"
    CONFIRMING = "confirming"
    CREDITED = "credited"
    CONFIRMED = "confirmed"
    """Has its confirmations; credited once n - m + 1 signers of its series acknowledged it."""
    REFUND_PENDING = "refund_pending"
    REFUND_PROPOSED = "refund_proposed"
    REFUND_SIGNED = "refund_signed"
    REFUNDED = "refunded"
    DUST = "dust"
    REORGED = "reorged"
    """Credited or refunded (or being refunded), then its block left the chain: an alert."""
    REMOVED = "removed"
    """Its block left the chain before the pool did anything with it."""


FINAL = (Status.CREDITED, Status.REFUNDED, Status.DUST)
REMOVABLE = (
    Status.SEEN, Status.CONFIRMING, Status.CONFIRMED, Status.REFUND_PENDING, Status.DUST,
)  # fmt: skip
"""Statuses in which a reorganisation removes a deposit quietly; in the others it is reorged."""
_LEAVING_FINAL = {
    Status.CREDITED: Status.REORGED,
    Status.REFUNDED: Status.REORGED,
    Status.DUST: Status.REMOVED,
}


class StatusError(ValueError):
    """A status change that the rules forbid (leaving a final status)."""


@dataclass(frozen=True)
class DepositAddress:
    """A receive address handed to a client's user."""

    script_pubkey: bytes
    series_id: int
    index: int
    client_id: str
    user_id: str
    refund_address: str
    """Registered with the signers with the address; empty when the user gave none."""
    created_at: float


@dataclass(frozen=True)
class Refund:
    """Where a deposit's refund goes and how far it is; ``set_status`` writes all four at once."""

    address: str
    source: str
    """"registered", "sender" or "operator"."""
    round_seq: int | None
    txid: str | None


@dataclass(frozen=True)
class Deposit:
    txid: str
    vout: int
    script_pubkey: bytes
    value: int
    height: int
    block_hash: str
    deposit_tx: bytes
    """The raw deposit transaction (empty for outputs found before deposits were tracked)."""
    series_id: int
    index: int
    """Receive index of the address it pays."""
    client_id: str
    user_id: str
    """Empty for an address handed to nobody."""
    status: Status
    reason: str
    registered_refund_address: str
    """The refund address registered with its deposit address ("" when none)."""
    refund: Refund
    created_at: float
    updated_at: float

    @property
    def outpoint(self) -> tuple[str, int]:
        return self.txid, self.vout


@dataclass(frozen=True)
class Event:
    cursor: int
    txid: str
    vout: int
    client_id: str
    status: Status
    detail: str
    at: float


@dataclass(frozen=True)
class Position:
    """Where a newest-first page of deposits stops: (height, txid, vout) of its last deposit."""

    height: int
    txid: str
    vout: int


# --------------------------------------------------------------------------- deposit addresses


def address_from_row(row: Row[tuple[object, ...]]) -> DepositAddress:
    m = row._mapping
    return DepositAddress(
        script_pubkey=bytes(m["script_pubkey"]),
        series_id=int(m["series_id"]),
        index=int(m["idx"]),
        client_id=str(m["client_id"]),
        user_id=str(m["user_id"]),
        refund_address=str(m["refund_address"]),
        created_at=float(m["created_at"]),
    )


def record_address(conn: Connection, address: DepositAddress) -> None:
    """Record a deposit address handed out (each receive address is handed out at most once)."""
    conn.execute(
        insert(deposit_addresses).values(
            script_pubkey=address.script_pubkey,
            series_id=address.series_id,
            idx=address.index,
            client_id=address.client_id,
            user_id=address.user_id,
            refund_address=address.refund_address,
            created_at=address.created_at,
        )
    )


def address_of(conn: Connection, script_pubkey: bytes) -> DepositAddress | None:
    row = conn.execute(
        select(deposit_addresses).where(deposit_addresses.c.script_pubkey == script_pubkey)
    ).first()
    return None if row is None else address_from_row(row)


def addresses_of_user(conn: Connection, client_id: str, user_id: str) -> list[DepositAddress]:
    """The user's deposit addresses, oldest first."""
    rows = conn.execute(
        select(deposit_addresses)
        .where(
            and_(deposit_addresses.c.client_id == client_id, deposit_addresses.c.user_id == user_id)
        )
        .order_by(
            deposit_addresses.c.created_at,
            deposit_addresses.c.series_id,
            deposit_addresses.c.idx,
        )
    ).all()
    return [address_from_row(r) for r in rows]


# --------------------------------------------------------------------------- deposits


def _select() -> Select[tuple[object, ...]]:
    joined = deposits.join(addresses, addresses.c.script_pubkey == deposits.c.script_pubkey)
    joined = joined.outerjoin(
        deposit_addresses, deposit_addresses.c.script_pubkey == deposits.c.script_pubkey
    )
    return select(
        deposits,
        addresses.c.series_id,
        addresses.c.idx,
        deposit_addresses.c.refund_address.label("registered_refund_address"),
    ).select_from(joined)


def _deposit_from_row(row: Row[tuple[object, ...]]) -> Deposit:
    m = row._mapping
    round_seq, refund_txid = m["refund_round_seq"], m["refund_txid"]
    return Deposit(
        txid=str(m["txid"]),
        vout=int(m["vout"]),
        script_pubkey=bytes(m["script_pubkey"]),
        value=int(m["value"]),
        height=int(m["height"]),
        block_hash=str(m["block_hash"]),
        deposit_tx=bytes(m["deposit_tx"]),
        series_id=int(m["series_id"]),
        index=int(m["idx"]),
        client_id=str(m["client_id"]),
        user_id=str(m["user_id"]),
        status=Status(m["status"]),
        reason=str(m["reason"]),
        registered_refund_address=str(m["registered_refund_address"] or ""),
        refund=Refund(
            address=str(m["refund_address"]),
            source=str(m["refund_source"]),
            round_seq=None if round_seq is None else int(round_seq),
            txid=None if refund_txid is None else str(refund_txid),
        ),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
    )


def _is(txid: str, vout: int) -> ColumnElement[bool]:
    return and_(deposits.c.txid == txid, deposits.c.vout == vout)


def get(conn: Connection, txid: str, vout: int, *, for_update: bool = False) -> Deposit | None:
    """One deposit; ``for_update`` locks its row until the transaction ends (PostgreSQL)."""
    query = _select().where(_is(txid, vout))
    if for_update:
        query = query.with_for_update(of=deposits)
    row = conn.execute(query).first()
    return None if row is None else _deposit_from_row(row)


@dataclass(frozen=True)
class NewDeposit:
    """An output paying a receive address, as the scanner finds it in a block."""

    txid: str
    vout: int
    script_pubkey: bytes
    value: int
    height: int
    block_hash: str
    deposit_tx: bytes


def add_deposit(conn: Connection, new: NewDeposit, now: float) -> Deposit:
    """Record a deposit found in a block, with the client and user its address was handed to.

    A new deposit is ``seen`` (the caller classifies it). One a reorganisation took away that is
    mined again takes its new block: ``removed`` → ``seen`` again, ``reorged`` → the status it
    had before the reorganisation.
    """
    found = get(conn, new.txid, new.vout)
    block = {"height": new.height, "block_hash": new.block_hash, "deposit_tx": new.deposit_tx}
    if found is None:
        owner = address_of(conn, new.script_pubkey)
        conn.execute(
            insert(deposits).values(
                txid=new.txid,
                vout=new.vout,
                script_pubkey=new.script_pubkey,
                value=new.value,
                client_id="" if owner is None else owner.client_id,
                user_id="" if owner is None else owner.user_id,
                status=Status.SEEN.value,
                reason="",
                created_at=now,
                updated_at=now,
                **block,
            )
        )
        _append_event(conn, new.txid, new.vout, Status.SEEN, f"in block {new.height}", now)
    elif found.status in (Status.REMOVED, Status.REORGED):
        conn.execute(update(deposits).where(_is(new.txid, new.vout)).values(block))
        back = Status.SEEN if found.status is Status.REMOVED else _status_before_reorg(conn, found)
        set_status(conn, new.txid, new.vout, back, now, detail=f"back in block {new.height}")
    else:
        raise ValueError(f"deposit {new.txid}:{new.vout} is already in block {found.height}")
    deposit = get(conn, new.txid, new.vout)
    assert deposit is not None
    return deposit


def _status_before_reorg(conn: Connection, deposit: Deposit) -> Status:
    status = conn.execute(
        select(deposit_events.c.status)
        .where(
            and_(
                deposit_events.c.txid == deposit.txid,
                deposit_events.c.vout == deposit.vout,
                deposit_events.c.status != Status.REORGED.value,
            )
        )
        .order_by(deposit_events.c.cursor.desc())
        .limit(1)
    ).scalar_one()
    return Status(status)


def set_status(
    conn: Connection,
    txid: str,
    vout: int,
    status: Status,
    now: float,
    *,
    reason: str | None = None,
    detail: str | None = None,
    refund: Refund | None = None,
) -> Deposit:
    """Move a deposit to ``status`` and append its event; the deposit as it is now.

    ``reason`` (why it is refunded or dust) and ``refund`` replace the stored ones when given.
    The event's detail is ``detail``, else ``reason``. Nothing is written when nothing changes.
    Raises ``KeyError`` for an unknown deposit and ``StatusError`` for a final status left other
    than by a reorganisation (module docstring).
    """
    current = get(conn, txid, vout)
    if current is None:
        raise KeyError(f"no deposit {txid}:{vout}")
    if current.status in FINAL and status not in (current.status, _LEAVING_FINAL[current.status]):
        raise StatusError(
            f"deposit {txid}:{vout} is {current.status.value}, which is final; it cannot become "
            f"{status.value}"
        )
    new_reason = current.reason if reason is None else reason
    new_refund = current.refund if refund is None else refund
    if (current.status, current.reason, current.refund) == (status, new_reason, new_refund):
        return current
    conn.execute(
        update(deposits)
        .where(_is(txid, vout))
        .values(
            status=status.value,
            reason=new_reason,
            refund_address=new_refund.address,
            refund_source=new_refund.source,
            refund_round_seq=new_refund.round_seq,
            refund_txid=new_refund.txid,
            updated_at=now,
        )
    )
    if status is not current.status or detail is not None:
        event_detail = detail if detail is not None else (reason or "")
        _append_event(conn, txid, vout, status, event_detail, now)
    changed = get(conn, txid, vout)
    assert changed is not None
    return changed


def note(conn: Connection, txid: str, vout: int, detail: str, now: float) -> None:
    """Append an event with the deposit's current status and ``detail`` (progress within a
    status, such as an acknowledgement)."""
    current = get(conn, txid, vout)
    if current is None:
        raise KeyError(f"no deposit {txid}:{vout}")
    _append_event(conn, txid, vout, current.status, detail, now)


def with_status(
    conn: Connection, statuses: Sequence[Status], *, max_height: int | None = None
) -> list[Deposit]:
    """Deposits in any of ``statuses`` (in blocks up to ``max_height`` when given), oldest first
    (height, txid, vout)."""
    query = _select().where(deposits.c.status.in_([s.value for s in statuses]))
    if max_height is not None:
        query = query.where(deposits.c.height <= max_height)
    rows = conn.execute(query.order_by(deposits.c.height, deposits.c.txid, deposits.c.vout)).all()
    return [_deposit_from_row(r) for r in rows]


def refund_pending(conn: Connection) -> list[Deposit]:
    """Deposits waiting for a refund, oldest first: what a refund round is built from."""
    return with_status(conn, [Status.REFUND_PENDING])


def in_block(conn: Connection, height: int) -> list[Deposit]:
    """The deposits of the block at ``height`` that are on the chain (not removed or reorged)."""
    rows = conn.execute(
        _select()
        .where(
            and_(
                deposits.c.height == height,
                deposits.c.status.not_in([Status.REMOVED.value, Status.REORGED.value]),
            )
        )
        .order_by(deposits.c.txid, deposits.c.vout)
    ).all()
    return [_deposit_from_row(r) for r in rows]


def list_deposits(
    conn: Connection,
    *,
    client_id: str | None,
    user_id: str = "",
    statuses: Sequence[Status] = (),
    limit: int,
    after: Position | None = None,
) -> list[Deposit]:
    """Deposits newest first (height, txid, vout descending), for paging: of ``client_id``
    (every client's when None), of ``user_id`` when given, in ``statuses`` when given, and
    after the ``after`` position."""
    query = _select()
    if client_id is not None:
        query = query.where(deposits.c.client_id == client_id)
    if user_id:
        query = query.where(deposits.c.user_id == user_id)
    if statuses:
        query = query.where(deposits.c.status.in_([s.value for s in statuses]))
    if after is not None:
        h, t, v = deposits.c.height, deposits.c.txid, deposits.c.vout
        query = query.where(
            or_(
                h < after.height,
                and_(h == after.height, t < after.txid),
                and_(h == after.height, t == after.txid, v < after.vout),
            )
        )
    order = (deposits.c.height.desc(), deposits.c.txid.desc(), deposits.c.vout.desc())
    rows = conn.execute(query.order_by(*order).limit(limit)).all()
    return [_deposit_from_row(r) for r in rows]


def refund_signers(conn: Connection, deposit: Deposit) -> list[str]:
    """The signers whose signatures of the deposit's refund transaction were kept, by id."""
    if deposit.refund.round_seq is None or deposit.refund.txid is None:
        return []
    rows = conn.execute(
        select(signatures.c.signer_id)
        .distinct()
        .select_from(
            signatures.join(
                round_transactions,
                and_(
                    round_transactions.c.round_seq == signatures.c.round_seq,
                    round_transactions.c.idx == signatures.c.tx_idx,
                ),
            )
        )
        .where(
            and_(
                signatures.c.round_seq == deposit.refund.round_seq,
                round_transactions.c.txid == deposit.refund.txid,
            )
        )
        .order_by(signatures.c.signer_id)
    ).scalars()
    return [str(signer_id) for signer_id in rows]


# --------------------------------------------------------------------------- acknowledgements


@dataclass(frozen=True)
class Acknowledgement:
    """A signer's latest answer about a deposit (SignerService.AcknowledgeDeposits)."""

    txid: str
    vout: int
    signer_id: str
    fingerprint: str
    """The signer's master key fingerprint (hex) when it answered."""
    acknowledged: bool
    reason_code: str
    """Why it refused (empty when acknowledged)."""
    message: str
    at: float


def record_acknowledgement(conn: Connection, answer: Acknowledgement) -> bool:
    """Store a signer's answer; True if it is a new acknowledgement.

    An acknowledgement is final: a later refusal from the same signer (it cannot give one for
    the same claim) does not replace it.
    """
    key = and_(
        deposit_acknowledgements.c.txid == answer.txid,
        deposit_acknowledgements.c.vout == answer.vout,
        deposit_acknowledgements.c.signer_id == answer.signer_id,
    )
    row = conn.execute(select(deposit_acknowledgements.c.acknowledged).where(key)).first()
    values = {
        "fingerprint": answer.fingerprint,
        "acknowledged": answer.acknowledged,
        "reason_code": answer.reason_code,
        "message": answer.message,
        "at": answer.at,
    }
    if row is None:
        conn.execute(
            insert(deposit_acknowledgements).values(
                txid=answer.txid, vout=answer.vout, signer_id=answer.signer_id, **values
            )
        )
        return answer.acknowledged
    if row.acknowledged:
        return False
    conn.execute(update(deposit_acknowledgements).where(key).values(values))
    return answer.acknowledged


def acknowledgements(conn: Connection, txid: str, vout: int) -> list[Acknowledgement]:
    """Every signer's latest answer about the deposit, by signer id."""
    rows = conn.execute(
        select(deposit_acknowledgements)
        .where(
            and_(deposit_acknowledgements.c.txid == txid, deposit_acknowledgements.c.vout == vout)
        )
        .order_by(deposit_acknowledgements.c.signer_id)
    ).all()
    return [
        Acknowledgement(
            txid=str(r.txid),
            vout=int(r.vout),
            signer_id=str(r.signer_id),
            fingerprint=str(r.fingerprint),
            acknowledged=bool(r.acknowledged),
            reason_code=str(r.reason_code),
            message=str(r.message),
            at=float(r.at),
        )
        for r in rows
    ]


def acknowledged_by(conn: Connection, deposit: Deposit) -> list[str]:
    """The signers that acknowledged the deposit, by id."""
    return [a.signer_id for a in acknowledgements(conn, *deposit.outpoint) if a.acknowledged]


# --------------------------------------------------------------------------- events


def _append_event(
    conn: Connection, txid: str, vout: int, status: Status, detail: str, now: float
) -> None:
    client_id = conn.execute(select(deposits.c.client_id).where(_is(txid, vout))).scalar_one()
    conn.execute(
        insert(deposit_events).values(
            txid=txid, vout=vout, client_id=client_id, status=status.value, detail=detail, at=now
        )
    )


def events_after(conn: Connection, client_id: str, cursor: int, limit: int) -> list[Event]:
    """The client's deposit events with a cursor above ``cursor``, in order."""
    rows = conn.execute(
        select(deposit_events)
        .where(and_(deposit_events.c.client_id == client_id, deposit_events.c.cursor > cursor))
        .order_by(deposit_events.c.cursor)
        .limit(limit)
    ).all()
    return [
        Event(
            cursor=int(r.cursor),
            txid=str(r.txid),
            vout=int(r.vout),
            client_id=str(r.client_id),
            status=Status(r.status),
            detail=str(r.detail),
            at=float(r.at),
        )
        for r in rows
    ]
