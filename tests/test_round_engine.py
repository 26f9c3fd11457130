"""The round engine end to end, with real parts: a bcoin regtest node, three signer daemons
(2-of-3, emulator backends, mutual TLS), the scanner, and the store on SQLite and PostgreSQL.

Each test has its own store, whose scanner starts at the node's tip, and funds the pool afresh
from the session's dev wallet; the node and the signers are shared. Faults come from the
coordinator's side of the wire: a "down" signer is an address nobody listens on, a faulty or
stalling one is ``tests.fake_signer`` (a real key, a wrong sighash) in the place of signer-2.
Signers 0 and 1 deny one destination; signer 2 has no deny list (a refused request is dropped
only when the refusals keep the round below m signatures: one denying signer is outvoted).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, select

from coordinator.config import (
    ChainConfig,
    CoordinatorConfig,
    DepositsConfig,
    PoolConfig,
    RoundsConfig,
    ServerConfig,
)
from coordinator.round_kinds import CancelRefused
from coordinator.rounds import (
    AFTER_BROADCAST,
    AFTER_ROUND_PERSISTED,
    AFTER_SIGNATURES_PERSISTED,
    RoundEngine,
    RoundOutcome,
)
from coordinator.scanner import Scanner
from coordinator.signers import SignerPool
from coordinator.store import cancels as cancel_store
from coordinator.store import chain as cstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.rounds import Outcome, RoundStatus, TxStatus
from coordinator.store.schema import fee_shares, transaction, utxos
from coordinator.store.withdrawals import Status
from pool.address import script_pubkey_to_address
from pool.cancel import decode_cancel
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.series import CHANGE, RECEIVE
from pool.tx import Transaction
from pool.vocabulary import RoundKind
from tests.chain_harness import signer_chain
from tests.coordinator_harness import coordinator_tls, dead_address, signer_endpoints
from tests.credit_fixtures import credit_as_if_every_signer_acknowledged
from tests.factories import BTC, make_series, master_key, p2wpkh
from tests.fake_signer import PendingSigner, WrongSighashSigner, serve_fake_signer
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
DENIED = p2wpkh("a destination signers 0 and 1 deny")
LIMITS = {
    "max_request_amount": 20 * BTC,
    "max_round_amount": 1_000 * BTC,
    "max_daily_amount": 100_000 * BTC,
}
POOL = PoolConfig(min_conf=1, maturation=3, coinbase_maturity=100)
DEPOSITS = DepositsConfig(confirmations=1)
"""Funding is credited in the block that confirms it (``Pool.fund`` mines ``min_conf`` blocks)."""
ROUNDS = RoundsConfig(sign_deadline_seconds=10.0, round_deadline_seconds=30.0, poll_seconds=0.5)
CALL_TIMEOUT = 20.0


# --------------------------------------------------------------------------- shared parts


@pytest.fixture(scope="module")
def signers(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[dict[str, str]]:
    """Three signer daemons with the series registered (by ``SignerPool``); id → address."""
    denied = script_pubkey_to_address(DENIED, REGTEST)
    daemons = []
    for i, signer_id in enumerate(SIGNER_IDS):
        directory = tmp_path_factory.mktemp(signer_id)
        keystore = write_keystore(directory / "keystore.json", master_key(i))
        policy = {**LIMITS, "deny_destinations": [denied]} if i < 2 else LIMITS
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
    tls = coordinator_tls(pki)
    with SignerPool(signer_endpoints(addresses), tls) as pool:
        for signer_id in SIGNER_IDS:
            assert pool.health(signer_id, CALL_TIMEOUT)
            info = pool.get_info(signer_id, CALL_TIMEOUT)
            assert info.signer_id == signer_id
            assert pool.register_series(signer_id, REGTEST, SERIES, CALL_TIMEOUT).registered
    yield addresses
    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log_text()


@contextmanager
def fake_signer(pki: Pki, stall_seconds: float = 0.0) -> Iterator[str]:
    """Signer 2's key behind a faulty gRPC peer; yields its address."""
    servicer = WrongSighashSigner(master_key(2), stall_seconds)
    server, address = serve_fake_signer(pki, "signer-2", servicer)
    try:
        yield address
    finally:
        server.stop(0)


