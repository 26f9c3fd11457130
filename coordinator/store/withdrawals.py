"""Withdrawals and their status changes: the one place a withdrawal's status is written.

Every change goes through ``set_status``, which also appends the event that WatchWithdrawals
streams, in the same transaction, so a watcher sees every transition exactly once and in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Row, and_, func, insert, select, tuple_, update

from coordinator.store.schema import withdrawal_events, withdrawal_outputs, withdrawals


class Status(StrEnum):
    PENDING = "pending"
    IN_ROUND = "in_round"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    """Deferred past the expiry time (coordinator.expiry); never paid. Final."""


QUEUED = (Status.PENDING, Status.DEFERRED)
"""Statuses of withdrawals waiting for a round."""
FINAL = (Status.COMPLETED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED)
CLAIMING = (Status.PENDING, Status.DEFERRED, Status.IN_ROUND, Status.SIGNED)
"""Statuses of withdrawals whose amounts the pool's confirmed coins must still pay (those in a
broadcast transaction have already left the pool's confirmed balance, or will with it)."""


@dataclass(frozen=True)
class Withdrawal:
    id: int
    client_id: str
    request_id: str
    address: str
    script_pubkey: bytes
    amount: int
    extra_fee: int
    status: Status
    split: bool
    reason: str
    round_seq: int | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Row[tuple[object, ...]]) -> Withdrawal:
        m = row._mapping
        return cls(
            id=int(m["id"]),
            client_id=str(m["client_id"]),
            request_id=str(m["request_id"]),
            address=str(m["address"]),
            script_pubkey=bytes(m["script_pubkey"]),
            amount=int(m["amount"]),
            extra_fee=int(m["extra_fee"]),
            status=Status(m["status"]),
            split=bool(m["split"]),
            reason=str(m["reason"]),
            round_seq=None if m["round_seq"] is None else int(m["round_seq"]),
            created_at=float(m["created_at"]),
            updated_at=float(m["updated_at"]),
        )


@dataclass(frozen=True)
class Event:
    cursor: int
    withdrawal_id: int
    client_id: str
    status: Status
    detail: str
    at: float


def insert_withdrawal(
    conn: Connection,
    *,
    client_id: str,
    request_id: str,
    address: str,
    script_pubkey: bytes,
    amount: int,
    extra_fee: int,
    now: float,
) -> Withdrawal:
    """A new pending withdrawal and its first event. The caller checks idempotency first.

    The row is not read back: the returned withdrawal is made of what was inserted."""
    withdrawal_id = conn.execute(
        insert(withdrawals)
        .values(
            client_id=client_id,
            request_id=request_id,
            address=address,
            script_pubkey=script_pubkey,
            amount=amount,
            extra_fee=extra_fee,
            status=Status.PENDING.value,
            split=False,
            reason="",
            round_seq=None,
            created_at=now,
            updated_at=now,
        )
        .returning(withdrawals.c.id)
    ).scalar_one()
    _append_event(conn, withdrawal_id, client_id, Status.PENDING, "", now)
    return Withdrawal(
        id=int(withdrawal_id),
        client_id=client_id,
        request_id=request_id,
        address=address,
        script_pubkey=script_pubkey,
        amount=amount,
        extra_fee=extra_fee,
        status=Status.PENDING,
        split=False,
        reason="",
        round_seq=None,
        created_at=now,
        updated_at=now,
    )


def get_by_id(conn: Connection, withdrawal_id: int) -> Withdrawal | None:
    row = conn.execute(select(withdrawals).where(withdrawals.c.id == withdrawal_id)).first()
    return None if row is None else Withdrawal.from_row(row)


def get_by_request(conn: Connection, client_id: str, request_id: str) -> Withdrawal | None:
    row = conn.execute(
        select(withdrawals).where(
            and_(withdrawals.c.client_id == client_id, withdrawals.c.request_id == request_id)
        )
    ).first()
    return None if row is None else Withdrawal.from_row(row)


def lock_request(conn: Connection, client_id: str, request_id: str) -> Withdrawal | None:
    """``get_by_request`` with the row locked until the transaction ends (SELECT ... FOR UPDATE
    on PostgreSQL; SQLite serializes writers anyway): check-then-set without a lost update."""
    row = conn.execute(
        select(withdrawals)
        .where(and_(withdrawals.c.client_id == client_id, withdrawals.c.request_id == request_id))
        .with_for_update()
    ).first()
    return None if row is None else Withdrawal.from_row(row)


