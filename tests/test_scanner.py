"""The chain follower against a real bcoin regtest node, on SQLite and PostgreSQL.

The node is shared by the whole session, so every test starts its scanner at the node's current
tip (``start_height``: what a new database does) and checks only the outputs it made itself.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, insert, select

from coordinator.config import DepositsConfig, PoolConfig
from coordinator.scanner import Scanner
from coordinator.store import chain as store
from coordinator.store.chain import PoolAddress, PoolUtxo
from coordinator.store.schema import blocks, round_transactions, rounds
from pool.manifest import Utxo
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, SeriesState
from pool.tx import OutPoint, Transaction
from pool.withdrawal import build_round
from tests.credit_fixtures import credit_as_if_every_signer_acknowledged
from tests.factories import make_series, manifest, p2wpkh, request, sign_first_m
from tests.regtest_fixtures import Regtest

SERIES = make_series(1, 2, [11, 12, 13])
LOOKAHEAD = 5
MINER = p2wpkh("scanner miner")
NOW = 1_700_000_000.0
DEPOSITS = DepositsConfig(confirmations=1, min_deposit=1_000, refund_threshold=1_000)
"""Deposits here are confirmed in their block (and credited by ``spend``); deposit rules:
test_deposits_scanner."""


def script(branch: int, index: int) -> bytes:
    return SERIES.derive(branch, index).script_pubkey


@pytest.fixture
def pool_engine(engine: Engine) -> Engine:
    """A store that knows SERIES (active)."""
    receive = SERIES.descriptor(RECEIVE).to_string(REGTEST)
    change = SERIES.descriptor(CHANGE).to_string(REGTEST)
    with engine.begin() as conn:
        store.add_series(conn, SERIES.id, receive, change, SeriesState.ACTIVE, REGTEST, NOW)
    return engine


def new_scanner(
    engine: Engine, regtest: Regtest, start: int, clock: Callable[[], float] = lambda: NOW
) -> Scanner:
    config = PoolConfig(address_lookahead=LOOKAHEAD)
    return Scanner(
        engine, regtest.node.chain, REGTEST, config, DEPOSITS, start_height=start, clock=clock
    )


@pytest.fixture
def scanner(pool_engine: Engine, regtest: Regtest) -> Scanner:
    """A scanner of a new database, starting after the node's current tip."""
    tip, _ = regtest.node.chain.tip()
    return new_scanner(pool_engine, regtest, tip + 1)


def fund(regtest: Regtest, *outputs: tuple[bytes, int]) -> str:
    """Pay the outputs from the dev wallet and mine them; the funding txid."""
    txid = regtest.wallet.fund(regtest.node, list(outputs))
    regtest.node.mine(1, MINER)
    return txid


def utxo(engine: Engine, txid: str, vout: int) -> PoolUtxo | None:
    with engine.connect() as conn:
        return store.get_utxo(conn, txid, vout)


def spend_utxos(utxos: list[Utxo], tip: int, change_start: int = 0) -> Transaction:
    """A signed transaction paying 1 BTC from ``utxos``, its change to the pool."""
    m = manifest(
        [SERIES],
        utxos,
        [request("client", "r1", 100_000_000)],
        tip_height=tip,
        change_index=[(SERIES.id, change_start)],
        min_conf=1,
    )
    (planned,) = build_round(m).transactions
    return sign_first_m(planned.psbt, m)


def spend(engine: Engine, tip: int) -> Transaction:
    """``spend_utxos`` of the store's eligible outputs, change at the next change index; the
    confirmed deposits are credited first (the signers' acknowledgements are a test double here:
    tests/credit_fixtures.py)."""
    credit_as_if_every_signer_acknowledged(engine)
    with engine.connect() as conn:
        eligible = store.eligible_utxos(conn, tip, 1, 100)
        change_start = store.next_index(conn, SERIES.id, CHANGE)
    return spend_utxos(eligible, tip, change_start)