# --------------------------------------------------------------------------- one pool per test


@dataclass
class Pool:
    """A coordinator store on the shared node and signers, funded by the test."""

    regtest: Regtest
    engine: Engine
    config: CoordinatorConfig
    start_height: int
    scanner: Scanner
    next_receive: int = 0
    funded: int = 0
    requests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Request id → (client id, destination script)."""

    @contextmanager
    def rounds(
        self,
        addresses: dict[str, str] | None = None,
        sign_deadline_seconds: float = ROUNDS.sign_deadline_seconds,
        round_deadline_seconds: float = ROUNDS.round_deadline_seconds,
        poll_seconds: float = ROUNDS.poll_seconds,
    ) -> Iterator[RoundEngine]:
        """A new RoundEngine (as after a restart) on this store; other signer addresses or
        deadlines when given."""
        config = self.config
        if addresses is not None:
            config = replace(config, signers=signer_endpoints(addresses))
        deadlines = replace(
            ROUNDS,
            sign_deadline_seconds=sign_deadline_seconds,
            round_deadline_seconds=round_deadline_seconds,
            poll_seconds=poll_seconds,
        )
        config = replace(config, rounds=deadlines)
        with SignerPool.from_config(config) as signer_pool:
            yield RoundEngine(config, self.engine, self.regtest.node.chain, signer_pool)

    def fund(self, values: Sequence[int]) -> None:
        """Pay the pool's next receive addresses and confirm."""
        outputs = []
        for value in values:
            outputs.append((SERIES.derive(RECEIVE, self.next_receive).script_pubkey, value))
            self.next_receive += 1
        self.regtest.wallet.fund(self.regtest.node, outputs)
        self.funded += sum(values)
        self.mine(POOL.min_conf)

    def submit(
        self, client_id: str, request_id: str, amount: int, script: bytes | None = None
    ) -> None:
        script = script or p2wpkh(f"{self.start_height}/{client_id}/{request_id}")
        self.requests[request_id] = (client_id, script)
        with transaction(self.engine) as conn:
            wstore.insert_withdrawal(
                conn,
                client_id=client_id,
                request_id=request_id,
                address=script_pubkey_to_address(script, REGTEST) or "",
                script_pubkey=script,
                amount=amount,
                extra_fee=0,
                now=time.time(),
            )

    def mine(self, blocks: int) -> None:
        """Mine, scan, and credit what is confirmed (the signers' acknowledgements are a test
        double here: tests/credit_fixtures.py)."""
        self.regtest.wallet.mine(self.regtest.node, blocks)
        self.scanner.sync()
        credit_as_if_every_signer_acknowledged(self.engine)

    def mature(self, rounds: RoundEngine) -> None:
        """Mine to the maturation depth of what is broadcast, following each block."""
        for _ in range(POOL.maturation):
            self.mine(1)
            rounds.track()

    def withdrawals(self) -> dict[str, wstore.Withdrawal]:
        """The submitted withdrawals as stored, by request id."""
        found = {}
        with self.engine.connect() as conn:
            for request_id, (client_id, _) in self.requests.items():
                withdrawal = wstore.get_by_request(conn, client_id, request_id)
                assert withdrawal is not None
                found[request_id] = withdrawal
        return found

    def paid_on_chain(self) -> dict[bytes, list[int]]:
        """Destination script → every output paying it since this pool started (from blocks)."""
        chain = self.regtest.node.chain
        wanted = {script for _, script in self.requests.values()}
        paid: dict[bytes, list[int]] = {script: [] for script in wanted}
        for height in range(self.start_height, chain.tip()[0] + 1):
            for tx in chain.block(chain.block_hash(height)).transactions:
                for out in tx.outputs:
                    if out.script_pubkey in wanted:
                        paid[out.script_pubkey].append(out.value)
        return paid

    def view(self, round_id: str | None) -> rstore.RoundView:
        assert round_id is not None
        with self.engine.connect() as conn:
            view = rstore.round_view(conn, round_id)
        assert view is not None
        return view

    def reserved(self) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(select(utxos.c.txid).where(utxos.c.reserved_round.is_not(None)))
            return len(rows.all())


