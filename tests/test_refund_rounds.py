"""Refund rounds in the round engine, with real parts: a bcoin regtest node, three signer daemons
(2-of-3, emulator backends, mutual TLS, their own refund policy), the scanner, and the store on
SQLite and PostgreSQL.

Deposits are made refund_pending by the deposit rules (every deposit here is below the minimum
deposit). Signers 0 and 1 refuse operator-chosen refunds; signer 2 allows them, so an operator
refund is one signature short and refused. A "down" signer is an address nobody listens on.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from coordinator.chain import Block
from coordinator.config import (
    ChainConfig,
    CoordinatorConfig,
    DepositsConfig,
    PoolConfig,
    RoundsConfig,
    ServerConfig,
)
from coordinator.refund_rounds import WAITING_NOTE
from coordinator.rounds import (
    AFTER_BROADCAST,
    AFTER_ROUND_PERSISTED,
    AFTER_SIGNATURES_PERSISTED,
    RoundEngine,
    RoundOutcome,
)
from coordinator.scanner import Scanner
from coordinator.signers import SignerPool
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import rounds as rstore
from coordinator.store.deposits import Deposit, DepositAddress, Refund, Status
from coordinator.store.rounds import Outcome, RoundStatus
from coordinator.store.schema import transaction, utxos
from pool.address import script_pubkey_to_address
from pool.networks import REGTEST
from pool.refunds import RefundSource
from pool.series import RECEIVE
from pool.tx import Transaction
from pool.vocabulary import RoundKind
from tests.chain_harness import signer_chain
from tests.coordinator_harness import coordinator_tls, dead_address, signer_endpoints
from tests.factories import BTC, make_series, master_key, p2wpkh
from tests.regtest_fixtures import Regtest
from tests.round_engine_child import run_child
from tests.store_fixtures import add_active_series
from vpool.devnet.processes import (
    Pki,
    SignerDaemon,
    emulator_backend,
    write_config,
    write_keystore,
)

SERIES = make_series(1, 2, [0, 1, 2])
SIGNER_IDS = ("signer-0", "signer-1", "signer-2")
POOL = PoolConfig(min_conf=1, maturation=2, coinbase_maturity=100)
DEPOSITS = DepositsConfig(confirmations=1, min_deposit=1_000 * BTC, refund_threshold=2_000)
ROUNDS = RoundsConfig(sign_deadline_seconds=10.0, round_deadline_seconds=30.0, poll_seconds=0.01)
CALL_TIMEOUT = 20.0
RECEIVE_INDEXES = itertools.count()
"""Receive indexes, fresh for every deposit of the module: the signers keep registrations."""


@pytest.fixture(scope="module")
def signers(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[dict[str, str]]:
    """Three signer daemons (asking the regtest node), the series registered; id → address."""
    daemons = []
    for i, signer_id in enumerate(SIGNER_IDS):
        directory = tmp_path_factory.mktemp(signer_id)
        keystore = write_keystore(directory / "keystore.json", master_key(i))
        policy = {"allow_operator_refunds": i == 2}
        config = write_config(
            directory,
            pki,
            signer_id,
            emulator_backend(keystore),
            policy,
            series=[SERIES],
            chain=signer_chain(directory, regtest.node),
        )
        daemons.append(SignerDaemon(config))
    addresses = {signer_id: d.address for signer_id, d in zip(SIGNER_IDS, daemons, strict=True)}
    with signer_pool(pki, addresses) as pool:
        for signer_id in SIGNER_IDS:
            assert pool.register_series(signer_id, REGTEST, SERIES, CALL_TIMEOUT).registered
    yield addresses
    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log_text()


@contextmanager
def signer_pool(pki: Pki, addresses: Mapping[str, str]) -> Iterator[SignerPool]:
    with SignerPool(signer_endpoints(addresses), coordinator_tls(pki)) as pool:
        yield pool


@dataclass
class Pool:
    """A coordinator store on the shared node and signers."""

    regtest: Regtest
    engine: Engine
    config: CoordinatorConfig
    pki: Pki
    signers: dict[str, str]
    scanner: Scanner

    @contextmanager
    def rounds(
        self, down: tuple[str, ...] = (), round_deadline_seconds: float = 30.0
    ) -> Iterator[RoundEngine]:
        """A RoundEngine on this store (as after a restart); ``down`` signers unreachable."""
        addresses = {i: dead_address() if i in down else a for i, a in self.signers.items()}
        rounds = replace(ROUNDS, round_deadline_seconds=round_deadline_seconds)
        config = replace(self.config, rounds=rounds, signers=signer_endpoints(addresses))
        with SignerPool.from_config(config) as pool:
            yield RoundEngine(config, self.engine, self.regtest.node.chain, pool)

    def deposit(self, value: int, refund_address: str | None = None) -> Deposit:
        """Pay the next receive address (registered with ``refund_address`` on the store and
        every signer, when given), mine it, scan it; the deposit."""
        index = next(RECEIVE_INDEXES)
        script = SERIES.derive(RECEIVE, index).script_pubkey
        if refund_address is not None:
            self._register(index, script, refund_address)
        txid = self.regtest.wallet.fund(self.regtest.node, [(script, value)])
        self.mine(1)
        vout = next(
            i for i, out in enumerate(self.transaction(txid).outputs) if out.script_pubkey == script
        )
        return self.get(txid, vout)

    def _register(self, index: int, script: bytes, refund_address: str) -> None:
        with signer_pool(self.pki, self.signers) as pool:
            for signer_id in SIGNER_IDS:
                pool.register_deposit_address(
                    signer_id, REGTEST, SERIES.id, index, refund_address, CALL_TIMEOUT
                )
        address = DepositAddress(script, SERIES.id, index, "client", "user", refund_address, 0.0)
        with transaction(self.engine) as conn:
            dstore.record_address(conn, address)

    def mine(self, blocks: int) -> None:
        self.regtest.wallet.mine(self.regtest.node, blocks)
        self.scanner.sync()

    def transaction(self, txid: str) -> Transaction:
        raw = self.regtest.node.chain.raw_transaction(txid)
        assert raw is not None
        return Transaction.parse(raw)

    def block_at(self, height: int) -> Block:
        chain = self.regtest.node.chain
        return chain.block(chain.block_hash(height))

    def get(self, txid: str, vout: int) -> Deposit:
        with self.engine.connect() as conn:
            found = dstore.get(conn, txid, vout)
        assert found is not None
        return found

    def again(self, deposit: Deposit) -> Deposit:
        return self.get(deposit.txid, deposit.vout)

    def view(self, round_id: str | None) -> rstore.RoundView:
        assert round_id is not None
        with self.engine.connect() as conn:
            view = rstore.round_view(conn, round_id)
        assert view is not None
        return view

    def reserved(self) -> int:
        """Unspent outputs that a round holds."""
        held = utxos.c.reserved_round.is_not(None) & utxos.c.spent_txid.is_(None)
        with self.engine.connect() as conn:
            return len(conn.execute(select(utxos.c.txid).where(held)).all())


@pytest.fixture
def pool(
    engine: Engine, regtest: Regtest, pki: Pki, signers: dict[str, str], tmp_path: Path
) -> Pool:
    start = regtest.node.chain.tip()[0] + 1
    user, password = regtest.node.credentials
    tls = coordinator_tls(pki)
    config = CoordinatorConfig(
        network=REGTEST,
        data_dir=tmp_path,
        database_url=engine.url.render_as_string(hide_password=False),
        server=ServerConfig(listen="127.0.0.1:0", tls=tls, clients=frozenset(), admins=frozenset()),
        chain=ChainConfig(rpc_url=regtest.node.rpc_url, rpc_user=user, rpc_password=password),
        pool=POOL,
        deposits=DEPOSITS,
        rounds=ROUNDS,
        signers=signer_endpoints(signers),
    )
    add_active_series(engine, SERIES)
    scanner = Scanner(engine, regtest.node.chain, REGTEST, POOL, DEPOSITS, start_height=start)
    scanner.sync()
    return Pool(regtest, engine, config, pki, signers, scanner)


def outcomes(view: rstore.RoundView) -> dict[str, Outcome]:
    return {o.signer_id: o.outcome for o in view.outcomes}


def refund_paid(pool: Pool, deposit: Deposit) -> tuple[bytes, int]:
    """(scriptPubKey, value) of the one output of the deposit's refund, read from the node."""
    assert deposit.refund.txid is not None
    tx = pool.transaction(deposit.refund.txid)
    [spent] = [i.prevout for i in tx.inputs]
    assert (spent.txid_hex, spent.vout) == deposit.outpoint
    [out] = tx.outputs
    return out.script_pubkey, out.value


