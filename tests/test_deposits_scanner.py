"""Deposits as the scanner classifies them, against a real bcoin regtest node, on both stores.

Every test starts its scanner at the node's tip (a new database) and pays its own outputs. The
quorum history is written directly (coordinator.store.liveness), as the health checks would.
"""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy import Engine

from coordinator.config import DepositsConfig, PoolConfig
from coordinator.scanner import Scanner
from coordinator.store import alerts as astore
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import liveness as lstore
from coordinator.store.deposits import DepositAddress, Status
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, Series
from tests.credit_fixtures import credit_as_if_every_signer_acknowledged
from tests.factories import make_series, p2wpkh
from tests.regtest_fixtures import Regtest
from tests.store_fixtures import add_active_series

S1 = make_series(1, 2, [11, 12, 13])
S2 = make_series(2, 2, [14, 15, 16])
MINER = p2wpkh("deposit scanner miner")
RULES = DepositsConfig(
    confirmations=2, min_deposit=10_000, refund_threshold=2_000, retired_grace_blocks=1
)


@pytest.fixture
def pool_engine(engine: Engine) -> Engine:
    """A store that knows S1 (active), its receive address 0 handed to alice's user u1."""
    add_active_series(engine, S1)
    with engine.begin() as conn:
        address = DepositAddress(S1.derive(RECEIVE, 0).script_pubkey, 1, 0, "alice", "u1", "", 0.0)
        dstore.record_address(conn, address)
    return engine


def scanner_for(engine: Engine, regtest: Regtest, rules: DepositsConfig = RULES) -> Scanner:
    """A scanner of a new database, starting after the node's current tip."""
    start = regtest.node.chain.tip()[0] + 1
    config = PoolConfig(address_lookahead=5)
    return Scanner(engine, regtest.node.chain, REGTEST, config, rules, start_height=start)


@pytest.fixture
def scanner(pool_engine: Engine, regtest: Regtest) -> Scanner:
    return scanner_for(pool_engine, regtest)


def pay(regtest: Regtest, *outputs: tuple[bytes, int]) -> str:
    """Pay the outputs from the dev wallet and mine one block; the txid."""
    txid = regtest.wallet.fund(regtest.node, list(outputs))
    regtest.node.mine(1, MINER)
    return txid


def receive(series: Series, index: int) -> bytes:
    return series.derive(RECEIVE, index).script_pubkey


def get(engine: Engine, txid: str, vout: int = 0) -> dstore.Deposit:
    with engine.connect() as conn:
        found = dstore.get(conn, txid, vout)
    assert found is not None
    return found


def statuses(engine: Engine, txid: str, client: str = "") -> list[tuple[Status, str]]:
    """The events of the deposits of ``txid`` (to addresses handed to ``client``)."""
    with engine.connect() as conn:
        events = dstore.events_after(conn, client, 0, 1000)
    return [(e.status, e.detail) for e in events if e.txid == txid]


def eligible(engine: Engine, tip: int) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        found = cstore.eligible_utxos(conn, tip, 1, 100)
    return {(u.outpoint.txid_hex, u.outpoint.vout) for u in found}


def balance(engine: Engine, tip: int) -> cstore.Balance:
    with engine.connect() as conn:
        return cstore.balances(conn, tip, 1)[1]


def mine_again(regtest: Regtest, deposit: dstore.Deposit) -> None:
    """Send the deposit's transaction again (bcoin's invalidateblock drops the transactions of
    the block) and mine it in a new block."""
    regtest.node.chain.send_raw_transaction(deposit.deposit_tx)
    regtest.node.mine(1, MINER)


def record_quorum(engine: Engine, state: str, at: float) -> None:
    with engine.begin() as conn:
        lstore.record_quorum(conn, state, at, "written by the test")


