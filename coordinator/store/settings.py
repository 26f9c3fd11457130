"""Operator settings that must survive a restart (the ``settings`` table: text key → text value)."""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from coordinator.store.schema import settings

ROUNDS_PAUSED = "rounds_paused"


def get_setting(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    return None if value is None else str(value)


def set_setting(conn: Connection, key: str, value: str) -> None:
    """Insert or replace ``key`` (portable: update first, insert when nothing was there)."""
    done = conn.execute(update(settings).where(settings.c.key == key).values(value=value))
    if done.rowcount == 0:
        conn.execute(settings.insert().values(key=key, value=value))


def rounds_paused(conn: Connection) -> bool:
    return get_setting(conn, ROUNDS_PAUSED) == "1"


def set_rounds_paused(conn: Connection, paused: bool) -> None:
    set_setting(conn, ROUNDS_PAUSED, "1" if paused else "0")
