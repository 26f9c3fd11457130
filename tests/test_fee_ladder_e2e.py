"""The fee ladder on the whole regtest pool (bcoin node, three signer daemons, one behind the Jade
emulator, the coordinator daemon): a withdrawal transaction signed at 1 sat/vB while the fee
market wants 5 sat/vB climbs its ladder (signed in the round's one ceremony, no device asked
again) and confirms, and the clients' fee statements match the fee the chain shows; the same
transaction without a ladder never confirms and raises the ``ladder-spent`` alert.

The market: before each block, the node keeps only the transactions paying at least
``MARKET`` sat/kvB (``market_block``). bcoin has no replace-by-fee (a spend of an input of a
mempool transaction is refused ``bad-txns-inputs-spent``), so a stuck transaction is evicted
from its mempool, as a full mempool evicts its cheapest transactions, rather than replaced in
place as Bitcoin Core does; the watcher sends it again each block, and its next rung once due.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from coordinator.config import load_config
from coordinator.store import schema
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from pool.tx import Transaction
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 3
MARKET = 5_000
"""Sat/kvB the market asks: 5 sat/vB. The round pays 1 sat/vB (fee floor and ceiling)."""
RUNGS, STEP, BUMP_AFTER = 3, 2_000, 2
"""Rungs at 3, 5 and 7 sat/vB; one more rung every 2 blocks."""
BLOCKS = 10
"""Blocks the market runs before a transaction counts as stuck for good."""


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


@pytest.fixture(scope="module", params=[RUNGS, 0], ids=["ladder", "no-ladder"])
def devpool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevPool]:
    pool = DevPool(tmp_path_factory.mktemp("ladder"), round_deadline_seconds=30)
    pool.pool_settings["maturation"] = MATURATION
    pool.chain_settings.update(fee_floor=1_000, fee_ceiling=1_000)
    # Without a ladder the step is the one a cancel's replacement adds to the original's rate:
    # 1 + 5 = 6 sat/vB, above the market.
    step = STEP if request.param else MARKET
    pool.ladder_settings.update(rungs=request.param, step=step, bump_after_blocks=BUMP_AFTER)
    with pool:
        pool.fund([BTC // 2] * 2)
        yield pool


def fee_of(pool: DevPool, tx: Transaction) -> int:
    spent = sum(
        pool.transaction(i.prevout.txid_hex).outputs[i.prevout.vout].value for i in tx.inputs
    )
    return spent - sum(o.value for o in tx.outputs)


def market_block(pool: DevPool) -> None:
    """One block of the market: the mempool keeps what pays at least ``MARKET``; mined; the
    coordinator has read it."""
    node = pool.node
    keep, evict = [], False
    for txid in node.rpc("getrawmempool"):
        raw = node.chain.raw_transaction(str(txid))
        assert raw is not None
        tx = Transaction.parse(raw)
        if fee_of(pool, tx) * 1000 < MARKET * tx.vsize:
            evict = True
        else:
            keep.append(raw)
    if evict:
        node.drop_mempool()
        for raw in keep:
            node.rpc("sendrawtransaction", raw.hex())
    pool.mine(1)
    tip = node.chain.tip()[0]
    pool.wait_until(lambda: pool.status().tip_height == tip or None, f"the coordinator at {tip}")


def withdrawal(pool: DevPool, client: str, request_id: str) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client(client).GetWithdrawal(
        pb.GetWithdrawalRequest(request_id=request_id), timeout=CALL_TIMEOUT
    )
    return found


def sent_or_confirmed(pool: DevPool, client: str, request_id: str) -> bool | None:
    """The watcher has acted on the tip: the live version of the transaction paying the
    withdrawal (the one its outputs name) is in the mempool, or in a block."""
    current = withdrawal(pool, client, request_id)
    if current.confirmations:
        return True
    return pool.node.chain.mempool_entry(current.outputs[0].txid) is not None or None


def diagnosis(pool: DevPool) -> str:
    """The rounds, their transactions and the watcher's sends, for a failing assertion."""
    config = load_config(pool.directory / "coordinator" / "coordinator.toml")
    engine = schema.make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            txs = conn.execute(
                select(
                    schema.round_transactions.c.round_seq,
                    schema.round_transactions.c.txid,
                    schema.round_transactions.c.status,
                    schema.round_transactions.c.replaces,
                    schema.round_transactions.c.broadcast_at,
                )
            ).all()
            sends = conn.execute(select(schema.transaction_sends)).all()
            rounds = conn.execute(
                select(schema.rounds.c.seq, schema.rounds.c.status, schema.rounds.c.detail)
            ).all()
    finally:
        engine.dispose()
    return f"rounds {rounds}; transactions {txs}; sends {sends}"


