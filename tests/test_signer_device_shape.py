"""A round shaped beyond what the signer's device or its person takes is refused before the
device is asked; the same payments in a manifest capped to the device's limits are signed.

A real ``RoundSigner`` (software backend, SQLite state, audit log) whose device limits say a
person reviews at most two payments per transaction, with the bcoin regtest node as its node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import build_round
from signer.audit import AuditLog, audit_path
from signer.backends.emulator import EmulatorBackend
from signer.chain import NodeChain
from signer.chain_checks import ChainRules
from signer.device_monitor import DeviceLimits
from signer.policy import PolicyConfig
from signer.rounds import RoundResult, RoundSigner
from signer.state import SignerState
from tests.chain_harness import fund, pinned
from tests.factories import BTC, make_series, master_key, request
from tests.regtest_fixtures import Regtest

S1 = make_series(1, 2, (0, 1, 2))
REVIEWED = 2


@pytest.fixture
def signer(tmp_path: Path, regtest: Regtest) -> Iterator[RoundSigner]:
    user, password = regtest.node.credentials
    chain = NodeChain(regtest.node.rpc_url, user, password)
    with SignerState(tmp_path) as state, AuditLog(audit_path(tmp_path)) as audit:
        state.register_series(
            S1.id,
            REGTEST.name,
            S1.descriptor(RECEIVE).to_string(REGTEST),
            S1.descriptor(CHANGE).to_string(REGTEST),
            0.0,
        )
        yield RoundSigner(
            "s0",
            REGTEST,
            PolicyConfig(min_threshold=2),
            EmulatorBackend(master_key(0), REGTEST),
            state,
            audit,
            lambda: 0.0,
            chain,
            ChainRules(1, 6),
            device_limits=DeviceLimits(max_reviewed_payments=REVIEWED),
        )


def _sign(signer: RoundSigner, m: Manifest) -> RoundResult:
    psbts = [t.psbt.serialize() for t in build_round(m).transactions]
    return signer.sign_round(RoundKind.WITHDRAWAL, encode_manifest(m), psbts)


def _three_payments(regtest: Regtest) -> Manifest:
    coins = fund(regtest, S1, [BTC, BTC])
    return pinned(regtest, [S1], coins, [request("alice", str(k), 10_000_000) for k in range(3)])


def test_a_transaction_with_more_payments_than_its_reviewer_takes_is_refused(
    signer: RoundSigner, regtest: Regtest
) -> None:
    result = _sign(signer, _three_payments(regtest))
    assert [r.reason for r in result.refusals] == [Reason.ROUND_TOO_LARGE]
    assert "3 payments, its reviewer takes at most 2" in result.refusals[0].message
    assert not result.signatures


def test_the_same_payments_capped_per_transaction_in_the_manifest_are_signed(
    signer: RoundSigner, regtest: Regtest
) -> None:
    m = replace(_three_payments(regtest), max_tx_payments=REVIEWED)
    assert len(build_round(m).transactions) == 2
    result = _sign(signer, m)
    assert result.refusals == []
    assert result.signatures
