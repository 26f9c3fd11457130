"""The coordinator's database: tables, versioned migrations, and the engine.

SQLAlchemy Core, so the same statements run on SQLite (the default: one file, WAL, synchronous
FULL) and PostgreSQL (for several coordinators). Each migration is a numbered function run in its
own transaction; ``vpool_schema.version`` records how far a database has come. Never edit a
migration that has shipped: add the next one.

Conventions: amounts are satoshis (BigInteger); times are unix seconds (Float); txids and block
hashes are display hex (String(64)); scripts and serialized PSBTs/transactions are bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    exists,
    false,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
)

metadata = MetaData()

schema_version = Table(
    "vpool_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("m", Integer, nullable=False),
    Column("receive_descriptor", Text, nullable=False),
    Column("change_descriptor", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    # migration 3: the first block processed after the series stopped being active (NULL while
    # active, and until the scanner processes that block): its deposits' grace period starts there
    Column("retired_height", Integer, nullable=True),
)

# Next unused index per (series, branch); branch 1's is the change index of the manifest.
series_indexes = Table(
    "series_indexes",
    metadata,
    Column("series_id", Integer, ForeignKey("series.id"), primary_key=True),
    Column("branch", Integer, primary_key=True),
    Column("next_index", Integer, nullable=False),
)

# Every pool scriptPubKey the scanner watches (derived ahead of use, the "lookahead").
addresses = Table(
    "addresses",
    metadata,
    Column("script_pubkey", LargeBinary, primary_key=True),
    Column("series_id", Integer, ForeignKey("series.id"), nullable=False),
    Column("branch", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    UniqueConstraint("series_id", "branch", "idx"),
)

# The blocks the scanner has processed: its cursor, and what a reorganisation compares.
blocks = Table(
    "blocks",
    metadata,
    Column("height", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("prev_hash", String(64), nullable=False),
    Column("processed_at", Float, nullable=False),
    Column("time", Integer, nullable=False, default=0),  # migration 2: the header's timestamp
)

# The pool's UTXO set, built from blocks: an output stays here once spent (spent_* set), so a
# reorganisation can undo both sides.
utxos = Table(
    "utxos",
    metadata,
    Column("txid", String(64), primary_key=True),
    Column("vout", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
    Column("script_pubkey", LargeBinary, nullable=False),
    Column("series_id", Integer, nullable=False),
    Column("branch", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("coinbase", Boolean, nullable=False, default=False),
    Column("spent_txid", String(64), nullable=True),
    Column("spent_height", Integer, nullable=True),
    Column("reserved_round", Integer, nullable=True),
)
Index("utxos_unspent", utxos.c.spent_txid, utxos.c.reserved_round)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(128), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("address", String(128), nullable=False),
    Column("script_pubkey", LargeBinary, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("extra_fee", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("split", Boolean, nullable=False, default=False),
    Column("reason", Text, nullable=False, default=""),
    Column("round_seq", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("client_id", "request_id"),
)
Index("withdrawals_status", withdrawals.c.status)

withdrawal_outputs = Table(
    "withdrawal_outputs",
    metadata,
    Column("txid", String(64), primary_key=True),
    Column("vout", Integer, primary_key=True, autoincrement=False),
    Column("withdrawal_id", Integer, ForeignKey("withdrawals.id"), nullable=False),
    Column("round_seq", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
)

# Every status change of every withdrawal, in order: WatchWithdrawals resumes from a cursor.
withdrawal_events = Table(
    "withdrawal_events",
    metadata,
    Column("cursor", Integer, primary_key=True, autoincrement=True),
    Column("withdrawal_id", Integer, ForeignKey("withdrawals.id"), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("at", Float, nullable=False),
)
Index("withdrawal_events_client", withdrawal_events.c.client_id, withdrawal_events.c.cursor)
withdrawal_events_withdrawal = Index(
    "withdrawal_events_withdrawal", withdrawal_events.c.withdrawal_id, withdrawal_events.c.status
)
"""A withdrawal's events (the expiry reads the first deferral of each deferred withdrawal)."""