def fee_statement(pool: DevPool, client: str, round_id: str) -> list[pb.FeeNotice]:
    statement = pool.client(client).GetFeeStatement(
        pb.GetFeeStatementRequest(page_size=100), timeout=CALL_TIMEOUT
    )
    return [n for n in statement.notices if n.round_id == round_id]


def test_a_transaction_stuck_at_1_sat_vb_confirms_only_with_its_fee_ladder(
    devpool: DevPool, request: pytest.FixtureRequest
) -> None:
    rungs = RUNGS if "[ladder]" in request.node.name else 0
    node = devpool.node.chain
    payments = {CLIENTS[0]: 30_000_000, CLIENTS[1]: 10_000_000}
    for client, amount in payments.items():
        devpool.client(client).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(
                request_id="stuck", address=destination(client), amount_sat=amount
            ),
            timeout=CALL_TIMEOUT,
        )
    response = devpool.run_round()
    assert response.round_id, response.detail
    devpool.wait_until(
        lambda: sent_or_confirmed(devpool, CLIENTS[0], "stuck"), "the round's transaction sent"
    )
    first = withdrawal(devpool, CLIENTS[0], "stuck").outputs[0].txid
    base = devpool.transaction(first)
    assert fee_of(devpool, base) * 1000 < MARKET * base.vsize  # stuck: below the market
    start = node.tip()[0] + 1
    blocks = 0
    while withdrawal(devpool, CLIENTS[0], "stuck").confirmations == 0 and blocks < BLOCKS:
        market_block(devpool)
        blocks += 1
        devpool.wait_until(
            lambda: sent_or_confirmed(devpool, CLIENTS[0], "stuck"), f"the watcher at {blocks}"
        )
    paid = withdrawal(devpool, CLIENTS[0], "stuck")
    if not rungs:
        print(f"without a ladder: not confirmed after {blocks} blocks at {base.vsize} vB, fee "
              f"{fee_of(devpool, base)} sat")  # fmt: skip
        assert paid.confirmations == 0 and paid.outputs[0].txid == first
        devpool.wait_until(
            lambda: any(a.startswith("ladder-spent: ") for a in devpool.status().alerts) or None,
            "the ladder-spent alert",
        )
        return
    confirmed = devpool.transaction(paid.outputs[0].txid)
    fee = fee_of(devpool, confirmed)
    first_fee = fee_of(devpool, base)
    print(f"with a ladder of {rungs} rungs: confirmed {blocks} blocks after it was sent, fee "
          f"{fee} sat for {confirmed.vsize} vB (first sent with {first_fee} sat)")  # fmt: skip
    assert paid.confirmations > 0 and paid.outputs[0].txid != first
    assert blocks == 2 * BUMP_AFTER + 1  # rung 2 (5 sat/vB) sent at +4, mined in the next block
    assert fee * 1000 >= MARKET * confirmed.vsize
    assert [i.prevout for i in confirmed.inputs] == [i.prevout for i in base.inputs]
    for client, amount in payments.items():  # each paid exactly once, by the rung
        assert devpool.received_by(
            address_to_script_pubkey(destination(client), REGTEST), start
        ) == (amount)
        assert withdrawal(devpool, client, "stuck").outputs[0].txid == confirmed.txid_hex
    notices = [n for c in payments for n in fee_statement(devpool, c, response.round_id)]
    assert {n.txid for n in notices} == {confirmed.txid_hex}
    assert sum(n.fee_sat for n in notices) == fee  # the statements follow the rung that confirmed
    devpool.mine(MATURATION)
    for client in payments:
        devpool.wait_until(
            lambda c=client: (
                withdrawal(devpool, c, "stuck").status  # type: ignore[misc]
                == pb.WITHDRAWAL_STATUS_COMPLETED
                or None
            ),
            f"{client}'s withdrawal completed",
        )