# --------------------------------------------------------------------------- tests


def test_refunds_go_to_the_registered_address_or_to_the_sender(pool: Pool) -> None:
    registered = script_pubkey_to_address(p2wpkh("registered refund"), REGTEST)
    assert registered is not None
    to_registered = pool.deposit(60_000, registered)
    to_sender = pool.deposit(70_000)
    assert {to_registered.status, to_sender.status} == {Status.REFUND_PENDING}
    with pool.rounds() as rounds:
        outcome = rounds.run_refunds()
        view = pool.view(outcome.round_id)
        assert outcome.detail == "2 of 2 transactions broadcast"
        assert view.record.kind is RoundKind.REFUND
        assert set(outcomes(view).values()) == {Outcome.SIGNED}
        for d in (to_registered, to_sender):
            assert pool.again(d).status is Status.REFUND_SIGNED
        pool.mine(1)
        rounds.track()
        assert {pool.again(d).status for d in (to_registered, to_sender)} == {Status.REFUNDED}
        pool.mine(POOL.maturation)
        rounds.track()
        assert pool.view(outcome.round_id).record.status is RoundStatus.COMPLETED
        assert rounds.run_refunds().round_id is None
    fees = {tx.txid: tx.fee for tx in view.transactions}
    for d, destination, source in (
        (pool.again(to_registered), p2wpkh("registered refund"), RefundSource.REGISTERED),
        (pool.again(to_sender), pool.regtest.wallet.script_pubkey, RefundSource.SENDER),
    ):
        assert d.refund.txid is not None and d.refund.source == source
        assert refund_paid(pool, d) == (destination, d.value - fees[d.refund.txid])
        with pool.engine.connect() as conn:
            assert len(dstore.refund_signers(conn, d)) >= 2
            spent = cstore.get_utxo(conn, d.txid, d.vout)
        assert spent is not None and spent.spent_txid == d.refund.txid


