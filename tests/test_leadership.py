"""The store's leadership lock and the write fence (coordinator.leadership), on the machine's
PostgreSQL and on SQLite: two ``Leadership`` objects on one store play two coordinators."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text

from coordinator.leadership import (
    ACTIVE,
    STANDBY,
    Leadership,
    NotActive,
    install_fence,
    lock_keys,
    open_lock,
)
from coordinator.store.schema import make_engine, transaction


@pytest.fixture
def engines(store_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one store (two coordinators), with a table to write to."""
    first, second = make_engine(store_url), make_engine(store_url)
    with transaction(first) as conn:
        conn.execute(text("CREATE TABLE notes (note TEXT)"))
    yield first, second
    first.dispose()
    second.dispose()


def coordinator(engine: Engine, name: str) -> Leadership:
    leadership = Leadership(0.05)
    install_fence(engine, leadership)
    leadership.attach(open_lock(engine, name), name)
    return leadership


def write(engine: Engine, note: str) -> None:
    with transaction(engine) as conn:
        conn.execute(text("INSERT INTO notes (note) VALUES (:note)"), {"note": note})


def notes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT note FROM notes")).scalars())


def terminate_lock_session(engine: Engine, name: str) -> None:
    """What a lost connection looks like to PostgreSQL: the lock's session ends (waited for:
    pg_terminate_backend only signals it)."""
    url = engine.url.set(drivername="postgresql", query={})
    app = f"vpool-coordinator {name}"
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        deadline = time.monotonic() + 10
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the lock's session is still there"
            time.sleep(0.02)


def wait_for_a_waiter_on_the_fence(engine: Engine) -> None:
    deadline = time.monotonic() + 10
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND objid = CAST(:fence AS oid)"
    )
    fence = lock_keys_of(engine)[1]
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"fence": fence}).scalar():
                return
        time.sleep(0.02)
    raise TimeoutError("nobody waits on the fence")


def lock_keys_of(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return lock_keys(str(conn.execute(text("SELECT current_schema()")).scalar()))


def test_of_two_coordinators_on_one_store_only_one_is_active(
    engines: tuple[Engine, Engine],
) -> None:
    a, b = coordinator(engines[0], "a"), coordinator(engines[1], "b")
    assert a.try_take()
    assert not b.try_take()
    assert (a.role, b.role) == (ACTIVE, STANDBY)
    assert b.active_name() == "a"
    a.close()
    b.close()


def test_a_standby_cannot_write_and_is_told_who_is_active(engines: tuple[Engine, Engine]) -> None:
    a, b = coordinator(engines[0], "a"), coordinator(engines[1], "b")
    a.try_take()
    with pytest.raises(NotActive, match="the active coordinator is a"):
        b.refuse_if_standby()
    with pytest.raises(NotActive):
        write(engines[1], "from the standby")
    write(engines[0], "from the active one")
    assert notes(engines[1]) == ["from the active one"]  # reads work on the standby
    a.close()
    b.close()


def test_a_standby_takes_over_once_the_active_one_is_gone(engines: tuple[Engine, Engine]) -> None:
    a, b = coordinator(engines[0], "a"), coordinator(engines[1], "b")
    a.try_take()
    stop = threading.Event()
    taken = threading.Thread(target=b.wait_active, args=(stop,))
    taken.start()
    a.close()  # its process died: the session (or the flock) goes with it
    taken.join(10)
    stop.set()
    assert b.role == ACTIVE
    write(engines[1], "from b")
    assert notes(engines[0]) == ["from b"]
    b.close()


def test_a_coordinator_whose_lock_session_ended_writes_nothing_more(
    engines: tuple[Engine, Engine], store_url: str
) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("a flock is lost only with its process")
    a = coordinator(engines[0], "a-lost")
    a.try_take()
    write(engines[0], "before")
    terminate_lock_session(engines[0], "a-lost")
    with pytest.raises(NotActive):
        write(engines[0], "after")
    assert a.role == STANDBY  # stepped down at the first refused write
    assert notes(engines[0]) == ["before"]
    with pytest.raises(NotActive):
        a.confirm()  # and broadcasts nothing
    a.close()


def test_a_coordinator_watching_its_lock_steps_down_when_the_session_ends(
    engines: tuple[Engine, Engine], store_url: str
) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("a flock is lost only with its process")
    a = coordinator(engines[0], "a-watched")
    a.try_take()
    stop, lost = threading.Event(), threading.Event()
    a.watch(lost.set, stop)
    terminate_lock_session(engines[0], "a-watched")
    assert lost.wait(10)
    stop.set()
    assert a.role == STANDBY
    a.close()


def test_a_successor_waits_for_the_write_its_predecessor_has_in_flight(
    engines: tuple[Engine, Engine], store_url: str
) -> None:
    """The fence: a write that passed its check before the lock was lost commits before the
    successor's ``try_take`` returns, never after it."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a flock is lost only with its process")
    a, b = coordinator(engines[0], "a-fenced"), coordinator(engines[1], "b-fenced")
    a.try_take()
    finished: list[float] = []
    with transaction(engines[0]) as conn:
        conn.execute(text("INSERT INTO notes (note) VALUES ('in flight')"))  # passes the fence
        terminate_lock_session(engines[0], "a-fenced")

        def take() -> None:
            b.wait_active(threading.Event())
            finished.append(time.monotonic())

        took = threading.Thread(target=take)
        took.start()
        wait_for_a_waiter_on_the_fence(engines[1])
        assert not finished
        committed = time.monotonic()
    took.join(10)
    assert finished and finished[0] >= committed
    with engines[1].connect() as conn:
        assert conn.execute(select(func.count()).select_from(text("notes"))).scalar() == 1
    a.close()
    b.close()


def test_two_pools_in_two_schemas_of_one_database_have_their_own_locks() -> None:
    assert lock_keys("pool_a") != lock_keys("pool_b")
    leader, fence = lock_keys("public")
    assert fence == leader + 1 and 0 <= leader < 2**31 - 1
