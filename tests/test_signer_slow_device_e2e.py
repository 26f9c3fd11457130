"""A person who takes longer than one call's deadline at a Jade: the signer answers *pending*,
asks the device once, and hands the same signatures to every identical request, also after a
restart. Driven at the gRPC level as the coordinator will drive it: the identical SignRound,
again, until it is no longer pending.

Real parts: the bcoin regtest node, a signer daemon over mutual TLS with the hwi backend, and
``vpool-signer emulate-jade --approve-after`` (unmodified hwilib talking to it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.descriptor import DescriptorKey
from pool.hdkeys import KeyOrigin
from pool.networks import REGTEST
from pool.series import Series, SeriesState
from signer.keystore import bip48_account_path
from tests.chain_harness import fund, pinned, signer_chain
from tests.factories import BTC, master_key, request
from tests.regtest_fixtures import Regtest
from tests.signer_harness import CALL_TIMEOUT, register_request, round_request
from vpool.devnet.processes import (
    JadeEmulator,
    Pki,
    SignerDaemon,
    hwi_backend,
    master_of,
    mnemonic_for,
    write_config,
)
from vpool.v1 import signer_pb2, signer_pb2_grpc

ACCOUNT = bip48_account_path(REGTEST)
APPROVE_AFTER = 6.0
"""Seconds the emulated person takes to approve: longer than one call's deadline."""
CALL_DEADLINE = 3.0
"""The per-call deadline the test gives each SignRound, as the coordinator does."""
ANSWER_WITHIN = 0.5
PATIENCE = 120.0
"""Seconds the test keeps asking before it gives up (a hang fails instead of stalling)."""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "pki")
    pki.issue("coordinator", "coordinator")
    return pki


@pytest.fixture
def jade(tmp_path: Path) -> Iterator[JadeEmulator]:
    jade = JadeEmulator(
        tmp_path / "jade",
        mnemonic_for("slow person"),
        approve_after=APPROVE_AFTER,
        single_client=True,  # like the QEMU simulator and a USB serial port
    )
    yield jade
    jade.stop()


@pytest.fixture
def series(jade: JadeEmulator) -> Series:
    masters = [master_of(mnemonic_for("slow person")), master_key(4), master_key(5)]
    keys = tuple(
        DescriptorKey(KeyOrigin(m.fingerprint, ACCOUNT), m.derive_path(ACCOUNT).public())
        for m in masters
    )
    return Series(7, 2, keys, SeriesState.ACTIVE)


@pytest.fixture
def daemon(
    tmp_path: Path, pki: Pki, regtest: Regtest, jade: JadeEmulator, series: Series
) -> Iterator[SignerDaemon]:
    directory = tmp_path / "signer"
    backend = hwi_backend(jade.port, jade.fingerprint, answer_within=ANSWER_WITHIN)
    config = write_config(
        directory,
        pki,
        "signer-3",
        backend,
        series=[series],
        chain=signer_chain(directory, regtest.node),
    )
    holder = [SignerDaemon(config)]
    try:
        holder[0].stub(pki).RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
        yield holder[0]
    finally:
        holder[0].stop()


def until_answered(
    stub: signer_pb2_grpc.SignerServiceStub, message: signer_pb2.SignRoundRequest
) -> tuple[signer_pb2.SignRoundResponse, int]:
    """Repeat the identical SignRound until it is not pending; the answer and how many
    pending answers came first."""
    pending = 0
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        response: signer_pb2.SignRoundResponse = stub.SignRound(message, timeout=CALL_DEADLINE)
        if not response.pending:
            return response, pending
        pending += 1
        assert response.pending_since_unix > 0 and not response.signed_psbts
    raise AssertionError(f"still pending after {PATIENCE} s")


def test_a_device_that_approves_after_the_call_deadline_signs_with_one_prompt(
    daemon: SignerDaemon, pki: Pki, jade: JadeEmulator, regtest: Regtest, series: Series
) -> None:
    coins = fund(regtest, series, [BTC, BTC])
    message = round_request(pinned(regtest, [series], coins, [request("alice", "1", BTC)]))
    response, pending = until_answered(daemon.stub(pki), message)
    assert (response.signed_all, pending > 0, jade.prompts()) == (True, True, 1)


def test_the_signed_round_is_answered_again_after_a_restart_without_a_prompt(
    daemon: SignerDaemon, pki: Pki, jade: JadeEmulator, regtest: Regtest, series: Series
) -> None:
    coins = fund(regtest, series, [BTC, BTC])
    message = round_request(pinned(regtest, [series], coins, [request("bob", "1", BTC)]))
    first, _ = until_answered(daemon.stub(pki), message)
    restarted = daemon.restart()
    try:
        again = restarted.stub(pki).SignRound(message, timeout=CALL_DEADLINE)
    finally:
        restarted.stop()
    assert (again.signed_psbts, jade.prompts()) == (first.signed_psbts, 1)


def test_a_call_while_the_person_reviews_is_answered_pending_within_its_deadline(
    daemon: SignerDaemon, pki: Pki, regtest: Regtest, series: Series
) -> None:
    coins = fund(regtest, series, [BTC])
    message = round_request(pinned(regtest, [series], coins, [request("carol", "1", BTC // 2)]))
    response = daemon.stub(pki).SignRound(message, timeout=CALL_DEADLINE)
    assert response.pending and not response.signed_all
