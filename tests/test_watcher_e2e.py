"""Every withdrawal finishes, on the whole regtest pool (bcoin node, three signer daemons, the
coordinator daemon): a transaction the node dropped from its mempool is sent again, one a deep
reorganisation took out after it completed is sent again and paid once, a withdrawal the pool
can never pay is refused at submission, and one deferred too long expires.

One pool (SQLite) for the module; the reorganisation test runs last (the blocks it invalidates
hold coinbases of the funding wallet).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import Engine, select

from coordinator.config import load_config
from coordinator.store import schema
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 3
EXPIRY_SECONDS = 3.0
CLIENT = CLIENTS[0]


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(tmp_path_factory.mktemp("watcher"), round_deadline_seconds=20)
    pool.pool_settings["maturation"] = MATURATION
    pool.rounds_settings["withdrawal_expiry_seconds"] = EXPIRY_SECONDS
    with pool:
        pool.fund([BTC // 2] * 3)
        yield pool


def submit(pool: DevPool, request_id: str, address: str, amount: int) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client(CLIENT).SubmitWithdrawal(
        pb.SubmitWithdrawalRequest(request_id=request_id, address=address, amount_sat=amount),
        timeout=CALL_TIMEOUT,
    )
    return found


def withdrawal(pool: DevPool, request_id: str) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client(CLIENT).GetWithdrawal(
        pb.GetWithdrawalRequest(request_id=request_id), timeout=CALL_TIMEOUT
    )
    return found


def wait_for_status(pool: DevPool, request_id: str, status: int) -> pb.Withdrawal:
    def found() -> pb.Withdrawal | None:
        current = withdrawal(pool, request_id)
        return current if current.status == status else None

    name = pb.WithdrawalStatus.Name(status)
    return pool.wait_until(found, f"withdrawal {request_id} to be {name}")


def paid_in_one_round(pool: DevPool, request_id: str, address: str, amount: int) -> str:
    """Submit, run a round; the txid of the broadcast transaction paying it."""
    submit(pool, request_id, address, amount)
    response = pool.run_round()
    assert response.round_id, response.detail
    found = wait_for_status(pool, request_id, pb.WITHDRAWAL_STATUS_BROADCAST)
    (output,) = found.outputs
    return str(output.txid)


def mine_one_seen(pool: DevPool) -> None:
    """Mine a block and wait until the coordinator has read it."""
    pool.mine(1)
    tip = pool.node.chain.tip()[0]
    pool.wait_until(lambda: pool.status().tip_height == tip or None, f"the coordinator at {tip}")


def store(pool: DevPool) -> Engine:
    """The coordinator's store (dispose it after use)."""
    config = load_config(pool.directory / "coordinator" / "coordinator.toml")
    return schema.make_engine(config.database_url)


def sends(pool: DevPool, txid: str) -> list[tuple[bool, str]]:
    """The watcher's record of the sends of ``txid`` (accepted, detail)."""
    engine = store(pool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(schema.transaction_sends.c.accepted, schema.transaction_sends.c.detail)
                .where(schema.transaction_sends.c.txid == txid)
                .order_by(schema.transaction_sends.c.id)
            ).all()
    finally:
        engine.dispose()
    return [(bool(r.accepted), str(r.detail)) for r in rows]


