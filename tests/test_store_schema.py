"""The store's migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, select

from coordinator.store.schema import MIGRATIONS, make_engine, migrate, schema_version


def test_migrate_creates_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"withdrawals", "rounds", "utxos", "blocks", "withdrawal_events"} <= tables


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
