"""The signer's rule for acknowledging a deposit (``signer.policy.acknowledgement_refusal``): the
output the signer's own node reports must pay the registered receive address the claim names,
with the value claimed and enough confirmations, and the signer must never have signed its spend.

The node's answer and the signing history are in-memory here; tests/test_signer_acknowledgements
runs the same rule against a real bcoin node and the signer's SQLite state.
"""

from __future__ import annotations

from dataclasses import dataclass

from pool.networks import REGTEST
from pool.series import RECEIVE
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.vocabulary import Reason, Scope
from signer.policy import (
    AcknowledgedDeposit,
    DepositClaim,
    PolicyConfig,
    Refusal,
    SignedBefore,
    acknowledgement_refusal,
    repeated_acknowledgement,
)
from tests.factories import BTC, make_series, p2wpkh
from tests.signer_harness import MemoryHistory

S1 = make_series(1, 2, (0, 1, 2))
OUTPOINT = OutPoint.from_hex("ab" * 32, 1)
CLAIM = DepositClaim(OUTPOINT, S1.id, 7, BTC)
POLICY = PolicyConfig(deposit_confirmations=3)


@dataclass(frozen=True)
class Output:
    """An output as a node reports it."""

    value: int
    script_pubkey: bytes
    confirmations: int


PAID = Output(BTC, S1.derive(RECEIVE, 7).script_pubkey, 3)


def refusal(
    found: Output | None = PAID,
    *,
    claim: DepositClaim = CLAIM,
    registered: bool = True,
    known_series: bool = True,
    history: MemoryHistory | None = None,
) -> Refusal | None:
    return acknowledgement_refusal(
        POLICY,
        REGTEST,
        claim,
        S1 if known_series else None,
        registered,
        found,
        history or MemoryHistory(),
    )


def reason(found: Output | None = PAID, **kwargs: object) -> Reason:
    result = refusal(found, **kwargs)  # type: ignore[arg-type]
    assert result is not None, "expected a refusal, the deposit was acknowledged"
    assert (result.scope, result.request_id) == (Scope.REQUEST, f"{'ab' * 32}:1")
    return result.reason


def test_a_deposit_paying_its_registered_address_with_enough_confirmations_is_acknowledged() -> (
    None
):
    assert refusal() is None


def test_a_deposit_the_node_does_not_have_is_refused_as_not_found() -> None:
    assert reason(None) == Reason.DEPOSIT_NOT_FOUND


def test_a_deposit_paying_another_address_is_refused() -> None:
    other = Output(BTC, S1.derive(RECEIVE, 8).script_pubkey, 3)
    assert reason(other) == Reason.DEPOSIT_ADDRESS_MISMATCH
    assert reason(Output(BTC, p2wpkh("elsewhere"), 3)) == Reason.DEPOSIT_ADDRESS_MISMATCH


def test_a_deposit_worth_another_value_is_refused() -> None:
    assert reason(Output(BTC - 1, PAID.script_pubkey, 3)) == Reason.DEPOSIT_VALUE_MISMATCH


def test_a_deposit_with_fewer_confirmations_than_the_signers_setting_is_refused() -> None:
    result = refusal(Output(BTC, PAID.script_pubkey, 2))
    assert result is not None and result.reason == Reason.DEPOSIT_UNCONFIRMED
    assert "2 confirmations" in result.message and "needs 3" in result.message


def test_a_deposit_to_an_address_never_registered_with_the_signer_is_refused() -> None:
    assert reason(registered=False) == Reason.DEPOSIT_ADDRESS_NOT_REGISTERED
    assert reason(known_series=False) == Reason.DEPOSIT_ADDRESS_NOT_REGISTERED


def test_a_deposit_whose_spend_this_signer_signed_is_never_acknowledged() -> None:
    refund = Transaction(2, (TxIn(OUTPOINT, 0xFFFFFFFD),), (TxOut(BTC - 500, p2wpkh("a")),), 0)
    history = MemoryHistory({OUTPOINT: SignedBefore("cd" * 32, refund, None, b"\x00" * 32)})
    assert reason(history=history) == Reason.DEPOSIT_REFUNDED


def test_the_same_claim_is_acknowledged_again_and_another_claim_of_the_outpoint_is_refused() -> (
    None
):
    prior = AcknowledgedDeposit(CLAIM, 100, 0.0)
    assert repeated_acknowledgement(CLAIM, prior) is None
    lie = DepositClaim(OUTPOINT, S1.id, 7, 2 * BTC)
    result = repeated_acknowledgement(lie, prior)
    assert result is not None and result.reason == Reason.DEPOSIT_CLAIM_MISMATCH
