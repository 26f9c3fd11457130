"""Signer faults: the round engine against f faulty signers among honest signer daemons, for a
2-of-3 and a 3-of-5 pool, f from 1 to n − m + 1.

The honest signers are real daemons (emulator backends, the regtest node, mutual TLS); a faulty
one is ``FaultySigner`` below, a gRPC peer over mutual TLS with the signer's certificate and,
where the fault needs it, its real key, in the place of that signer. The faults: down (nobody
listens), slow (answers after the call's deadline), flapping (UNAVAILABLE, then a right answer,
alternately), a signature over another sighash, by another key, truncated, high-S, garbage,
signatures for the first input only, and a stale policy (the round refused: the signer's policy
does not know the pool's series).

Each cell is one withdrawal spending two inputs. With f ≤ n − m the round must complete at once
(broadcast, the faulty signers named in the round's record, not ``signed``). With f = n − m + 1
it must not pay anything while the fault lasts: the round waits (signing, its inputs reserved)
or is abandoned cleanly (requests back to pending), and once the signers return (the real
daemons in their place) it completes. Either way the withdrawal is then mined to maturation and
paid exactly once, read from the node's blocks; funds lost is what was not.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from coordinator.config import (
    ChainConfig,
    CoordinatorConfig,
    DepositsConfig,
    PoolConfig,
    RoundsConfig,
    ServerConfig,
)
from coordinator.rounds import RoundEngine
from coordinator.scanner import Scanner
from coordinator.signers import SignerPool
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.rounds import Outcome, RoundStatus
from coordinator.store.schema import make_engine, migrate, transaction
from coordinator.store.withdrawals import Status
from pool import ecdsa
from pool.address import script_pubkey_to_address
from pool.hdkeys import ExtendedPrivateKey
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.series import RECEIVE, Series
from pool.sighash import SIGHASH_ALL, SegwitV0Sighasher
from tests.chain_harness import signer_chain
from tests.coordinator_harness import coordinator_tls, dead_address, signer_endpoints
from tests.credit_fixtures import credit_as_if_every_signer_acknowledged
from tests.factories import BTC, make_series, master_key, p2wpkh
from tests.regtest_fixtures import Regtest
from tests.reliability.conftest import Rows
from tests.store_fixtures import add_active_series
from vpool.devnet.processes import Pki, SignerDaemon, emulator_backend, write_config, write_keystore
from vpool.v1 import signer_pb2, signer_pb2_grpc

SERIES = {(2, 3): make_series(1, 2, [0, 1, 2]), (3, 5): make_series(2, 3, [0, 1, 2, 3, 4])}
LIMITS = {
    "max_request_amount": 20 * BTC,
    "max_round_amount": 1_000 * BTC,
    "max_daily_amount": 100_000 * BTC,
}
POOL = PoolConfig(min_conf=1, maturation=2, coinbase_maturity=100)
ROUNDS = RoundsConfig(sign_deadline_seconds=2.0, round_deadline_seconds=5.0, poll_seconds=0.5)
SLOW_SECONDS = 3.0
"""A slow signer answers after this long: past the call's deadline (2 s)."""
CALL_TIMEOUT = 20.0
FAULTS = (
    "down",
    "slow",
    "flapping",
    "other_sighash",
    "other_key",
    "truncated",
    "high_s",
    "garbage",
    "some_inputs",
    "stale_policy",
)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# --------------------------------------------------------------------------- the faulty signer


def _der(r: int, s: int) -> bytes:
    def part(x: int) -> bytes:
        raw = x.to_bytes(33, "big").lstrip(b"\0")
        raw = b"\0" + raw if raw[0] & 0x80 else raw
        return b"\x02" + bytes([len(raw)]) + raw

    body = part(r) + part(s)
    return b"\x30" + bytes([len(body)]) + body


def _high_s(der: bytes) -> bytes:
    r_len = der[3]
    r = int.from_bytes(der[4 : 4 + r_len], "big")
    s = int.from_bytes(der[6 + r_len :], "big")
    return _der(r, SECP256K1_N - s)


