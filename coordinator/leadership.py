"""Which coordinator is active: one lock per store, held for as long as the process acts.

Any number of ``vpool-coordinator serve`` processes may share one store; exactly one of them is
**active** (it runs the loop: scans, credits, rounds, broadcasts, and accepts writes), the others
are **standbys** (they serve reads and refuse every write with UNAVAILABLE naming the active
one). There is no consensus of our own, only the store's lock:

- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) held on a dedicated
  connection. The session's ``application_name`` names its holder, so a standby can say who is
  active. PostgreSQL releases the lock when that session ends, so a killed coordinator (SIGKILL
  included: the kernel closes its socket) frees it at once, and a standby polling every
  ``standby.poll_seconds`` takes over.
- SQLite: an exclusive ``flock`` on ``<database file>.leader`` (coordinators on one machine),
  released by the kernel when the process dies.

Losing the lock means stepping down at once: ``holds()`` turns false before anything else, and

- every write transaction is **fenced** (``install_fence``): before its first write statement
  it takes ``pg_advisory_xact_lock_shared(FENCE)`` and checks that its own lock session still
  holds the leadership lock; a coordinator taking over takes ``FENCE`` exclusively once, after
  the leadership lock and before anything else, which waits for the fenced transactions of the
  one before it that had passed the check, while every later one fails it. So no write of a
  deposed coordinator lands after its successor started.
- every broadcast asks ``confirm()`` first (a round trip on the lock's session).
- the process then exits with ``EXIT_STEPPED_DOWN``; its supervisor restarts it and it comes
  back as a standby (restarting the daemon is the one way its in-memory state is rebuilt).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import grpc
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, event

from vpool.rpc import RpcFailure

log = logging.getLogger(__name__)

LOCK_CLASS = 0x7650_6F6C
"""The first key of vpool's two-int advisory locks ("vPol"); the store's migration lock uses the
one-bigint form, so they never collide. The second key comes from the store's schema (several
pools may share one database, each in its schema): ``lock_keys``."""
EXIT_STEPPED_DOWN = 75
"""The exit status of a coordinator that lost its lock (EX_TEMPFAIL): restart it."""
ACTIVE = "active"
STANDBY = "standby"
_WRITES = ("INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP")
_MAX_APP_NAME = 63
"""PostgreSQL truncates application_name to 63 bytes."""
_APP_PREFIX = "vpool-coordinator "


class NotActive(RpcFailure):
    """A write on a standby (or on a coordinator that just lost its lock)."""

    def __init__(self, active: str | None) -> None:
        where = f"the active coordinator is {active}" if active else "no coordinator is active now"
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            f"this coordinator is a standby and serves reads only; {where}",
        )


class Lock(Protocol):
    def try_acquire(self) -> bool: ...

    def alive(self) -> bool:
        """True while the lock is still ours (a round trip to where it is held)."""
        ...

    def holder(self) -> str | None: ...

    def barrier(self) -> None:
        """After acquiring: wait until no write of a previous holder can still commit."""
        ...

    def fence_check(self, cursor: Any) -> bool:
        """Inside a write transaction, on its cursor: is the lock still ours?"""
        ...

    def close(self) -> None: ...


def lock_keys(schema: str) -> tuple[int, int]:
    """The leadership and fence keys (second halves of the two-int lock) of a schema."""
    leader = zlib.crc32(schema.encode()) & 0x7FFF_FFFE
    return leader, leader + 1


class PostgresLock:
    """The session advisory lock on a connection of its own (see the module docstring)."""

    def __init__(self, conninfo: str, name: str) -> None:
        app = (_APP_PREFIX + name).encode()[:_MAX_APP_NAME].decode(errors="ignore")
        params = conninfo_to_dict(conninfo)
        # The server notices a vanished client within ~10 s even without a FIN; the store's own
        # options (a search_path) are kept.
        options = f"{params.pop('options', '') or ''} {_KEEPALIVES}".strip()
        self._conn = psycopg.connect(
            make_conninfo(
                conninfo,
                application_name=app,
                connect_timeout=10,
                options=options,
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
            ),
            autocommit=True,
        )
        self._guard = threading.Lock()
        row = self._conn.execute("SELECT pg_backend_pid(), current_schema()").fetchone()
        assert row is not None
        self.pid = int(row[0])
        self.schema = str(row[1])
        self._leader, self._fence = lock_keys(self.schema)

    def try_acquire(self) -> bool:
        with self._guard:
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self._leader)
            ).fetchone()
        return bool(row and row[0])

    def alive(self) -> bool:
        try:
            with self._guard:
                row = self._conn.execute(_HELD_BY, (LOCK_CLASS, self._leader, self.pid)).fetchone()
        except psycopg.Error as e:
            log.error("the leadership lock's connection failed: %s", e)
            return False
        return bool(row and row[0])

    def holder(self) -> str | None:
        try:
            with self._guard:
                row = self._conn.execute(_HOLDER, (LOCK_CLASS, self._leader)).fetchone()
        except psycopg.Error:
            return None
        if row is None:
            return None
        return str(row[0]).removeprefix(_APP_PREFIX) or f"the session of pid {row[1]}"

    def barrier(self) -> None:
        with self._guard:
            self._conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, self._fence))
            self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, self._fence))

    def fence_check(self, cursor: Any) -> bool:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (LOCK_CLASS, self._fence))
        cursor.execute(_HELD_BY, (LOCK_CLASS, self._leader, self.pid))
        row = cursor.fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        self._conn.close()


_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
_HELD_BY = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) AND classid = %s::oid "
    "AND objid = %s::oid AND objsubid = 2 AND granted AND pid = %s)"
)
_HOLDER = (
    "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) AND l.classid = %s::oid "
    "AND l.objid = %s::oid AND l.objsubid = 2 AND l.granted"
)


class FileLock:
    """An exclusive flock on a file next to the SQLite database; it holds the holder's name."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._name = name
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._held = False

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, self._name.encode(), 0)
        os.fsync(self._fd)
        self._held = True
        return True

    def alive(self) -> bool:
        return self._held  # only this process's death releases a flock

    def holder(self) -> str | None:
        if self._held:
            return self._name
        try:
            return self._path.read_text(encoding="utf-8", errors="replace") or None
        except OSError:
            return None

    def barrier(self) -> None:
        """A flock dies with its process only, and so do that process's writes."""

    def fence_check(self, cursor: Any) -> bool:
        return self._held

    def close(self) -> None:
        os.close(self._fd)


