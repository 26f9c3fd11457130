"""Alerts: problems an operator must look at (a credited deposit taken away by a reorganisation,
...). Kept for good; GetPoolStatus shows the most recent ones."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from coordinator.store.schema import alerts


@dataclass(frozen=True)
class Alert:
    id: int
    kind: str
    detail: str
    at: float

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def add_alert(conn: Connection, kind: str, detail: str, now: float) -> None:
    conn.execute(insert(alerts).values(kind=kind, detail=detail, at=now))


def has_alert(conn: Connection, kind: str, detail: str) -> bool:
    """Was this very alert raised before?"""
    found = conn.execute(
        select(alerts.c.id).where(alerts.c.kind == kind, alerts.c.detail == detail).limit(1)
    ).first()
    return found is not None


def recent_alerts(conn: Connection, limit: int) -> list[Alert]:
    """The ``limit`` most recent alerts, newest first."""
    rows = conn.execute(select(alerts).order_by(alerts.c.id.desc()).limit(limit)).all()
    return [Alert(int(r.id), str(r.kind), str(r.detail), float(r.at)) for r in rows]
