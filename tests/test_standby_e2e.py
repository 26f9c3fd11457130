"""An active and a standby coordinator on one PostgreSQL database (coordinator.leadership), with
real processes: a bcoin regtest node, three signer daemons, two ``vpool-coordinator serve`` on
the same configuration, their clients over mutual TLS. Failovers are SIGKILLs, in the middle of
rounds too; every payment is read back from the node's blocks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.config import load_config
from coordinator.crash_points import (
    AFTER_BROADCAST,
    AFTER_ROUND_PERSISTED,
    AFTER_SIGNATURES_PERSISTED,
    CRASH_ENV,
)
from coordinator.leadership import EXIT_STEPPED_DOWN
from coordinator.server import COORDINATOR_SERVICE
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool, default_signers
from vpool.devnet.processes import CoordinatorDaemon
from vpool.v1 import coordinator_pb2 as pb
from vpool.v1 import coordinator_pb2_grpc

MATURATION = 2
COMPLETED = pb.WITHDRAWAL_STATUS_COMPLETED
UNPAID = (pb.WITHDRAWAL_STATUS_PENDING, pb.WITHDRAWAL_STATUS_IN_ROUND, pb.WITHDRAWAL_STATUS_SIGNED)
TAKEOVER_SECONDS = 10.0
"""A standby is active this long after the active one died, at most (standby.poll_seconds is
1 s; the rest is PostgreSQL noticing the closed session and the round's resumption)."""

SPARES: list[CoordinatorDaemon] = []
"""The coordinators a test started besides the pool's own (stopped with the pool)."""


@pytest.fixture(scope="module")
def devpool(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    schema = f"standby_{uuid.uuid4().hex[:10]}"
    conninfo = postgres_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    pool = DevPool(
        tmp_path_factory.mktemp("standby"),
        signers=default_signers(3, jades=0),
        database_url=f"{postgres_database}?options=-csearch_path%3D{schema}",
    )
    pool.pool_settings["maturation"] = MATURATION
    with pool:
        pool.fund([2 * BTC] * 8)
        try:
            yield pool
        finally:
            for daemon in SPARES:
                daemon.stop()


def spare(pool: DevPool, env: dict[str, str] | None = None) -> CoordinatorDaemon:
    """One more coordinator on the pool's configuration (stopped with the pool)."""
    daemon = CoordinatorDaemon(pool.coordinator_config, env=env)
    SPARES.append(daemon)
    return daemon


def client(pool: DevPool, daemon: CoordinatorDaemon) -> coordinator_pb2_grpc.CoordinatorServiceStub:
    channel = grpc.secure_channel(daemon.address, pool.pki.credentials(CLIENTS[0]))
    return coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]


def status_of(pool: DevPool, daemon: CoordinatorDaemon) -> pb.PoolStatus:
    found: pb.PoolStatus = client(pool, daemon).GetPoolStatus(
        pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT
    )
    return found


def destination(pool: DevPool, tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(f"{pool.directory}/{tag}".encode())[:20])


def submit(pool: DevPool, request_id: str, address: str, amount: int) -> None:
    pool.client().SubmitWithdrawal(
        pb.SubmitWithdrawalRequest(request_id=request_id, address=address, amount_sat=amount),
        timeout=CALL_TIMEOUT,
    )


def withdrawal(pool: DevPool, request_id: str) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client().GetWithdrawal(
        pb.GetWithdrawalRequest(request_id=request_id), timeout=CALL_TIMEOUT
    )
    return found


def take_over(pool: DevPool, dead: CoordinatorDaemon, standby: CoordinatorDaemon) -> float:
    """Wait until ``standby`` is active (after ``dead`` was killed); the seconds it took. The
    pool's own calls go to ``standby`` from then on."""
    dead.proc.wait(timeout=30)
    died = time.monotonic()
    pool.wait_until(
        lambda: status_of(pool, standby).role == "active" or None,
        "the standby to take over",
        timeout=TAKEOVER_SECONDS * 3,
    )
    took = time.monotonic() - died
    dead.stop()
    pool.coordinator = standby
    return took


def paid_exactly_once(pool: DevPool, payments: dict[str, int], start: int) -> None:
    pool.mine(MATURATION)
    pool.wait_until(
        lambda: all(withdrawal(pool, r).status == COMPLETED for r in payments) or None,
        "the withdrawals to complete",
    )
    for request_id, amount in payments.items():
        script = address_to_script_pubkey(destination(pool, request_id), REGTEST)
        assert pool.received_by(script, start) == amount, request_id


def test_a_second_coordinator_on_the_store_is_a_standby_naming_the_active_one(
    devpool: DevPool,
) -> None:
    active = devpool.coordinator
    assert active is not None
    standby = spare(devpool)
    mine, other = status_of(devpool, active), status_of(devpool, standby)
    assert (mine.role, other.role) == ("active", "standby")
    assert mine.active_coordinator == other.active_coordinator
    assert mine.active_coordinator.endswith(f" at {active.address}")
    assert other.health == "NOT_SERVING"
    assert other.health_detail == f"standby: the active coordinator is {mine.active_coordinator}"
    health = health_pb2_grpc.HealthStub(
        grpc.secure_channel(standby.address, devpool.pki.credentials(CLIENTS[0]))
    )
    answer = health.Check(health_pb2.HealthCheckRequest(service=COORDINATOR_SERVICE), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    standby.stop()


def test_a_standby_serves_reads_and_refuses_writes_naming_the_active_one(
    devpool: DevPool,
) -> None:
    active = devpool.coordinator
    assert active is not None
    standby = spare(devpool)
    submit(devpool, "seen-by-standby", destination(devpool, "seen-by-standby"), 1_000_000)
    listed = client(devpool, standby).ListWithdrawals(
        pb.ListWithdrawalsRequest(page_size=1000), timeout=CALL_TIMEOUT
    )
    assert "seen-by-standby" in [w.request_id for w in listed.withdrawals]
    with pytest.raises(grpc.RpcError) as refused:
        client(devpool, standby).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(
                request_id="to-standby",
                address=destination(devpool, "to-standby"),
                amount_sat=1_000_000,
            ),
            timeout=CALL_TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"the active coordinator is {status_of(devpool, active).active_coordinator}" in (
        refused.value.details() or ""
    )
    with pytest.raises(grpc.RpcError) as absent:
        withdrawal(devpool, "to-standby")
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND
    standby.stop()


def test_the_standby_takes_over_within_seconds_when_the_active_one_is_killed(
    devpool: DevPool,
) -> None:
    active = devpool.coordinator
    assert active is not None
    standby = spare(devpool)
    start = devpool.node.chain.tip()[0] + 1
    active.proc.kill()
    took = take_over(devpool, active, standby)
    print(f"takeover after SIGKILL of an idle active coordinator: {took:.2f} s")
    assert took < TAKEOVER_SECONDS
    submit(devpool, "after-takeover", destination(devpool, "after-takeover"), 1_500_000)
    assert devpool.run_round().round_id
    paid_exactly_once(devpool, {"after-takeover": 1_500_000}, start)


@pytest.mark.parametrize(
    "crash_at", [AFTER_ROUND_PERSISTED, AFTER_SIGNATURES_PERSISTED, AFTER_BROADCAST]
)
def test_a_failover_in_the_middle_of_a_round_pays_every_withdrawal_exactly_once(
    devpool: DevPool, crash_at: str
) -> None:
    """The active coordinator SIGKILLs itself at a step of its round; the standby takes the
    lock, resumes the round from the store, and every withdrawal is paid once."""
    assert devpool.coordinator is not None
    devpool.coordinator.stop()
    crashing = devpool.start_coordinator(env={CRASH_ENV: crash_at})
    standby = spare(devpool)
    assert status_of(devpool, standby).role == "standby"
    start = devpool.node.chain.tip()[0] + 1
    payments = {f"{crash_at}-{i}": 1_000_000 + 10_000 * i for i in range(3)}
    for request_id, amount in payments.items():
        submit(devpool, request_id, destination(devpool, request_id), amount)
    with pytest.raises(grpc.RpcError):
        devpool.run_round()
    assert crashing.proc.wait(timeout=30) == -9  # SIGKILL at the crash point
    took = take_over(devpool, crashing, standby)
    print(f"takeover after SIGKILL {crash_at}: {took:.2f} s")
    assert took < TAKEOVER_SECONDS
    devpool.wait_until(
        lambda: all(withdrawal(devpool, r).status not in UNPAID for r in payments) or None,
        "the new active coordinator to finish the round",
    )
    paid_exactly_once(devpool, payments, start)


def test_an_active_killed_while_its_round_waits_for_signers_is_replaced_and_the_round_paid_once(
    devpool: DevPool,
) -> None:
    active = devpool.coordinator
    assert active is not None
    standby = spare(devpool)
    start = devpool.node.chain.tip()[0] + 1
    devpool.stop_signer("signer-1")
    devpool.stop_signer("signer-3")
    try:
        submit(devpool, "waiting", destination(devpool, "waiting"), 2_000_000)
        response = devpool.run_round()
        assert "waits for signatures since" in response.detail, response.detail
        active.proc.kill()
        took = take_over(devpool, active, standby)
        assert took < TAKEOVER_SECONDS
        assert withdrawal(devpool, "waiting").status == pb.WITHDRAWAL_STATUS_IN_ROUND
    finally:
        devpool.restart_signer("signer-1")
        devpool.restart_signer("signer-3")
    devpool.wait_until(
        lambda: withdrawal(devpool, "waiting").status not in UNPAID or None,
        "the new active coordinator to complete the waiting round",
    )
    paid_exactly_once(devpool, {"waiting": 2_000_000}, start)


def test_an_active_that_loses_its_lock_session_steps_down_and_exits_for_a_restart(
    devpool: DevPool,
) -> None:
    """A lost lock connection (here: its session ended by PostgreSQL) is stepping down: the
    process exits with EXIT_STEPPED_DOWN, and the standby takes over."""
    active = devpool.coordinator
    assert active is not None
    standby = spare(devpool)
    name = status_of(devpool, active).active_coordinator
    conninfo = load_config(devpool.coordinator_config).database_url.split("?")[0]
    with psycopg.connect(conninfo.replace("+psycopg", ""), autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"vpool-coordinator {name}",),
        ).fetchall()
    assert ended == [(True,)]
    assert active.proc.wait(timeout=30) == EXIT_STEPPED_DOWN
    assert take_over(devpool, active, standby) < TAKEOVER_SECONDS
    submit(devpool, "after-step-down", destination(devpool, "after-step-down"), 1_200_000)
    assert devpool.run_round().round_id


@pytest.fixture(scope="module")
def sqlite_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    """A pool on SQLite: its coordinators share one database file, on one machine."""
    pool = DevPool(tmp_path_factory.mktemp("standby-sqlite"), signers=default_signers(3, jades=0))
    pool.pool_settings["maturation"] = MATURATION
    with pool:
        pool.fund([2 * BTC] * 2)
        try:
            yield pool
        finally:
            for daemon in SPARES:
                daemon.stop()


def test_on_sqlite_a_second_coordinator_is_a_standby_and_takes_over_when_the_first_dies(
    sqlite_pool: DevPool,
) -> None:
    active = sqlite_pool.coordinator
    assert active is not None
    standby = spare(sqlite_pool)
    assert status_of(sqlite_pool, standby).role == "standby"
    assert status_of(sqlite_pool, standby).active_coordinator.endswith(f" at {active.address}")
    start = sqlite_pool.node.chain.tip()[0] + 1
    active.proc.kill()
    assert take_over(sqlite_pool, active, standby) < TAKEOVER_SECONDS
    submit(sqlite_pool, "sqlite-after", destination(sqlite_pool, "sqlite-after"), 1_100_000)
    assert sqlite_pool.run_round().round_id
    paid_exactly_once(sqlite_pool, {"sqlite-after": 1_100_000}, start)
