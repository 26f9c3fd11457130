"""A round at a slow device: asked once, answered pending meanwhile, the same answer to every
identical request (also after a restart), and no other round on its coins until it ends.

A real ``RoundSigner`` with its SQLite state, audit log and the bcoin regtest node as its own
node (the rounds spend real coins); the device is the software key behind a gate the test opens,
so a person's slowness is an event, never a sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.hdkeys import KeyOrigin
from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.series import CHANGE, RECEIVE, Series
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import build_round
from signer.audit import AuditLog, audit_path
from signer.backends.base import BackendError, DeviceRefused
from signer.backends.emulator import EmulatorBackend
from signer.chain import NodeChain
from signer.chain_checks import ChainRules
from signer.policy import PolicyConfig
from signer.rounds import RoundResult, RoundSigner
from signer.state import SignerState
from tests.chain_harness import fund, pinned
from tests.factories import BTC, make_series, master_key, request
from tests.regtest_fixtures import Regtest

S1 = make_series(1, 2, (0, 1, 2))
POLICY = PolicyConfig(min_threshold=2)
WAIT = 30.0
"""Seconds to wait for something that must happen (a hang fails the test instead)."""
SHORT = 0.05
"""The signer's ``answer_within``: how long a call waits for the device before answering."""


class SlowDevice:
    """The software key, answering each prompt only once the test lets it; counts prompts."""

    kind = "emulator"
    model = "software"
    network = REGTEST

    def __init__(self) -> None:
        self._key = EmulatorBackend(master_key(0), REGTEST)
        self.prompts = 0
        self.approve = threading.Event()
        self.answer: str = "sign"
        """``sign``, ``refuse`` or ``fail``."""

    def fingerprint(self) -> bytes:
        return self._key.fingerprint()

    def xpub(self, path: tuple[int, ...]) -> tuple[str, KeyOrigin]:
        return self._key.xpub(path)

    def register_series(self, series: Series) -> str:
        return ""

    def display_address(self, series: Series, branch: int, index: int) -> tuple[str, bool]:
        return self._key.display_address(series, branch, index)

    def sign(self, psbt: Psbt) -> Psbt:
        self.prompts += 1
        assert self.approve.wait(WAIT), "the test never let the device answer"
        if self.answer == "refuse":
            raise DeviceRefused("the user declined")
        if self.answer == "fail":
            raise BackendError("the device went away")
        return self._key.sign(psbt)

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SignerState]:
    with SignerState(tmp_path) as s:
        s.register_series(
            S1.id,
            REGTEST.name,
            S1.descriptor(RECEIVE).to_string(REGTEST),
            S1.descriptor(CHANGE).to_string(REGTEST),
            0.0,
        )
        yield s


@pytest.fixture
def device() -> SlowDevice:
    return SlowDevice()


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(audit_path(tmp_path)) as log:
        yield log


def make_signer(
    regtest: Regtest, device: SlowDevice, state: SignerState, audit: AuditLog
) -> RoundSigner:
    user, password = regtest.node.credentials
    chain = NodeChain(regtest.node.rpc_url, user, password)
    return RoundSigner(
        "s0", REGTEST, POLICY, device, state, audit, lambda: 1000.0, chain, ChainRules(1, 6), SHORT
    )


@pytest.fixture
def signer(
    regtest: Regtest, device: SlowDevice, state: SignerState, audit: AuditLog
) -> Iterator[RoundSigner]:
    signer = make_signer(regtest, device, state, audit)
    yield signer
    device.approve.set()
    signer.close()


def sign(signer: RoundSigner, m: Manifest) -> RoundResult:
    data = encode_manifest(m)
    return signer.sign_round(
        RoundKind.WITHDRAWAL, data, [t.psbt.serialize() for t in build_round(m).transactions]
    )


def until_final(signer: RoundSigner, m: Manifest) -> RoundResult:
    """Ask again, as the coordinator does, until the answer is not pending."""
    for _ in range(int(WAIT / SHORT)):
        result = sign(signer, m)
        if not result.pending:
            return result
    raise AssertionError("the round stayed pending")


