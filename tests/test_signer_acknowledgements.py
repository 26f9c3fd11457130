"""A signer acknowledges deposits against its own node (a real bcoin regtest node, through
``signer.chain.NodeChain``) and its own SQLite state: what it acknowledged survives a restart and
keeps every refund of the deposit refused; a deposit whose refund it signed is never acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.networks import REGTEST
from pool.refunds import RefundRequest, RefundSource, build_refunds, encode_refund_manifest
from pool.series import CHANGE, RECEIVE
from pool.tx import OutPoint, Transaction
from pool.vocabulary import Reason
from signer.acknowledgements import Acknowledger, Verdict
from signer.chain import NodeChain
from signer.policy import Approval, DepositClaim, PolicyConfig, evaluate_refund_round
from signer.state import SignerState
from tests.factories import make_series, master_key, p2wpkh
from tests.refund_factories import refund_manifest
from tests.regtest_fixtures import Regtest

SERIES = make_series(1, 2, [0, 1, 2])
POLICY = PolicyConfig(deposit_confirmations=2)
MINER = p2wpkh("acknowledgement miner")
VALUE = 250_000
NOW = 1_800_000_000.0
_next_index = iter(range(1000))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SignerState]:
    with SignerState(tmp_path / "signer") as opened:
        register(opened)
        yield opened


def register(state: SignerState) -> None:
    state.register_series(
        SERIES.id,
        REGTEST.name,
        SERIES.descriptor(RECEIVE).to_string(REGTEST),
        SERIES.descriptor(CHANGE).to_string(REGTEST),
        0.0,
    )


def node_chain(regtest: Regtest) -> NodeChain:
    user, password = regtest.node.credentials
    return NodeChain(regtest.node.rpc_url, user, password)


def acknowledger(state: SignerState, regtest: Regtest) -> Acknowledger:
    return Acknowledger(REGTEST, POLICY, state, node_chain(regtest), threading.Lock(), time.time)


def deposit(
    regtest: Regtest, state: SignerState, *, confirmations: int = 2, registered: bool = True
) -> DepositClaim:
    """Pay a fresh receive address of SERIES (registered with the signer unless told otherwise)
    and mine ``confirmations`` blocks; the honest claim of that deposit."""
    index = next(_next_index)
    if registered:
        state.register_deposit_address(REGTEST.name, SERIES.id, index, "", 0.0)
    script = SERIES.derive(RECEIVE, index).script_pubkey
    txid = regtest.wallet.fund(regtest.node, [(script, VALUE)])
    if confirmations:
        regtest.node.mine(confirmations, MINER)
    raw = regtest.node.chain.raw_transaction(txid)
    assert raw is not None
    outputs = [o.script_pubkey for o in Transaction.parse(raw).outputs]
    return DepositClaim(OutPoint.from_hex(txid, outputs.index(script)), SERIES.id, index, VALUE)


def verdict(state: SignerState, regtest: Regtest, claim: DepositClaim) -> Verdict:
    [answer] = acknowledger(state, regtest).acknowledge([claim])
    return answer


def refused(state: SignerState, regtest: Regtest, claim: DepositClaim) -> Reason:
    answer = verdict(state, regtest, claim)
    assert not answer.acknowledged and answer.refusal is not None
    assert state.acknowledged_deposit(claim.outpoint) is None
    return answer.refusal.reason


def refund_of(claim: DepositClaim, regtest: Regtest) -> tuple[bytes, list[bytes]]:
    """A refund round of the deposit (manifest, PSBTs) to a registered-looking address."""
    raw = regtest.node.chain.raw_transaction(claim.outpoint.txid_hex)
    assert raw is not None
    request = RefundRequest(
        outpoint=claim.outpoint,
        value=claim.value,
        series_id=claim.series_id,
        index=claim.index,
        deposit_tx=raw,
        prev_tx=b"",
        destination=p2wpkh("refund destination"),
        source=RefundSource.OPERATOR,
    )
    m = refund_manifest([SERIES], [request])
    return encode_refund_manifest(m), [t.psbt.serialize() for t in build_refunds(m).transactions]


def evaluate_refund(state: SignerState, manifest: bytes, psbts: list[bytes]) -> object:
    return evaluate_refund_round(
        PolicyConfig(allow_operator_refunds=True),
        master_key(0).fingerprint,
        REGTEST,
        state.registered_series(REGTEST),
        lambda series_id, index: state.refund_address(REGTEST.name, series_id, index),
        manifest,
        psbts,
        state,
        NOW,
    )


# --------------------------------------------------------------------------- tests


def test_a_confirmed_deposit_to_a_registered_address_is_acknowledged_and_recorded(
    state: SignerState, regtest: Regtest
) -> None:
    claim = deposit(regtest, state)
    answer = verdict(state, regtest, claim)
    assert (answer.acknowledged, answer.already_acknowledged, answer.refusal) == (
        True, False, None,
    )  # fmt: skip
    assert answer.confirmations == 2
    recorded = state.acknowledged_deposit(claim.outpoint)
    assert recorded is not None and recorded.claim == claim
    again = verdict(state, regtest, claim)
    assert (again.acknowledged, again.already_acknowledged) == (True, True)


def test_an_outpoint_the_node_does_not_have_is_not_acknowledged(
    state: SignerState, regtest: Regtest
) -> None:
    claim = deposit(regtest, state)
    missing = DepositClaim(OutPoint(claim.outpoint.txid, 7), SERIES.id, claim.index, VALUE)
    assert refused(state, regtest, missing) == Reason.DEPOSIT_NOT_FOUND


def test_an_unconfirmed_deposit_is_not_acknowledged(state: SignerState, regtest: Regtest) -> None:
    claim = deposit(regtest, state, confirmations=0)
    assert refused(state, regtest, claim) == Reason.DEPOSIT_NOT_FOUND


def test_a_deposit_with_too_few_confirmations_is_refused_until_it_has_them(
    state: SignerState, regtest: Regtest
) -> None:
    claim = deposit(regtest, state, confirmations=1)
    assert refused(state, regtest, claim) == Reason.DEPOSIT_UNCONFIRMED
    regtest.node.mine(1, MINER)
    assert verdict(state, regtest, claim).acknowledged


def test_a_claim_naming_another_address_is_refused(state: SignerState, regtest: Regtest) -> None:
    claim = deposit(regtest, state)
    other = deposit(regtest, state)
    lie = DepositClaim(claim.outpoint, SERIES.id, other.index, VALUE)
    assert refused(state, regtest, lie) == Reason.DEPOSIT_ADDRESS_MISMATCH


def test_a_claim_of_another_value_is_refused(state: SignerState, regtest: Regtest) -> None:
    claim = deposit(regtest, state)
    lie = DepositClaim(claim.outpoint, SERIES.id, claim.index, VALUE + 1)
    assert refused(state, regtest, lie) == Reason.DEPOSIT_VALUE_MISMATCH


def test_a_deposit_to_an_address_never_registered_is_refused(
    state: SignerState, regtest: Regtest
) -> None:
    claim = deposit(regtest, state, registered=False)
    assert refused(state, regtest, claim) == Reason.DEPOSIT_ADDRESS_NOT_REGISTERED


def test_a_deposit_whose_refund_the_signer_signed_is_never_acknowledged(
    state: SignerState, regtest: Regtest
) -> None:
    claim = deposit(regtest, state)
    approval = evaluate_refund(state, *refund_of(claim, regtest))
    assert isinstance(approval, Approval)
    state.record_signed(approval, time.time())
    assert refused(state, regtest, claim) == Reason.DEPOSIT_REFUNDED
    assert not state.record_acknowledgement(REGTEST.name, claim, 1, time.time())


def test_an_acknowledgement_survives_a_restart_and_keeps_the_refund_refused(
    tmp_path: Path, regtest: Regtest
) -> None:
    directory = tmp_path / "restarted"
    with SignerState(directory) as first:
        register(first)
        claim = deposit(regtest, first)
        assert verdict(first, regtest, claim).acknowledged
    with SignerState(directory) as second:
        assert second.acknowledged_deposit(claim.outpoint) is not None
        result = evaluate_refund(second, *refund_of(claim, regtest))
        assert isinstance(result, list)
        assert [r.reason for r in result] == [Reason.DEPOSIT_CREDITED]


def test_a_signer_without_a_node_acknowledges_nothing(state: SignerState) -> None:
    claim = DepositClaim(OutPoint.from_hex("ab" * 32, 0), SERIES.id, 0, VALUE)
    lonely = Acknowledger(REGTEST, POLICY, state, None, threading.Lock(), time.time)
    [answer] = lonely.acknowledge([claim])
    assert answer.refusal is not None and answer.refusal.reason == Reason.CHAIN_NOT_CONFIGURED
    assert state.acknowledged_deposit(claim.outpoint) is None