def list_for_client(
    conn: Connection,
    client_id: str,
    statuses: Sequence[Status],
    limit: int,
    before_id: int | None,
) -> list[Withdrawal]:
    """The client's withdrawals, newest first (descending id), for paging."""
    query = select(withdrawals).where(withdrawals.c.client_id == client_id)
    if statuses:
        query = query.where(withdrawals.c.status.in_([s.value for s in statuses]))
    if before_id is not None:
        query = query.where(withdrawals.c.id < before_id)
    rows = conn.execute(query.order_by(withdrawals.c.id.desc()).limit(limit)).all()
    return [Withdrawal.from_row(r) for r in rows]


def queued(conn: Connection) -> list[Withdrawal]:
    """Withdrawals waiting for a round, oldest first."""
    rows = conn.execute(
        select(withdrawals)
        .where(withdrawals.c.status.in_([s.value for s in QUEUED]))
        .order_by(withdrawals.c.id)
    ).all()
    return [Withdrawal.from_row(r) for r in rows]


def queue_length(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(withdrawals)
            .where(withdrawals.c.status.in_([s.value for s in QUEUED]))
        ).scalar_one()
    )


def count_with_status(conn: Connection, statuses: Sequence[Status]) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(withdrawals)
            .where(withdrawals.c.status.in_([s.value for s in statuses]))
        ).scalar_one()
    )


_CLAIMED = select(func.coalesce(func.sum(withdrawals.c.amount + withdrawals.c.extra_fee), 0)).where(
    withdrawals.c.status.in_([s.value for s in CLAIMING])
)
"""Built once (read by every batch of submissions)."""


def claimed_amount(conn: Connection) -> int:
    """What the withdrawals not yet sent claim from the pool (amounts plus extra fees)."""
    total = conn.execute(_CLAIMED).scalar_one()
    return int(total)


def deferred_since_before(conn: Connection, cutoff: float) -> list[tuple[Withdrawal, float]]:
    """Withdrawals deferred now whose first deferral was before ``cutoff``, with its time,
    oldest first. A deferred withdrawal is tried again by every round (and deferred again when
    the pool still lacks funds), so its deferral counts from the first one."""
    # From the deferred withdrawals (by status) to their events (by withdrawal): the events of
    # every other withdrawal are never read.
    first = func.min(withdrawal_events.c.at)
    rows = conn.execute(
        select(withdrawals, first.label("first"))
        .join(withdrawal_events, withdrawal_events.c.withdrawal_id == withdrawals.c.id)
        .where(
            and_(
                withdrawals.c.status == Status.DEFERRED.value,
                withdrawal_events.c.status == Status.DEFERRED.value,
            )
        )
        .group_by(*withdrawals.c)
        .having(first < cutoff)
        .order_by(withdrawals.c.id)
    ).all()
    return [(Withdrawal.from_row(r), float(r.first)) for r in rows]


def expire(conn: Connection, withdrawal_id: int, reason: str, now: float) -> bool:
    """Move a deferred withdrawal to ``expired`` (final); False when it is no longer deferred
    (a round took it meanwhile). The only way into ``expired``: from ``deferred``."""
    current = get_by_id(conn, withdrawal_id)
    if current is None or current.status is not Status.DEFERRED:
        return False
    set_status(conn, [withdrawal_id], Status.EXPIRED, now, detail=reason, clear_round=True)
    return True


def in_round(conn: Connection, round_seq: int) -> list[Withdrawal]:
    rows = conn.execute(
        select(withdrawals).where(withdrawals.c.round_seq == round_seq).order_by(withdrawals.c.id)
    ).all()
    return [Withdrawal.from_row(r) for r in rows]


def set_status(
    conn: Connection,
    withdrawal_ids: Iterable[int],
    status: Status,
    now: float,
    *,
    detail: str = "",
    round_seq: int | None = None,
    clear_round: bool = False,
    split: bool | None = None,
) -> None:
    """Move withdrawals to ``status`` and record one event each; unchanged ones are skipped.

    ``round_seq`` attaches them to a round; ``clear_round`` detaches them (back to the queue).
    """
    for withdrawal_id in withdrawal_ids:
        current = get_by_id(conn, withdrawal_id)
        if current is None:
            raise KeyError(f"no withdrawal {withdrawal_id}")
        if current.status in FINAL and status is not current.status:
            raise ValueError(
                f"withdrawal {withdrawal_id} is {current.status.value}, which is final"
            )
        if status is Status.EXPIRED and current.status not in (Status.DEFERRED, Status.EXPIRED):
            raise ValueError(
                f"withdrawal {withdrawal_id} is {current.status.value}: only a deferred "
                "withdrawal expires"
            )
        new_round = None if clear_round else (current.round_seq if round_seq is None else round_seq)
        new_split = current.split if split is None else split
        if (current.status, current.reason, current.round_seq, current.split) == (
            status,
            detail,
            new_round,
            new_split,
        ):
            continue
        values = {
            "status": status.value,
            "reason": detail,
            "round_seq": new_round,
            "split": new_split,
            "updated_at": now,
        }
        conn.execute(update(withdrawals).where(withdrawals.c.id == withdrawal_id).values(values))
        _append_event(conn, withdrawal_id, current.client_id, status, detail, now)