def open_lock(engine: Engine, name: str) -> Lock:
    """The lock of ``engine``'s store."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresLock(conninfo, name)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return FileLock(Path(url.database + ".leader"), name)
    raise ValueError(f"no leadership lock for the store {url.render_as_string()}")


class Leadership:
    """This process's role; ``run`` is the thread that acquires, then watches, the lock."""

    def __init__(self, poll_seconds: float) -> None:
        self._lock: Lock | None = None
        self._poll = poll_seconds
        self.name = ""
        self._active = threading.Event()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._holder_seen: str | None = None
        self._holder_at = 0.0

    def attach(self, lock: Lock, name: str) -> None:
        """The store's lock (opened once the server listens, so that ``name`` can say where)."""
        self._lock, self.name = lock, name

    @property
    def _held_lock(self) -> Lock:
        if self._lock is None:
            raise RuntimeError("the leadership lock is not attached")
        return self._lock

    @property
    def role(self) -> str:
        return ACTIVE if self.holds() else STANDBY

    def holds(self) -> bool:
        """This process acts (False from the moment the lock is found lost)."""
        return self._active.is_set() and not self._lost.is_set()

    def active_name(self) -> str | None:
        """Who is active: this process, or the holder the store names (cached for a poll)."""
        if self.holds():
            return self.name
        now = time.monotonic()
        if self._lock is not None and now - self._holder_at > self._poll:
            self._holder_seen, self._holder_at = self._lock.holder(), now
        return self._holder_seen

    def refuse_if_standby(self) -> None:
        if not self.holds():
            raise NotActive(self.active_name())

    def confirm(self) -> None:
        """Before a side effect outside the store (a broadcast): the lock is still ours, asked
        now; else step down and raise NotActive."""
        if not self.holds():
            raise NotActive(self.active_name())
        if not self._held_lock.alive():
            self._step_down()
            raise NotActive(None)

    def try_take(self) -> bool:
        """Take the lock if it is free (then wait out the writes of the one before)."""
        if not self._held_lock.try_acquire():
            return False
        self._held_lock.barrier()
        self._active.set()
        log.warning("leadership: this coordinator (%s) is now ACTIVE", self.name)
        return True

    def wait_active(
        self, stop: threading.Event, while_waiting: Callable[[], None] = lambda: None
    ) -> bool:
        """Poll for the lock until it is ours (True), or ``stop`` is set (False); between two
        tries, ``while_waiting()`` (a standby follows the store)."""
        while not stop.is_set():
            if self.try_take():
                return True
            try:
                while_waiting()
            except Exception:
                log.exception("standby: following the store failed")
            stop.wait(self._poll)
        return False

    def watch(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """A thread that checks the lock every poll; on losing it: step down, ``on_lost()``."""

        def run() -> None:
            while not stop.wait(self._poll):
                if not self._held_lock.alive():
                    self._step_down()
                    on_lost()
                    return

        thread = threading.Thread(target=run, name="leadership", daemon=True)
        thread.start()
        return thread

    def _step_down(self) -> None:
        if not self._lost.is_set():
            self._lost.set()
            log.critical("leadership: the lock is lost; this coordinator stepped down")

    def fence(self, cursor: Any) -> None:
        """Before a transaction's first write (see ``install_fence``)."""
        if not self.holds() or not self._held_lock.fence_check(cursor):
            self._step_down()
            raise NotActive(None if self.holds() else self._holder_seen)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()


def standby_reason(leadership: Leadership) -> str:
    """The health detail of a standby."""
    active = leadership.active_name()
    return f"standby: the active coordinator is {active}" if active else "standby: none is active"


def install_fence(engine: Engine, leadership: Leadership) -> None:
    """Every transaction's first write statement passes ``leadership.fence`` first."""

    def begin(conn: Any) -> None:
        conn.info.pop("vpool_fenced", None)

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if conn.info.get("vpool_fenced"):
            return
        words = statement.split(None, 1)
        if not words or words[0].upper() not in _WRITES:
            return
        leadership.fence(cursor)
        conn.info["vpool_fenced"] = True

    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", before)
