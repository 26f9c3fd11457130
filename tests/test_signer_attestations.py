"""The signer attests the fee statements of its own rebuild (pool.attestation), never anything
the coordinator claims: written as if the coordinator were the attacker.

A real ``RoundSigner`` with its SQLite state, audit log, the software backend and the bcoin
regtest node as its own node (the rounds spend real coins).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pool import ecdsa
from pool.attestation import Attestation, decode_statement, encode_statement, round_statements
from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE
from pool.vocabulary import Reason, RoundKind
from pool.withdrawal import build_round
from signer.attestation_key import PATH, key_at_path
from signer.audit import AuditLog, audit_path
from signer.backends.emulator import EmulatorBackend
from signer.chain import NodeChain
from signer.chain_checks import ChainRules
from signer.policy import PolicyConfig
from signer.rounds import RoundSigner
from signer.state import SignerState
from tests.chain_harness import fund, pinned
from tests.factories import BTC, make_series, master_key, request
from tests.regtest_fixtures import Regtest

S1 = make_series(1, 2, (0, 1, 2))
POLICY = PolicyConfig(min_threshold=2)
KEY = key_at_path(master_key(0))
PUBLIC = ecdsa.public_key(KEY)


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
        backend = EmulatorBackend(master_key(0), REGTEST)
        signer = RoundSigner(
            "s0",
            REGTEST,
            POLICY,
            backend,
            state,
            audit,
            lambda: 0.0,
            chain,
            ChainRules(1, 6),
            attestation_key=backend.attestation_key(),
        )
        yield signer
        signer.close()


def two_clients(regtest: Regtest, ladder_rungs: int = 0, ladder_step: int = 0) -> Manifest:
    [coin] = fund(regtest, S1, [BTC])
    payments = [request("alice", "1", 30_000_000), request("bob", "1", 10_000_000)]
    m = pinned(regtest, [S1], [coin], payments)
    return replace(m, ladder_rungs=ladder_rungs, ladder_step=ladder_step)


def test_the_attestation_key_is_the_keystores_key_at_a_path_no_pool_series_uses() -> None:
    assert PATH[0] != 48 + 2**31 and all(step >= 2**31 for step in PATH)
    assert EmulatorBackend(master_key(0), REGTEST).attestation_key() == KEY


def test_a_signed_round_attests_each_psbt_with_the_shares_of_the_signers_own_rebuild(
    signer: RoundSigner, regtest: Regtest
) -> None:
    m = two_clients(regtest, ladder_rungs=2, ladder_step=2_000)
    plan = build_round(m)
    result = signer.sign_round(
        RoundKind.WITHDRAWAL, encode_manifest(m), [p.serialize() for p in plan.psbts]
    )
    assert result.refusals == [] and result.signatures
    expected = [encode_statement(s) for s in round_statements(plan)]
    assert [statement for statement, _ in result.attestations] == expected
    assert len(expected) == 1 + len(plan.rungs) and len(plan.rungs) == 2
    assert all(Attestation(PUBLIC, st, sig).is_valid() for st, sig in result.attestations)


def test_a_round_answered_again_from_the_signers_state_keeps_its_attestations(
    signer: RoundSigner, regtest: Regtest
) -> None:
    m = two_clients(regtest)
    psbts = [p.serialize() for p in build_round(m).psbts]
    first = signer.sign_round(RoundKind.WITHDRAWAL, encode_manifest(m), psbts)
    again = signer.sign_round(RoundKind.WITHDRAWAL, encode_manifest(m), psbts)
    assert first.attestations and again.attestations == first.attestations


def test_a_coordinator_cannot_make_the_signer_attest_a_fee_other_than_its_rebuild(
    signer: RoundSigner, regtest: Regtest
) -> None:
    """The coordinator's PSBT takes 5,000 sat more from the change than the manifest says (a
    bigger fee, which it would then share as it likes): the signer refuses, attests nothing."""
    m = two_clients(regtest)
    planned = build_round(m).transactions[0]
    assert planned.change is not None
    tx = planned.psbt.tx
    outputs = list(tx.outputs)
    vout = planned.change.vout
    outputs[vout] = replace(outputs[vout], value=outputs[vout].value - 5_000)
    bigger_fee = replace(planned.psbt, tx=replace(tx, outputs=tuple(outputs)))
    result = signer.sign_round(RoundKind.WITHDRAWAL, encode_manifest(m), [bigger_fee.serialize()])
    assert result.refusals and result.refusals[0].reason is Reason.AMOUNT_MISMATCH
    assert result.attestations == ()


def test_the_attested_share_follows_the_manifest_not_the_coordinators_claim(
    signer: RoundSigner, regtest: Regtest
) -> None:
    """Whatever shares a coordinator stores or shows, the statements the signer signs carry the
    largest-remainder split of its own rebuild: alice, paid three times bob's amount, pays
    three times bob's share (to a satoshi)."""
    m = two_clients(regtest)
    plan = build_round(m)
    result = signer.sign_round(
        RoundKind.WITHDRAWAL, encode_manifest(m), [p.serialize() for p in plan.psbts]
    )
    [(raw, _)] = result.attestations
    statement = decode_statement(raw)
    assert statement.fee == plan.transactions[0].fee
    assert statement.shares == plan.transactions[0].fee_shares
    assert abs(statement.share_of("alice") - 3 * statement.share_of("bob")) <= 3
