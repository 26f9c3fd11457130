"""The coordinator credits a deposit only once n - m + 1 signers of its series acknowledged it,
each after checking it on its own node: three real signer daemons (2-of-3, emulator backends)
over mutual TLS, with the session's bcoin regtest node as their node and the coordinator's, on
both stores.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine

from coordinator.config import DepositsConfig, LivenessConfig, PoolConfig
from coordinator.credits import REFUSED_ALERT, Credits, acknowledging_keys
from coordinator.health import HealthBoard
from coordinator.registrations import Registrations
from coordinator.scanner import Scanner
from coordinator.signers import SignerPool
from coordinator.store import alerts as astore
from coordinator.store import deposits as dstore
from coordinator.store import registrations as regstore
from coordinator.store.deposits import Acknowledgement, DepositAddress, Status
from pool.networks import REGTEST
from pool.series import RECEIVE
from pool.tx import Transaction
from tests.coordinator_harness import coordinator_tls, dead_address, signer_endpoints
from tests.factories import make_series, master_key, p2wpkh
from tests.regtest_fixtures import Regtest
from tests.store_fixtures import add_active_series
from vpool.devnet.processes import (
    Pki,
    SignerDaemon,
    emulator_backend,
    node_chain,
    write_config,
    write_keystore,
)
from vpool.v1 import common_pb2, signer_pb2

SERIES = make_series(1, 2, [0, 1, 2])
SIGNER_IDS = ("signer-0", "signer-1", "signer-2")
CONFIRMATIONS = 2
RULES = DepositsConfig(confirmations=CONFIRMATIONS, min_deposit=10_000, refund_threshold=2_000)
MINER = p2wpkh("credits miner")
CALL_TIMEOUT = 20.0
INDEXES = itertools.count()


@pytest.fixture(scope="module")
def daemons(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[dict[str, SignerDaemon]]:
    """Three signer daemons, each with the regtest node as its own node and the series
    registered; by id."""
    daemons = []
    for i, signer_id in enumerate(SIGNER_IDS):
        directory = tmp_path_factory.mktemp(signer_id)
        keystore = write_keystore(directory / "keystore.json", master_key(i))
        config = write_config(
            directory,
            pki,
            signer_id,
            emulator_backend(keystore),
            {"deposit_confirmations": CONFIRMATIONS},
            series=[SERIES],
            chain=node_chain(directory, regtest.node.rpc_url, *regtest.node.credentials),
        )
        daemons.append(SignerDaemon(config))
    addresses = {signer_id: d.address for signer_id, d in zip(SIGNER_IDS, daemons, strict=True)}
    with SignerPool(signer_endpoints(addresses), coordinator_tls(pki)) as pool:
        for signer_id in SIGNER_IDS:
            assert pool.register_series(signer_id, REGTEST, SERIES, CALL_TIMEOUT).registered
    yield dict(zip(SIGNER_IDS, daemons, strict=True))
    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log_text()


@pytest.fixture(scope="module")
def signers(daemons: dict[str, SignerDaemon]) -> dict[str, str]:
    """Signer id → address."""
    return {signer_id: daemon.address for signer_id, daemon in daemons.items()}


class Coordinator:
    """The coordinator's parts that credit: its store, scanner, health board and signer pool."""

    def __init__(self, engine: Engine, regtest: Regtest, pki: Pki, signers: dict[str, str]):
        self.engine = engine
        self.regtest = regtest
        self.pki = pki
        self.signers = signers
        start = regtest.node.chain.tip()[0] + 1
        self.scanner = Scanner(
            engine, regtest.node.chain, REGTEST, PoolConfig(), RULES, start_height=start
        )
        self.board = HealthBoard(engine, LivenessConfig(), REGTEST, SIGNER_IDS)
        with self.pool() as pool:
            self.board.check(pool, CALL_TIMEOUT)  # learns every signer's fingerprint

    def pool(self, down: tuple[str, ...] = ()) -> SignerPool:
        """A signer pool in which the ``down`` signers cannot be reached."""
        addresses = {i: dead_address() if i in down else a for i, a in self.signers.items()}
        return SignerPool(signer_endpoints(addresses), coordinator_tls(self.pki))

    def credit(self, down: tuple[str, ...] = ()) -> list[dstore.Deposit]:
        """One run of the daemon's crediting step."""
        with self.pool(down) as pool:
            return Credits(self.engine, REGTEST, pool, self.board, 10.0, time.time).run()

    def deposit(
        self, value: int = 70_000, *, registered: bool = True, missed_by: tuple[str, ...] = ()
    ) -> dstore.Deposit:
        """Pay a fresh receive address (handed out and registered with every signer unless told
        otherwise, or but those that ``missed_by`` it), mine its confirmations and scan; the
        deposit."""
        index = next(INDEXES)
        script = SERIES.derive(RECEIVE, index).script_pubkey
        if registered:
            with self.pool() as pool:
                for signer_id in SIGNER_IDS:
                    if signer_id not in missed_by:
                        pool.register_deposit_address(
                            signer_id, REGTEST, SERIES.id, index, "", CALL_TIMEOUT
                        )
            with self.engine.begin() as conn:
                dstore.record_address(
                    conn, DepositAddress(script, SERIES.id, index, "client", "user", "", 0.0)
                )
                regstore.record_missed(conn, script, missed_by, 0.0)
        txid = self.regtest.wallet.fund(self.regtest.node, [(script, value)])
        self.regtest.node.mine(CONFIRMATIONS, MINER)
        self.scanner.sync()
        raw = self.regtest.node.chain.raw_transaction(txid)
        assert raw is not None
        vout = [o.script_pubkey for o in Transaction.parse(raw).outputs].index(script)
        return self.get(txid, vout)

    def get(self, txid: str, vout: int) -> dstore.Deposit:
        with self.engine.connect() as conn:
            found = dstore.get(conn, txid, vout)
        assert found is not None
        return found

    def refresh(self, deposit: dstore.Deposit) -> dstore.Deposit:
        return self.get(*deposit.outpoint)

    def answers(self, deposit: dstore.Deposit) -> dict[str, tuple[bool, str]]:
        with self.engine.connect() as conn:
            found = dstore.acknowledgements(conn, *deposit.outpoint)
        return {a.signer_id: (a.acknowledged, a.reason_code) for a in found}

    def details(self, deposit: dstore.Deposit) -> list[tuple[Status, str]]:
        with self.engine.connect() as conn:
            events = dstore.events_after(conn, deposit.client_id, 0, 10_000)
        return [(e.status, e.detail) for e in events if (e.txid, e.vout) == deposit.outpoint]

    def alerts(self) -> list[str]:
        with self.engine.connect() as conn:
            return [a.detail for a in astore.recent_alerts(conn, 100) if a.kind == REFUSED_ALERT]


