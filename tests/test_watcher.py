"""The transaction watcher against the regtest node, on SQLite and PostgreSQL: a round
transaction whose input a conflicting transaction spent (built here from the funding wallet's
coin, since the pool's own signers never sign one input twice) is settled from what the chain
pays once the conflict is ``pool.maturation`` deep.

The store is written as the round engine and the scanner would have written it: a round paying
two withdrawals, its transaction broadcast, the pool output it spends, the conflicting spend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine

from coordinator.config import (
    ChainConfig,
    CoordinatorConfig,
    PoolConfig,
    RoundsConfig,
    ServerConfig,
    TlsConfig,
)
from coordinator.rounds import RoundEngine
from coordinator.signers import SignResult
from coordinator.store import chain as cstore
from coordinator.store import rounds as rstore
from coordinator.store import sends as sstore
from coordinator.store import withdrawals as wstore
from coordinator.store.alerts import recent_alerts
from coordinator.store.chain import BlockRecord, PoolAddress
from coordinator.store.rounds import RoundStatus, TxStatus
from coordinator.store.schema import transaction
from coordinator.store.withdrawals import Status
from coordinator.watcher import TransactionWatcher
from pool.hashes import sha256
from pool.networks import REGTEST
from pool.tx import Transaction, TxOut
from pool.vocabulary import RoundKind
from tests.regtest_fixtures import Regtest

MATURATION = 3
A1, A2, A3 = (b"\x00\x14" + sha256(tag)[:20] for tag in (b"a1", b"a2", b"a3"))


def config(tmp_path: Path, url: str) -> CoordinatorConfig:
    tls = TlsConfig(tmp_path / "c.pem", tmp_path / "c.key", tmp_path / "ca.pem")
    return CoordinatorConfig(
        network=REGTEST,
        data_dir=tmp_path,
        database_url=url,
        server=ServerConfig("127.0.0.1:0", tls, frozenset(), frozenset()),
        chain=ChainConfig(rpc_url="http://127.0.0.1:1"),
        pool=PoolConfig(maturation=MATURATION),
        rounds=RoundsConfig(),
        signers=(),
    )


def conflicting_pair(regtest: Regtest, pays: tuple[TxOut, ...]) -> tuple[Transaction, Transaction]:
    """Two transactions of the wallet spending the same coin: the pool's (paying A1 and A2) and
    a conflicting one paying ``pays``."""
    wallet, tip = regtest.wallet, regtest.node.chain.tip()[0]
    coin = next(c for c in wallet._spendable(tip) if wallet._unspent(regtest.node, c))
    wallet._coins.remove(coin)
    ours = wallet._sign([coin], (TxOut(5_000_000, A1), TxOut(6_000_000, A2)), 2_000)
    theirs = wallet._sign([coin], pays, 3_000)
    assert ours is not None and theirs is not None
    return ours, theirs


def store_round(engine: Engine, ours: Transaction) -> tuple[int, int]:
    """The pool's round paying w1 (A1) and w2 (A2) by ``ours``, broadcast; the withdrawal ids."""
    prevout = ours.inputs[0].prevout
    now = time.time()
    with transaction(engine) as conn:
        spent = prevout.txid_hex
        cstore.add_utxo(conn, spent, prevout.vout, 0, b"", PoolAddress(1, 1, 0), 1, False)
        ids = []
        for request_id, script in (("w1", A1), ("w2", A2)):
            w = wstore.insert_withdrawal(
                conn,
                client_id="alice",
                request_id=request_id,
                address=request_id,
                script_pubkey=script,
                amount=5_000_000 if script == A1 else 6_000_000,
                extra_fee=0,
                now=now,
            )
            ids.append(w.id)
        new = rstore.NewTransaction(
            txid=ours.txid_hex,
            psbt=b"psbt",
            fee=1_000,
            inputs=((spent, prevout.vout),),
            outputs=((ids[0], 0, 5_000_000), (ids[1], 1, 6_000_000)),
            fee_shares=(("alice", 1_000),),
        )
        seq = rstore.create_round(conn, rstore.NewRound("ab" * 32, b"manifest", (new,)), now)
        wstore.set_status(conn, ids, Status.IN_ROUND, now, round_seq=seq)
        rstore.set_final_tx(conn, seq, 0, ours.serialize(), now)
        rstore.mark_broadcasting(conn, seq, 0, now)
        rstore.set_tx_status(conn, seq, 0, TxStatus.BROADCAST)
        rstore.set_round_status(conn, seq, RoundStatus.BROADCAST, now)
        wstore.set_status(conn, ids, Status.BROADCAST, now)
    return ids[0], ids[1]