class FaultySigner(signer_pb2_grpc.SignerServiceServicer):
    """A signer with one fault (see the module docstring); it holds the signer's real key."""

    def __init__(self, master: ExtendedPrivateKey, fault: str) -> None:
        self._master = master
        self._fault = fault
        self._calls = 0

    def SignRound(
        self, request: signer_pb2.SignRoundRequest, context: Any
    ) -> signer_pb2.SignRoundResponse:
        self._calls += 1
        manifest_hash = hashlib.sha256(request.manifest).digest()
        if self._fault == "flapping" and self._calls % 2 == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "flapping: down this time")
        if self._fault == "slow":
            time.sleep(SLOW_SECONDS)
        if self._fault == "stale_policy":
            refusal = signer_pb2.Refusal(
                scope=signer_pb2.Refusal.SCOPE_ROUND,
                reason_code="SERIES_NOT_REGISTERED",
                message="series: not in this signer's (stale) policy",
            )
            return signer_pb2.SignRoundResponse(manifest_hash=manifest_hash, refusals=[refusal])
        signed = [
            signer_pb2.SignedPsbt(psbt_index=index, signatures=self._signatures(raw))
            for index, raw in enumerate(request.psbts)
        ]
        return signer_pb2.SignRoundResponse(
            manifest_hash=manifest_hash, signed_psbts=signed, signed_all=True
        )

    def _signatures(self, raw: bytes) -> list[signer_pb2.PartialSignature]:
        psbt = Psbt.parse(raw)
        sighasher = SegwitV0Sighasher(psbt.tx)
        found = []
        for index, psbt_input in enumerate(psbt.inputs):
            assert psbt_input.witness_script is not None and psbt_input.witness_utxo is not None
            if self._fault == "some_inputs" and index > 0:
                continue
            for pubkey, origin in psbt_input.bip32_derivations.items():
                if origin.fingerprint != self._master.fingerprint:
                    continue
                signer = self._master
                if self._fault == "other_key":
                    signer = master_key(99)
                key = signer.derive_path(origin.path).private_key
                amount = psbt_input.witness_utxo.value + (self._fault == "other_sighash")
                digest = sighasher.digest(index, psbt_input.witness_script, amount)
                der = ecdsa.sign(key, digest)
                if self._fault == "truncated":
                    der = der[:-6]
                elif self._fault == "high_s":
                    der = _high_s(der)
                elif self._fault == "garbage":
                    der = hashlib.sha256(der).digest() * 2
                signature = der + bytes([SIGHASH_ALL])
                found.append(
                    signer_pb2.PartialSignature(
                        input_index=index, pubkey=pubkey, signature=signature
                    )
                )
        return found