def test_a_refused_refund_waits_and_the_round_is_rebuilt_without_it(pool: Pool) -> None:
    registered = script_pubkey_to_address(p2wpkh("refund after a refusal"), REGTEST)
    operator = script_pubkey_to_address(p2wpkh("chosen by an operator"), REGTEST)
    assert registered is not None and operator is not None
    kept = pool.deposit(50_000, registered)
    refused = pool.deposit(40_000)
    with transaction(pool.engine) as conn:
        proposal = Refund(operator, RefundSource.OPERATOR.value, None, None)
        dstore.set_status(
            conn, refused.txid, refused.vout, Status.REFUND_PENDING, 0.0, refund=proposal
        )
    with pool.rounds() as rounds:
        outcome = rounds.run_refunds()
        rebuilt = pool.view(outcome.round_id)
        first = pool.view(rebuilt.rebuilt_from_id)
        assert first.record.status is RoundStatus.ABANDONED
        assert outcomes(first) == {"signer-0": Outcome.REFUSED, "signer-1": Outcome.REFUSED,
                                   "signer-2": Outcome.SIGNED}  # fmt: skip
        assert rebuilt.record.status is RoundStatus.BROADCAST
        # The kept refund is the very transaction signer-2 signed in the first round.
        [moved] = [tx.txid for tx in rebuilt.transactions]
        assert moved == pool.again(kept).refund.txid
        assert first.record.detail == (
            f"rebuilt without 1 refused requests; transaction {moved} rebuilt in round "
            f"{outcome.round_id}"
        )
        waiting = pool.again(refused)
        assert waiting.status is Status.REFUND_PENDING
        assert "refund refused: OPERATOR_REFUNDS_NOT_ALLOWED by signer-0" in waiting.reason
        assert waiting.refund.source == "operator" and waiting.refund.address == operator
        assert rounds.run_refunds().round_id is None  # it waits for an operator
        pool.mine(1)
        rounds.track()
    assert pool.again(kept).status is Status.REFUNDED
    assert pool.reserved() == 0


def test_a_refund_round_one_signer_signed_waits_and_completes_when_its_signers_return(
    pool: Pool,
) -> None:
    deposit = pool.deposit(30_000)
    with pool.rounds(down=("signer-1", "signer-2"), round_deadline_seconds=1.0) as rounds:
        waiting = rounds.run_refunds()
    view = pool.view(waiting.round_id)
    assert view.record.status is RoundStatus.SIGNING and view.signed_by == ("signer-0",)
    assert "waits for signatures since" in view.record.detail
    assert outcomes(view)["signer-0"] is Outcome.SIGNED
    assert pool.again(deposit).refund.round_seq == view.record.seq
    assert pool.reserved() == 1
    with pool.rounds(round_deadline_seconds=1.0) as rounds:
        assert rounds.run_refunds().round_id is None  # the deposit is in the waiting round
        [done] = wait_for(rounds.retry_waiting)  # once its poll interval has passed
    assert done == RoundOutcome(waiting.round_id, "1 of 1 transactions broadcast")
    assert pool.again(deposit).refund.txid == view.transactions[0].txid