def test_a_cancel_of_a_stuck_withdrawal_yields_exactly_one_paid_version(
    devpool: DevPool, request: pytest.FixtureRequest
) -> None:
    """A withdrawal in a transaction stuck at 1 sat/vB is cancelled: the signers sign a
    replacement without it (a cancel round, at the pool's fee rate plus one ladder step), the
    watcher stops sending the original, the replacement confirms and pays the other withdrawal
    once; the cancelled one is ``cancelled``, never paid."""
    if "[ladder]" in request.node.name:
        pytest.skip("run on the pool without a ladder (the ladder would bump the original)")
    keeper, canceller = CLIENTS
    payments = {keeper: 20_000_000, canceller: 5_000_000}
    for client, amount in payments.items():
        devpool.client(client).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(
                request_id="cancel-me", address=destination(f"c-{client}"), amount_sat=amount
            ),
            timeout=CALL_TIMEOUT,
        )
    response = devpool.run_round()
    assert response.round_id, response.detail
    devpool.wait_until(lambda: sent_or_confirmed(devpool, keeper, "cancel-me"), "sent")
    original = withdrawal(devpool, keeper, "cancel-me").outputs[0].txid
    start = devpool.node.chain.tip()[0] + 1
    market_block(devpool)  # stuck: evicted, sent again
    devpool.wait_until(lambda: sent_or_confirmed(devpool, keeper, "cancel-me"), "sent again")
    # The market evicts the original before the replacement is sent: bcoin has no
    # replace-by-fee, and keeps a transaction it refused once in its reject filter for good.
    devpool.node.drop_mempool()
    answer = devpool.client(canceller).CancelWithdrawal(
        pb.CancelWithdrawalRequest(request_id="cancel-me"), timeout=CALL_TIMEOUT
    )
    assert answer.status == pb.WITHDRAWAL_STATUS_BROADCAST
    assert answer.reason.startswith("cancel requested")
    devpool.wait_until(
        lambda: (
            any(
                r.round_id != response.round_id
                and r.status in (pb.ROUND_STATUS_SIGNED, pb.ROUND_STATUS_BROADCAST)
                for r in devpool.admin()
                .ListRounds(pb.ListRoundsRequest(), timeout=CALL_TIMEOUT)
                .rounds
            )
            or None
        ),
        "the cancel round signed",
    )
    blocks = 0
    while withdrawal(devpool, keeper, "cancel-me").confirmations == 0 and blocks < BLOCKS:
        market_block(devpool)
        blocks += 1
    paid = withdrawal(devpool, keeper, "cancel-me")
    assert paid.confirmations > 0, f"not confirmed after {blocks} blocks: {diagnosis(devpool)}"
    assert paid.outputs[0].txid != original  # the replacement confirmed
    print(f"cancel: the replacement confirmed {blocks} blocks after the cancel")
    spk = {c: address_to_script_pubkey(destination(f"c-{c}"), REGTEST) for c in payments}
    assert devpool.received_by(spk[keeper], start) == payments[keeper]
    assert devpool.received_by(spk[canceller], start) == 0
    devpool.mine(MATURATION)
    devpool.wait_until(
        lambda: (
            withdrawal(devpool, canceller, "cancel-me").status == pb.WITHDRAWAL_STATUS_CANCELLED
            or None
        ),
        "the cancelled withdrawal cancelled",
    )
    devpool.wait_until(
        lambda: (
            withdrawal(devpool, keeper, "cancel-me").status == pb.WITHDRAWAL_STATUS_COMPLETED
            or None
        ),
        "the kept withdrawal completed",
    )
    devpool.mine(2)
    assert devpool.received_by(spk[keeper], start) == payments[keeper]  # exactly once
    assert devpool.received_by(spk[canceller], start) == 0
