"""Rounds signed side by side: the rebuild of one round holds up no other round, and the signing
log still lets only one of two conflicting rounds through.

A real ``RoundSigner`` with its SQLite state, audit log, the software backend and the bcoin
regtest node as its own node (the rounds spend real coins). The state
pauses a chosen thread where the rebuild reads the registered series, so each test decides which
round is inside its rebuild when the other one runs: no timing, only events.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST, Network
from pool.series import CHANGE, RECEIVE, Series
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import build_round
from signer.audit import AuditLog, audit_path
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
"""Seconds to wait for an event that must happen (a hang fails the test instead of stalling)."""


class PausingState(SignerState):
    """The signer's state; a thread named in ``paused`` stops where the rebuild reads the
    registered series, until ``release`` is set."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.paused: set[str] = set()
        self.arrived: dict[str, threading.Event] = {}
        self.release = threading.Event()

    def registered_series(self, network: Network) -> dict[int, Series]:
        name = threading.current_thread().name
        if name in self.paused:
            self.arrived[name].set()
            assert self.release.wait(WAIT), "the paused rebuild was never released"
        return super().registered_series(network)

    def pause(self, name: str) -> None:
        self.paused.add(name)
        self.arrived[name] = threading.Event()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[PausingState]:
    with PausingState(tmp_path) as s:
        s.register_series(
            S1.id,
            REGTEST.name,
            S1.descriptor(RECEIVE).to_string(REGTEST),
            S1.descriptor(CHANGE).to_string(REGTEST),
            0.0,
        )
        yield s


@pytest.fixture
def signer(state: PausingState, tmp_path: Path, regtest: Regtest) -> Iterator[RoundSigner]:
    user, password = regtest.node.credentials
    chain = NodeChain(regtest.node.rpc_url, user, password)
    with AuditLog(audit_path(tmp_path)) as audit:
        backend = EmulatorBackend(master_key(0), REGTEST)
        yield RoundSigner(
            "s0", REGTEST, POLICY, backend, state, audit, lambda: 0.0, chain, ChainRules(1, 6)
        )


def round_of(m: Manifest) -> tuple[bytes, list[bytes]]:
    return encode_manifest(m), [t.psbt.serialize() for t in build_round(m).transactions]


def in_thread(
    name: str, signer: RoundSigner, m: Manifest
) -> tuple[threading.Thread, list[RoundResult]]:
    results: list[RoundResult] = []
    data, psbts = round_of(m)
    thread = threading.Thread(
        target=lambda: results.append(signer.sign_round(RoundKind.WITHDRAWAL, data, psbts)),
        name=name,
    )
    thread.start()
    return thread, results


def test_a_round_is_signed_while_another_round_is_being_rebuilt(
    signer: RoundSigner, state: PausingState, regtest: Regtest
) -> None:
    first, second = fund(regtest, S1, [BTC, BTC])
    state.pause("slow")
    slow, slow_results = in_thread(
        "slow", signer, pinned(regtest, [S1], [first], [request("alice", "1", 10_000_000)])
    )
    assert state.arrived["slow"].wait(WAIT)
    data, psbts = round_of(pinned(regtest, [S1], [second], [request("bob", "1", 20_000_000)]))
    honest = signer.sign_round(RoundKind.WITHDRAWAL, data, psbts)  # the slow one is mid-rebuild
    assert honest.refusals == [] and honest.signatures
    state.release.set()
    slow.join(WAIT)
    assert slow_results and slow_results[0].refusals == []


def test_of_two_rounds_spending_one_coin_rebuilt_side_by_side_only_one_is_signed(
    signer: RoundSigner, state: PausingState, regtest: Regtest
) -> None:
    [coin] = fund(regtest, S1, [BTC])
    rounds = {
        "first": pinned(regtest, [S1], [coin], [request("alice", "1", 10_000_000)]),
        "second": pinned(regtest, [S1], [coin], [request("bob", "1", 20_000_000)]),
    }
    started = []
    for name, m in rounds.items():
        state.pause(name)
        started.append(in_thread(name, signer, m))
    assert all(state.arrived[name].wait(WAIT) for name in rounds)  # both inside their rebuild
    state.release.set()
    for thread, _ in started:
        thread.join(WAIT)
    outcomes = sorted([refusal.reason for refusal in results[0].refusals] for _, results in started)
    # the second is judged while the first is at the device, or after it was signed
    assert outcomes in ([[], [Reason.DOUBLE_SIGN]], [[], [Reason.SIGNING_IN_PROGRESS]])