def test_a_deposit_is_seen_confirming_confirmed_then_credited_once_acknowledged(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = pay(regtest, (receive(S1, 0), 70_000))
    tip = scanner.sync()
    found = get(pool_engine, txid)
    assert (found.status, found.client_id, found.user_id, found.value) == (
        Status.CONFIRMING, "alice", "u1", 70_000,
    )  # fmt: skip
    assert found.deposit_tx == regtest.node.chain.raw_transaction(txid)
    assert (txid, 0) not in eligible(pool_engine, tip)
    assert balance(pool_engine, tip) == cstore.Balance(0, 70_000, 1)
    regtest.node.mine(1, MINER)
    tip = scanner.sync()
    confirmed = get(pool_engine, txid)
    assert confirmed.status is Status.CONFIRMED
    assert statuses(pool_engine, txid, "alice")[-1] == (
        Status.CONFIRMED, "2 confirmations; awaiting acknowledgements: 0 of 2",
    )  # fmt: skip
    assert (txid, 0) not in eligible(pool_engine, tip)
    assert balance(pool_engine, tip) == cstore.Balance(0, 70_000, 1)
    credit_as_if_every_signer_acknowledged(pool_engine)
    assert get(pool_engine, txid).status is Status.CREDITED
    assert (txid, 0) in eligible(pool_engine, tip)
    assert balance(pool_engine, tip) == cstore.Balance(70_000, 0, 1)
    assert [s for s, _ in statuses(pool_engine, txid, "alice")] == [
        Status.SEEN, Status.CONFIRMING, Status.CONFIRMED, Status.CREDITED,
    ]  # fmt: skip


def test_dust_and_deposits_below_the_minimum_are_never_spendable(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = pay(regtest, (receive(S1, 1), 1_999), (receive(S1, 2), 9_999), (receive(S1, 3), 10_000))
    regtest.node.mine(2, MINER)
    tip = scanner.sync()
    dust, small, enough = (get(pool_engine, txid, vout) for vout in range(3))
    assert (dust.status, dust.reason) == (
        Status.DUST, "1999 sat is below the refund threshold of 2000",
    )  # fmt: skip
    assert (small.status, small.reason) == (
        Status.REFUND_PENDING, "9999 sat is below the minimum deposit of 10000",
    )  # fmt: skip
    assert enough.status is Status.CONFIRMED
    credit_as_if_every_signer_acknowledged(pool_engine)
    assert eligible(pool_engine, tip) == {(txid, 2)}
    assert balance(pool_engine, tip) == cstore.Balance(10_000, 0, 1)
    with pool_engine.connect() as conn:
        assert [d.outpoint for d in dstore.refund_pending(conn)] == [(txid, 1)]


def test_change_outputs_are_not_deposits(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = pay(regtest, (S1.derive(CHANGE, 0).script_pubkey, 1_000))
    tip = scanner.sync()
    with pool_engine.connect() as conn:
        assert dstore.get(conn, txid, 0) is None
    assert (txid, 0) in eligible(pool_engine, tip)


def test_a_deposit_mined_while_the_pool_was_degraded_is_to_be_refunded(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    record_quorum(pool_engine, "degraded", 0.0)
    during = pay(regtest, (receive(S1, 1), 50_000))
    scanner.sync()
    ok_at = time.time() + 0.001  # after the block of `during` was processed
    record_quorum(pool_engine, "ok", ok_at)
    while time.time() < math.ceil(ok_at):  # header times are whole seconds: the next is later
        time.sleep(0.01)
    after = pay(regtest, (receive(S1, 2), 50_000))
    regtest.node.mine(1, MINER)
    scanner.sync()
    refunded = get(pool_engine, during)
    assert (refunded.status, refunded.reason) == (
        Status.REFUND_PENDING, "mined while the pool was degraded",
    )  # fmt: skip
    assert get(pool_engine, after).status is Status.CONFIRMED


def test_in_credit_mode_an_outage_deposit_is_confirmed_once_quorum_returns(
    pool_engine: Engine, regtest: Regtest
) -> None:
    rules = DepositsConfig(confirmations=2, outage_deposits="credit")
    scanner = scanner_for(pool_engine, regtest, rules)
    record_quorum(pool_engine, "degraded", 0.0)
    txid = pay(regtest, (receive(S1, 1), 50_000))
    regtest.node.mine(3, MINER)
    scanner.sync()
    assert get(pool_engine, txid).status is Status.CONFIRMING
    record_quorum(pool_engine, "ok", time.time())
    scanner.sync()
    assert statuses(pool_engine, txid) == [
        (Status.SEEN, f"in block {get(pool_engine, txid).height}"),
        (Status.CONFIRMING, "mined while the pool was degraded: credited once quorum is ok"),
        (Status.CONFIRMED, "4 confirmations; awaiting acknowledgements: 0 of 2"),
    ]


def test_deposits_to_a_series_past_its_grace_period_are_to_be_refunded(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    add_active_series(pool_engine, S2)  # S1 retires: its grace (1 block) counts from the next block
    regtest.node.mine(1, MINER)
    retired = scanner.sync()
    within = pay(regtest, (receive(S1, 1), 50_000))
    past = pay(regtest, (receive(S1, 2), 50_000), (receive(S2, 0), 50_000))
    scanner.sync()
    with pool_engine.connect() as conn:
        assert cstore.retirement_heights(conn) == {1: retired}
    assert get(pool_engine, within).status is Status.CONFIRMED  # 2 confirmations
    late = get(pool_engine, past, 0)
    assert (late.status, late.reason) == (
        Status.REFUND_PENDING, "pays series 1, retired more than 1 blocks before",
    )  # fmt: skip
    assert get(pool_engine, past, 1).status is Status.CONFIRMING


def test_a_reorg_removes_a_confirming_deposit_from_the_balance(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = pay(regtest, (receive(S1, 0), 70_000))
    scanner.sync()
    block = get(pool_engine, txid).block_hash
    regtest.node.invalidate(block)
    tip = scanner.sync()
    removed = get(pool_engine, txid)
    assert removed.status is Status.REMOVED
    assert balance(pool_engine, tip) == cstore.Balance(0, 0, 0)
    with pool_engine.connect() as conn:
        assert astore.recent_alerts(conn, 10) == []
    mine_again(regtest, removed)
    scanner.sync()
    back = get(pool_engine, txid)
    assert (back.status, back.height, back.block_hash != block) == (
        Status.CONFIRMING, tip + 1, True,
    )  # fmt: skip
    assert [s for s, _ in statuses(pool_engine, txid, "alice")] == [
        Status.SEEN, Status.CONFIRMING, Status.REMOVED, Status.SEEN, Status.CONFIRMING,
    ]  # fmt: skip


def test_a_reorg_of_a_credited_deposit_raises_an_alert_and_marks_it_reorged(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = pay(regtest, (receive(S1, 0), 70_000))
    regtest.node.mine(1, MINER)
    scanner.sync()
    credit_as_if_every_signer_acknowledged(pool_engine)
    credited = get(pool_engine, txid)
    assert credited.status is Status.CREDITED
    regtest.node.invalidate(credited.block_hash)
    tip = scanner.sync()
    assert get(pool_engine, txid).status is Status.REORGED
    assert (txid, 0) not in eligible(pool_engine, tip)
    with pool_engine.connect() as conn:
        (alert,) = astore.recent_alerts(conn, 10)
    assert alert.kind == "deposit_reorged"
    assert f"deposit {txid}:0 of 70000 sat (client alice, user u1) was credited" in alert.detail
    assert credited.block_hash in alert.detail
    mine_again(regtest, credited)  # back to the status it had; the alert stays
    scanner.sync()
    assert get(pool_engine, txid).status is Status.CREDITED
    assert statuses(pool_engine, txid, "alice")[-2:] == [
        (Status.REORGED, f"block {credited.height} {credited.block_hash} left the chain"),
        (Status.CREDITED, f"back in block {credited.height}"),
    ]
