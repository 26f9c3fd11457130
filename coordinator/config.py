"""`coordinator.toml`: the coordinator's configuration, read once at start.

Every error names the key that is wrong (``chain.rpc_url: missing``). Relative paths are resolved
against the directory of the configuration file. See docs/coordinator.example.toml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from pool.manifest import (
    MAX_LADDER_RUNGS,
    MAX_LADDER_STEP,
    MAX_MONEY,
    MAX_STANDARD_WEIGHT,
    MIN_LADDER_STEP,
    MIN_MAX_WEIGHT,
)
from pool.networks import NETWORKS, Network, get_network
from vpool.config_reader import ConfigError as ConfigError  # raised by load_config
from vpool.config_reader import Table, read_document

MIN_FEE_RATE = 1_000
"""The lowest fee floor, sat per 1000 vB: nodes relay nothing below 1 sat/vB."""
MAX_FEE_RATE = 10_000_000
"""The highest fee ceiling, sat per 1000 vB (10,000 sat/vB): above it a typo, not a fee."""
MAX_FEE_TARGET_BLOCKS = 1_008
"""The longest fee target a node estimates for (Bitcoin Core's ``estimatesmartfee``)."""
MAX_DEPTH = 100_000
"""The most confirmations any depth setting may ask for (about two years of blocks)."""
MAX_SECONDS = 366 * 86_400.0
"""The longest time any duration setting may be (a year): above it, a typo."""
MAX_MESSAGE_BYTES = 2**31 - 1
"""gRPC's limit on a message size."""
MAX_LOOKAHEAD = 100_000
"""The most unused addresses the scanner watches ahead per branch."""
MIN_STANDBY_POLL = 0.05
MAX_STANDBY_POLL = 60.0
MAX_STANDBY_NAME = 40
"""A name fits PostgreSQL's application_name (63 bytes) with the listen address after it."""
CONSENSUS_COINBASE_MATURITY = 100
"""Consensus: a coinbase output is spendable after this many confirmations."""


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    tls: TlsConfig
    clients: frozenset[str]
    """Certificate names of role "client" that may call CoordinatorService."""
    admins: frozenset[str]
    """Certificate names of role "admin" that may call AdminService."""
    max_message_bytes: int = 16 * 1024 * 1024
    metrics_listen: str = ""
    """host:port of the Prometheus endpoint (coordinator.metrics); empty: none."""


@dataclass(frozen=True)
class ChainConfig:
    rpc_url: str
    rpc_user: str = ""
    rpc_password: str = ""
    cookie_file: Path | None = None
    poll_seconds: float = 2.0
    fee_target_blocks: int = 6
    fee_floor: int = 1_000
    """Satoshis per 1000 vB."""
    fee_ceiling: int = 50_000
    """Satoshis per 1000 vB (50 sat/vB): half the signers' default `max_fee_rate`, so that a
    transaction without change (its dust remainder left to the fee) still passes their limit."""
    timeout_seconds: float = 30.0
    scan_start_height: int = 0
    """First block the scanner reads on a new database: the height the pool was created at
    (0 scans from genesis, right on regtest, far too slow on mainnet)."""


@dataclass(frozen=True)
class PoolConfig:
    min_conf: int = 6
    """Confirmations an input needs before a round may spend it."""
    maturation: int = 6
    """Confirmations after which a withdrawal is completed."""
    dust_limit: int = 546
    max_weight: int = 400_000
    max_withdrawal: int = 21_000_000 * 100_000_000
    address_lookahead: int = 100
    coinbase_maturity: int = 100


@dataclass(frozen=True)
class RoundsConfig:
    interval_seconds: float = 60.0
    queue_threshold: int = 100
    """A round starts as soon as this many withdrawals wait, without waiting for the timer."""
    sign_deadline_seconds: float = 30.0
    """Deadline of one SignRound call: a call is a poll (a signer whose device has not answered
    says ``pending``, or overruns this deadline, and is asked again). Before its device is asked
    a signer rebuilds and checks the round against its node: a 1,000-withdrawal 11-of-15 round
    (541 inputs) took its 15 signers 6.5 to 10 s on a loaded 2-core machine (``make bench``),
    so 30 s leaves room; a call answers ``pending`` once the device is asked anyway."""
    round_deadline_seconds: float = 3600.0
    """How long a round collects answers, sized for a person at a device. At the deadline a
    round without any valid signature is abandoned; one with a signature waits
    (coordinator.rounds)."""
    poll_seconds: float = 3.0
    """Pause between two SignRound calls to a signer that has not answered for good."""
    max_requests: int = 3_000
    """Most withdrawals in one withdrawal round (the oldest queued first; the others wait): at
    most every signer's ``max_requests``."""
    max_inputs: int = 2_000
    """Most UTXOs in one withdrawal round's manifest (the first in spending order; the others
    wait): at most every signer's ``max_inputs``."""
    max_tx_inputs: int = 0
    max_tx_payments: int = 0
    """Caps on each transaction's inputs and payments (0: none), written into the manifest
    together with the smallest limits the signers' devices report (coordinator.withdrawal_rounds
    ``shape_caps``): for devices that report none, or a person who reviews fewer payments."""
    withdrawal_expiry_seconds: float = 7 * 86_400.0
    """A withdrawal ``deferred`` (the pool lacked funds) for longer than this since it was
    submitted becomes ``expired``, final (coordinator.expiry)."""


@dataclass(frozen=True)
class LadderConfig:
    """The fee ladder (``[ladder]``; pool/ladder.py): replacements of each withdrawal
    transaction at rising fee rates, signed in the round's one ceremony."""

    rungs: int = 0
    """Rungs per transaction, 0 to 10 (0: no ladder)."""
    step: int = 5_000
    """Satoshis per 1000 vB each rung adds to the rate of the one below, 1,000 to 1,000,000."""
    bump_after_blocks: int = 3
    """A transaction still unconfirmed this many blocks after its round's pinned tip (rung k:
    (k + 1) times as many) is replaced by its next rung (coordinator.watcher)."""

    def manifest_step(self) -> int:
        """The step as the manifest carries it (0 without a ladder)."""
        return self.step if self.rungs else 0


@dataclass(frozen=True)
class DepositsConfig:
    confirmations: int = 3
    """Confirmations after which a deposit is credited."""
    min_deposit: int = 10_000
    """Smaller deposits are refunded (when at least refund_threshold) or recorded as dust."""
    refund_threshold: int = 2_000
    """Smaller deposits are dust: a refund would cost about as much as it returns."""
    outage_deposits: str = "refund"
    """Deposits confirmed while the pool was degraded: "refund" them, or "credit" them."""
    retired_grace_blocks: int = 4_032
    """Deposits to a series that stopped being active longer ago than this are refunded."""
    refund_while_degraded: bool = False
    """The seed's second option: while the pool is degraded (fewer than ``quorum_fraction`` of
    the signers healthy) but at least m of the active series' key holders are, refund rounds
    still run (withdrawal rounds do not). Safe: a refund needs m signatures and a credit n - m
    + 1 acknowledgements, so any m signers include one that refuses to refund a credited
    deposit."""


@dataclass(frozen=True)
class LivenessConfig:
    health_interval_seconds: float = 30.0
    down_after_missed: int = 2
    """A signer that misses this many health checks in a row is down."""
    quorum_fraction: Fraction = Fraction(2, 3)
    """The pool is ok while its healthy signers are at least m and at least this share of n."""


@dataclass(frozen=True)
class StandbyConfig:
    name: str = ""
    """How this coordinator is named to the others and in errors (default: host name and
    listen address)."""
    poll_seconds: float = 1.0
    """How often a standby tries the lock, and the active one checks it still holds it."""


@dataclass(frozen=True)
class SignerEndpoint:
    id: str
    address: str
    """host:port of the signer's gRPC server."""
    tls_name: str
    """The name in the signer's certificate (defaults to its id)."""


@dataclass(frozen=True)
class CoordinatorConfig:
    network: Network
    data_dir: Path
    database_url: str
    server: ServerConfig
    chain: ChainConfig
    pool: PoolConfig
    rounds: RoundsConfig
    signers: tuple[SignerEndpoint, ...]
    deposits: DepositsConfig = field(default_factory=DepositsConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    standby: StandbyConfig = field(default_factory=StandbyConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)


def _positive(value: int | float, name: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number")
    if value <= 0:
        raise ConfigError(f"{name}: must be positive")


def _seconds(value: float, name: str) -> None:
    """A duration: positive, finite, at most ``MAX_SECONDS``."""
    _positive(value, name)
    _at_most(value, MAX_SECONDS, name, " seconds (a year)")


def _at_least(value: int | float, low: int | float, name: str, what: str = "") -> None:
    if value < low:
        raise ConfigError(f"{name}: must be at least {low}{what}")


def _at_most(value: int | float, high: int | float, name: str, what: str = "") -> None:
    if value > high:
        raise ConfigError(f"{name}: must be at most {high}{what}")


def load_config(path: Path) -> CoordinatorConfig:
    """Read and check ``coordinator.toml``: every key known, typed and within its bounds."""
    doc = Table(read_document(path), path.resolve().parent)
    config = _load(doc)
    doc.finish()
    return config


def _load(doc: Table) -> CoordinatorConfig:
    network_name = doc.value("network", str)
    if network_name not in NETWORKS:
        raise ConfigError(f"network: unknown network {network_name!r}")
    data_dir = doc.base / doc.value("data_dir", str, "data")
    database_url = doc.value("database_url", str, "") or f"sqlite:///{data_dir}/coordinator.db"

    s = doc.table("server")
    t = s.table("tls")
    server = ServerConfig(
        listen=s.value("listen", str, "127.0.0.1:50060"),
        tls=TlsConfig(
            cert=t.path("cert"),
            key=t.path("key"),
            ca=t.path("ca"),
        ),
        clients=frozenset(s.value("clients", list, [])),
        admins=frozenset(s.value("admins", list, [])),
        max_message_bytes=s.value("max_message_bytes", int, 16 * 1024 * 1024),
        metrics_listen=s.value("metrics_listen", str, ""),
    )
    host, colon, port = server.metrics_listen.rpartition(":")
    if server.metrics_listen and not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError("server.metrics_listen: expected host:port (port 1 to 65535)")
    _at_least(server.max_message_bytes, 1024, "server.max_message_bytes", " bytes")
    _at_most(server.max_message_bytes, MAX_MESSAGE_BYTES, "server.max_message_bytes", " bytes")

    c = doc.table("chain")
    chain = ChainConfig(
        rpc_url=c.value("rpc_url", str),
        rpc_user=c.value("rpc_user", str, ""),
        rpc_password=c.value("rpc_password", str, ""),
        cookie_file=c.path("cookie_file", must_exist=False) if c.has("cookie_file") else None,
        poll_seconds=c.value("poll_seconds", float, 2.0),
        fee_target_blocks=c.value("fee_target_blocks", int, 6),
        fee_floor=c.value("fee_floor", int, 1_000),
        fee_ceiling=c.value("fee_ceiling", int, 50_000),
        timeout_seconds=c.value("timeout_seconds", float, 30.0),
        scan_start_height=c.value("scan_start_height", int, 0),
    )
    if chain.scan_start_height < 0:
        raise ConfigError("chain.scan_start_height: must not be negative")
    _seconds(chain.poll_seconds, "chain.poll_seconds")
    _seconds(chain.timeout_seconds, "chain.timeout_seconds")
    _at_least(chain.fee_target_blocks, 1, "chain.fee_target_blocks")
    _at_most(chain.fee_target_blocks, MAX_FEE_TARGET_BLOCKS, "chain.fee_target_blocks")
    _at_least(chain.fee_floor, MIN_FEE_RATE, "chain.fee_floor", " sat/1000 vB (1 sat/vB)")
    _at_most(chain.fee_ceiling, MAX_FEE_RATE, "chain.fee_ceiling", " sat/1000 vB (10,000 sat/vB)")
    if chain.fee_floor > chain.fee_ceiling:
        raise ConfigError("chain.fee_floor: must not exceed chain.fee_ceiling")

    p = doc.table("pool")
    defaults = PoolConfig()
    pool = PoolConfig(
        **{
            name: p.value(name, int, getattr(defaults, name))
            for name in PoolConfig.__dataclass_fields__
        }
    )
    for name in PoolConfig.__dataclass_fields__:
        _positive(getattr(pool, name), f"pool.{name}")
    _at_least(pool.max_weight, MIN_MAX_WEIGHT, "pool.max_weight", " weight units")
    _at_most(pool.max_weight, MAX_STANDARD_WEIGHT, "pool.max_weight", " (the standard limit)")
    _at_most(pool.max_withdrawal, MAX_MONEY, "pool.max_withdrawal", " sat (21 million BTC)")
    _at_most(pool.dust_limit, pool.max_withdrawal, "pool.dust_limit", " (pool.max_withdrawal)")
    for name in ("min_conf", "maturation"):
        _at_most(getattr(pool, name), MAX_DEPTH, f"pool.{name}", " confirmations")
    _at_most(pool.address_lookahead, MAX_LOOKAHEAD, "pool.address_lookahead")
    _at_least(
        pool.coinbase_maturity,
        CONSENSUS_COINBASE_MATURITY,
        "pool.coinbase_maturity",
        " confirmations (consensus)",
    )
    _at_most(pool.coinbase_maturity, MAX_DEPTH, "pool.coinbase_maturity", " confirmations")

    r = doc.table("rounds")
    rounds = RoundsConfig(
        interval_seconds=r.value("interval_seconds", float, 60.0),
        queue_threshold=r.value("queue_threshold", int, 100),
        sign_deadline_seconds=r.value("sign_deadline_seconds", float, 30.0),
        round_deadline_seconds=r.value("round_deadline_seconds", float, 3600.0),
        poll_seconds=r.value("poll_seconds", float, 3.0),
        max_requests=r.value("max_requests", int, 3_000),
        max_inputs=r.value("max_inputs", int, 2_000),
        max_tx_inputs=r.value("max_tx_inputs", int, 0),
        max_tx_payments=r.value("max_tx_payments", int, 0),
        withdrawal_expiry_seconds=r.value("withdrawal_expiry_seconds", float, 7 * 86_400.0),
    )
    for name in (
        "interval_seconds",
        "sign_deadline_seconds",
        "round_deadline_seconds",
        "poll_seconds",
    ):
        _seconds(getattr(rounds, name), f"rounds.{name}")
    _seconds(rounds.withdrawal_expiry_seconds, "rounds.withdrawal_expiry_seconds")
    for name in ("queue_threshold", "max_requests", "max_inputs"):
        _positive(getattr(rounds, name), f"rounds.{name}")
    for name in ("max_tx_inputs", "max_tx_payments"):
        _at_least(getattr(rounds, name), 0, f"rounds.{name}", " (0: no cap)")
        _at_most(getattr(rounds, name), 2**32 - 1, f"rounds.{name}")

    signers = []
    for entry in doc.tables("signers"):
        signer_id = entry.value("id", str)
        signers.append(
            SignerEndpoint(
                id=signer_id,
                address=entry.value("address", str),
                tls_name=entry.value("tls_name", str, signer_id),
            )
        )
    ids = [s.id for s in signers]
    if len(set(ids)) != len(ids):
        raise ConfigError("signers: duplicate signer id")

    if doc.has("series"):
        raise ConfigError(
            "series: not read from the configuration any more: add a series with `vpool admin "
            "add-series`, which registers it on the signers first (a store holding a series its "
            "signers never registered is repaired by the same command, with the same id and "
            "descriptors)"
        )
    d = doc.table("deposits")
    deposits = DepositsConfig(
        confirmations=d.value("confirmations", int, 3),
        min_deposit=d.value("min_deposit", int, 10_000),
        refund_threshold=d.value("refund_threshold", int, 2_000),
        outage_deposits=d.value("outage_deposits", str, "refund"),
        retired_grace_blocks=d.value("retired_grace_blocks", int, 4_032),
        refund_while_degraded=d.value("refund_while_degraded", bool, False),
    )
    if deposits.outage_deposits not in ("refund", "credit"):
        raise ConfigError('deposits.outage_deposits: must be "refund" or "credit"')
    for name in ("confirmations", "min_deposit", "refund_threshold", "retired_grace_blocks"):
        _positive(getattr(deposits, name), f"deposits.{name}")
    if deposits.refund_threshold > deposits.min_deposit:
        raise ConfigError("deposits.refund_threshold: must not exceed deposits.min_deposit")
    _at_most(deposits.min_deposit, MAX_MONEY, "deposits.min_deposit", " sat (21 million BTC)")
    _at_most(deposits.confirmations, MAX_DEPTH, "deposits.confirmations", " confirmations")
    _at_most(deposits.retired_grace_blocks, MAX_DEPTH, "deposits.retired_grace_blocks", " blocks")

    lv = doc.table("liveness")
    fraction_text = lv.value("quorum_fraction", str, "2/3")
    try:
        fraction = Fraction(fraction_text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError('liveness.quorum_fraction: expected a fraction like "2/3"') from None
    if not 0 <= fraction < 1:
        raise ConfigError("liveness.quorum_fraction: must be at least 0 and below 1")
    liveness = LivenessConfig(
        health_interval_seconds=lv.value("health_interval_seconds", float, 30.0),
        down_after_missed=lv.value("down_after_missed", int, 2),
        quorum_fraction=fraction,
    )
    _seconds(liveness.health_interval_seconds, "liveness.health_interval_seconds")
    _positive(liveness.down_after_missed, "liveness.down_after_missed")
    _at_most(liveness.down_after_missed, 1_000, "liveness.down_after_missed")

    sb = doc.table("standby")
    standby = StandbyConfig(
        name=sb.value("name", str, ""),
        poll_seconds=sb.value("poll_seconds", float, 1.0),
    )
    _seconds(standby.poll_seconds, "standby.poll_seconds")
    _at_least(standby.poll_seconds, MIN_STANDBY_POLL, "standby.poll_seconds", " seconds")
    _at_most(standby.poll_seconds, MAX_STANDBY_POLL, "standby.poll_seconds", " seconds")
    if len(standby.name.encode()) > MAX_STANDBY_NAME or not standby.name.isprintable():
        raise ConfigError(f"standby.name: at most {MAX_STANDBY_NAME} bytes of printable characters")

    la = doc.table("ladder")
    ladder = LadderConfig(
        rungs=la.value("rungs", int, 0),
        step=la.value("step", int, 5_000),
        bump_after_blocks=la.value("bump_after_blocks", int, 3),
    )
    if not 0 <= ladder.rungs <= MAX_LADDER_RUNGS:
        raise ConfigError(f"ladder.rungs: must be from 0 to {MAX_LADDER_RUNGS}")
    _at_least(ladder.step, MIN_LADDER_STEP, "ladder.step", " sat/1000 vB (1 sat/vB)")
    _at_most(ladder.step, MAX_LADDER_STEP, "ladder.step", " sat/1000 vB")
    _positive(ladder.bump_after_blocks, "ladder.bump_after_blocks")
    _at_most(ladder.bump_after_blocks, MAX_DEPTH, "ladder.bump_after_blocks", " blocks")

    return CoordinatorConfig(
        network=get_network(network_name),
        data_dir=data_dir,
        database_url=database_url,
        server=server,
        chain=chain,
        pool=pool,
        rounds=rounds,
        signers=tuple(signers),
        deposits=deposits,
        liveness=liveness,
        standby=standby,
        ladder=ladder,
    )
