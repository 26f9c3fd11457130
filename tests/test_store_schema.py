"""The store's migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, inspect, select

from coordinator.store.schema import MIGRATIONS, make_engine, migrate, schema_version, transaction

BUSY_TIMEOUT_SECONDS = 10.0
"""The SQLite busy timeout (coordinator.store.schema): a read that waited for the writer would
take about this long."""


def test_migrate_creates_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"withdrawals", "rounds", "utxos", "blocks", "withdrawal_events"} <= tables


def test_withdrawal_events_are_indexed_by_withdrawal(engine: Engine) -> None:
    indexes = inspect(engine).get_indexes("withdrawal_events")
    assert ["withdrawal_id", "status"] in [i["column_names"] for i in indexes]


def test_migrate_records_the_newest_version(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalar() == len(MIGRATIONS)


def test_migrate_twice_changes_nothing(store_url: str) -> None:
    eng = make_engine(store_url)
    assert migrate(eng) == len(MIGRATIONS)
    assert migrate(eng) == len(MIGRATIONS)
    eng.dispose()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: object) -> None:
    eng = make_engine(f"sqlite:///{tmp_path}/c.db")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    eng.dispose()


def test_a_version_1_database_is_upgraded_in_place(store_url: str) -> None:
    from sqlalchemy import inspect, text

    from coordinator.store.schema import _migration_1

    eng = make_engine(store_url)
    with eng.begin() as conn:
        _migration_1(conn)
        conn.execute(schema_version.insert().values(id=1, version=1))
        conn.execute(text("ALTER TABLE rounds DROP COLUMN kind"))  # the shape version 1 shipped
        conn.execute(text("ALTER TABLE blocks DROP COLUMN time"))
    assert migrate(eng) == len(MIGRATIONS)
    columns = {c["name"] for c in inspect(eng).get_columns("rounds")}
    assert "kind" in columns
    assert "deposits" in inspect(eng).get_table_names()
    eng.dispose()


def test_version_2_receive_outputs_become_credited_deposits(store_url: str) -> None:
    """Receive outputs a version 2 store holds were spendable: they stay so, as credited."""
    from sqlalchemy import insert

    from coordinator.store.schema import MIGRATIONS, blocks, deposits, utxos

    eng = make_engine(store_url)
    with eng.begin() as conn:
        for migration in MIGRATIONS[:2]:
            migration(conn)
        conn.execute(schema_version.insert().values(id=1, version=2))
        conn.execute(
            insert(blocks).values(height=7, hash="ab" * 32, prev_hash="00" * 32, processed_at=1.0)
        )
        for vout, branch in enumerate((0, 1)):
            conn.execute(
                insert(utxos).values(
                    txid="cd" * 32, vout=vout, value=5_000, script_pubkey=b"s", series_id=1,
                    branch=branch, idx=0, height=7, coinbase=False,
                )
            )  # fmt: skip
    assert migrate(eng) == len(MIGRATIONS)
    with eng.connect() as conn:
        rows = conn.execute(select(deposits.c.vout, deposits.c.status, deposits.c.block_hash))
        assert [tuple(r) for r in rows] == [(0, "credited", "ab" * 32)]
    eng.dispose()


def test_a_read_on_sqlite_does_not_wait_for_a_write_in_progress(tmp_path: object) -> None:
    """Reads begin deferred (WAL snapshot); only write transactions take the writer lock."""
    eng = make_engine(f"sqlite:///{tmp_path}/c.db")
    migrate(eng)
    with transaction(eng) as writer:
        writer.execute(schema_version.update().values(version=len(MIGRATIONS)))
        started = time.monotonic()
        with eng.connect() as reader:  # another connection, while the writer lock is held
            version = reader.execute(select(schema_version.c.version)).scalar()
        assert version == len(MIGRATIONS)
        assert time.monotonic() - started < BUSY_TIMEOUT_SECONDS / 2
    eng.dispose()


def test_two_writes_on_sqlite_are_serialized(tmp_path: object) -> None:
    """A second write transaction waits for the first (it would otherwise read a stale row)."""
    eng = make_engine(f"sqlite:///{tmp_path}/c.db")
    migrate(eng)
    first_holds, second_in = threading.Event(), threading.Event()

    def second() -> None:
        assert first_holds.wait(30)
        with transaction(eng) as conn:
            conn.execute(select(schema_version.c.version)).scalar()
            second_in.set()

    thread = threading.Thread(target=second)
    thread.start()
    with transaction(eng) as conn:
        conn.execute(select(schema_version.c.version)).scalar()
        first_holds.set()
        # while the first holds the writer lock the second never gets in (a deferred BEGIN would)
        assert not second_in.wait(1.0)
    thread.join(30)
    assert second_in.is_set()
    eng.dispose()
