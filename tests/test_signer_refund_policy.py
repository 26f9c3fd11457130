"""The signer's refund policy against a hostile coordinator: a refund round is signed only when
it rebuilds byte for byte and each refund pays where this signer's own records say it may.

The signing history and the refund addresses registered with the signer are in-memory stand-ins
for ``signer.state.SignerState``; the daemon's integration tests cover the persisted path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from pool.address import script_pubkey_to_address
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.refunds import (
    RefundManifest,
    RefundRequest,
    RefundSource,
    build_refunds,
    encode_refund_manifest,
)
from pool.serialize import u64le
from pool.series import Series
from pool.tx import TxOut
from pool.vocabulary import Reason, Scope
from signer.policy import (
    Approval,
    DepositClaim,
    PolicyConfig,
    Refusal,
    SignedBefore,
    evaluate_refund_round,
)
from tests.factories import BTC, make_series, master_key, p2wpkh
from tests.refund_factories import deposit, refund_manifest
from tests.signer_harness import MemoryHistory, reasons

S1 = make_series(1, 2, (0, 1, 2))
FOREIGN = make_series(2, 2, (7, 8, 9))
OURS = master_key(0).fingerprint
NOW = 1_800_000_000.0


def address(script: bytes) -> str:
    text = script_pubkey_to_address(script, REGTEST)
    assert text is not None
    return text


ALICE = deposit("alice", S1, 3, BTC)
"""A deposit whose user registered a refund address (the default destination of the factory)."""
REGISTERED = {(1, 3): address(ALICE.destination)}


def evaluate(
    m: RefundManifest | bytes,
    psbts: Sequence[bytes] | None = None,
    *,
    config: PolicyConfig | None = None,
    history: MemoryHistory | None = None,
    registered: dict[tuple[int, int], str] | None = None,
    series: dict[int, Series] | None = None,
) -> Approval | list[Refusal]:
    manifest_bytes = m if isinstance(m, bytes) else encode_refund_manifest(m)
    if psbts is None:
        assert not isinstance(m, bytes)
        psbts = [t.psbt.serialize() for t in build_refunds(m).transactions]
    addresses = REGISTERED if registered is None else registered
    return evaluate_refund_round(
        config or PolicyConfig(),
        OURS,
        REGTEST,
        {1: S1} if series is None else series,
        lambda series_id, index: addresses.get((series_id, index)),
        manifest_bytes,
        psbts,
        history or MemoryHistory(),
        NOW,
    )


def refunds(*requests: RefundRequest, **changes: int) -> RefundManifest:
    return refund_manifest([S1], requests, **changes)  # type: ignore[arg-type]


def deposit_id(refund: RefundRequest) -> str:
    return f"{refund.outpoint.txid_hex}:{refund.outpoint.vout}"


def only_refusal(result: Approval | list[Refusal], refund: RefundRequest) -> Refusal:
    """The one refusal, scoped to ``refund``'s deposit."""
    assert isinstance(result, list)
    [refusal] = result
    assert (refusal.scope, refusal.client_id) == (Scope.REQUEST, "")
    assert refusal.request_id == deposit_id(refund)
    return refusal


def mutate(m: RefundManifest, change: Callable[[Psbt], Psbt]) -> list[bytes]:
    psbts = [t.psbt for t in build_refunds(m).transactions]
    return [change(psbts[0]).serialize()] + [p.serialize() for p in psbts[1:]]


def with_output(psbt: Psbt, output: TxOut) -> Psbt:
    return replace(psbt, tx=replace(psbt.tx, outputs=(output,)))


# --------------------------------------------------------------------------- approved