def _append_event(
    conn: Connection, withdrawal_id: int, client_id: str, status: Status, detail: str, now: float
) -> None:
    conn.execute(
        insert(withdrawal_events).values(
            withdrawal_id=withdrawal_id,
            client_id=client_id,
            status=status.value,
            detail=detail,
            at=now,
        )
    )


def events_after(conn: Connection, client_id: str, cursor: int, limit: int) -> list[Event]:
    """The client's events with a cursor above ``cursor``, in order."""
    rows = conn.execute(
        select(withdrawal_events)
        .where(
            and_(withdrawal_events.c.client_id == client_id, withdrawal_events.c.cursor > cursor)
        )
        .order_by(withdrawal_events.c.cursor)
        .limit(limit)
    ).all()
    return [
        Event(
            cursor=int(r.cursor),
            withdrawal_id=int(r.withdrawal_id),
            client_id=str(r.client_id),
            status=Status(r.status),
            detail=str(r.detail),
            at=float(r.at),
        )
        for r in rows
    ]


def record_outputs(
    conn: Connection, round_seq: int, outputs: Iterable[tuple[int, str, int, int]]
) -> None:
    """(withdrawal id, txid, vout, amount) of each output that pays a withdrawal."""
    for withdrawal_id, txid, vout, amount in outputs:
        conn.execute(
            insert(withdrawal_outputs).values(
                txid=txid, vout=vout, withdrawal_id=withdrawal_id, round_seq=round_seq,
                amount=amount,
            )
        )  # fmt: skip


def outputs_of(conn: Connection, withdrawal_id: int) -> list[tuple[str, int, int]]:
    """(txid, vout, amount) of the outputs paying a withdrawal in its current round."""
    current = get_by_id(conn, withdrawal_id)
    if current is None or current.round_seq is None:
        return []
    rows = conn.execute(
        select(withdrawal_outputs.c.txid, withdrawal_outputs.c.vout, withdrawal_outputs.c.amount)
        .where(
            and_(
                withdrawal_outputs.c.withdrawal_id == withdrawal_id,
                withdrawal_outputs.c.round_seq == current.round_seq,
            )
        )
        .order_by(withdrawal_outputs.c.txid, withdrawal_outputs.c.vout)
    ).all()
    return [(str(r.txid), int(r.vout), int(r.amount)) for r in rows]


@dataclass(frozen=True)
class NewWithdrawal:
    """What ``insert_withdrawals`` stores for one request."""

    client_id: str
    request_id: str
    address: str
    script_pubkey: bytes
    amount: int
    extra_fee: int


def get_by_requests(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Withdrawal]:
    """The stored withdrawals of these ``(client id, request id)`` keys, in one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        select(withdrawals).where(
            tuple_(withdrawals.c.client_id, withdrawals.c.request_id).in_(wanted)
        )
    ).all()
    found = [Withdrawal.from_row(r) for r in rows]
    return {(w.client_id, w.request_id): w for w in found}


_INSERT_WITHDRAWALS = insert(withdrawals).returning(withdrawals.c.id, sort_by_parameter_order=True)
_INSERT_EVENTS = insert(withdrawal_events)


def insert_withdrawals(
    conn: Connection, new: Sequence[NewWithdrawal], now: float
) -> list[Withdrawal]:
    """New pending withdrawals and their first events, in two statements; in ``new``'s order.
    The caller checks idempotency first. Nothing is read back."""
    if not new:
        return []
    ids = (
        conn.execute(
            _INSERT_WITHDRAWALS,
            [
                {
                    "client_id": n.client_id,
                    "request_id": n.request_id,
                    "address": n.address,
                    "script_pubkey": n.script_pubkey,
                    "amount": n.amount,
                    "extra_fee": n.extra_fee,
                    "status": Status.PENDING.value,
                    "split": False,
                    "reason": "",
                    "round_seq": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for n in new
            ],
        )
        .scalars()
        .all()
    )
    conn.execute(
        _INSERT_EVENTS,
        [
            {
                "withdrawal_id": i,
                "client_id": n.client_id,
                "status": Status.PENDING.value,
                "detail": "",
                "at": now,
            }
            for i, n in zip(ids, new, strict=True)
        ],
    )
    return [
        Withdrawal(
            int(i),
            n.client_id,
            n.request_id,
            n.address,
            n.script_pubkey,
            n.amount,
            n.extra_fee,
            Status.PENDING,
            False,
            "",
            None,
            now,
            now,
        )
        for i, n in zip(ids, new, strict=True)
    ]