@pytest.fixture
def pool(
    engine: Engine, regtest: Regtest, pki: Pki, signers: dict[str, str], tmp_path: Path
) -> Pool:
    start = regtest.node.chain.tip()[0] + 1
    user, password = regtest.node.credentials
    config = CoordinatorConfig(
        network=REGTEST,
        data_dir=tmp_path,
        database_url=engine.url.render_as_string(hide_password=False),
        server=ServerConfig(
            listen="127.0.0.1:0",
            tls=coordinator_tls(pki),
            clients=frozenset(),
            admins=frozenset(),
        ),
        chain=ChainConfig(rpc_url=regtest.node.rpc_url, rpc_user=user, rpc_password=password),
        pool=POOL,
        rounds=ROUNDS,
        signers=signer_endpoints(signers),
    )
    add_active_series(engine, SERIES, time.time())
    scanner = Scanner(engine, regtest.node.chain, REGTEST, POOL, DEPOSITS, start_height=start)
    scanner.sync()
    return Pool(regtest, engine, config, start, scanner)


def assert_paid_exactly_once(pool: Pool) -> None:
    """Every withdrawal completed, its destination paid its amount once, read from the node."""
    paid = pool.paid_on_chain()
    for request_id, w in pool.withdrawals().items():
        assert w.status is Status.COMPLETED, (request_id, w)
        assert paid[w.script_pubkey] == [w.amount], request_id


def outcomes(view: rstore.RoundView) -> dict[str, Outcome]:
    return {o.signer_id: o.outcome for o in view.outcomes}


# --------------------------------------------------------------------------- tests


