"""Signer liveness and the pool's quorum as recorded: each signer's state and every change of it,
and every change of the quorum ("ok" / "degraded").

Deposits are judged against the quorum history (``quorum_at``, at their block's time). The last
recorded state holds until a new one is recorded, across coordinator restarts; for a period in
which no coordinator ran, the coordinator that starts again records what the signers' own serving
intervals say (coordinator.outage, ``record_past_quorum``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from coordinator.store.schema import quorum_history, signer_health, signer_health_history
from coordinator.store.settings import get_setting, set_setting

QUORUM_OK = "ok"
QUORUM_DEGRADED = "degraded"


@dataclass(frozen=True)
class SignerRecord:
    """A signer's recorded liveness."""

    signer_id: str
    state: str
    """"healthy", "down" or "maintenance"."""
    since: float
    """When it entered ``state``."""
    missed: int
    """Health checks missed in a row."""
    maintenance: bool
    """Announced by an operator (AdminService.SetSignerMaintenance)."""
    last_seen: float | None
    """When it last answered a check (None: never)."""
    detail: str
    """The last check's error, if any."""


@dataclass(frozen=True)
class Change:
    """One entry of a history: a state and when it began."""

    state: str
    at: float
    detail: str


def signer_records(conn: Connection) -> dict[str, SignerRecord]:
    rows = conn.execute(select(signer_health)).all()
    return {
        str(r.signer_id): SignerRecord(
            signer_id=str(r.signer_id),
            state=str(r.state),
            since=float(r.since),
            missed=int(r.missed),
            maintenance=bool(r.maintenance),
            last_seen=None if r.last_seen is None else float(r.last_seen),
            detail=str(r.detail),
        )
        for r in rows
    }


def save_signer(conn: Connection, record: SignerRecord) -> None:
    """Store a signer's record; a new state is also appended to its history (at ``since``)."""
    values = {
        "state": record.state,
        "since": record.since,
        "missed": record.missed,
        "maintenance": record.maintenance,
        "last_seen": record.last_seen,
        "detail": record.detail,
    }
    before = conn.execute(
        select(signer_health.c.state).where(signer_health.c.signer_id == record.signer_id)
    ).scalar()
    if before is None:
        conn.execute(insert(signer_health).values(signer_id=record.signer_id, **values))
    else:
        conn.execute(
            update(signer_health)
            .where(signer_health.c.signer_id == record.signer_id)
            .values(values)
        )
    if before != record.state:
        conn.execute(
            insert(signer_health_history).values(
                signer_id=record.signer_id,
                state=record.state,
                at=record.since,
                detail=record.detail,
            )
        )


def signer_history(conn: Connection, signer_id: str) -> list[Change]:
    """Every state the signer entered, oldest first."""
    rows = conn.execute(
        select(signer_health_history)
        .where(signer_health_history.c.signer_id == signer_id)
        .order_by(signer_health_history.c.id)
    ).all()
    return [Change(str(r.state), float(r.at), str(r.detail)) for r in rows]


def last_quorum(conn: Connection) -> Change | None:
    """The quorum state recorded last (None before the first)."""
    row = conn.execute(select(quorum_history).order_by(quorum_history.c.id.desc()).limit(1)).first()
    return None if row is None else Change(str(row.state), float(row.at), str(row.detail))


def record_quorum(conn: Connection, state: str, at: float, detail: str) -> bool:
    """Append a quorum state unless it is the one recorded last; True when appended."""
    if state not in (QUORUM_OK, QUORUM_DEGRADED):
        raise ValueError(f"unknown quorum state {state!r}")
    last = last_quorum(conn)
    if last is not None and last.state == state:
        return False
    conn.execute(insert(quorum_history).values(state=state, at=at, detail=detail))
    return True


def quorum_history_of(conn: Connection) -> list[Change]:
    """Every recorded quorum state, oldest first."""
    rows = conn.execute(select(quorum_history).order_by(quorum_history.c.id)).all()
    return [Change(str(r.state), float(r.at), str(r.detail)) for r in rows]


def quorum_at(conn: Connection, time: float) -> str:
    """The quorum state recorded last at or before ``time``; "ok" before the first record."""
    state = conn.execute(
        select(quorum_history.c.state)
        .where(quorum_history.c.at <= time)
        .order_by(quorum_history.c.at.desc(), quorum_history.c.id.desc())
        .limit(1)
    ).scalar()
    return QUORUM_OK if state is None else str(state)


CHECKED_AT = "health_checked_at"
"""The settings key of the last health check's time: how long a stopped coordinator was away."""


def note_checked(conn: Connection, at: float) -> None:
    set_setting(conn, CHECKED_AT, repr(at))


def last_checked(conn: Connection) -> float | None:
    value = get_setting(conn, CHECKED_AT)
    return None if value is None else float(value)


def record_past_quorum(conn: Connection, state: str, at: float, detail: str) -> None:
    """Append a quorum state that held from ``at`` on, a time before now (a reconstruction of a
    time this coordinator did not watch: coordinator.outage); ``quorum_at`` finds it by time."""
    if state not in (QUORUM_OK, QUORUM_DEGRADED):
        raise ValueError(f"unknown quorum state {state!r}")
    conn.execute(insert(quorum_history).values(state=state, at=at, detail=detail))
