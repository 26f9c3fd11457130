"""The coordinator for tests: its API in this process, or the whole daemon as a process.

``ApiServer`` serves the real servicers, server, scheduler, health board and store over gRPC
with mutual TLS on loopback. The chain is absent: the scheduler drives ``StandInRounds`` (it
records RunRoundNow, builds nothing); the signer pool has the configured signers (none by
default), and health checks run only when a test calls ``board.check``.
``CoordinatorDaemon`` runs ``vpool-coordinator serve`` as the operator would.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import Engine, func, select

from coordinator.api import AdminApi, CoordinatorApi
from coordinator.chain import BitcoinRPC
from coordinator.config import (
    ChainConfig,
    CoordinatorConfig,
    PoolConfig,
    RoundsConfig,
    ServerConfig,
    SignerEndpoint,
    TlsConfig,
)
from coordinator.health import HealthBoard
from coordinator.scheduler import RoundScheduler
from coordinator.server import start_server
from coordinator.signers import SignerPool
from coordinator.store.chain import BlockRecord, PoolAddress, add_block, add_utxo
from coordinator.store.schema import metadata, transaction
from coordinator.watch import ChangeSignal
from pool.address import encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.processes import Pki, client_credentials
from vpool.v1 import coordinator_pb2_grpc

BTC = 100_000_000
CLIENTS = ("alice", "bob")
ADMIN = "ops"
CALL_TIMEOUT = 20.0
MAX_WITHDRAWAL = 10 * BTC
_READY = re.compile(r"vpool-coordinator serving on (\S+)")


def address(tag: str) -> str:
    """A regtest P2WPKH address made from ``tag``."""
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


def coordinator_tls(pki: Pki) -> TlsConfig:
    """The coordinator's certificate (issued as role and name "coordinator") and the CA."""
    directory = pki.directory
    return TlsConfig(directory / "coordinator.pem", directory / "coordinator.key", pki.ca_path)


def signer_endpoints(addresses: Mapping[str, str]) -> tuple[SignerEndpoint, ...]:
    """Signer id → address as configured: tls_name is the DNS name in the test certificates."""
    return tuple(SignerEndpoint(i, address, "localhost") for i, address in addresses.items())


def dead_address() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def make_config(
    pki: Pki, directory: Path, store_url: str, signers: Sequence[SignerEndpoint] = ()
) -> CoordinatorConfig:
    cert, key = pki.issue("coordinator", "coordinator")
    return CoordinatorConfig(
        network=REGTEST,
        data_dir=directory,
        database_url=store_url,
        server=ServerConfig(
            listen="127.0.0.1:0",
            tls=TlsConfig(cert=cert, key=key, ca=pki.ca_path),
            clients=frozenset(CLIENTS),
            admins=frozenset({ADMIN}),
        ),
        chain=ChainConfig(rpc_url="http://127.0.0.1:1"),
        pool=PoolConfig(max_withdrawal=MAX_WITHDRAWAL),
        rounds=RoundsConfig(),
        signers=tuple(signers),
    )


@dataclass(frozen=True)
class StandInOutcome:
    round_id: str | None
    detail: str


@dataclass
class StandInRounds:
    """Stands in for coordinator.rounds.RoundEngine: counts the rounds it is asked to run."""

    runs: int = 0
    refund_runs: int = 0
    retries: int = 0
    """Calls of ``retry_waiting`` (the rounds that wait for signatures asked again)."""

    def run_round(self) -> StandInOutcome:
        self.runs += 1
        return StandInOutcome("", "stand-in: nothing to do")

    def run_refunds(self) -> StandInOutcome:
        self.refund_runs += 1
        return StandInOutcome(None, "stand-in: no deposit to refund")

    def resume(self) -> None:
        pass

    def track(self) -> None:
        pass

    def retry_waiting(self) -> None:
        self.retries += 1

    def run_cancels(self) -> None:
        pass

    def cancel_round(self, round_id: str) -> StandInOutcome:
        raise KeyError(round_id)


