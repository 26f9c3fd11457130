"""The signer's persistent state: signing log, amounts signed, series, deposit addresses and the
deposits it acknowledged (SQLite).

One database per data dir (``signer.db``), opened by one process at a time: an exclusive lock
on ``signer.lock`` refuses a second daemon. Every write is one transaction; WAL journal with
``synchronous=FULL``, so a committed record survives a crash. The schema is versioned with
``PRAGMA user_version`` and brought up to date by numbered migrations on open.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from pool.hashes import hash256
from pool.networks import Network, get_network
from pool.series import CHANGE, RECEIVE, Series, SeriesState, parsed_series
from pool.tx import OutPoint, Transaction
from signer.policy import AcknowledgedDeposit, Approval, DepositClaim, SignedBefore

DB_FILE = "signer.db"
LOCK_FILE = "signer.lock"

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: signing log, amounts signed, series registry
        """CREATE TABLE signing_log (
            prev_txid BLOB NOT NULL,
            prev_vout INTEGER NOT NULL,
            txid TEXT NOT NULL,
            tx BLOB NOT NULL,
            change_vout INTEGER,
            manifest_hash BLOB NOT NULL,
            signed_at REAL NOT NULL,
            PRIMARY KEY (prev_txid, prev_vout)
        ) WITHOUT ROWID""",
        """CREATE TABLE spends (
            manifest_hash BLOB PRIMARY KEY,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            at REAL NOT NULL
        )""",
        "CREATE INDEX spends_at ON spends (at)",
        """CREATE TABLE series (
            network TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            receive TEXT NOT NULL,
            change TEXT NOT NULL,
            registered_at REAL NOT NULL,
            PRIMARY KEY (network, series_id)
        )""",
    ),
    (  # 2: deposit addresses and their refund addresses ("" when the user registered none)
        """CREATE TABLE deposit_addresses (
            network TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            refund_address TEXT NOT NULL,
            registered_at REAL NOT NULL,
            PRIMARY KEY (network, series_id, idx)
        )""",
    ),
    (  # 3: the refund and move windows (per round, beside its payments), payments per destination
        "ALTER TABLE spends ADD COLUMN refunds INTEGER NOT NULL DEFAULT 0 CHECK (refunds >= 0)",
        "ALTER TABLE spends ADD COLUMN moves INTEGER NOT NULL DEFAULT 0 CHECK (moves >= 0)",
        """CREATE TABLE destination_payments (
            manifest_hash BLOB NOT NULL,
            script_pubkey BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount > 0),
            at REAL NOT NULL,
            PRIMARY KEY (manifest_hash, script_pubkey)
        ) WITHOUT ROWID""",
        "CREATE INDEX destination_payments_at ON destination_payments (script_pubkey, at)",
    ),
    (  # 4: deposits this signer acknowledged for crediting (AcknowledgeDeposits)
        """CREATE TABLE acknowledged_deposits (
            prev_txid BLOB NOT NULL,
            prev_vout INTEGER NOT NULL,
            network TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            value INTEGER NOT NULL CHECK (value > 0),
            height INTEGER NOT NULL,
            acknowledged_at REAL NOT NULL,
            PRIMARY KEY (prev_txid, prev_vout)
        ) WITHOUT ROWID""",
    ),
    (  # 5: the final answer to each round the device answered (idempotent SignRound)
        """CREATE TABLE round_answers (
            round_key BLOB PRIMARY KEY,
            manifest_hash BLOB NOT NULL,
            answer TEXT NOT NULL,
            answered_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    (  # 6: each signed transaction stored once (not in every one of its inputs' log rows)
        """CREATE TABLE signed_transactions (
            txid TEXT PRIMARY KEY,
            tx BLOB NOT NULL
        ) WITHOUT ROWID""",
        """INSERT INTO signed_transactions (txid, tx) SELECT txid, tx FROM signing_log WHERE true
        ON CONFLICT (txid) DO NOTHING""",
        "ALTER TABLE signing_log DROP COLUMN tx",
    ),
    (  # 7: when this signer was serving (its health SERVING), reported in GetInfo
        """CREATE TABLE serving_intervals (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            until REAL NOT NULL CHECK (until >= started_at)
        )""",
    ),
    (  # 8: requests this signer signed a cancel of (never paid again)
        """CREATE TABLE cancelled_requests (
            client_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            manifest_hash BLOB NOT NULL,
            cancelled_at REAL NOT NULL,
            PRIMARY KEY (client_id, request_id)
        ) WITHOUT ROWID""",
    ),
    (  # 9: an operator's cancel (pool.cancel version 2): the request may be paid again, once,
        # after its replacement ``replaced_by`` confirmed; ``repaid_in``: the round that did
        "ALTER TABLE cancelled_requests ADD COLUMN replaced_by TEXT",
        "ALTER TABLE cancelled_requests ADD COLUMN repaid_in BLOB",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_UPSERT_SIGNED = """
    INSERT INTO signing_log
        (prev_txid, prev_vout, txid, change_vout, manifest_hash, signed_at)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (prev_txid, prev_vout) DO UPDATE SET
        txid = excluded.txid, change_vout = excluded.change_vout,
        manifest_hash = excluded.manifest_hash, signed_at = excluded.signed_at
"""
_INSERT_SIGNED_TX = """
    INSERT INTO signed_transactions (txid, tx) VALUES (?, ?) ON CONFLICT (txid) DO NOTHING
"""
_INSERT_SPEND = """
    INSERT INTO spends (manifest_hash, amount, refunds, moves, at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (manifest_hash) DO NOTHING
"""
_INSERT_DESTINATION = """
    INSERT INTO destination_payments (manifest_hash, script_pubkey, amount, at)
    VALUES (?, ?, ?, ?)
    ON CONFLICT (manifest_hash, script_pubkey) DO NOTHING
"""

_INSERT_ANSWER = """
    INSERT INTO round_answers (round_key, manifest_hash, answer, answered_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (round_key) DO NOTHING
"""

_SigningRow = tuple[bytes, int, str, int | None, bytes, float]


class StateError(Exception):
    """The signer's state cannot be opened or would be made inconsistent."""


def _lock(path: Path) -> int:
    """Take the exclusive lock of the data dir; the lock file then holds this process id."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateError(
            f"data dir {path.parent} is in use by another signer (pid {holder} holds {path})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _signing_rows(
    approval: Approval, now: float
) -> tuple[list[_SigningRow], list[tuple[str, bytes]]]:
    """One signing-log row per input of every PSBT of the approval, and each transaction once
    (txid, unsigned serialization)."""
    planned = len(approval.txids)
    if not len(approval.psbts) == planned == len(approval.change_vouts):
        raise StateError(
            f"approval has {len(approval.psbts)} PSBTs and {len(approval.change_vouts)} change "
            f"outputs for {planned} planned transactions"
        )
    rows: list[_SigningRow] = []
    transactions: list[tuple[str, bytes]] = []
    items = zip(approval.psbts, approval.txids, approval.change_vouts, strict=True)
    logged = planned - approval.rungs  # the ladder's rungs are not logged (Approval.rungs)
    for index, (psbt, txid, change_vout) in enumerate(list(items)[:logged]):
        tx = psbt.tx
        raw = tx.serialize_without_witness()
        if hash256(raw)[::-1].hex() != txid:
            raise StateError(f"PSBT {index} is not transaction {index} of the plan")
        transactions.append((txid, raw))
        for txin in tx.inputs:
            prev = txin.prevout
            rows.append((prev.txid, prev.vout, txid, change_vout, approval.manifest_hash, now))
    return rows, transactions


@lru_cache(maxsize=16)
def _parse_signed(raw: bytes) -> Transaction:
    """A signed transaction of the log, parsed once for all of its inputs' lookups (a round of
    many inputs would otherwise parse it again for each)."""
    return Transaction.parse(raw)


def _canonical_descriptors(series: Series, network: Network) -> tuple[str, str]:
    """The receive and change descriptors in one canonical spelling (sorted keys, checksum)."""
    return (
        series.descriptor(RECEIVE).to_string(network),
        series.descriptor(CHANGE).to_string(network),
    )


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed if the block succeeds, else rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the database lacks, each in its own transaction."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path} has schema version {version}, newer than this signer's {SCHEMA_VERSION}: "
            "upgrade the signer"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with _transaction(db):
            for statement in _MIGRATIONS[number - 1]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")


def _open_database(path: Path) -> sqlite3.Connection:
    """Connect in autocommit mode (transactions are explicit), WAL, synchronous FULL, migrated."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StateError(f"{path}: cannot use the WAL journal (got {mode!r})")
        db.execute("PRAGMA synchronous = FULL")
        _migrate(db, path)
    except sqlite3.DatabaseError as e:
        db.close()
        raise StateError(f"{path}: {e}") from e
    except BaseException:
        db.close()
        raise
    return db


class SignerState:
    """The signer's SQLite database under ``data_dir``; implements ``SigningHistory``.

    Safe to share between the threads of one process; a second process is refused.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = data_dir / DB_FILE
        self._mutex = threading.Lock()
        self._lock_fd = _lock(data_dir / LOCK_FILE)
        try:
            self._db = _open_database(self.path)
        except BaseException:
            _unlock(self._lock_fd)
            raise

    def close(self) -> None:
        """Close the database and release the data dir; closing twice does nothing."""
        with self._mutex:
            if self._lock_fd < 0:
                return
            self._db.close()
            _unlock(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> SignerState:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._mutex, _transaction(self._db) as db:
            yield db

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._mutex:
            rows: list[tuple[Any, ...]] = self._db.execute(sql, params).fetchall()
        return rows

    # ----------------------------------------------------------------------- signing history

    def signed_spend(self, outpoint: OutPoint) -> SignedBefore | None:
        """The last unsigned transaction this signer signed that spends ``outpoint``."""
        rows = self._query(
            "SELECT l.txid, t.tx, l.change_vout, l.manifest_hash FROM signing_log l "
            "JOIN signed_transactions t ON t.txid = l.txid "
            "WHERE l.prev_txid = ? AND l.prev_vout = ?",
            (outpoint.txid, outpoint.vout),
        )
        if not rows:
            return None
        txid_hex, raw, change_vout, manifest_hash = rows[0]
        return SignedBefore(txid_hex, _parse_signed(raw), change_vout, bytes(manifest_hash))

    def _sum_since(self, column: str, since: float) -> int:
        rows = self._query(f"SELECT COALESCE(SUM({column}), 0) FROM spends WHERE at >= ?", (since,))
        total: int = rows[0][0]
        return total

    def amount_signed_since(self, since: float) -> int:
        """Satoshis paid by the rounds signed at or after ``since`` (unix seconds)."""
        return self._sum_since("amount", since)

    def amount_refunded_since(self, since: float) -> int:
        """Satoshis refunded by the rounds signed at or after ``since``."""
        return self._sum_since("refunds", since)

    def amount_moved_since(self, since: float) -> int:
        """Satoshis moved to other approved series by the rounds signed at or after ``since``."""
        return self._sum_since("moves", since)

    def amount_paid_to_since(self, script_pubkey: bytes, since: float) -> int:
        """Satoshis paid to ``script_pubkey`` by the rounds signed at or after ``since``."""
        rows = self._query(
            "SELECT COALESCE(SUM(amount), 0) FROM destination_payments "
            "WHERE script_pubkey = ? AND at >= ?",
            (script_pubkey, since),
        )
        total: int = rows[0][0]
        return total

    def cancelled_request(self, client_id: str, request_id: str) -> bool:
        """May this request never be paid again? A client's cancel of it was signed, or an
        operator's cancel was and a later round paid it again already."""
        rows = self._query(
            "SELECT 1 FROM cancelled_requests WHERE client_id = ? AND request_id = ? "
            "AND (replaced_by IS NULL OR repaid_in IS NOT NULL)",
            (client_id, request_id),
        )
        return bool(rows)

    def requeued_cancel(self, client_id: str, request_id: str) -> tuple[str, ...]:
        """The txids of the replacements that dropped this request in an operator's cancel
        this signer signed, while no later round paid it again; else ()."""
        rows = self._query(
            "SELECT replaced_by FROM cancelled_requests WHERE client_id = ? AND request_id = ? "
            "AND replaced_by IS NOT NULL AND repaid_in IS NULL",
            (client_id, request_id),
        )
        return tuple(str(rows[0][0]).split()) if rows else ()

    def transaction_confirmed(self, txid_hex: str) -> bool:
        """The store alone cannot tell (``signer.chain_checks.ChainReleasedHistory`` asks the
        node): a request an operator cancelled is not paid again on its word."""
        return False

    def acknowledged_deposit(self, outpoint: OutPoint) -> AcknowledgedDeposit | None:
        """The acknowledgement this signer gave the deposit at ``outpoint``, if any."""
        rows = self._query(
            "SELECT series_id, idx, value, height, acknowledged_at FROM acknowledged_deposits "
            "WHERE prev_txid = ? AND prev_vout = ?",
            (outpoint.txid, outpoint.vout),
        )
        if not rows:
            return None
        series_id, index, value, height, at = rows[0]
        return AcknowledgedDeposit(DepositClaim(outpoint, series_id, index, value), height, at)

    def record_acknowledgement(
        self, network: str, claim: DepositClaim, height: int, now: float
    ) -> bool:
        """Record that this signer acknowledged ``claim``; False (nothing written) if the
        signing log holds a spend of its outpoint, or the outpoint was acknowledged before.

        The check and the write are one transaction, so an acknowledgement and the signing of a
        refund of the same deposit exclude each other here too (``signer.rounds`` also takes one
        lock for both).
        """
        outpoint = claim.outpoint
        with self._write() as db:
            spent = db.execute(
                "SELECT 1 FROM signing_log WHERE prev_txid = ? AND prev_vout = ?",
                (outpoint.txid, outpoint.vout),
            ).fetchone()
            if spent is not None:
                return False
            inserted = db.execute(
                "INSERT INTO acknowledged_deposits (prev_txid, prev_vout, network, series_id, "
                "idx, value, height, acknowledged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (prev_txid, prev_vout) DO NOTHING",
                (
                    outpoint.txid, outpoint.vout, network, claim.series_id, claim.index,
                    claim.value, height, now,
                ),
            )  # fmt: skip
            return inserted.rowcount == 1

    def record_signed(
        self, approval: Approval, now: float, answer: tuple[bytes, str] | None = None
    ) -> None:
        """Record a signed round of any kind, atomically: its spends in the signing log, its
        payments (also per destination), refunds and moves in the windows, and ``answer``
        (round key, encoded answer: ``record_answer``) in the same transaction.

        Recording the same round (same manifest hash) again counts nothing twice.
        """
        rows, transactions = _signing_rows(approval, now)
        spend = (approval.manifest_hash, approval.payments, approval.refunds, approval.moves, now)
        destinations = [
            (approval.manifest_hash, script, amount, now)
            for script, amount in approval.destinations
            if amount > 0
        ]
        cancels: list[tuple[str, str, bytes, float, str | None]] = [
            (c, r, approval.manifest_hash, now, None) for c, r in approval.cancels
        ]
        cancels += [
            (c, r, approval.manifest_hash, now, " ".join(t)) for c, r, t in approval.requeues
        ]
        repaid = [(approval.manifest_hash, c, r) for c, r in approval.repaid]
        with self._write() as db:
            db.executemany(_INSERT_SIGNED_TX, transactions)
            db.executemany(_UPSERT_SIGNED, rows)
            db.executemany(
                "INSERT INTO cancelled_requests (client_id, request_id, manifest_hash, "
                "cancelled_at, replaced_by) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (client_id, request_id) DO UPDATE SET "
                "manifest_hash = excluded.manifest_hash, cancelled_at = excluded.cancelled_at, "
                "replaced_by = excluded.replaced_by, repaid_in = NULL "
                # a client's cancel makes any cancel final; an operator's cancel of a request
                # paid again replaces the spent record (the first replacement confirmed)
                "WHERE (excluded.replaced_by IS NULL AND cancelled_requests.replaced_by "
                "IS NOT NULL) OR (excluded.replaced_by IS NOT NULL AND "
                "cancelled_requests.repaid_in IS NOT NULL)",
                cancels,
            )
            db.executemany(
                "UPDATE cancelled_requests SET repaid_in = ? WHERE client_id = ? "
                "AND request_id = ? AND replaced_by IS NOT NULL AND repaid_in IS NULL",
                repaid,
            )
            if db.execute(_INSERT_SPEND, spend).rowcount:
                db.executemany(_INSERT_DESTINATION, destinations)
            if answer is not None:
                db.execute(_INSERT_ANSWER, (answer[0], approval.manifest_hash, answer[1], now))

    def record_answer(
        self, round_key: bytes, manifest_hash: bytes, answer: str, now: float
    ) -> None:
        """Keep the final answer (``answer``: its encoding by ``signer.rounds``) the device gave
        to the round ``round_key`` (manifest hash and PSBTs as received); the first one stays."""
        with self._write() as db:
            db.execute(_INSERT_ANSWER, (round_key, manifest_hash, answer, now))

    def round_answer(self, round_key: bytes) -> str | None:
        """The final answer kept for the round ``round_key``, if any."""
        rows = self._query("SELECT answer FROM round_answers WHERE round_key = ?", (round_key,))
        return None if not rows else str(rows[0][0])

    # ----------------------------------------------------------------------- series registry

    def register_series(
        self, series_id: int, network: str, receive: str, change: str, now: float
    ) -> bool:
        """Register a series; False if this very series was registered already.

        A registered series is immutable: another series with the same id raises ``StateError``.
        """
        net = get_network(network)
        series = Series.from_descriptors(series_id, receive, change, SeriesState.ACTIVE, net)
        descriptors = _canonical_descriptors(series, net)
        with self._write() as db:
            row = db.execute(
                "SELECT receive, change FROM series WHERE network = ? AND series_id = ?",
                (net.name, series_id),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO series (network, series_id, receive, change, registered_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (net.name, series_id, *descriptors, now),
                )
                return True
        if tuple(row) != descriptors:
            raise StateError(
                f"series {series_id} is already registered on {net.name} with other keys or "
                "threshold; a registered series cannot change"
            )
        return False

    def series_descriptors(self, network: Network) -> dict[int, tuple[str, str]]:
        """Registered (receive, change) descriptors of ``network`` by series id, canonical."""
        rows = self._query(
            "SELECT series_id, receive, change FROM series WHERE network = ? ORDER BY series_id",
            (network.name,),
        )
        return {series_id: (receive, change) for series_id, receive, change in rows}

    def registered_series(self, network: Network) -> dict[int, Series]:
        """Registered series of ``network`` by id, all in state ACTIVE (the signer ignores it)."""
        return {
            series_id: parsed_series(series_id, receive, change, SeriesState.ACTIVE, network)
            for series_id, (receive, change) in self.series_descriptors(network).items()
        }

    # ----------------------------------------------------------------------- serving intervals

    def open_serving(self, now: float) -> int:
        """A new interval in which this signer serves, from ``now``; its id."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO serving_intervals (started_at, until) VALUES (?, ?)", (now, now)
            )
        return int(cursor.lastrowid or 0)

    def extend_serving(self, interval_id: int, now: float) -> None:
        """The signer still serves at ``now`` (the interval's end moves there)."""
        with self._write() as db:
            db.execute(
                "UPDATE serving_intervals SET until = max(until, ?) WHERE id = ?",
                (now, interval_id),
            )

    def serving_intervals(self, limit: int) -> list[tuple[int, float, float]]:
        """The last ``limit`` intervals (id, from, until), oldest first."""
        rows = self._query(
            "SELECT id, started_at, until FROM serving_intervals ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [(int(i), float(a), float(b)) for i, a, b in reversed(rows)]

    # ----------------------------------------------------------------------- deposit addresses

    def register_deposit_address(
        self, network: str, series_id: int, index: int, refund_address: str, now: float
    ) -> bool:
        """Record the refund address ("" for none) of receive address ``index`` of a series;
        False if this very pair was registered already.

        The first registration wins: another refund address for the same deposit address raises
        ``StateError``.
        """
        key = (network, series_id, index)
        with self._write() as db:
            row = db.execute(
                "SELECT refund_address FROM deposit_addresses "
                "WHERE network = ? AND series_id = ? AND idx = ?",
                key,
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO deposit_addresses "
                    "(network, series_id, idx, refund_address, registered_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (*key, refund_address, now),
                )
                return True
        if row[0] != refund_address:
            raise StateError(
                f"deposit address {index} of series {series_id} on {network} is already registered "
                "with another refund address; the first registration wins"
            )
        return False

    def refund_address(self, network: str, series_id: int, index: int) -> str | None:
        """The refund address registered for a deposit address ("" for none), or None if the
        deposit address was never registered."""
        rows = self._query(
            "SELECT refund_address FROM deposit_addresses "
            "WHERE network = ? AND series_id = ? AND idx = ?",
            (network, series_id, index),
        )
        return None if not rows else str(rows[0][0])


def read_registered_series(data_dir: Path, network: Network) -> dict[int, Series]:
    """The registered series of ``network``, read without taking the data dir's lock (for the
    operator's commands while the daemon runs); the database is opened read-only."""
    path = data_dir / DB_FILE
    if not path.is_file():
        raise StateError(f"{path}: no signer database (has this signer ever started?)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT series_id, receive, change FROM series WHERE network = ? "
                "ORDER BY series_id",
                (network.name,),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise StateError(f"{path}: {e}") from None
    return {
        series_id: Series.from_descriptors(series_id, receive, change, SeriesState.ACTIVE, network)
        for series_id, receive, change in rows
    }
