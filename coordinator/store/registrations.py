"""Deposit address registrations a signer missed (table ``missed_registrations``): recorded when
an address is handed out without that signer, removed once the signer has it
(coordinator.registrations replays them)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, insert, select

from coordinator.store.deposits import DepositAddress, address_from_row
from coordinator.store.schema import deposit_addresses, missed_registrations


def record_missed(
    conn: Connection, script_pubkey: bytes, signer_ids: Iterable[str], now: float
) -> None:
    rows = [{"script_pubkey": script_pubkey, "signer_id": s, "created_at": now} for s in signer_ids]
    if rows:
        conn.execute(insert(missed_registrations), rows)


def missed_by(conn: Connection, signer_id: str, limit: int) -> list[DepositAddress]:
    """The deposit addresses whose registration ``signer_id`` missed, oldest first."""
    rows = conn.execute(
        select(deposit_addresses)
        .join(
            missed_registrations,
            missed_registrations.c.script_pubkey == deposit_addresses.c.script_pubkey,
        )
        .where(missed_registrations.c.signer_id == signer_id)
        .order_by(missed_registrations.c.created_at, deposit_addresses.c.idx)
        .limit(limit)
    ).all()
    return [address_from_row(row) for row in rows]


def signers_missing(conn: Connection) -> set[str]:
    """The signers that miss at least one registration."""
    return set(conn.execute(select(missed_registrations.c.signer_id).distinct()).scalars())


def pending(conn: Connection) -> set[tuple[bytes, str]]:
    """(deposit address script, signer) of every registration not replayed yet."""
    rows = conn.execute(
        select(missed_registrations.c.script_pubkey, missed_registrations.c.signer_id)
    ).all()
    return {(bytes(script), str(signer_id)) for script, signer_id in rows}


def replayed(conn: Connection, script_pubkey: bytes, signer_id: str) -> None:
    conn.execute(
        delete(missed_registrations).where(
            missed_registrations.c.script_pubkey == script_pubkey,
            missed_registrations.c.signer_id == signer_id,
        )
    )