rounds = Table(
    "rounds",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("manifest_hash", String(64), nullable=False, unique=True),
    Column("manifest", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("rebuilt_from", Integer, nullable=True),
    Column("kind", String(16), nullable=False, default="withdrawal"),  # migration 2
    Column("detail", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("rounds_status", rounds.c.status)

round_transactions = Table(
    "round_transactions",
    metadata,
    Column("round_seq", Integer, ForeignKey("rounds.seq"), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("txid", String(64), nullable=False, unique=True),
    Column("psbt", LargeBinary, nullable=False),
    Column("final_tx", LargeBinary, nullable=True),
    Column("fee", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("block_height", Integer, nullable=True),
    Column("block_hash", String(64), nullable=True),
    Column("broadcast_at", Float, nullable=True),
    # migration 6: a rung of the fee ladder (pool/ladder.py) replaces transaction base_idx of its
    # round; rung 0 (base_idx NULL) is the transaction itself.
    Column("base_idx", Integer, nullable=True),
    Column("rung", Integer, nullable=False, default=0),
    # migration 6: a cancel round's transaction names the transaction it replaces
    Column("replaces", String(64), nullable=True),
)

signatures = Table(
    "signatures",
    metadata,
    Column("round_seq", Integer, ForeignKey("rounds.seq"), primary_key=True),
    Column("tx_idx", Integer, primary_key=True, autoincrement=False),
    Column("input_idx", Integer, primary_key=True, autoincrement=False),
    Column("pubkey", LargeBinary, primary_key=True),
    Column("signature", LargeBinary, nullable=False),
    Column("signer_id", String(128), nullable=False),
)

signer_outcomes = Table(
    "signer_outcomes",
    metadata,
    Column("round_seq", Integer, ForeignKey("rounds.seq"), primary_key=True),
    Column("signer_id", String(128), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("signatures", Integer, nullable=False, default=0),
    Column("detail", Text, nullable=False, default=""),
    Column("at", Float, nullable=False),
)

fee_shares = Table(
    "fee_shares",
    metadata,
    Column("txid", String(64), primary_key=True),
    Column("client_id", String(128), primary_key=True),
    Column("round_seq", Integer, ForeignKey("rounds.seq"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("at", Float, nullable=False),
)


# --- migration 2: deposits, signer liveness, refunds, alerts -----------------------------------

# A receive address handed out to a client's user, with the refund address registered with it.
deposit_addresses = Table(
    "deposit_addresses",
    metadata,
    Column("script_pubkey", LargeBinary, primary_key=True),
    Column("series_id", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("refund_address", String(128), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)
Index("deposit_addresses_user", deposit_addresses.c.client_id, deposit_addresses.c.user_id)

# A deposit address's registration (its refund address) that a signer missed because it was
# down: handed out once n - m + 1 signers had it, and replayed to each of the others when it
# answers again (coordinator.registrations); the row goes once the signer has it.
missed_registrations = Table(
    "missed_registrations",
    metadata,
    Column("script_pubkey", LargeBinary, primary_key=True),
    Column("signer_id", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
)

# Every output paying a receive address (branch 0) of a pool series.
deposits = Table(
    "deposits",
    metadata,
    Column("txid", String(64), primary_key=True),
    Column("vout", Integer, primary_key=True, autoincrement=False),
    Column("script_pubkey", LargeBinary, nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("height", Integer, nullable=False),
    Column("block_hash", String(64), nullable=False),
    Column("deposit_tx", LargeBinary, nullable=False),
    Column("client_id", String(128), nullable=False, default=""),
    Column("user_id", String(128), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("refund_address", String(128), nullable=False, default=""),
    Column("refund_source", String(16), nullable=False, default=""),
    Column("refund_round_seq", Integer, nullable=True),
    Column("refund_txid", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("deposits_status", deposits.c.status)

deposit_events = Table(
    "deposit_events",
    metadata,
    Column("cursor", Integer, primary_key=True, autoincrement=True),
    Column("txid", String(64), nullable=False),
    Column("vout", Integer, nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("at", Float, nullable=False),
)
Index("deposit_events_client", deposit_events.c.client_id, deposit_events.c.cursor)

# Each signer's current liveness state, and every change of it.
signer_health = Table(
    "signer_health",
    metadata,
    Column("signer_id", String(128), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("since", Float, nullable=False),
    Column("missed", Integer, nullable=False, default=0),
    Column("maintenance", Boolean, nullable=False, default=False),
    Column("last_seen", Float, nullable=True),
    Column("detail", Text, nullable=False, default=""),
)

signer_health_history = Table(
    "signer_health_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("signer_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

# Every change of the pool's quorum ("ok" / "degraded"): deposits are judged against it.
quorum_history = Table(
    "quorum_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("state", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

transaction_sends = Table(
    "transaction_sends",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("txid", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
)
"""Every time the transaction watcher (coordinator.watcher) sent a round transaction again, and
what the node answered (``detail``: why it was sent; the node's reason when it refused)."""

signer_audit_heads = Table(
    "signer_audit_heads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("signer_id", String(128), nullable=False, index=True),
    Column("round_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
    Column("at", Float, nullable=False),
)
"""Each signer's audit log head (GetInfo's ``audit_seq``, ``audit_head``) as read after a round
(coordinator.audit_heads): kept here, outside the signer's host, so that a cut tail of its log
is seen (``vpool-signer audit verify --against SEQ:HASH``)."""

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", Float, nullable=False),
)

# --- migration 4: deposit acknowledgements -----------------------------------------------------

# Each signer's latest answer to SignerService.AcknowledgeDeposits for a deposit: acknowledged
# (final: the signer recorded it and will never sign the deposit's refund), or refused with its
# reason. A deposit is credited once enough distinct keys of its series acknowledged it.
deposit_acknowledgements = Table(
    "deposit_acknowledgements",
    metadata,
    Column("txid", String(64), primary_key=True),
    Column("vout", Integer, primary_key=True, autoincrement=False),
    Column("signer_id", String(128), primary_key=True),
    Column("fingerprint", String(8), nullable=False),
    Column("acknowledged", Boolean, nullable=False),
    Column("reason_code", String(64), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("at", Float, nullable=False),
)


# --- migration 6: the fee ladder, cancel and replace -------------------------------------------

# A client's cancel of a withdrawal that sits in a signed transaction: a cancel round replaces
# that transaction by one without its payment (coordinator.cancels).
withdrawal_cancels = Table(
    "withdrawal_cancels",
    metadata,
    Column("withdrawal_id", Integer, ForeignKey("withdrawals.id"), primary_key=True),
    Column("round_seq", Integer, nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("cancel_round_seq", Integer, nullable=True),
    # migration 10: an operator's cancel (AdminService.CancelRound): the withdrawal goes back to
    # the queue when the replacement confirms, instead of ``cancelled``
    Column("by_operator", Boolean, nullable=False, server_default=false()),
)


# --- migration 7: fee attestations -------------------------------------------------------------

# Each signer's attested statement of a round's transaction: its fee and each client's share
# (pool.attestation), as the signer returned it with its signatures; GetFeeStatement hands them
# to the clients, who verify them against the signers' keys they pinned.
fee_attestations = Table(
    "fee_attestations",
    metadata,
    Column("round_seq", Integer, ForeignKey("rounds.seq"), primary_key=True),
    Column("txid", String(64), primary_key=True),
    Column("signer_id", String(128), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("statement", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("at", Float, nullable=False),
)
Index("fee_attestations_txid", fee_attestations.c.txid)


def _migration_1(conn: Connection) -> None:
    """The first schema. Later migrations create their own tables by name, never all."""
    v1 = [
        schema_version, settings, series, series_indexes, addresses, blocks, utxos, withdrawals,
        withdrawal_outputs, withdrawal_events, rounds, round_transactions, signatures,
        signer_outcomes, fee_shares,
    ]  # fmt: skip
    metadata.create_all(conn, tables=v1)


def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    """ALTER TABLE ... ADD COLUMN unless the column is there (a database created after the
    column joined the table definition has it from migration 1)."""
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


def _migration_2(conn: Connection) -> None:
    """Deposits, signer liveness, quorum history, alerts; round kinds; block times."""
    v2 = [
        deposit_addresses, deposits, deposit_events, signer_health, signer_health_history,
        quorum_history, alerts,
    ]  # fmt: skip
    metadata.create_all(conn, tables=v2)
    _add_column(conn, "rounds", "kind", "VARCHAR(16) NOT NULL DEFAULT 'withdrawal'")
    _add_column(conn, "blocks", "time", "INTEGER NOT NULL DEFAULT 0")


def _migration_3(conn: Connection) -> None:
    """Series retirement heights; receive outputs found before deposits were tracked become
    credited deposits (they were spendable then; their raw transaction is not kept)."""
    _add_column(conn, "series", "retired_height", "INTEGER")
    tracked = select(deposits.c.txid).where(
        and_(deposits.c.txid == utxos.c.txid, deposits.c.vout == utxos.c.vout)
    )
    found = (
        select(
            utxos.c.txid, utxos.c.vout, utxos.c.script_pubkey, utxos.c.value, utxos.c.height,
            func.coalesce(blocks.c.hash, ""), literal(b""), literal("credited"), literal(0.0),
            literal(0.0),
        )
        .select_from(utxos.outerjoin(blocks, blocks.c.height == utxos.c.height))
        .where(and_(utxos.c.branch == 0, ~exists(tracked)))
    )  # fmt: skip
    columns = [
        "txid", "vout", "script_pubkey", "value", "height", "block_hash", "deposit_tx", "status",
        "created_at", "updated_at",
    ]  # fmt: skip
    conn.execute(insert(deposits).from_select(columns, found))


def _migration_4(conn: Connection) -> None:
    """Deposit acknowledgements by the signers (a deposit is credited after n - m + 1)."""
    metadata.create_all(conn, tables=[deposit_acknowledgements])


def _migration_5(conn: Connection) -> None:
    """The transaction watcher's record of re-sends and node refusals."""
    metadata.create_all(conn, tables=[transaction_sends])


def _migration_6(conn: Connection) -> None:
    """The signers' audit log heads, recorded after every round."""
    metadata.create_all(conn, tables=[signer_audit_heads])


def _migration_7(conn: Connection) -> None:
    """Deposit address registrations a signer missed, replayed when it returns."""
    metadata.create_all(conn, tables=[missed_registrations])


def _migration_8(conn: Connection) -> None:
    """The fee ladder: a round's transactions include the rungs that may replace them; cancel
    and replace: the cancels clients asked for, and what a cancel round's transaction replaces."""
    _add_column(conn, "round_transactions", "base_idx", "INTEGER")
    _add_column(conn, "round_transactions", "rung", "INTEGER NOT NULL DEFAULT 0")
    _add_column(conn, "round_transactions", "replaces", "VARCHAR(64)")
    metadata.create_all(conn, tables=[withdrawal_cancels])


def _migration_9(conn: Connection) -> None:
    """Fee attestations: each signer's signed statement of each transaction's fee and shares."""
    metadata.create_all(conn, tables=[fee_attestations])


def _migration_10(conn: Connection) -> None:
    """Operator cancels (AdminService.CancelRound of a signed or broadcast round)."""
    _add_column(conn, "withdrawal_cancels", "by_operator", "BOOLEAN NOT NULL DEFAULT FALSE")


def _migration_11(conn: Connection) -> None:
    """An index of withdrawal events by withdrawal: the expiry's query scanned every event."""
    withdrawal_events_withdrawal.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5, _migration_6,
    _migration_7, _migration_8, _migration_9, _migration_10, _migration_11,
]  # fmt: skip
"""MIGRATIONS[i] takes a database from version i to version i + 1."""


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver would begin a transaction only at the first write, leaving the reads before it
    # outside; take control of BEGIN (SQLAlchemy's documented recipe, with _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


_WRITER = "vpool_writer"
"""Set in a connection's info while ``transaction`` holds it."""


def _sqlite_begin(conn: Connection) -> None:
    # SQLite write transactions are serializable here: each (``transaction``) holds the single
    # writer lock from its first statement, so a read followed by a write (a round build, a
    # resubmission, a cancel) can never be overtaken. Reads (``engine.connect()``, which never
    # commits) begin deferred: WAL gives them a snapshot without the writer lock, so a long write
    # never makes a read (GetPoolStatus, the status page, metrics) wait out the busy timeout.
    # Code must not open a second writing connection while it holds one (it would wait for
    # itself).
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(_WRITER) else "BEGIN")


POOL_KEPT = 8
"""Connections the pool keeps open."""
POOL_CONNECTIONS = 64
"""Connections at most, and the server's workers (coordinator.server.WORKERS): no
call waits for a connection (SQLAlchemy's default is 15)."""


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://...``."""
    pool = {"pool_size": POOL_KEPT, "max_overflow": POOL_CONNECTIONS - POOL_KEPT}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, "vpool_schema"):
        return 0
    version = conn.execute(select(schema_version.c.version)).scalar()
    return int(version or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to the newest schema; return its version. Safe to run every start."""
    while True:
        with transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                # One coordinator migrates at a time.
                conn.execute(text("SELECT pg_advisory_xact_lock(7242)"))
            version = current_version(conn)
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"database schema version {version} is newer than this vpool "
                    f"({len(MIGRATIONS)}); upgrade vpool"
                )
            if version == len(MIGRATIONS):
                return version
            MIGRATIONS[version](conn)
            if version == 0:
                conn.execute(schema_version.insert().values(id=1, version=1))
            else:
                conn.execute(schema_version.update().values(version=version + 1))


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception (on SQLite it
    holds the writer lock from its first statement: ``_sqlite_begin``)."""
    with engine.connect() as conn:
        conn.info[_WRITER] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop(_WRITER, None)