@pytest.mark.parametrize(
    ("amount", "limit"),
    [(21_000_000 * BTC, "spendable balance"), (9 * BTC, "spendable balance")],
    ids=["21-million-btc", "9-btc-against-1.5"],
)
def test_a_withdrawal_the_pool_cannot_pay_is_refused_at_submission_naming_the_limit(
    devpool: DevPool, amount: int, limit: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        submit(devpool, f"unpayable-{amount}", destination(f"unpayable-{amount}"), amount)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details().startswith(f"amount_sat: {amount} (plus extra fee 0) is above")
    assert limit in info.value.details()
    listed = devpool.client(CLIENT).ListWithdrawals(
        pb.ListWithdrawalsRequest(page_size=100), timeout=CALL_TIMEOUT
    )
    assert all(w.request_id != f"unpayable-{amount}" for w in listed.withdrawals)


def test_a_transaction_dropped_from_the_mempool_is_sent_again_and_confirms(
    devpool: DevPool,
) -> None:
    node = devpool.node.chain
    address = destination("dropped")
    txid = paid_in_one_round(devpool, "dropped", address, 10_000_000)
    start = node.tip()[0] + 1
    assert node.mempool_entry(txid) is not None
    devpool.node.drop_mempool()
    assert node.mempool_entry(txid) is None and node.raw_transaction(txid) is None
    blocks = 0
    while withdrawal(devpool, "dropped").confirmations == 0:
        assert blocks < 5, f"not confirmed after {blocks} blocks: {sends(devpool, txid)}"
        mine_one_seen(devpool)
        blocks += 1
        if blocks == 1:  # the watcher checks at each new block: missing, so sent again
            devpool.wait_until(lambda: node.mempool_entry(txid), "the watcher to send it again")
    print(f"the dropped transaction confirmed {blocks} blocks after it was dropped")
    assert blocks == 2  # the first block shows it missing (sent again), the second holds it
    assert sends(devpool, txid) == [(True, "in neither the node's mempool nor a block: sent again")]
    assert devpool.received_by(address_to_script_pubkey(address, REGTEST), start) == 10_000_000
    devpool.mine(MATURATION)
    wait_for_status(devpool, "dropped", pb.WITHDRAWAL_STATUS_COMPLETED)


def test_a_withdrawal_deferred_longer_than_the_expiry_expires_with_a_reason(
    devpool: DevPool,
) -> None:
    spendable = devpool.confirmed_balance()
    # Admitted (it fits the balance), but the round's fee does not: deferred.
    submit(devpool, "too-big-after-fees", destination("too-big"), spendable - 100)
    response = devpool.run_round()
    assert not response.round_id, response.detail
    wait_for_status(devpool, "too-big-after-fees", pb.WITHDRAWAL_STATUS_DEFERRED)
    expired = wait_for_status(devpool, "too-big-after-fees", pb.WITHDRAWAL_STATUS_EXPIRED)
    assert "longer than the pool's withdrawal expiry of 3 s" in expired.reason
    assert "rounds.withdrawal_expiry_seconds" in expired.reason
    # Final: a later round does not take it.
    devpool.run_round()
    assert withdrawal(devpool, "too-big-after-fees").status == pb.WITHDRAWAL_STATUS_EXPIRED


def test_a_completed_withdrawal_reorganised_out_three_deep_is_sent_again_and_paid_once(
    devpool: DevPool,
) -> None:
    node = devpool.node.chain
    address = destination("reorged")
    spk = address_to_script_pubkey(address, REGTEST)
    txid = paid_in_one_round(devpool, "reorged", address, 20_000_000)
    start = node.tip()[0] + 1
    holding = devpool.mine(MATURATION)[0]  # the block holding it, then two on top: 3 deep
    wait_for_status(devpool, "reorged", pb.WITHDRAWAL_STATUS_COMPLETED)
    assert devpool.received_by(spk, start) == 20_000_000
    devpool.node.invalidate(holding)  # bcoin drops the block's transactions
    assert node.raw_transaction(txid) is None and devpool.received_by(spk, start) == 0
    devpool.mine(MATURATION + 1)  # a longer chain without it
    devpool.wait_until(
        lambda: (
            any(
                a == f"transaction-reorged: transaction {txid} left the chain after it completed "
                "(a reorganisation); it is back to broadcast and sent again"
                for a in devpool.status().alerts
            )
            or None
        ),
        "the reorganisation alert",
    )
    devpool.wait_until(lambda: node.mempool_entry(txid), "the transaction to be sent again")
    assert withdrawal(devpool, "reorged").status == pb.WITHDRAWAL_STATUS_COMPLETED  # final
    mine_one_seen(devpool)
    assert devpool.received_by(spk, start) == 20_000_000  # paid exactly once
    devpool.mine(MATURATION)
    devpool.wait_until(
        lambda: (
            all(
                r.status in (pb.ROUND_STATUS_COMPLETED, pb.ROUND_STATUS_ABANDONED)
                for r in devpool.admin()
                .ListRounds(pb.ListRoundsRequest(page_size=100), timeout=CALL_TIMEOUT)
                .rounds
            )
            or None
        ),
        "every round to complete again",
    )
    assert devpool.received_by(spk, start) == 20_000_000