def test_a_round_pays_every_withdrawal_and_completes_at_maturation(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pool.config = replace(pool.config, pool=replace(POOL, max_weight=12_000))
    pool.fund([BTC // 10] * 30)
    amounts = {}
    for i in range(60):
        client = "alice" if i % 2 else "bob"
        amounts[f"{client}-{i}"] = 3_000_000 + 10_007 * i
        pool.submit(client, f"{client}-{i}", amounts[f"{client}-{i}"])
    with pool.rounds() as rounds:
        started = time.monotonic()
        outcome = rounds.run_round()
        seconds = time.monotonic() - started
        view = pool.view(outcome.round_id)
        txs = view.transactions
        assert outcome.detail == f"{len(txs)} of {len(txs)} transactions broadcast"
        assert len(txs) > 1 and view.record.status is RoundStatus.BROADCAST
        assert set(outcomes(view).values()) == {Outcome.SIGNED}
        assert all(w.status is Status.BROADCAST for w in pool.withdrawals().values())
        pool.mine(1)
        rounds.track()
        assert all(w.status is Status.CONFIRMED for w in pool.withdrawals().values())
        pool.mature(rounds)
    view = pool.view(outcome.round_id)
    assert view.record.status is RoundStatus.COMPLETED
    assert {tx.status for tx in view.transactions} == {TxStatus.COMPLETED}
    assert_paid_exactly_once(pool)
    fees = sum(tx.fee for tx in view.transactions)
    height = pool.scanner.height()
    with pool.engine.connect() as conn:
        shares = sum(conn.execute(select(fee_shares.c.amount)).scalars())
        balance = cstore.balances(conn, height, POOL.min_conf)[SERIES.id]
    assert shares == fees
    assert balance.confirmed + balance.unconfirmed == pool.funded - sum(amounts.values()) - fees
    with pool.engine.connect() as conn:
        stored = rstore.round_signatures(conn, pool.view(outcome.round_id).record.seq)
    wire_data = [sig.hex() for sigs in stored.values() for sig in sigs.values()]
    wire_data += [(tx.final_tx or b"").hex()[:64] for tx in view.transactions]
    assert wire_data and not [s for s in wire_data if s in caplog.text]
    inputs = sum(len(Transaction.parse(tx.final_tx or b"").inputs) for tx in view.transactions)
    print(f"largest round: {len(amounts)} withdrawals, {inputs} inputs, {seconds:.2f} s")


def test_a_transaction_a_reorganisation_takes_out_is_sent_again(pool: Pool) -> None:
    pool.fund([BTC])
    for i in range(2):
        pool.submit("bob", f"bob-reorg-{i}", 15_000_000 + i)
    node = pool.regtest.node
    with pool.rounds() as rounds:
        [txid] = [tx.txid for tx in pool.view(rounds.run_round().round_id).transactions]
        pool.mine(1)
        rounds.track()
        assert {w.status for w in pool.withdrawals().values()} == {Status.CONFIRMED}
        node.invalidate(node.chain.tip()[1])
        pool.scanner.sync()
        rounds.track()
        assert {w.status for w in pool.withdrawals().values()} == {Status.BROADCAST}
        with pool.engine.connect() as conn:
            [tx] = rstore.tracked_transactions(conn)
        assert (tx.txid, tx.status, tx.block_height) == (txid, TxStatus.BROADCAST, None)
        assert txid in node.rpc("getrawmempool")
        pool.mature(rounds)
    assert_paid_exactly_once(pool)


@pytest.mark.parametrize("fault", [Outcome.DOWN, Outcome.FAULTY, Outcome.TIMEOUT], ids=str)
def test_one_bad_signer_costs_the_round_nothing(
    pool: Pool, pki: Pki, signers: dict[str, str], fault: Outcome
) -> None:
    pool.fund([BTC])
    for i in range(3):
        pool.submit("alice", f"alice-{fault}-{i}", 10_000_000 + i)
    with (
        _bad_signer_2(pki, fault) as address,
        pool.rounds({**signers, "signer-2": address}, sign_deadline_seconds=2.0) as rounds,
    ):
        outcome = rounds.run_round()
        view = pool.view(outcome.round_id)
        assert outcome.detail == "1 of 1 transactions broadcast"
        assert outcomes(view) == {"signer-0": Outcome.SIGNED, "signer-1": Outcome.SIGNED,
                                      "signer-2": fault}  # fmt: skip
        [bad] = [o for o in view.outcomes if o.signer_id == "signer-2"]
        assert bad.signatures == 0 and bad.detail
        pool.mature(rounds)
    assert_paid_exactly_once(pool)


@contextmanager
def _bad_signer_2(pki: Pki, fault: Outcome) -> Iterator[str]:
    if fault is Outcome.DOWN:
        yield dead_address()
        return
    with fake_signer(pki, stall_seconds=4.0 if fault is Outcome.TIMEOUT else 0.0) as address:
        yield address


def test_a_round_no_signer_signed_is_abandoned_at_its_deadline_and_a_later_round_pays(
    pool: Pool,
) -> None:
    pool.fund([BTC])
    for i in range(2):
        pool.submit("bob", f"bob-down-{i}", 20_000_000 + i)
    down = {signer_id: dead_address() for signer_id in SIGNER_IDS}
    abandoned = []
    for _ in range(2):  # the same manifest again: the abandoned round is reopened
        with pool.rounds(down, sign_deadline_seconds=1.0, round_deadline_seconds=1.0) as rounds:
            abandoned.append(rounds.run_round())
        view = pool.view(abandoned[-1].round_id)
        assert view.record.status is RoundStatus.ABANDONED
        assert set(outcomes(view).values()) == {Outcome.DOWN}
        assert "signer-1 down: UNAVAILABLE" in view.record.detail
        assert "signer-2 down: UNAVAILABLE" in view.record.detail
        assert pool.reserved() == 0
        for w in pool.withdrawals().values():
            assert (w.status, w.round_seq) == (Status.PENDING, None)
    assert abandoned[0].round_id == abandoned[1].round_id
    # A request too big to pay changes the manifest but not the transaction, which moves to the
    # new round.
    pool.submit("bob", "bob-too-big", 100 * BTC)
    with pool.rounds() as rounds:
        retried = rounds.run_round()
        assert retried.detail == "1 of 1 transactions broadcast"
        assert pool.view(retried.round_id).transactions[0].txid == view.transactions[0].txid
        assert "rebuilt in round" in pool.view(abandoned[0].round_id).record.detail
        pool.mature(rounds)
    assert pool.withdrawals().pop("bob-too-big").status is Status.DEFERRED
    del pool.requests["bob-too-big"]
    assert_paid_exactly_once(pool)


def _inputs(view: rstore.RoundView) -> set[tuple[bytes, int]]:
    """The coins the round's transactions spend."""
    return {
        (txin.prevout.txid, txin.prevout.vout)
        for tx in view.transactions
        for txin in Psbt.parse(tx.psbt).tx.inputs
    }


def test_a_round_one_signer_signed_waits_past_its_deadline_and_later_rounds_pay_with_other_coins(
    pool: Pool, signers: dict[str, str]
) -> None:
    """The wedge of issue 10: a round abandoned after a signer signed left that signature behind
    and every later round spending its coins was refused DOUBLE_SIGN. Now it keeps its coins and
    withdrawals, says so, and completes when its signers return."""
    pool.fund([BTC, BTC])
    pool.submit("bob", "bob-first", 20_000_000)
    down = {**signers, "signer-1": dead_address(), "signer-2": dead_address()}
    with pool.rounds(down, sign_deadline_seconds=1.0, round_deadline_seconds=1.0) as rounds:
        first = rounds.run_round()
        waiting = pool.view(first.round_id)
        assert waiting.record.status is RoundStatus.SIGNING
        assert outcomes(waiting) == {"signer-0": Outcome.SIGNED, "signer-1": Outcome.DOWN,
                                     "signer-2": Outcome.DOWN}  # fmt: skip
        assert waiting.signed_by == ("signer-0",)
        assert f"round {first.round_id} waits for signatures since" in first.detail
        assert "signers that signed: signer-0" in first.detail
        assert "awaiting signer-1 (down) since" in first.detail
        assert pool.withdrawals()["bob-first"].status is Status.IN_ROUND
        assert pool.reserved() > 0 and first.round_id is not None
        with pytest.raises(CancelRefused, match="signed by signer-0 but no transaction has m"):
            rounds.cancel_round(first.round_id)
        pool.submit("bob", "bob-later", 30_000_000)
        later = rounds.run_round()  # asks the waiting round again, then builds a new one
        assert later.round_id not in (None, first.round_id)
        assert pool.view(first.round_id).record.status is RoundStatus.SIGNING
        assert not _inputs(pool.view(first.round_id)) & _inputs(pool.view(later.round_id))
    with pool.engine.connect() as conn:
        alerts, awaiting = rstore.signing_notes(conn, 1.0, time.time())
    assert [a for a in alerts if a.startswith(f"round {first.round_id} waits for signatures")]
    assert f"round {first.round_id}: awaiting signer-2 (down) since" in "\n".join(awaiting)
    with pool.rounds() as rounds:
        assert rounds.run_round() == RoundOutcome(None, "no withdrawals waiting")
        for outcome in (first, later):
            assert pool.view(outcome.round_id).record.status is RoundStatus.BROADCAST
        pool.mature(rounds)
    assert_paid_exactly_once(pool)


def test_a_signer_that_answers_pending_is_asked_again_with_the_same_request_until_it_signs(
    pool: Pool, pki: Pki, signers: dict[str, str]
) -> None:
    pool.fund([BTC])
    pool.submit("alice", "alice-pending", 12_000_000)
    servicer = PendingSigner(master_key(2), pending_answers=2)
    server, address = serve_fake_signer(pki, "signer-2", servicer)
    try:
        addresses = {**signers, "signer-0": dead_address(), "signer-2": address}
        with pool.rounds(addresses, sign_deadline_seconds=2.0, round_deadline_seconds=60) as rounds:
            outcome = rounds.run_round()
            assert outcome.detail == "1 of 1 transactions broadcast"
            view = pool.view(outcome.round_id)
            assert outcomes(view)["signer-2"] is Outcome.SIGNED
            pool.mature(rounds)
    finally:
        server.stop(0)
    assert len(servicer.requests) == 3 and len(set(servicer.requests)) == 1
    assert_paid_exactly_once(pool)


def test_a_round_whose_signer_device_is_still_asked_at_its_deadline_waits_and_can_be_cancelled(
    pool: Pool, pki: Pki
) -> None:
    pool.fund([BTC])
    pool.submit("alice", "alice-unattended", 12_000_000)
    servicer = PendingSigner(master_key(2), pending_answers=None)
    server, address = serve_fake_signer(pki, "signer-2", servicer)
    try:
        addresses = {"signer-0": dead_address(), "signer-1": dead_address(), "signer-2": address}
        with pool.rounds(
            addresses, sign_deadline_seconds=1.0, round_deadline_seconds=1.0
        ) as rounds:
            outcome = rounds.run_round()
            assert outcome.round_id is not None
            view = pool.view(outcome.round_id)
            assert view.record.status is RoundStatus.SIGNING and view.signed_by == ()
            [pending] = [o for o in view.outcomes if o.signer_id == "signer-2"]
            assert (pending.outcome, pending.since) == (Outcome.PENDING, 1_700_000_000)
            assert pending.awaited == (
                "awaiting approval on signer-2's device since 2023-11-14T22:13:20Z"
            )
            assert pending.awaited in outcome.detail
            cancelled = rounds.cancel_round(outcome.round_id)
            assert cancelled.detail.startswith("abandoned: cancelled by an operator")
            assert pool.view(outcome.round_id).record.status is RoundStatus.ABANDONED
            with pytest.raises(CancelRefused, match="is abandoned, not signing"):
                rounds.cancel_round(outcome.round_id)
            with pytest.raises(KeyError):
                rounds.cancel_round("00" * 32)
    finally:
        server.stop(0)
    assert pool.reserved() == 0
    assert pool.withdrawals()["alice-unattended"].status is Status.PENDING


def test_a_refused_request_is_rejected_and_the_round_rebuilt_without_it(pool: Pool) -> None:
    pool.fund([BTC])
    for i in range(3):
        pool.submit("alice", f"alice-ok-{i}", 5_000_000 + i)
    pool.submit("alice", "alice-denied", 7_000_000, DENIED)
    with pool.rounds() as rounds:
        outcome = rounds.run_round()
        rebuilt = pool.view(outcome.round_id)
        first = pool.view(rebuilt.rebuilt_from_id)
        assert first.record.status is RoundStatus.ABANDONED
        assert first.record.detail == "rebuilt without 1 refused requests"
        assert outcomes(first) == {"signer-0": Outcome.REFUSED, "signer-1": Outcome.REFUSED,
                                   "signer-2": Outcome.SIGNED}  # fmt: skip
        refusal = next(o for o in first.outcomes if o.signer_id == "signer-0").refusals[0]
        assert (refusal.scope, refusal.reason_code) == ("request", "DESTINATION_DENIED")
        assert refusal.request_id == "alice-denied"
        assert rebuilt.record.status is RoundStatus.BROADCAST
        denied = pool.withdrawals().pop("alice-denied")
        assert denied.status is Status.REJECTED and "DESTINATION_DENIED" in denied.reason
        pool.mature(rounds)
    assert pool.paid_on_chain()[DENIED] == []
    del pool.requests["alice-denied"]
    assert_paid_exactly_once(pool)


@pytest.mark.parametrize(
    "crash_at", [AFTER_ROUND_PERSISTED, AFTER_SIGNATURES_PERSISTED, AFTER_BROADCAST]
)
def test_a_coordinator_killed_in_a_round_resumes_and_pays_exactly_once(
    pool: Pool, crash_at: str, tmp_path: Path
) -> None:
    pool.fund([BTC, BTC])
    for i in range(4):
        pool.submit("bob", f"bob-{crash_at}-{i}", 30_000_000 + i)
    child = run_child(pool.config, RoundKind.WITHDRAWAL, crash_at, tmp_path)
    assert child.returncode == -signal.SIGKILL, child.stderr
    _check_crash_state(pool, crash_at)
    with pool.rounds() as rounds:
        [resumed] = rounds.resume()
        assert resumed.detail.endswith("transactions broadcast"), resumed
        assert rounds.run_round() == RoundOutcome(None, "no withdrawals waiting")
        pool.mature(rounds)
    assert_paid_exactly_once(pool)
    with pool.engine.connect() as conn:
        assert len(rstore.list_rounds(conn, 10)) == 1


def _check_crash_state(pool: Pool, crash_at: str) -> None:
    """What the killed process left in the store and on the node."""
    with pool.engine.connect() as conn:
        [record] = rstore.open_rounds(conn)
        txs = rstore.transactions(conn, record.seq)
        stored = rstore.round_signatures(conn, record.seq)
    assert pool.reserved() > 0
    assert all(w.status in (Status.IN_ROUND, Status.SIGNED) for w in pool.withdrawals().values())
    mempool = set(pool.regtest.node.rpc("getrawmempool"))
    if crash_at == AFTER_ROUND_PERSISTED:
        assert not stored and {tx.status for tx in txs} == {TxStatus.UNSIGNED}
    elif crash_at == AFTER_SIGNATURES_PERSISTED:
        assert stored and {tx.status for tx in txs} == {TxStatus.UNSIGNED}
    else:
        assert all(tx.broadcast_at is not None for tx in txs[:1])
        assert txs[0].txid in mempool
    if crash_at != AFTER_BROADCAST:
        assert not {tx.txid for tx in txs} & mempool


def test_signer_pool_asks_every_signer_and_reports_each_answer(
    pki: Pki, signers: dict[str, str]
) -> None:
    """The client side on its own: every signer at once, a down one among them."""
    addresses = {**signers, "signer-2": dead_address()}
    tls = coordinator_tls(pki)
    with SignerPool(signer_endpoints(addresses), tls) as pool:
        shown = pool.display_address("signer-0", REGTEST, SERIES.id, CHANGE, 3, CALL_TIMEOUT)
        assert shown.address == SERIES.address(CHANGE, 3, REGTEST)
        results = dict(pool.sign_round_each(b"not a manifest", [], deadline=5.0))
        assert set(results) == set(SIGNER_IDS)
        assert results["signer-2"].error is not None
        assert results["signer-2"].error.code == grpc.StatusCode.UNAVAILABLE.name
        for signer_id in ("signer-0", "signer-1"):
            [refusal] = results[signer_id].refusals
            assert refusal.reason_code == "MALFORMED_MANIFEST" and refusal.scope == "round"


def test_an_operator_cancel_of_a_broadcast_round_records_its_withdrawals_and_builds_a_replacement(
    pool: Pool,
) -> None:
    pool.fund([BTC])
    alice, bob = f"alice-op-{pool.start_height}", f"bob-op-{pool.start_height}"  # signers shared
    pool.submit("alice", alice, 12_000_000)
    pool.submit("bob", bob, 3_000_000)
    with pool.rounds() as rounds:
        outcome = rounds.run_round()
        assert outcome.round_id is not None
        cancelled = rounds.cancel_round(outcome.round_id)
        assert cancelled.detail.startswith("replacement requested: an operator cancelled 2 ")
        assert pool.view(outcome.round_id).record.status is RoundStatus.BROADCAST
        with pool.engine.connect() as conn:
            waiting = cancel_store.waiting_cancels(conn)
        assert {(c.request_id, c.by_operator) for c in waiting} == {(alice, True), (bob, True)}
        [built] = rounds.run_cancels()
        view = pool.view(built.round_id)
        # signed; bcoin (no replace-by-fee) refuses it while the original is in its mempool
        assert view.record.status in (RoundStatus.SIGNED, RoundStatus.BROADCAST), built.detail
        assert len(view.signed_by) >= 2
        assert decode_cancel(view.record.manifest).requeue  # version 2: queued again, not lost
        [replacement] = view.transactions
        assert replacement.replaces == pool.view(outcome.round_id).transactions[0].txid
    withdrawals = pool.withdrawals()
    assert {withdrawals[r].status for r in (alice, bob)} == {Status.BROADCAST}


def test_the_signers_refuse_a_hostile_second_payment_of_an_operator_cancelled_request(
    pool: Pool,
) -> None:
    """A hostile coordinator cancels a broadcast round as an operator, then queues its
    withdrawal again at once (the original, fully signed, may still confirm): the signer
    daemons, asking their own node, refuse to pay it again while the replacement is not
    confirmed."""
    pool.fund([BTC, BTC])
    request_id = f"carol-op-{pool.start_height}"
    pool.submit("alice", request_id, 7_000_000)
    with pool.rounds() as rounds:
        outcome = rounds.run_round()
        assert outcome.round_id is not None
        rounds.cancel_round(outcome.round_id)
        [built] = rounds.run_cancels()
        assert len(pool.view(built.round_id).signed_by) >= 2, built.detail
        hostile = pool.withdrawals()[request_id]
        with transaction(pool.engine) as conn:  # re-queued before the chain shows anything
            wstore.set_status(conn, [hostile.id], Status.PENDING, time.time(), clear_round=True)
        again = rounds.run_round()
        assert again.round_id is None, again.detail  # refused: rebuilt without it, nothing left
    refused = pool.withdrawals()[request_id]
    assert refused.status is Status.PENDING
    assert "CANCEL_NOT_SETTLED" in refused.reason
    pool.mine(1)
    assert [len(paid) for paid in pool.paid_on_chain().values()] == [1]  # the original, once


def test_an_operator_cancel_of_a_transaction_without_change_is_refused_naming_it(
    pool: Pool,
) -> None:
    chain = replace(pool.config.chain, fee_floor=1_000, fee_ceiling=1_000)  # one fee rate
    pool.config = replace(pool.config, chain=chain)
    pool.fund([BTC])
    pool.submit("alice", "alice-probe", 10_000_000)
    dead = {f"signer-{i}": dead_address() for i in range(3)}
    with pool.rounds(dead, sign_deadline_seconds=0.5, round_deadline_seconds=0.5) as rounds:
        probe_round = rounds.run_round()  # abandoned, its coin back: only its fee is wanted
    probe = pool.view(probe_round.round_id).transactions[0]
    assert pool.view(probe_round.round_id).record.status is RoundStatus.ABANDONED
    with pool.engine.connect() as conn:
        found = wstore.get_by_request(conn, "alice", "alice-probe")
        assert found is not None
    with transaction(pool.engine) as conn:  # the probe is not to be paid
        wstore.set_status(conn, [found.id], Status.CANCELLED, time.time())
    with pool.rounds() as rounds:
        pool.submit("alice", "alice-all", BTC - probe.fee - 100)  # change below dust: absorbed
        outcome = rounds.run_round()
        [tx] = pool.view(outcome.round_id).transactions
        assert outcome.round_id is not None
        assert len(Psbt.parse(tx.psbt).tx.outputs) == 1
        with pytest.raises(CancelRefused, match=f"transaction {tx.txid} has no change output"):
            rounds.cancel_round(outcome.round_id)
        with pool.engine.connect() as conn:
            assert cancel_store.waiting_cancels(conn) == []  # nothing changed