@pytest.fixture
def one_round(regtest: Regtest) -> Manifest:
    [coin] = fund(regtest, S1, [BTC])
    return pinned(regtest, [S1], [coin], [request("alice", "1", 10_000_000)])


def test_a_round_at_a_slow_device_is_answered_pending_since_it_was_asked(
    signer: RoundSigner, one_round: Manifest
) -> None:
    result = sign(signer, one_round)
    assert (result.pending, result.pending_since, result.signatures, result.refusals) == (
        True,
        1000.0,
        {},
        [],
    )


def test_a_round_is_signed_once_its_device_approves(
    signer: RoundSigner, device: SlowDevice, one_round: Manifest
) -> None:
    assert sign(signer, one_round).pending
    device.approve.set()
    result = until_final(signer, one_round)
    assert result.refusals == [] and result.signatures


def test_identical_requests_prompt_the_device_once_and_get_the_same_signatures(
    signer: RoundSigner, device: SlowDevice, one_round: Manifest
) -> None:
    sign(signer, one_round)
    sign(signer, one_round)
    device.approve.set()
    first = until_final(signer, one_round)
    again = sign(signer, one_round)
    assert (device.prompts, again.signatures) == (1, first.signatures)


def test_a_signed_round_is_answered_after_a_restart_without_a_new_prompt(
    regtest: Regtest, device: SlowDevice, state: SignerState, audit: AuditLog, one_round: Manifest
) -> None:
    device.approve.set()
    before = make_signer(regtest, device, state, audit)
    first = until_final(before, one_round)
    before.close()
    after = make_signer(regtest, device, state, audit)
    try:
        again = sign(after, one_round)
    finally:
        after.close()
    assert (device.prompts, again.signatures) == (1, first.signatures)


def test_a_round_on_a_coin_of_a_round_at_the_device_is_refused_signing_in_progress(
    signer: RoundSigner, regtest: Regtest
) -> None:
    [coin] = fund(regtest, S1, [BTC])
    assert sign(signer, pinned(regtest, [S1], [coin], [request("alice", "1", 10**7)])).pending
    other = sign(signer, pinned(regtest, [S1], [coin], [request("bob", "1", 2 * 10**7)]))
    assert [r.reason for r in other.refusals] == [Reason.SIGNING_IN_PROGRESS]


def test_deposit_acknowledgements_are_not_held_up_by_a_round_at_the_device(
    signer: RoundSigner, one_round: Manifest
) -> None:
    assert sign(signer, one_round).pending
    assert signer.lock.acquire(timeout=WAIT)
    signer.lock.release()


def test_a_refusal_by_the_device_is_final_and_never_asked_again(
    signer: RoundSigner, device: SlowDevice, one_round: Manifest
) -> None:
    device.answer = "refuse"
    device.approve.set()
    until_final(signer, one_round)
    again = sign(signer, one_round)
    assert ([r.reason for r in again.refusals], device.prompts) == ([Reason.DEVICE_REFUSED], 1)


def test_a_device_error_is_reported_once_and_the_next_request_asks_again(
    signer: RoundSigner, device: SlowDevice, one_round: Manifest
) -> None:
    device.answer = "fail"
    device.approve.set()
    failed = until_final(signer, one_round)
    device.answer = "sign"
    retried = until_final(signer, one_round)
    assert ([r.reason for r in failed.refusals], retried.refusals, device.prompts) == (
        [Reason.DEVICE_ERROR],
        [],
        2,
    )


def test_the_coins_of_a_failed_round_are_free_again(
    signer: RoundSigner, device: SlowDevice, regtest: Regtest
) -> None:
    [coin] = fund(regtest, S1, [BTC])
    device.answer = "refuse"
    device.approve.set()
    until_final(signer, pinned(regtest, [S1], [coin], [request("alice", "1", 10**7)]))
    device.answer = "sign"
    other = until_final(signer, pinned(regtest, [S1], [coin], [request("bob", "1", 2 * 10**7)]))
    assert other.refusals == [] and other.signatures