def test_a_refund_round_no_signer_signed_is_abandoned_and_retried_later(pool: Pool) -> None:
    deposit = pool.deposit(30_000)
    with pool.rounds(down=SIGNER_IDS, round_deadline_seconds=1.0) as rounds:
        abandoned = rounds.run_refunds()
    view = pool.view(abandoned.round_id)
    assert view.record.status is RoundStatus.ABANDONED
    back = pool.again(deposit)
    assert back.status is Status.REFUND_PENDING and back.refund.round_seq == view.record.seq
    assert pool.reserved() == 0
    with pool.rounds(round_deadline_seconds=3.0) as rounds:
        assert rounds.run_refunds().round_id is None  # not before a round deadline has passed
        time.sleep(3.0)
        retried = rounds.run_refunds()
    assert retried.round_id == abandoned.round_id  # the same manifest reopens the round
    assert retried.detail == "1 of 1 transactions broadcast"


def test_a_refund_that_would_pay_dust_is_not_built_and_the_deposit_is_dust(pool: Pool) -> None:
    pool.config = replace(pool.config, pool=replace(POOL, dust_limit=3_000))
    deposit = pool.deposit(3_100)
    with pool.rounds() as rounds:
        outcome = rounds.run_refunds()
    assert outcome.round_id is None and "dust" in outcome.detail
    dust = pool.again(deposit)
    assert dust.status is Status.DUST and "below the dust limit of 3000 sat" in dust.reason
    assert pool.reserved() == 0


def test_a_deposit_without_a_destination_waits_for_an_operator(pool: Pool) -> None:
    """A coinbase paying the pool has no sender (and no deposit address was handed out)."""
    pool.regtest.node.mine(1, SERIES.derive(RECEIVE, next(RECEIVE_INDEXES)).script_pubkey)
    pool.scanner.sync()
    with pool.engine.connect() as conn:
        [coinbase] = dstore.refund_pending(conn)
    with pool.rounds() as rounds:
        assert rounds.run_refunds().round_id is None
    waiting = pool.again(coinbase)
    assert waiting.status is Status.REFUND_PENDING and waiting.reason.endswith(WAITING_NOTE)


@pytest.mark.parametrize(
    "crash_at", [AFTER_ROUND_PERSISTED, AFTER_SIGNATURES_PERSISTED, AFTER_BROADCAST]
)
def test_a_coordinator_killed_in_a_refund_round_resumes_and_refunds_once(
    pool: Pool, crash_at: str, tmp_path: Path
) -> None:
    deposit = pool.deposit(20_000)
    child = run_child(pool.config, RoundKind.REFUND, crash_at, tmp_path)
    assert child.returncode == -signal.SIGKILL, child.stderr
    proposed = pool.again(deposit)
    assert proposed.status is Status.REFUND_PROPOSED and pool.reserved() == 1
    assert proposed.refund.txid is not None
    in_mempool = proposed.refund.txid in pool.regtest.node.rpc("getrawmempool")
    assert in_mempool == (crash_at == AFTER_BROADCAST)
    with pool.rounds() as rounds:
        [resumed] = rounds.resume()
        assert resumed.detail.endswith("transactions broadcast"), resumed
        assert pool.again(deposit).status is Status.REFUND_SIGNED
        pool.mine(1)
        rounds.track()
    done = pool.again(deposit)
    assert done.status is Status.REFUNDED and done.refund.txid == proposed.refund.txid
    spending = [
        tx.txid_hex
        for height in range(deposit.height, pool.scanner.height() + 1)
        for tx in pool.block_at(height).transactions
        if any((i.prevout.txid_hex, i.prevout.vout) == deposit.outpoint for i in tx.inputs)
    ]
    assert spending == [done.refund.txid]


def wait_for(
    outcomes: Callable[[], list[RoundOutcome]], seconds: float = 30.0
) -> list[RoundOutcome]:
    """Call ``outcomes`` until it returns some (a round is asked again at most every
    ``rounds.poll_seconds``: a condition to wait on, never a time to guess)."""
    deadline = time.monotonic() + seconds
    while not (found := outcomes()):
        assert time.monotonic() < deadline, "no waiting round was asked again"
        time.sleep(0.05)
    return found
