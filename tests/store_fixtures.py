"""Store fixtures: every store test runs on SQLite and on the machine's PostgreSQL.

PostgreSQL gets a throwaway database per test session (created on 127.0.0.1:5432 with trust
auth, dropped at the end). If the server is unreachable, the PostgreSQL variants fail loudly,
unless VPOOL_SKIP_POSTGRES=1 says to skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from coordinator.store import chain as cstore
from coordinator.store.schema import make_engine, migrate
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, Series, SeriesState

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str]:
    """The URL of a new database on the machine's PostgreSQL (127.0.0.1:5432, trust auth),
    dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    if os.environ.get("VPOOL_SKIP_POSTGRES") == "1":
        pytest.skip("VPOOL_SKIP_POSTGRES=1")
    with throwaway_postgres("vpool_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    base: str = request.getfixturevalue("postgres_database")
    # A schema per test keeps tests independent inside the session's database.
    schema = f"t_{uuid.uuid4().hex[:10]}"
    conninfo = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """A migrated engine on each backend."""
    eng = make_engine(store_url)
    migrate(eng)
    yield eng
    eng.dispose()


def add_active_series(engine: Engine, series: Series, at: float = 0.0) -> None:
    """Record ``series`` as the store's active (regtest) series."""
    receive, change = (series.descriptor(b).to_string(REGTEST) for b in (RECEIVE, CHANGE))
    with engine.begin() as conn:
        cstore.add_series(conn, series.id, receive, change, SeriesState.ACTIVE, REGTEST, at)
