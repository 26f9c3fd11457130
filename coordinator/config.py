"""`coordinator.toml`: the coordinator's configuration, read once at start.

Every error names the key that is wrong (``chain.rpc_url: missing``). Relative paths are resolved
against the directory of the configuration file. See docs/coordinator.example.toml.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from pool.manifest import MAX_MONEY, MAX_STANDARD_WEIGHT, MIN_MAX_WEIGHT
from pool.networks import NETWORKS, Network, get_network

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
CONSENSUS_COINBASE_MATURITY = 100
"""Consensus: a coinbase output is spendable after this many confirmations."""


class ConfigError(ValueError):
    """A configuration value that is missing or wrong; the message names the key."""


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
    fee_ceiling: int = 100_000
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
    withdrawal_expiry_seconds: float = 7 * 86_400.0
    """A withdrawal ``deferred`` (the pool lacked funds) for longer than this since it was
    submitted becomes ``expired``, final (coordinator.expiry)."""


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


@dataclass(frozen=True)
class LivenessConfig:
    health_interval_seconds: float = 30.0
    down_after_missed: int = 2
    """A signer that misses this many health checks in a row is down."""
    quorum_fraction: Fraction = Fraction(2, 3)
    """The pool is ok while its healthy signers are at least m and at least this share of n."""


@dataclass(frozen=True)
class SignerEndpoint:
    id: str
    address: str
    """host:port of the signer's gRPC server."""
    tls_name: str
    """The name in the signer's certificate (defaults to its id)."""


@dataclass(frozen=True)
class SeriesConfig:
    id: int
    receive: str
    change: str


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
    series: tuple[SeriesConfig, ...] = field(default=())
    deposits: DepositsConfig = field(default_factory=DepositsConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    """Series to create at first start (later ones come through AdminService.AddSeries)."""


_read: dict[int, tuple[str, dict[str, Any], set[str]]] = {}
"""The tables of the document being loaded: where each is, and the keys read from it (so that
``_check_no_unknown_keys`` can refuse the others). Filled by ``_get`` and ``_table``."""


def _note(doc: dict[str, Any], where: str, key: str) -> None:
    _read.setdefault(id(doc), (where, doc, set()))[2].add(key)


def _check_no_unknown_keys() -> None:
    """A key nothing read is a typo (``min_confs``, ``[livenes]``): refuse it, as the signer does,
    instead of silently keeping the default in force."""
    for where, doc, known in _read.values():
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"{where}{unknown[0]}: unknown key")


def _table(doc: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    _note(doc, where, key)
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key}: must be a table")
    _read.setdefault(id(value), (f"{where}{key}.", value, set()))
    return value


def _entries(doc: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    """The tables of the array ``[[key]]``, each with its place (``signers[0].``)."""
    entries = []
    for i, entry in enumerate(_get(doc, key, list, "", [])):
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}[{i}]: must be a table")
        _read.setdefault(id(entry), (f"{key}[{i}].", entry, set()))
        entries.append((f"{key}[{i}].", entry))
    return entries


