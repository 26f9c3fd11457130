"""The chain rules of ``signer.chain_checks`` as pure functions of what a node answered, the
strict device (Jade emulator as Trezor and BitBox02) that needs the previous transactions, and
the health that follows the node."""

from __future__ import annotations

from dataclasses import replace

import pytest
from grpc_health.v1.health import HealthServicer
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from pool.hashes import sha256
from pool.psbt import Psbt
from pool.refunds import build_refunds
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.vocabulary import Reason
from signer.chain import ChainUtxo
from signer.chain_checks import (
    input_problem,
    locktime_problem,
    previous_tx_problem,
    released_by_chain,
    tip_problem,
)
from signer.jade_emulator.protocol import JadeRpcError
from signer.jade_emulator.signing import PREVIOUS_TX_MISMATCH, PREVIOUS_TX_MISSING, sign_request
from signer.node_monitor import NOT_CONFIGURED, NodeStatus
from signer.policy import SignedBefore
from signer.server import SERVICE_NAME, health_listener
from tests.factories import BTC, make_series, master_key, p2wpkh
from tests.refund_factories import deposit, refund_manifest

SCRIPT = p2wpkh("pool")
CLAIMED = TxOut(BTC, SCRIPT)
HASH = "ab" * 32


def _found(value: int = BTC, script: bytes = SCRIPT, confirmations: int = 6) -> ChainUtxo:
    return ChainUtxo(value, script, 100, confirmations)


def _reason(problem: tuple[Reason, str] | None) -> Reason | None:
    return None if problem is None else problem[0]


# --- inputs -------------------------------------------------------------------------------------


def test_an_input_the_node_confirms_as_claimed_passes() -> None:
    assert input_problem(CLAIMED, 100, _found(), min_conf=6) is None


def test_an_input_the_node_does_not_hold_is_not_on_chain() -> None:
    assert _reason(input_problem(CLAIMED, 100, None, 1)) is Reason.INPUT_NOT_ON_CHAIN


def test_an_input_worth_another_amount_on_the_node_is_an_amount_mismatch() -> None:
    found = _found(value=BTC + 1)
    assert _reason(input_problem(CLAIMED, 100, found, 1)) is Reason.INPUT_AMOUNT_MISMATCH


def test_an_input_paying_another_script_on_the_node_is_a_script_mismatch() -> None:
    found = _found(script=p2wpkh("elsewhere"))
    assert _reason(input_problem(CLAIMED, 100, found, 1)) is Reason.INPUT_SCRIPT_MISMATCH


def test_an_input_confirmed_at_another_height_is_a_height_mismatch() -> None:
    assert _reason(input_problem(CLAIMED, 99, _found(), 1)) is Reason.INPUT_HEIGHT_MISMATCH


def test_a_refund_input_has_no_claimed_height_to_compare() -> None:
    assert input_problem(CLAIMED, None, _found(), 1) is None


def test_an_input_below_the_signers_own_min_conf_is_immature() -> None:
    found = _found(confirmations=5)
    assert _reason(input_problem(CLAIMED, 100, found, min_conf=6)) is Reason.INPUT_IMMATURE


def test_a_coinbase_input_below_100_confirmations_is_immature() -> None:
    found = replace(_found(confirmations=99), coinbase=True)
    assert _reason(input_problem(CLAIMED, 100, found, 1)) is Reason.INPUT_IMMATURE


# --- the pinned tip and the locktime -----------------------------------------------------------


def test_a_pinned_tip_on_the_signers_chain_within_the_lag_passes() -> None:
    assert tip_problem(100, HASH, 106, HASH, max_tip_lag=6) is None


def test_a_pinned_tip_above_the_signers_tip_is_ahead_of_its_node() -> None:
    assert _reason(tip_problem(107, HASH, 106, None, 6)) is Reason.TIP_AHEAD_OF_NODE


def test_a_pinned_tip_with_another_hash_at_its_height_is_not_on_chain() -> None:
    assert _reason(tip_problem(100, HASH, 106, "cd" * 32, 6)) is Reason.TIP_NOT_ON_CHAIN


def test_a_pinned_tip_further_behind_than_the_lag_is_too_old() -> None:
    assert _reason(tip_problem(100, HASH, 107, HASH, max_tip_lag=6)) is Reason.TIP_TOO_OLD


@pytest.mark.parametrize(("locktime", "ok"), [(0, True), (106, True), (107, False)])
def test_a_locktime_must_allow_the_next_block(locktime: int, ok: bool) -> None:
    assert (locktime_problem(locktime, node_height=106) is None) is ok


def test_a_locktime_in_unix_time_is_refused() -> None:
    assert _reason(locktime_problem(1_700_000_000, 106)) is Reason.LOCKTIME_IN_FUTURE


# --- previous transactions ---------------------------------------------------------------------


def _previous() -> Transaction:
    spent = TxIn(OutPoint(sha256(b"coin"), 0), 0xFFFFFFFF)
    return Transaction(2, (spent,), (TxOut(5, p2wpkh("other")), CLAIMED), 0)