def test_an_honest_refund_round_is_approved_and_adds_nothing_to_the_limits() -> None:
    bob = deposit("bob", S1, 4, BTC // 2, source=RefundSource.SENDER)
    m = refunds(ALICE, bob)
    result = evaluate(m, config=PolicyConfig(max_daily_amount=0, max_request_amount=0))
    assert isinstance(result, Approval)
    plan = build_refunds(m)
    assert result.manifest_hash == plan.manifest_hash
    assert result.txids == tuple(t.txid_hex for t in plan.transactions)
    assert (result.change_vouts, result.payments, result.fee_bumps) == ((None, None), 0, ())


def test_a_sender_refund_is_approved_without_a_registration() -> None:
    bob = deposit("bob", S1, 4, BTC, source=RefundSource.SENDER)
    assert isinstance(evaluate(refunds(bob), registered={}), Approval)


def test_an_operator_refund_is_refused_by_default() -> None:
    carol = deposit("carol", S1, 5, BTC, source=RefundSource.OPERATOR)
    result = evaluate(refunds(carol), registered={})
    assert only_refusal(result, carol).reason == Reason.OPERATOR_REFUNDS_NOT_ALLOWED


def test_an_operator_refund_is_approved_when_the_policy_allows_it() -> None:
    carol = deposit("carol", S1, 5, BTC, source=RefundSource.OPERATOR)
    config = PolicyConfig(allow_operator_refunds=True)
    assert isinstance(evaluate(refunds(carol), config=config, registered={}), Approval)


def test_signing_the_same_refund_again_is_approved() -> None:
    history = MemoryHistory()
    first = evaluate(refunds(ALICE), history=history)
    assert isinstance(first, Approval)
    history.record(first)
    assert isinstance(evaluate(refunds(ALICE), history=history), Approval)


def test_refunds_of_a_series_without_this_signers_key_are_left_to_its_signers() -> None:
    foreign = deposit("dave", FOREIGN, 1, BTC)  # no refund address registered with this signer
    m = refund_manifest([S1, FOREIGN], [ALICE, foreign])
    assert isinstance(evaluate(m), Approval)


# --------------------------------------------------------------------------- destinations


def test_a_refund_to_another_address_than_the_registered_one_is_refused() -> None:
    stolen = replace(ALICE, destination=p2wpkh("thief"))
    refusal = only_refusal(evaluate(refunds(stolen)), stolen)
    assert refusal.reason == Reason.REFUND_DESTINATION_NOT_REGISTERED
    assert address(p2wpkh("thief")) in refusal.message
    assert refusal.psbt_index == 0


@pytest.mark.parametrize("registered", [{}, {(1, 3): ""}], ids=["never", "without-address"])
def test_a_registered_refund_without_a_refund_address_here_is_refused(
    registered: dict[tuple[int, int], str],
) -> None:
    result = evaluate(refunds(ALICE), registered=registered)
    assert only_refusal(result, ALICE).reason == Reason.REFUND_ADDRESS_UNKNOWN


@pytest.mark.parametrize("source", [RefundSource.SENDER, RefundSource.OPERATOR])
def test_a_registered_refund_address_binds_every_source(source: RefundSource) -> None:
    pick = p2wpkh("operator's pick") if source is RefundSource.OPERATOR else None
    other = deposit("alice", S1, 3, BTC, source=source, destination=pick)
    config = PolicyConfig(allow_operator_refunds=True)
    result = evaluate(refunds(other), config=config)
    assert only_refusal(result, other).reason == Reason.REFUND_DESTINATION_NOT_REGISTERED


def test_a_sender_refund_is_checked_again_against_the_raw_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bob = deposit("bob", S1, 4, BTC, source=RefundSource.SENDER)
    m = refunds(bob)
    monkeypatch.setattr("signer.policy.sender_script", lambda deposit, previous: p2wpkh("else"))
    result = evaluate(m, registered={})
    assert only_refusal(result, bob).reason == Reason.REFUND_DESTINATION_NOT_SENDER


def test_a_denied_destination_is_refused_for_that_deposit() -> None:
    config = PolicyConfig(deny_destinations=frozenset({REGISTERED[(1, 3)]}))
    result = evaluate(refunds(ALICE), config=config)
    assert only_refusal(result, ALICE).reason == Reason.DESTINATION_DENIED


def test_every_refused_deposit_is_named_so_the_coordinator_can_drop_them() -> None:
    stolen = replace(ALICE, destination=p2wpkh("thief"))
    unknown = deposit("erin", S1, 9, BTC)
    bob = deposit("bob", S1, 4, BTC, source=RefundSource.SENDER)
    result = evaluate(refunds(stolen, unknown, bob))
    assert isinstance(result, list)
    named = {r.request_id: r.reason for r in result}
    assert named == {
        deposit_id(stolen): Reason.REFUND_DESTINATION_NOT_REGISTERED,
        deposit_id(unknown): Reason.REFUND_ADDRESS_UNKNOWN,
    }


# --------------------------------------------------------------------------- rebuild


def test_a_tampered_refund_amount_is_refused() -> None:
    m = refunds(ALICE)

    def richer(p: Psbt) -> Psbt:
        out = p.tx.outputs[0]
        return with_output(p, TxOut(out.value + 1, out.script_pubkey))

    assert reasons(evaluate(m, mutate(m, richer))) == [Reason.AMOUNT_MISMATCH]


def test_a_tampered_refund_destination_is_refused() -> None:
    m = refunds(ALICE)

    def redirect(p: Psbt) -> Psbt:
        return with_output(p, TxOut(p.tx.outputs[0].value, p2wpkh("thief")))

    assert reasons(evaluate(m, mutate(m, redirect))) == [Reason.DESTINATION_MISMATCH]


def test_psbts_of_another_refund_round_are_refused() -> None:
    other = refunds(deposit("bob", S1, 4, BTC, source=RefundSource.SENDER))
    psbts = [t.psbt.serialize() for t in build_refunds(other).transactions]
    assert reasons(evaluate(refunds(ALICE), psbts)) == [Reason.MANIFEST_MISMATCH]


def test_a_missing_refund_psbt_is_refused() -> None:
    assert reasons(evaluate(refunds(ALICE), [])) == [Reason.PSBT_COUNT_MISMATCH]


# --------------------------------------------------------------------------- limits and log


def test_a_refund_fee_above_the_cap_is_refused_for_that_deposit() -> None:
    result = evaluate(refunds(ALICE), config=PolicyConfig(max_fee=100))
    assert only_refusal(result, ALICE).reason == Reason.FEE_ABOVE_LIMIT


def test_a_refund_fee_rate_above_the_cap_is_refused() -> None:
    result = evaluate(refunds(ALICE, fee_rate=200_000))
    assert reasons(result) == [Reason.FEE_RATE_ABOVE_LIMIT]


def test_a_second_refund_of_a_deposit_is_refused() -> None:
    history = MemoryHistory()
    first = evaluate(refunds(ALICE), history=history)
    assert isinstance(first, Approval)
    history.record(first)
    again = evaluate(refunds(ALICE, fee_rate=10_000), history=history)
    assert only_refusal(again, ALICE).reason == Reason.DOUBLE_SIGN


def test_a_deposit_spent_by_another_signed_transaction_is_not_refunded() -> None:
    spend = build_refunds(refunds(replace(ALICE, destination=p2wpkh("elsewhere")))).transactions
    before = SignedBefore(spend[0].txid_hex, spend[0].psbt.tx, 1, bytes(32))
    history = MemoryHistory({ALICE.outpoint: before})
    result = evaluate(refunds(ALICE), history=history)
    assert only_refusal(result, ALICE).reason == Reason.DOUBLE_SIGN


def test_the_same_refund_under_another_manifest_is_refused() -> None:
    history = MemoryHistory()
    first = evaluate(refunds(ALICE), history=history)
    assert isinstance(first, Approval)
    history.record(first)
    other = replace(refunds(ALICE), tip_hash=bytes(32))
    assert build_refunds(other).transactions[0].txid_hex == first.txids[0]
    assert only_refusal(evaluate(other, history=history), ALICE).reason == (
        Reason.SAME_TX_OTHER_MANIFEST
    )
    assert isinstance(evaluate(refunds(ALICE), history=history), Approval)


# --------------------------------------------------------------------------- the refund window


def test_refunds_count_in_their_own_rolling_window() -> None:
    result = evaluate(refunds(ALICE))
    assert isinstance(result, Approval)
    assert (result.refunds, result.payments) == (
        build_refunds(refunds(ALICE)).transactions[0].amount,
        0,
    )


def test_refunds_above_the_rolling_refund_limit_are_refused_for_the_deposits_beyond_it() -> None:
    bob = deposit("bob", S1, 4, BTC)
    history = MemoryHistory(refunds=[(NOW - 3600, BTC // 2)])
    config = PolicyConfig(max_daily_refund_amount=2 * BTC)
    registered = {**REGISTERED, (1, 4): address(bob.destination)}
    result = evaluate(refunds(ALICE, bob), config=config, history=history, registered=registered)
    [refusal] = result if isinstance(result, list) else []
    assert refusal.reason == Reason.REFUND_DAILY_LIMIT_EXCEEDED
    later = max(ALICE, bob, key=lambda r: (r.outpoint.txid_hex, r.outpoint.vout))
    assert refusal.request_id == deposit_id(later)


def test_refunds_before_the_window_do_not_count() -> None:
    history = MemoryHistory(refunds=[(NOW - 25 * 3600, 2 * BTC)])
    config = PolicyConfig(max_daily_refund_amount=2 * BTC)
    assert isinstance(evaluate(refunds(ALICE), config=config, history=history), Approval)


def test_signing_a_refund_again_adds_nothing_to_the_refund_window() -> None:
    history = MemoryHistory()
    config = PolicyConfig(max_daily_refund_amount=BTC)
    first = evaluate(refunds(ALICE), config=config, history=history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    again = evaluate(refunds(ALICE), config=config, history=history)
    assert isinstance(again, Approval) and again.refunds == 0


def test_a_refund_of_a_deposit_this_signer_acknowledged_is_refused_as_credited() -> None:
    history = MemoryHistory()
    history.acknowledge(DepositClaim(ALICE.outpoint, S1.id, ALICE.index, ALICE.value))
    bob = deposit("bob", S1, 4, BTC // 2, source=RefundSource.SENDER)
    result = evaluate(refunds(ALICE, bob), history=history)
    refusal = only_refusal(result, ALICE)
    assert refusal.reason == Reason.DEPOSIT_CREDITED
    assert "acknowledged" in refusal.message


# --------------------------------------------------------------------------- decoding and series


def test_a_malformed_refund_manifest_is_refused_naming_the_field() -> None:
    data = encode_refund_manifest(refunds(ALICE))
    lying = data.replace(u64le(ALICE.value), u64le(ALICE.value + 1), 1)
    result = evaluate(lying, [])
    assert reasons(result) == [Reason.MALFORMED_MANIFEST]
    assert isinstance(result, list)
    assert "refunds[0].value" in result[0].message


@pytest.mark.parametrize("data", [b"", b"VPRF\x01garbage", b"VPMF" + bytes(40)])
def test_bytes_that_are_no_refund_manifest_are_refused(data: bytes) -> None:
    assert reasons(evaluate(data, [])) == [Reason.MALFORMED_MANIFEST]


def test_a_refund_round_of_another_network_is_refused() -> None:
    m = refund_manifest([S1], [ALICE], network="testnet")
    assert reasons(evaluate(m)) == [Reason.WRONG_NETWORK]


def test_a_refund_round_of_an_unregistered_series_is_refused() -> None:
    assert reasons(evaluate(refunds(ALICE), series={})) == [Reason.SERIES_NOT_REGISTERED]


def test_a_refund_round_without_this_signers_key_is_refused() -> None:
    m = refund_manifest([FOREIGN], [deposit("dave", FOREIGN, 1, BTC)])
    assert reasons(evaluate(m, series={2: FOREIGN})) == [Reason.NOT_A_COSIGNER]