@dataclass
class ApiServer:
    """A running server; ``stop`` it (and start a new one to simulate a restart)."""

    pki: Pki
    config: CoordinatorConfig
    engine: Engine
    rounds: StandInRounds = field(default_factory=StandInRounds)

    def __post_init__(self) -> None:
        self.changes = ChangeSignal()
        self.signers = SignerPool.from_config(self.config)
        self.board = HealthBoard(
            self.engine, self.config.liveness, self.config.network, self.signers.signer_ids
        )
        self.scheduler = RoundScheduler(
            self.rounds, self.engine, self.config.rounds, self.changes, self.board
        )
        self.running = start_server(
            self.config.server,
            CoordinatorApi(
                self.config, self.engine, self.board, self.signers, self.changes, time.time
            ),
            AdminApi(
                self.config,
                self.engine,
                self.scheduler,
                self.signers,
                self.board,
                BitcoinRPC.from_config(self.config.chain),
                time.time,
            ),
        )
        self.address = self.running.address
        self._channels: list[grpc.Channel] = []

    def channel(self, role: str, name: str) -> grpc.Channel:
        cert, key = self.pki.issue(role, name)
        channel = grpc.secure_channel(self.address, client_credentials(self.pki.ca_path, cert, key))
        self._channels.append(channel)
        return channel

    def client(
        self, name: str = CLIENTS[0], role: str = "client"
    ) -> coordinator_pb2_grpc.CoordinatorServiceStub:
        return coordinator_pb2_grpc.CoordinatorServiceStub(self.channel(role, name))  # type: ignore[no-untyped-call]

    def admin(
        self, name: str = ADMIN, role: str = "admin"
    ) -> coordinator_pb2_grpc.AdminServiceStub:
        return coordinator_pb2_grpc.AdminServiceStub(self.channel(role, name))  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        self.changes.close()
        for channel in self._channels:
            channel.close()
        self.running.stop(0)
        self.signers.close()


FUNDING_SERIES = 99
"""The series id of the outputs ``fund_pool`` adds: not a series of the store, so no test's
series shows them."""


def fund_pool(engine: Engine, value: int, min_conf: int = PoolConfig().min_conf) -> None:
    """Give the pool ``value`` satoshis of confirmed change (one output, ``min_conf`` blocks
    deep), so that SubmitWithdrawal's admission (coordinator.admission) takes withdrawals up to
    that much."""
    with transaction(engine) as conn:
        for height in range(1, min_conf + 1):
            add_block(
                conn,
                BlockRecord(height, f"{height:064x}", f"{height - 1:064x}"),
                0.0,
                header_time=0,
            )
        script = bytes.fromhex("0020") + sha256(b"funding")
        add_utxo(conn, "ff" * 32, 0, value, script, PoolAddress(FUNDING_SERIES, 1, 0), 1, False)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table: what "nothing was stored" compares."""
    with engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in metadata.tables.items()
        }


def write_daemon_config(directory: Path, pki: Pki, store_url: str, rpc_url: str) -> Path:
    """``directory/coordinator.toml``: loopback port 0, ``CLIENTS`` and ``ADMIN``, no signers."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = pki.issue("coordinator", "coordinator")
    clients = ", ".join(f'"{c}"' for c in CLIENTS)
    path = directory / "coordinator.toml"
    path.write_text(
        f"""network = "regtest"
data_dir = "data"
database_url = "{store_url}"

[server]
listen = "127.0.0.1:0"
clients = [{clients}]
admins = ["{ADMIN}"]

[server.tls]
cert = "{cert}"
key = "{key}"
ca = "{pki.ca_path}"

[chain]
rpc_url = "{rpc_url}"
poll_seconds = 0.2
timeout_seconds = 2.0

[pool]
max_withdrawal = {MAX_WITHDRAWAL}
""",
        encoding="utf-8",
    )
    return path