@contextmanager
def faulty(pki: Pki, signer_id: str, key: int, fault: str) -> Iterator[str]:
    """The faulty peer in the place of ``signer_id``; yields its address."""
    if fault == "down":
        yield dead_address()
        return
    cert, pem = pki.issue("signer", signer_id)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    signer_pb2_grpc.add_SignerServiceServicer_to_server(  # type: ignore[no-untyped-call]
        FaultySigner(master_key(key), fault), server
    )
    credentials = grpc.ssl_server_credentials(
        [(pem.read_bytes(), cert.read_bytes())],
        root_certificates=pki.ca_path.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


# --------------------------------------------------------------------------- the pools


@pytest.fixture(scope="module")
def daemons(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[dict[str, str]]:
    """Five signer daemons (keys 0–4); signer-i approves the series holding key i."""
    started = []
    for i in range(5):
        signer_id = f"signer-{i}"
        directory = tmp_path_factory.mktemp(signer_id)
        keystore = write_keystore(directory / "keystore.json", master_key(i))
        mine = [s for s in SERIES.values() if i < s.n]
        config = write_config(
            directory,
            pki,
            signer_id,
            emulator_backend(keystore),
            LIMITS,
            series=mine,
            chain=signer_chain(directory, regtest.node),
        )
        started.append(SignerDaemon(config))
    addresses = {f"signer-{i}": d.address for i, d in enumerate(started)}
    with SignerPool(signer_endpoints(addresses), coordinator_tls(pki)) as pool:
        for series in SERIES.values():
            for i in range(series.n):
                assert pool.register_series(f"signer-{i}", REGTEST, series, CALL_TIMEOUT).registered
    yield addresses
    for daemon in started:
        assert daemon.stop() == 0, daemon.log_text()


@dataclass
class FaultPool:
    """A coordinator store of one series on the shared node and signer daemons."""

    regtest: Regtest
    series: Series
    engine: Engine
    config: CoordinatorConfig
    scanner: Scanner
    honest: dict[str, str]
    start_height: int
    next_receive: int = 0
    paid: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    """request id → (destination script, amount) of every withdrawal submitted."""

    @contextmanager
    def rounds(self, replaced: dict[str, str] | None = None) -> Iterator[RoundEngine]:
        config = replace(self.config, signers=signer_endpoints({**self.honest, **(replaced or {})}))
        with SignerPool.from_config(config) as signers:
            yield RoundEngine(config, self.engine, self.regtest.node.chain, signers)

    def mine(self, blocks: int) -> None:
        self.regtest.wallet.mine(self.regtest.node, blocks)
        self.scanner.sync()
        credit_as_if_every_signer_acknowledged(self.engine)

    def fund(self, values: list[int]) -> None:
        outputs = []
        for value in values:
            outputs.append((self.series.derive(RECEIVE, self.next_receive).script_pubkey, value))
            self.next_receive += 1
        self.regtest.wallet.fund(self.regtest.node, outputs)
        self.mine(POOL.min_conf)

    def submit(self, request_id: str, amount: int) -> None:
        script = p2wpkh(f"faults/{self.series.id}/{self.start_height}/{request_id}")
        self.paid[request_id] = (script, amount)
        with transaction(self.engine) as conn:
            wstore.insert_withdrawal(
                conn,
                client_id="client",
                request_id=request_id,
                address=script_pubkey_to_address(script, REGTEST) or "",
                script_pubkey=script,
                amount=amount,
                extra_fee=0,
                now=time.time(),
            )

    def status(self, request_id: str) -> Status:
        with self.engine.connect() as conn:
            found = wstore.get_by_request(conn, "client", request_id)
        assert found is not None
        return found.status

    def lost(self) -> int:
        """Satoshis of the submitted withdrawals not paid exactly once (read from blocks)."""
        chain = self.regtest.node.chain
        wanted = {script for script, _ in self.paid.values()}
        outputs: dict[bytes, list[int]] = {s: [] for s in wanted}
        for height in range(self.start_height, chain.tip()[0] + 1):
            for tx in chain.block(chain.block_hash(height)).transactions:
                for out in tx.outputs:
                    if out.script_pubkey in wanted:
                        outputs[out.script_pubkey].append(out.value)
        return sum(
            amount if outputs[script] != [amount] else 0 for script, amount in self.paid.values()
        )


@pytest.fixture(scope="module")
def fault_pools(
    regtest: Regtest, pki: Pki, daemons: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[int, int], FaultPool]]:
    pools = {}
    engines = []
    for (m, n), series in SERIES.items():
        directory = tmp_path_factory.mktemp(f"faults-{m}-of-{n}")
        engine = make_engine(f"sqlite:///{directory / 'coordinator.db'}")
        migrate(engine)
        engines.append(engine)
        add_active_series(engine, series, time.time())
        user, password = regtest.node.credentials
        start = regtest.node.chain.tip()[0] + 1
        config = CoordinatorConfig(
            network=REGTEST,
            data_dir=directory,
            database_url=str(engine.url),
            server=ServerConfig(
                listen="127.0.0.1:0",
                tls=coordinator_tls(pki),
                clients=frozenset(),
                admins=frozenset(),
            ),
            chain=ChainConfig(rpc_url=regtest.node.rpc_url, rpc_user=user, rpc_password=password),
            pool=POOL,
            rounds=ROUNDS,
            signers=(),
        )
        honest = {f"signer-{i}": daemons[f"signer-{i}"] for i in range(n)}
        scanner = Scanner(
            engine,
            regtest.node.chain,
            REGTEST,
            POOL,
            DepositsConfig(confirmations=1),
            start_height=start,
        )
        scanner.sync()
        pools[(m, n)] = FaultPool(regtest, series, engine, config, scanner, honest, start)
    yield pools
    for engine in engines:
        engine.dispose()


# --------------------------------------------------------------------------- one cell


@dataclass
class Tally:
    runs: int = 0
    completed: int = 0
    waited: int = 0
    lost: int = 0
    failures: list[str] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """The last round's outcome of each signer, as first recorded."""


def run_cell(pool: FaultPool, pki: Pki, fault: str, f: int, tally: Tally) -> None:
    """One round with the last ``f`` signers faulty; the checks of the module docstring."""
    m, n = pool.series.m, pool.series.n
    request_id = f"{fault}-{f}-{len(pool.paid)}"
    pool.fund([30_000_000, 30_000_000])
    pool.submit(request_id, 50_000_000)
    faulty_ids = [f"signer-{i}" for i in range(n - f, n)]
    tally.runs += 1
    where = f"{m}-of-{n}, {f} {fault}"
    with _faulty_signers(pki, faulty_ids, fault) as replaced, pool.rounds(replaced) as rounds:
        outcome = rounds.run_round()
        assert outcome.round_id is not None, outcome
        with pool.engine.connect() as conn:
            view = rstore.round_view(conn, outcome.round_id)
        assert view is not None
        named = {o.signer_id: o.outcome for o in view.outcomes}
        tally.outcomes = named
        broadcast = view.record.status is RoundStatus.BROADCAST
        if f <= n - m:
            if not broadcast:
                tally.failures.append(f"{where}: round {view.record.status}, {view.record.detail}")
        elif broadcast and fault != "flapping":
            tally.failures.append(f"{where}: paid without m honest signers")
        if broadcast:
            tally.completed += 1
            late = [i for i in faulty_ids if named.get(i) is Outcome.SIGNED]
            if late and fault != "flapping":
                tally.failures.append(f"{where}: faulty {late} recorded as signed")
        else:
            tally.waited += 1
            if view.record.status not in (RoundStatus.SIGNING, RoundStatus.ABANDONED):
                tally.failures.append(f"{where}: round left {view.record.status}")
            mempool = set(pool.regtest.node.rpc("getrawmempool"))
            if {tx.txid for tx in view.transactions} & mempool:
                tally.failures.append(f"{where}: a transaction reached the node")
    with pool.rounds() as rounds:  # the signers are back: the scheduler's ticks
        give_up = time.monotonic() + 60
        while pool.status(request_id) in (Status.PENDING, Status.IN_ROUND):
            if time.monotonic() > give_up:
                break
            rounds.retry_waiting()  # a waiting round, once its poll interval passed
            if pool.status(request_id) is Status.PENDING:
                rounds.run_round()
            time.sleep(ROUNDS.poll_seconds)
    with pool.rounds() as rounds:
        for _ in range(POOL.maturation):
            pool.mine(1)
            rounds.track()
    if pool.status(request_id) is not Status.COMPLETED:
        tally.failures.append(f"{where}: withdrawal {pool.status(request_id)} after the return")
    tally.lost = pool.lost()


@contextmanager
def _faulty_signers(pki: Pki, signer_ids: list[str], fault: str) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        yield {
            signer_id: stack.enter_context(faulty(pki, signer_id, int(signer_id[-1]), fault))
            for signer_id in signer_ids
        }


# --------------------------------------------------------------------------- the tests


def test_a_signer_that_signs_some_inputs_of_its_key_only_is_faulty_and_outvoted(
    fault_pools: dict[tuple[int, int], FaultPool], pki: Pki
) -> None:
    """The fast subset (make test)."""
    tally = Tally()
    run_cell(fault_pools[(2, 3)], pki, "some_inputs", 1, tally)
    assert (tally.completed, tally.lost, tally.failures) == (1, 0, [])
    assert tally.outcomes["signer-2"] is Outcome.FAULTY


def test_a_round_signed_once_beside_two_faulty_signers_completes_when_they_are_repaired(
    fault_pools: dict[tuple[int, int], FaultPool], pki: Pki
) -> None:
    """The fast subset (make test): the waiting round asks the faulty signers again."""
    tally = Tally()
    run_cell(fault_pools[(2, 3)], pki, "other_sighash", 2, tally)
    assert (tally.waited, tally.lost, tally.failures) == (1, 0, [])
    assert tally.outcomes["signer-1"] is tally.outcomes["signer-2"] is Outcome.FAULTY


MATRIX = [
    (shape, fault, f)
    for shape in SERIES
    for fault in FAULTS
    for f in range(1, shape[1] - shape[0] + 2)
]


@pytest.fixture(scope="module")
def matrix_tally() -> Tally:
    return Tally()


@pytest.mark.reliability_full
@pytest.mark.parametrize(("shape", "fault", "f"), MATRIX, ids=lambda x: str(x))
def test_the_fault_matrix(
    fault_pools: dict[tuple[int, int], FaultPool],
    pki: Pki,
    matrix_tally: Tally,
    rows: Rows,
    shape: tuple[int, int],
    fault: str,
    f: int,
) -> None:
    before = len(matrix_tally.failures)
    run_cell(fault_pools[shape], pki, fault, f, matrix_tally)
    lost = sum(p.lost() for p in fault_pools.values())
    _report(matrix_tally, rows, lost)
    assert matrix_tally.failures[before:] == []
    assert lost == 0


def _report(tally: Tally, rows: Rows, lost: int) -> None:
    how = (
        f"2-of-3 and 3-of-5, f faulty signers for f = 1 … n − m + 1, faults: {', '.join(FAULTS)}; "
        "honest signers are daemons on the regtest node, a faulty one a gRPC peer in its place"
    )
    rows.add("signer-fault rounds run", tally.runs, "rounds", f">= {len(MATRIX)}", how)
    rows.add(
        "rounds completed in their first run",
        tally.completed,
        "rounds",
        f">= {sum(f <= s[1] - s[0] for s, _, f in MATRIX)}",
        "every f ≤ n − m cell broadcast at once, the faulty signers named (down, timeout, "
        "faulty, refused); "
        "a flapping signer's second answer may complete a round with f = n − m + 1 too",
    )
    rows.add(
        "rounds waiting or cancelled cleanly with f = n − m + 1",
        tally.waited,
        "rounds",
        f">= {sum(f > s[1] - s[0] and fault != 'flapping' for s, fault, f in MATRIX)}",
        "nothing sent to the node; each completed once the signers returned",
    )
    rows.add(
        "funds lost to signer faults",
        lost,
        "sat",
        "<= 0",
        "withdrawals not paid exactly once, read from the node's blocks after maturation"
        + (f"; failures: {tally.failures}" if tally.failures else ""),
    )
