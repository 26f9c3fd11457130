"""The whole pool, end to end: a bcoin regtest node, three signer daemons (two software keystores,
one HWI backend driving the Jade-protocol emulator), the coordinator daemon, and its clients over
mutual TLS. Nothing is stood in for; each test reads its results back from the node.

One pool per store (SQLite, the machine's PostgreSQL), shared by the tests of this module; each
test uses its own withdrawals and destinations and leaves every signer running.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from sqlalchemy import select

from coordinator.config import load_config
from coordinator.store import schema
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, SERIES_ID, DevPool
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 3
COMPLETED = pb.WITHDRAWAL_STATUS_COMPLETED


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def devpool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevPool]:
    url = ""
    if request.param == "postgresql":
        base: str = request.getfixturevalue("postgres_database")
        schema = f"e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(
            base.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        ) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{base}?options=-csearch_path%3D{schema}"
    pool = DevPool(tmp_path_factory.mktemp("devpool"), database_url=url, round_deadline_seconds=6)
    pool.pool_settings["maturation"] = MATURATION
    with pool:
        pool.fund([2 * BTC] * 12)
        yield pool


def submit(pool: DevPool, client: str, request_id: str, address: str, amount: int) -> None:
    pool.client(client).SubmitWithdrawal(
        pb.SubmitWithdrawalRequest(request_id=request_id, address=address, amount_sat=amount),
        timeout=CALL_TIMEOUT,
    )


def status(pool: DevPool, client: str, request_id: str) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client(client).GetWithdrawal(
        pb.GetWithdrawalRequest(request_id=request_id), timeout=CALL_TIMEOUT
    )
    return found


def mature(pool: DevPool, withdrawals: list[tuple[str, str]]) -> None:
    pool.mine(MATURATION)
    pool.wait_until(
        lambda: all(status(pool, c, r).status == COMPLETED for c, r in withdrawals) or None,
        "the withdrawals to complete",
    )


def round_fees(pool: DevPool) -> int:
    rounds = pool.admin().ListRounds(pb.ListRoundsRequest(page_size=1000), timeout=CALL_TIMEOUT)
    return sum(r.fee_sat for r in rounds.rounds if r.status != pb.ROUND_STATUS_ABANDONED)


def outcomes(pool: DevPool, round_id: str) -> dict[str, str]:
    found = pool.admin().GetRound(pb.GetRoundRequest(round_id=round_id), timeout=CALL_TIMEOUT)
    return {s.signer_id: s.outcome for s in found.signers}


def test_sixty_withdrawals_from_two_clients_are_paid_exactly(devpool: DevPool) -> None:
    start = devpool.node.chain.tip()[0] + 1
    payments: dict[tuple[str, str], tuple[str, int]] = {}
    for k in range(60):
        client = CLIENTS[k % 2]
        request_id = f"sixty-{k}"
        address = destination(f"{devpool.directory}/sixty/{k}")
        amount = 1_000_000 + 7_919 * k
        submit(devpool, client, request_id, address, amount)
        payments[(client, request_id)] = (address, amount)
    response = devpool.run_round()
    assert response.round_id, response.detail
    assert set(outcomes(devpool, response.round_id).values()) == {"signed"}
    mature(devpool, list(payments))
    for address, amount in payments.values():
        spk = address_to_script_pubkey(address, REGTEST)
        assert devpool.received_by(spk, start) == amount
    paid = sum(amount for _, amount in payments.values())
    devpool.wait_until(
        lambda: devpool.pool_balance() == devpool.funded - paid - round_fees(devpool) or None,
        "the pool balance to settle",
    )


def test_a_round_completes_with_one_signer_down_and_names_it(devpool: DevPool) -> None:
    devpool.stop_signer("signer-2")
    try:
        submit(devpool, CLIENTS[0], "one-down", destination("one-down"), 3_000_000)
        response = devpool.run_round()
        assert outcomes(devpool, response.round_id)["signer-2"] == "down"
        assert status(devpool, CLIENTS[0], "one-down").status == pb.WITHDRAWAL_STATUS_BROADCAST
    finally:
        devpool.restart_signer("signer-2")
    mature(devpool, [(CLIENTS[0], "one-down")])


def test_a_round_one_signer_signed_waits_is_reported_and_completes_when_its_signers_return(
    devpool: DevPool,
) -> None:
    """Issue 10's wedge: a round that got a signature and not m by its deadline is not abandoned
    (abandoning it left the signature behind, and every later round spending its coins was
    refused DOUBLE_SIGN); it waits, keeps its withdrawals, shows in pool status, refuses
    CancelRound, and completes when its signers return. Nothing is paid twice."""
    start = devpool.node.chain.tip()[0] + 1
    address = destination(f"{devpool.directory}/two-down")
    devpool.stop_signer("signer-1")
    devpool.stop_signer("signer-3")
    try:
        submit(devpool, CLIENTS[1], "two-down", address, 4_000_000)
        response = devpool.run_round()
        assert "waits for signatures since" in response.detail, response.detail
        found = devpool.admin().GetRound(
            pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
        )
        assert found.status == pb.ROUND_STATUS_SIGNING
        assert list(found.signed_by) == ["signer-2"]
        assert {s.signer_id: s.outcome for s in found.signers} == {
            "signer-1": "down",
            "signer-2": "signed",
            "signer-3": "down",
        }
        awaited = {s.signer_id: s.awaited for s in found.signers}
        assert awaited["signer-1"].startswith("awaiting signer-1 (down) since")
        assert status(devpool, CLIENTS[1], "two-down").status == pb.WITHDRAWAL_STATUS_IN_ROUND
        alerts = devpool.status().alerts
        assert any(
            a.startswith(f"round {response.round_id} waits for signatures since")
            and "signers that signed: signer-2" in a
            for a in alerts
        ), alerts
        with pytest.raises(grpc.RpcError) as refused:
            devpool.admin().CancelRound(
                pb.CancelRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "a partial signature could still be completed by a colluding signer" in (
            refused.value.details() or ""
        )
    finally:
        devpool.restart_signer("signer-1")
        devpool.restart_signer("signer-3")
    later = destination(f"{devpool.directory}/after-wedge")
    submit(devpool, CLIENTS[1], "after-wedge", later, 2_500_000)
    again = devpool.run_round()
    assert again.round_id and again.round_id != response.round_id, again.detail
    mature(devpool, [(CLIENTS[1], "two-down"), (CLIENTS[1], "after-wedge")])
    assert devpool.received_by(address_to_script_pubkey(address, REGTEST), start) == 4_000_000
    assert devpool.received_by(address_to_script_pubkey(later, REGTEST), start) == 2_500_000
    assert not [a for a in devpool.status().alerts if response.round_id in a]


def test_a_round_no_signer_signed_is_abandoned_at_its_deadline_and_paid_later(
    devpool: DevPool,
) -> None:
    signer_ids = ("signer-1", "signer-2", "signer-3")
    for signer_id in signer_ids:
        devpool.stop_signer(signer_id)
    try:
        submit(devpool, CLIENTS[0], "all-down", destination("all-down"), 4_500_000)
        response = devpool.run_round()
        assert response.detail.startswith("abandoned"), response.detail
        found = devpool.admin().GetRound(
            pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
        )
        assert found.status == pb.ROUND_STATUS_ABANDONED
        assert {s.outcome for s in found.signers} == {"down"}
        assert status(devpool, CLIENTS[0], "all-down").status == pb.WITHDRAWAL_STATUS_PENDING
    finally:
        for signer_id in signer_ids:
            devpool.restart_signer(signer_id)
    again = devpool.run_round()
    assert again.round_id, again.detail
    mature(devpool, [(CLIENTS[0], "all-down")])


@pytest.mark.parametrize(
    "crash_at", ["after_round_persisted", "after_signatures_persisted", "after_broadcast"]
)
def test_a_coordinator_killed_mid_round_pays_exactly_once(devpool: DevPool, crash_at: str) -> None:
    start = devpool.node.chain.tip()[0] + 1
    address = destination(f"{devpool.directory}/crash/{crash_at}")
    request_id = f"crash-{crash_at}"
    submit(devpool, CLIENTS[0], request_id, address, 5_000_000)
    assert devpool.coordinator is not None
    devpool.coordinator.stop()
    crashing = devpool.start_coordinator(env={"VPOOL_CRASH_AT": crash_at})
    with pytest.raises(grpc.RpcError):
        devpool.run_round()
    assert crashing.proc.wait(timeout=30) != 0  # killed by SIGKILL at the crash point
    devpool.start_coordinator()
    devpool.wait_until(  # broadcast, not just signed: blocks mined before would miss it
        lambda: (
            status(devpool, CLIENTS[0], request_id).status
            not in (
                pb.WITHDRAWAL_STATUS_PENDING,
                pb.WITHDRAWAL_STATUS_IN_ROUND,
                pb.WITHDRAWAL_STATUS_SIGNED,
            )
            or None
        ),
        "the restarted coordinator to finish the round",
    )
    mature(devpool, [(CLIENTS[0], request_id)])
    assert devpool.received_by(address_to_script_pubkey(address, REGTEST), start) == 5_000_000


def test_the_coordinator_keeps_its_state_in_the_configured_store(
    devpool: DevPool, request: pytest.FixtureRequest
) -> None:
    """Guard: the PostgreSQL variant really runs on PostgreSQL (and the SQLite one on SQLite):
    the configured database holds the series and exactly the rounds the coordinator reports."""
    config = load_config(devpool.directory / "coordinator" / "coordinator.toml")
    listed = devpool.admin().ListRounds(pb.ListRoundsRequest(page_size=1000), timeout=CALL_TIMEOUT)
    engine = schema.make_engine(config.database_url)
    try:
        assert engine.dialect.name == request.node.callspec.params["devpool"]
        with engine.connect() as conn:
            assert conn.execute(select(schema.series.c.id)).scalars().all() == [SERIES_ID]
            stored = conn.execute(select(schema.rounds.c.manifest_hash)).scalars().all()
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(r.round_id for r in listed.rounds)