def test_the_previous_transaction_of_the_outpoint_with_its_output_passes() -> None:
    previous = _previous()
    outpoint = OutPoint(previous.txid, 1)
    assert previous_tx_problem(previous.serialize(), outpoint, CLAIMED) is None


def test_a_previous_transaction_the_node_does_not_give_is_unavailable() -> None:
    outpoint = OutPoint(_previous().txid, 1)
    problem = previous_tx_problem(None, outpoint, CLAIMED)
    assert _reason(problem) is Reason.PREVIOUS_TX_UNAVAILABLE


def test_a_previous_transaction_that_does_not_hash_to_the_outpoint_is_a_mismatch() -> None:
    outpoint = OutPoint(sha256(b"another"), 1)
    problem = previous_tx_problem(_previous().serialize(), outpoint, CLAIMED)
    assert _reason(problem) is Reason.PREVIOUS_TX_MISMATCH


def test_a_previous_transaction_whose_output_differs_is_a_mismatch() -> None:
    previous = _previous()
    outpoint = OutPoint(previous.txid, 0)  # the other output
    problem = previous_tx_problem(previous.serialize(), outpoint, CLAIMED)
    assert _reason(problem) is Reason.PREVIOUS_TX_MISMATCH


# --- the signing log, released by the chain ---------------------------------------------------

A, B = OutPoint(sha256(b"a"), 0), OutPoint(sha256(b"b"), 0)


def _signed(*outpoints: OutPoint) -> SignedBefore:
    tx = Transaction(2, tuple(TxIn(o, 0xFFFFFFFD) for o in outpoints), (CLAIMED,), 0)
    return SignedBefore(tx.txid_hex, tx, None, b"\x00" * 32)


def test_an_old_spend_with_an_input_spent_on_chain_is_released() -> None:
    assert released_by_chain(_signed(A, B), B, lambda o: o == B)


def test_an_old_spend_whose_inputs_are_all_unspent_may_still_be_mined_and_blocks() -> None:
    assert not released_by_chain(_signed(A, B), B, lambda o: True)


def test_an_old_spend_of_a_single_coin_is_never_released_while_the_coin_is_unspent() -> None:
    assert not released_by_chain(_signed(B), B, lambda o: True)


def test_nothing_is_released_when_the_coin_asked_about_is_spent_itself() -> None:
    assert not released_by_chain(_signed(A, B), B, lambda o: False)


# --- a device that needs the previous transactions ----------------------------------------------

SERIES = make_series(1, 2, [0, 1, 2])


def _refund() -> tuple[Psbt, bytes]:
    """A refund PSBT (no change output), and the deposit transaction its input spends."""
    refund = deposit("previous", SERIES, 0, BTC)
    [planned] = build_refunds(refund_manifest([SERIES], [refund])).transactions
    return planned.psbt, refund.deposit_tx


def _with_previous(psbt: Psbt, raw: bytes) -> Psbt:
    without_witness = Transaction.parse(raw).serialize_without_witness()
    return replace(psbt, inputs=(replace(psbt.inputs[0], non_witness_utxo=without_witness),))


def test_a_strict_device_refuses_an_input_without_its_previous_transaction() -> None:
    psbt, _ = _refund()
    with pytest.raises(JadeRpcError, match=PREVIOUS_TX_MISSING):
        sign_request(psbt.serialize(), master_key(0), [], refuse=False, require_previous_tx=True)


def test_a_strict_device_signs_an_input_with_its_previous_transaction() -> None:
    psbt, raw = _refund()
    signed = Psbt.parse(
        sign_request(
            _with_previous(psbt, raw).serialize(),
            master_key(0),
            [],
            refuse=False,
            require_previous_tx=True,
        )
    )
    assert len(signed.inputs[0].partial_sigs) == 1


def test_a_device_refuses_a_previous_transaction_that_contradicts_the_witness_utxo() -> None:
    psbt, raw = _refund()
    attached = _with_previous(psbt, raw)
    claimed = attached.inputs[0].witness_utxo
    assert claimed is not None
    lied = replace(attached.inputs[0], witness_utxo=TxOut(claimed.value - 1, claimed.script_pubkey))
    lying = replace(attached, inputs=(lied,))
    with pytest.raises(JadeRpcError, match=PREVIOUS_TX_MISMATCH):
        sign_request(lying.serialize(), master_key(0), [], refuse=False)


# --- the health follows the node ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "serving"),
    [
        (NodeStatus(True, True, 500, HASH), True),
        (NodeStatus(True, False, error="node unreachable"), False),
        (NodeStatus(True, True, 500, HASH, syncing=True), False),
        (NodeStatus(False, error=NOT_CONFIGURED), True),
    ],
    ids=["reachable", "unreachable", "syncing", "no-node-dev"],
)
def test_the_health_is_serving_only_while_the_node_answers_synced(
    status: NodeStatus, serving: bool
) -> None:
    health = HealthServicer()
    health_listener(health)(status)
    expected = HealthCheckResponse.SERVING if serving else HealthCheckResponse.NOT_SERVING
    for service in ("", SERVICE_NAME):
        answer = health.Check(HealthCheckRequest(service=service), None)
        assert answer.status == expected