def scanned(engine: Engine, regtest: Regtest, theirs: Transaction, mined_at: int) -> None:
    """What the scanner records: the conflicting spend, and the node's tip as its cursor."""
    chain = regtest.node.chain
    height, tip = chain.tip()
    prevout = theirs.inputs[0].prevout
    with transaction(engine) as conn:
        cstore.spend_utxo(conn, prevout.txid_hex, prevout.vout, theirs.txid_hex, mined_at)
        last = cstore.last_block(conn)
        if last is None or last.hash != tip:
            block = BlockRecord(height, tip, chain.header(tip).prev_hash)
            cstore.add_block(conn, block, time.time(), header_time=0)


class NoSigners:
    """The watcher never signs: a round engine without signers stores what it finds."""

    signer_ids: tuple[str, ...] = ()

    def sign_round_each(
        self,
        manifest: bytes,
        psbts: Sequence[bytes],
        deadline: float,
        signer_ids: Iterable[str] | None = None,
        kind: RoundKind = RoundKind.WITHDRAWAL,
    ) -> Iterable[tuple[str, SignResult]]:
        raise AssertionError("the watcher asked for signatures")


def watcher(tmp_path: Path, store_url: str, engine: Engine, regtest: Regtest) -> TransactionWatcher:
    cfg = config(tmp_path, store_url)
    rounds = RoundEngine(cfg, engine, regtest.node.chain, NoSigners())
    return TransactionWatcher(cfg, engine, regtest.node.chain, rounds)


def test_withdrawals_a_conflicting_transaction_pays_are_completed_the_others_queued_again(
    tmp_path: Path, store_url: str, engine: Engine, regtest: Regtest
) -> None:
    ours, theirs = conflicting_pair(regtest, (TxOut(5_000_000, A1), TxOut(7_000_000, A3)))
    w1, w2 = store_round(engine, ours)
    regtest.node.chain.send_raw_transaction(theirs.serialize())
    regtest.node.mine(1, regtest.wallet.script_pubkey)
    mined_at = regtest.node.chain.tip()[0]
    scanned(engine, regtest, theirs, mined_at)
    watching = watcher(tmp_path, store_url, engine, regtest)
    watching.check()  # 1 deep: not settled yet, and not sent again (its input is gone)
    with engine.connect() as conn:
        assert rstore.transactions(conn, 1)[0].status is TxStatus.BROADCAST
        assert sstore.sends_of(conn, ours.txid_hex) == []
    regtest.node.mine(MATURATION - 1, regtest.wallet.script_pubkey)
    scanned(engine, regtest, theirs, mined_at)
    watching.check()
    with engine.connect() as conn:
        (tx,) = rstore.transactions(conn, 1)
        paid, unpaid = wstore.get_by_id(conn, w1), wstore.get_by_id(conn, w2)
        alerts = [str(a) for a in recent_alerts(conn, 10)]
        record = rstore.round_by_seq(conn, 1)
    assert tx.status is TxStatus.CONFLICTED and record.status is RoundStatus.COMPLETED
    assert paid is not None and unpaid is not None
    assert (paid.status, paid.reason) == (
        Status.COMPLETED,
        f"paid by transaction {theirs.txid_hex}, which spent the inputs of {ours.txid_hex}",
    )
    assert (unpaid.status, unpaid.round_seq) == (Status.PENDING, None)
    assert unpaid.reason == (
        f"its transaction {ours.txid_hex} was replaced by {theirs.txid_hex}, which does not pay "
        "it: queued again"
    )
    assert alerts == [
        f"transaction-conflicted: transaction {ours.txid_hex} can never confirm: its inputs were "
        f"spent by {theirs.txid_hex}; withdrawal 'w1' paid by it, withdrawal 'w2' queued again"
    ]


@pytest.mark.parametrize("amount", [4_999_999, 5_000_001])
def test_a_payment_of_another_amount_does_not_count_as_paid(
    tmp_path: Path, store_url: str, engine: Engine, regtest: Regtest, amount: int
) -> None:
    ours, theirs = conflicting_pair(regtest, (TxOut(amount, A1),))
    w1, _ = store_round(engine, ours)
    regtest.node.chain.send_raw_transaction(theirs.serialize())
    regtest.node.mine(MATURATION, regtest.wallet.script_pubkey)
    scanned(engine, regtest, theirs, regtest.node.chain.tip()[0] - MATURATION + 1)
    watcher(tmp_path, store_url, engine, regtest).check()
    with engine.connect() as conn:
        found = wstore.get_by_id(conn, w1)
    assert found is not None and found.status is Status.PENDING