def test_sync_records_pool_outputs_with_series_branch_and_index(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = fund(regtest, (p2wpkh("someone"), 10_000), (script(RECEIVE, 3), 70_000))
    txid_change = fund(regtest, (script(CHANGE, 1), 80_000))
    height = scanner.sync()
    found = utxo(pool_engine, txid, 1)
    assert found is not None
    assert (found.value, found.address, found.height, found.coinbase) == (
        70_000,
        PoolAddress(SERIES.id, RECEIVE, 3),
        height - 1,
        False,
    )
    change = utxo(pool_engine, txid_change, 0)
    assert change is not None and change.address == PoolAddress(SERIES.id, CHANGE, 1)


def test_sync_ignores_outputs_to_other_scripts(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = fund(regtest, (p2wpkh("someone"), 10_000), (script(RECEIVE, 0), 70_000))
    scanner.sync()
    assert utxo(pool_engine, txid, 0) is None


def test_sync_marks_coinbase_outputs(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    (block_hash,) = regtest.node.mine(1, script(RECEIVE, 0))
    coinbase = regtest.node.chain.block(block_hash).transactions[0]
    scanner.sync()
    found = utxo(pool_engine, coinbase.txid_hex, 0)
    assert found is not None and found.coinbase
    assert found.value == coinbase.outputs[0].value


def test_sync_returns_the_height_of_the_nodes_tip(scanner: Scanner, regtest: Regtest) -> None:
    regtest.node.mine(3, MINER)
    assert scanner.sync() == regtest.node.chain.tip()[0]


def test_sync_records_every_block_from_the_start_height(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    start = scanner.height() + 1
    regtest.node.mine(3, MINER)
    scanner.sync()
    with pool_engine.connect() as conn:
        heights = conn.execute(select(blocks.c.height).order_by(blocks.c.height)).scalars().all()
        top = store.last_block(conn)
    assert heights == [start, start + 1, start + 2]
    assert top is not None and top.hash == regtest.node.chain.tip()[1]


def test_sync_advances_the_index_past_a_used_address(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    fund(regtest, (script(RECEIVE, 3), 70_000))
    scanner.sync()
    with pool_engine.connect() as conn:
        assert store.next_index(conn, SERIES.id, RECEIVE) == 4
        assert store.next_index(conn, SERIES.id, CHANGE) == 0


def test_sync_extends_the_lookahead_past_a_used_address(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    fund(regtest, (script(RECEIVE, 3), 70_000))
    scanner.sync()
    with pool_engine.connect() as conn:
        last = store.lookup_script(conn, script(RECEIVE, 4 + LOOKAHEAD - 1))
    assert last == PoolAddress(SERIES.id, RECEIVE, 4 + LOOKAHEAD - 1)


def test_sync_finds_an_address_that_an_earlier_output_of_its_block_brings_into_view(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    beyond = LOOKAHEAD + 2  # watched only once index LOOKAHEAD - 1 is used
    txid = fund(
        regtest, (script(RECEIVE, LOOKAHEAD - 1), 70_000), (script(RECEIVE, beyond), 80_000)
    )
    scanner.sync()
    found = utxo(pool_engine, txid, 1)
    assert found is not None and found.address == PoolAddress(SERIES.id, RECEIVE, beyond)


def test_sync_marks_a_spent_pool_output(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    funding = fund(regtest, (script(RECEIVE, 0), 300_000_000))
    tip = scanner.sync()
    tx = spend(pool_engine, tip)
    regtest.node.chain.send_raw_transaction(tx.serialize())
    regtest.node.mine(1, MINER)
    height = scanner.sync()
    found = utxo(pool_engine, funding, 0)
    assert found is not None and (found.spent_txid, found.spent_height) == (tx.txid_hex, height)


def test_sync_marks_an_output_spent_in_the_block_that_created_it(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    tip = scanner.sync()
    funding = regtest.wallet.fund(regtest.node, [(script(RECEIVE, 0), 300_000_000)])
    unconfirmed = Utxo(OutPoint.from_hex(funding, 0), 300_000_000, SERIES.id, RECEIVE, 0, tip)
    tx = spend_utxos([unconfirmed], tip)
    regtest.node.chain.send_raw_transaction(tx.serialize())
    regtest.node.mine(1, MINER)
    height = scanner.sync()
    found = utxo(pool_engine, funding, 0)
    assert found is not None and (found.height, found.spent_txid) == (height, tx.txid_hex)


def test_sync_records_the_change_of_a_pool_spend(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    fund(regtest, (script(RECEIVE, 0), 300_000_000))
    tx = spend(pool_engine, scanner.sync())
    regtest.node.chain.send_raw_transaction(tx.serialize())
    regtest.node.mine(1, MINER)
    scanner.sync()
    vout = next(i for i, out in enumerate(tx.outputs) if out.script_pubkey == script(CHANGE, 0))
    change = utxo(pool_engine, tx.txid_hex, vout)
    assert change is not None and change.address == PoolAddress(SERIES.id, CHANGE, 0)


def test_sync_records_the_block_of_a_round_transaction(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    txid = regtest.wallet.fund(regtest.node, [(script(RECEIVE, 0), 70_000)])
    with pool_engine.begin() as conn:
        seq = conn.execute(
            insert(rounds)
            .values(manifest_hash="ab" * 32, manifest=b"", status="broadcast", created_at=NOW,
                    updated_at=NOW)
            .returning(rounds.c.seq)
        ).scalar_one()  # fmt: skip
        conn.execute(
            insert(round_transactions).values(
                round_seq=seq, idx=0, txid=txid, psbt=b"", fee=1, status="broadcast"
            )
        )
    (block_hash,) = regtest.node.mine(1, MINER)
    height = scanner.sync()
    with pool_engine.connect() as conn:
        row = conn.execute(
            select(round_transactions.c.block_height, round_transactions.c.block_hash)
        ).one()
    assert tuple(row) == (height, block_hash)


def test_a_reorg_removes_the_outputs_of_the_orphaned_block(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    (orphan,) = regtest.node.mine(1, script(RECEIVE, 0))
    coinbase = regtest.node.chain.block(orphan).transactions[0].txid_hex
    height = scanner.sync()
    regtest.node.invalidate(orphan)
    assert scanner.sync() == height - 1
    assert utxo(pool_engine, coinbase, 0) is None


def test_after_a_reorg_the_scanner_follows_the_new_chain(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    (orphan,) = regtest.node.mine(1, script(RECEIVE, 0))
    coinbase = regtest.node.chain.block(orphan).transactions[0].txid_hex
    height = scanner.sync()
    regtest.node.invalidate(orphan)
    replacement, _ = regtest.node.mine(2, MINER)
    assert scanner.sync() == height + 1
    with pool_engine.connect() as conn:
        record = store.block_at(conn, height)
    assert record is not None and record.hash == replacement
    assert utxo(pool_engine, coinbase, 0) is None


def test_a_reorg_unspends_what_the_orphaned_block_spent(
    scanner: Scanner, regtest: Regtest, pool_engine: Engine
) -> None:
    funding = fund(regtest, (script(RECEIVE, 0), 300_000_000))
    tx = spend(pool_engine, scanner.sync())
    regtest.node.chain.send_raw_transaction(tx.serialize())
    (orphan,) = regtest.node.mine(1, MINER)
    scanner.sync()
    regtest.node.invalidate(orphan)
    scanner.sync()
    found = utxo(pool_engine, funding, 0)
    assert found is not None and (found.spent_txid, found.spent_height) == (None, None)
    regtest.node.mine(1, MINER)  # the spend, back in the mempool, leaves no trace for others


def test_a_new_scanner_resumes_where_a_stopped_one_left_off(
    pool_engine: Engine, regtest: Regtest
) -> None:
    start = regtest.node.chain.tip()[0] + 1
    funded = [fund(regtest, (script(RECEIVE, i), 50_000 + i)) for i in range(4)]
    assert new_scanner(pool_engine, regtest, start).sync(max_blocks=2) == start + 1
    assert new_scanner(pool_engine, regtest, start).sync() == start + 3
    for i, txid in enumerate(funded):
        found = utxo(pool_engine, txid, 0)
        assert found is not None and found.height == start + i


def test_a_failure_inside_a_block_leaves_nothing_of_that_block(
    pool_engine: Engine, regtest: Regtest
) -> None:
    start = regtest.node.chain.tip()[0] + 1
    txid = fund(regtest, (script(RECEIVE, 0), 70_000))

    def failing_clock() -> float:
        raise RuntimeError("crash while applying the block")

    with pytest.raises(RuntimeError, match="crash"):
        new_scanner(pool_engine, regtest, start, failing_clock).sync()
    assert utxo(pool_engine, txid, 0) is None
    with pool_engine.connect() as conn:
        assert store.next_index(conn, SERIES.id, RECEIVE) == 0
    assert new_scanner(pool_engine, regtest, start).sync() == start
    assert utxo(pool_engine, txid, 0) is not None