@pytest.fixture
def coordinator(
    engine: Engine, regtest: Regtest, pki: Pki, signers: dict[str, str], tmp_path: Path
) -> Coordinator:
    add_active_series(engine, SERIES)
    return Coordinator(engine, regtest, pki, signers)


def test_a_confirmed_deposit_waits_until_n_minus_m_plus_1_signers_acknowledged_it(
    coordinator: Coordinator,
) -> None:
    deposit = coordinator.deposit()
    assert deposit.status is Status.CONFIRMED
    assert coordinator.credit(down=("signer-1", "signer-2")) == []
    waiting = coordinator.refresh(deposit)
    assert waiting.status is Status.CONFIRMED
    assert coordinator.answers(deposit) == {"signer-0": (True, "")}
    assert coordinator.details(deposit)[-1] == (
        Status.CONFIRMED, "acknowledged by signer-0; awaiting acknowledgements: 1 of 2",
    )  # fmt: skip
    [credited] = coordinator.credit(down=("signer-0", "signer-2"))  # a down signer: asked later
    assert (credited.outpoint, credited.status) == (deposit.outpoint, Status.CREDITED)
    assert coordinator.answers(deposit) == {"signer-0": (True, ""), "signer-1": (True, "")}
    assert coordinator.details(deposit)[-1] == (
        Status.CREDITED, "acknowledged by 2 signers (signer-0, signer-1); 2 needed",
    )  # fmt: skip