def _get(doc: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    _note(doc, where, key)
    if key not in doc:
        if default is ...:
            raise ConfigError(f"{where}{key}: missing")
        return default
    value = doc[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key}: must be a {kind.__name__}")
    return value


def _path(base: Path, doc: dict[str, Any], key: str, where: str, must_exist: bool = True) -> Path:
    path: Path = base / _get(doc, key, str, where)
    if must_exist and not path.exists():
        raise ConfigError(f"{where}{key}: file not found: {path}")
    return path


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
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _read.clear()
    try:
        config = _load(doc, path.resolve().parent)
        _check_no_unknown_keys()
    finally:
        _read.clear()
    return config


def _load(doc: dict[str, Any], base: Path) -> CoordinatorConfig:
    _read.setdefault(id(doc), ("", doc, set()))

    network_name = _get(doc, "network", str, "")
    if network_name not in NETWORKS:
        raise ConfigError(f"network: unknown network {network_name!r}")
    data_dir = base / _get(doc, "data_dir", str, "", "data")
    database_url = _get(doc, "database_url", str, "", "") or f"sqlite:///{data_dir}/coordinator.db"

    s = _table(doc, "server")
    t = _table(s, "tls", "server.")
    server = ServerConfig(
        listen=_get(s, "listen", str, "server.", "127.0.0.1:50060"),
        tls=TlsConfig(
            cert=_path(base, t, "cert", "server.tls."),
            key=_path(base, t, "key", "server.tls."),
            ca=_path(base, t, "ca", "server.tls."),
        ),
        clients=frozenset(_get(s, "clients", list, "server.", [])),
        admins=frozenset(_get(s, "admins", list, "server.", [])),
        max_message_bytes=_get(s, "max_message_bytes", int, "server.", 16 * 1024 * 1024),
        metrics_listen=_get(s, "metrics_listen", str, "server.", ""),
    )
    host, colon, port = server.metrics_listen.rpartition(":")
    if server.metrics_listen and not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError("server.metrics_listen: expected host:port (port 1 to 65535)")
    _at_least(server.max_message_bytes, 1024, "server.max_message_bytes", " bytes")
    _at_most(server.max_message_bytes, MAX_MESSAGE_BYTES, "server.max_message_bytes", " bytes")

    c = _table(doc, "chain")
    cookie = c.get("cookie_file")
    chain = ChainConfig(
        rpc_url=_get(c, "rpc_url", str, "chain."),
        rpc_user=_get(c, "rpc_user", str, "chain.", ""),
        rpc_password=_get(c, "rpc_password", str, "chain.", ""),
        cookie_file=None if cookie is None else _path(base, c, "cookie_file", "chain.", False),
        poll_seconds=_get(c, "poll_seconds", float, "chain.", 2.0),
        fee_target_blocks=_get(c, "fee_target_blocks", int, "chain.", 6),
        fee_floor=_get(c, "fee_floor", int, "chain.", 1_000),
        fee_ceiling=_get(c, "fee_ceiling", int, "chain.", 100_000),
        timeout_seconds=_get(c, "timeout_seconds", float, "chain.", 30.0),
        scan_start_height=_get(c, "scan_start_height", int, "chain.", 0),
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

    p = _table(doc, "pool")
    defaults = PoolConfig()
    pool = PoolConfig(
        **{
            name: _get(p, name, int, "pool.", getattr(defaults, name))
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

    r = _table(doc, "rounds")
    rounds = RoundsConfig(
        interval_seconds=_get(r, "interval_seconds", float, "rounds.", 60.0),
        queue_threshold=_get(r, "queue_threshold", int, "rounds.", 100),
        sign_deadline_seconds=_get(r, "sign_deadline_seconds", float, "rounds.", 30.0),
        round_deadline_seconds=_get(r, "round_deadline_seconds", float, "rounds.", 3600.0),
        poll_seconds=_get(r, "poll_seconds", float, "rounds.", 3.0),
        max_requests=_get(r, "max_requests", int, "rounds.", 3_000),
        max_inputs=_get(r, "max_inputs", int, "rounds.", 2_000),
        withdrawal_expiry_seconds=_get(
            r, "withdrawal_expiry_seconds", float, "rounds.", 7 * 86_400.0
        ),
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

    signers = []
    for where, entry in _entries(doc, "signers"):
        signer_id = _get(entry, "id", str, where)
        signers.append(
            SignerEndpoint(
                id=signer_id,
                address=_get(entry, "address", str, where),
                tls_name=_get(entry, "tls_name", str, where, signer_id),
            )
        )
    ids = [s.id for s in signers]
    if len(set(ids)) != len(ids):
        raise ConfigError("signers: duplicate signer id")

    series = tuple(
        SeriesConfig(
            id=_get(entry, "id", int, where),
            receive=_get(entry, "receive", str, where),
            change=_get(entry, "change", str, where),
        )
        for where, entry in _entries(doc, "series")
    )
    for i, one in enumerate(series):
        if not 0 <= one.id < 2**31:
            raise ConfigError(f"series[{i}].id: must be from 0 to 2^31 - 1")
    d = _table(doc, "deposits")
    deposits = DepositsConfig(
        confirmations=_get(d, "confirmations", int, "deposits.", 3),
        min_deposit=_get(d, "min_deposit", int, "deposits.", 10_000),
        refund_threshold=_get(d, "refund_threshold", int, "deposits.", 2_000),
        outage_deposits=_get(d, "outage_deposits", str, "deposits.", "refund"),
        retired_grace_blocks=_get(d, "retired_grace_blocks", int, "deposits.", 4_032),
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

    lv = _table(doc, "liveness")
    fraction_text = _get(lv, "quorum_fraction", str, "liveness.", "2/3")
    try:
        fraction = Fraction(fraction_text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError('liveness.quorum_fraction: expected a fraction like "2/3"') from None
    if not 0 <= fraction < 1:
        raise ConfigError("liveness.quorum_fraction: must be at least 0 and below 1")
    liveness = LivenessConfig(
        health_interval_seconds=_get(lv, "health_interval_seconds", float, "liveness.", 30.0),
        down_after_missed=_get(lv, "down_after_missed", int, "liveness.", 2),
        quorum_fraction=fraction,
    )
    _seconds(liveness.health_interval_seconds, "liveness.health_interval_seconds")
    _positive(liveness.down_after_missed, "liveness.down_after_missed")
    _at_most(liveness.down_after_missed, 1_000, "liveness.down_after_missed")

    return CoordinatorConfig(
        network=get_network(network_name),
        data_dir=data_dir,
        database_url=database_url,
        server=server,
        chain=chain,
        pool=pool,
        rounds=rounds,
        signers=tuple(signers),
        series=series,
        deposits=deposits,
        liveness=liveness,
    )