def test_a_deposit_to_an_address_the_signers_never_registered_is_not_credited(
    coordinator: Coordinator,
) -> None:
    deposit = coordinator.deposit(registered=False)
    assert coordinator.credit() == []
    assert coordinator.refresh(deposit).status is Status.CONFIRMED
    refused = (False, "DEPOSIT_ADDRESS_NOT_REGISTERED")
    assert coordinator.answers(deposit) == {i: refused for i in SIGNER_IDS}
    key = f"{deposit.txid}:{deposit.vout}"
    assert len([a for a in coordinator.alerts() if key in a]) == 3
    assert coordinator.credit() == []  # a final refusal is not asked again, nor alerted again
    assert len([a for a in coordinator.alerts() if key in a]) == 3


def test_a_signer_is_not_asked_about_a_deposit_to_an_address_it_missed_until_replayed(
    coordinator: Coordinator,
) -> None:
    """Asked before the replay it would refuse DEPOSIT_ADDRESS_NOT_REGISTERED, which is final."""
    deposit = coordinator.deposit(missed_by=("signer-2",))
    coordinator.credit(down=("signer-1",))
    assert coordinator.answers(deposit) == {"signer-0": (True, "")}
    with coordinator.pool() as pool:
        board = coordinator.board
        assert Registrations(coordinator.engine, REGTEST, pool, board, 10.0, time.time).replay()
    [credited] = coordinator.credit(down=("signer-0", "signer-1"))
    assert credited.outpoint == deposit.outpoint
    assert coordinator.answers(deposit) == {"signer-0": (True, ""), "signer-2": (True, "")}


def test_a_deposit_classified_for_a_refund_is_never_shown_to_the_signers(
    coordinator: Coordinator,
) -> None:
    small = coordinator.deposit(5_000)
    assert small.status is Status.REFUND_PENDING
    coordinator.credit()
    assert coordinator.answers(small) == {}
    assert coordinator.refresh(small).status is Status.REFUND_PENDING


def claim(**fields: object) -> signer_pb2.DepositClaim:
    values: dict[str, object] = {"series_id": 1, "index": 0, "txid": "ab" * 32, "value": 1}
    return signer_pb2.DepositClaim(**{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deposits", "field"),
    [
        ([], "deposits"),
        ([claim()] * 1001, "deposits"),
        ([claim(txid="AB" * 32)], "deposits[0].txid"),
        ([claim(), claim(txid="abc")], "deposits[1].txid"),
        ([claim(index=2**31)], "deposits[0].index"),
        ([claim(value=0)], "deposits[0].value"),
        ([claim(value=21_000_000 * 100_000_000 + 1)], "deposits[0].value"),
        ([claim(), claim()], "deposits[1].vout"),
    ],
)
def test_bad_acknowledge_requests_are_invalid_arguments_naming_the_field(
    daemons: dict[str, SignerDaemon], pki: Pki, deposits: list[signer_pb2.DepositClaim], field: str
) -> None:
    stub = daemons["signer-0"].stub(pki)
    request = signer_pb2.AcknowledgeDepositsRequest(
        network=common_pb2.NETWORK_REGTEST, deposits=deposits
    )
    with pytest.raises(grpc.RpcError) as failure:
        stub.AcknowledgeDeposits(request, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith(f"{field}: ")


def test_an_acknowledge_request_for_another_network_is_an_invalid_argument(
    daemons: dict[str, SignerDaemon], pki: Pki
) -> None:
    request = signer_pb2.AcknowledgeDepositsRequest(
        network=common_pb2.NETWORK_MAINNET, deposits=[claim()]
    )
    with pytest.raises(grpc.RpcError) as failure:
        daemons["signer-0"].stub(pki).AcknowledgeDeposits(request, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("network: ")


def test_a_fingerprint_two_signers_answered_with_counts_for_neither() -> None:
    fingerprints = [k.origin.fingerprint.hex() for k in SERIES.keys]

    def ack(signer_id: str, fingerprint: str) -> Acknowledgement:
        return Acknowledgement("ab" * 32, 0, signer_id, fingerprint, True, "", "", 0.0)

    honest = [ack("signer-0", fingerprints[0]), ack("signer-2", fingerprints[2])]
    assert acknowledging_keys(honest, SERIES) == {fingerprints[0], fingerprints[2]}
    posing = [ack("signer-0", fingerprints[1]), ack("signer-1", fingerprints[1])]
    assert acknowledging_keys([*posing, honest[1]], SERIES) == {fingerprints[2]}
    foreign = [ack("signer-9", "00000000")]
    assert acknowledging_keys(foreign, SERIES) == set()
