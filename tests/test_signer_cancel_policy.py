"""The signer's cancel rule (docs/signer-policy.md, "Cancel") against a hostile coordinator: a
payment may be dropped from a signed transaction only when it is, by this signer's own rebuild
of the manifest it signed, the payment of a request the cancel names; a cancelled request is
never paid again."""

from __future__ import annotations

from dataclasses import replace

from pool.cancel import OPERATOR_CANCEL_VERSION, CancelManifest, build_cancel, encode_cancel
from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.vocabulary import Reason, Scope
from pool.withdrawal import build_round
from signer.policy import Approval, PolicyConfig, Refusal, evaluate_round, series_checksum
from signer.rounds import _WithRoundsInProgress
from tests.factories import BTC, make_series, manifest, master_key, request, utxo
from tests.signer_harness import MemoryHistory, reasons

S1 = make_series(1, 2, (0, 1, 2))
OURS = master_key(0).fingerprint
NOW = 1_800_000_000.0
POLICY = PolicyConfig(approved_series=frozenset({series_checksum(S1, REGTEST)}))
ORIGINAL = manifest(
    [S1],
    [utxo(i, BTC, 100 + i, index=i) for i in range(2)],
    [request("alice", "1", 30_000_000), request("bob", "1", 10_000_000)],
    fee_rate=1000,
)


def evaluate(
    manifest_bytes: bytes,
    psbts: list[Psbt],
    history: MemoryHistory,
    config: PolicyConfig = POLICY,
) -> Approval | list[Refusal]:
    return evaluate_round(
        config,
        OURS,
        REGTEST,
        {1: S1},
        manifest_bytes,
        [p.serialize() for p in psbts],
        history,
        NOW,
    )


def signed(m: Manifest = ORIGINAL) -> MemoryHistory:
    history = MemoryHistory()
    approval = evaluate(encode_manifest(m), list(build_round(m).psbts), history)
    assert isinstance(approval, Approval)
    history.record(approval, NOW)
    return history


def cancel_of(
    *cancels: tuple[str, str], m: Manifest = ORIGINAL, rate: int = 3000
) -> CancelManifest:
    return CancelManifest(m, rate, cancels)


def evaluate_cancel(
    c: CancelManifest, history: MemoryHistory, config: PolicyConfig = POLICY
) -> Approval | list[Refusal]:
    psbts = [t.psbt for t in build_cancel(c).transactions]
    return evaluate(encode_cancel(c), psbts, history, config)


def test_a_cancel_of_a_signed_transaction_is_approved_and_recorded() -> None:
    history = signed()
    result = evaluate_cancel(cancel_of(("bob", "1")), history)
    assert isinstance(result, Approval)
    assert (result.payments, result.cancels) == (0, (("bob", "1"),))


def test_a_cancel_whose_psbt_drops_another_clients_payment_is_refused() -> None:
    history = signed()
    c = cancel_of(("bob", "1"))
    hostile = [t.psbt for t in build_cancel(cancel_of(("alice", "1"))).transactions]
    assert isinstance(evaluate(encode_cancel(c), hostile, history), list)


def test_a_cancel_built_on_another_manifest_than_the_one_signed_is_refused() -> None:
    """The coordinator cannot claim another mapping of outputs to requests: the payment to drop
    is found in this signer's rebuild of the manifest it signed, or nowhere."""
    history = signed()
    other = replace(ORIGINAL, fee_rate=1500)  # same coins, another transaction
    result = evaluate_cancel(cancel_of(("bob", "1"), m=other, rate=3000), history)
    assert reasons(result) == [Reason.CANCEL_OF_UNSIGNED]


def test_a_cancelled_request_is_never_paid_again() -> None:
    history = signed()
    approval = evaluate_cancel(cancel_of(("bob", "1")), history)
    assert isinstance(approval, Approval)
    history.record(approval, NOW)
    again = manifest(
        [S1], [utxo(7, BTC, 100, index=7)], [request("bob", "1", 10_000_000)], fee_rate=1000
    )
    result = evaluate(encode_manifest(again), list(build_round(again).psbts), history)
    assert reasons(result) == [Reason.DOUBLE_SIGN]
    assert isinstance(result, list) and result[0].scope is Scope.REQUEST


def test_a_cancel_above_the_signers_fee_rate_limit_is_refused() -> None:
    history = signed()
    config = replace(POLICY, max_fee_rate=2000)
    assert reasons(evaluate_cancel(cancel_of(("bob", "1")), history, config)) == [
        Reason.FEE_RATE_ABOVE_LIMIT
    ]


def test_a_second_cancel_of_the_same_transaction_is_refused() -> None:
    history = signed()
    first = evaluate_cancel(cancel_of(("bob", "1")), history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    second = evaluate_cancel(cancel_of(("alice", "1"), ("bob", "1"), rate=5000), history)
    assert reasons(second) == [Reason.CANCEL_OF_UNSIGNED]  # the log now holds the first cancel


def test_a_cancel_of_a_transaction_this_signer_never_signed_is_refused() -> None:
    """Else a made-up "original" would have its kept payments signed outside the limits."""
    result = evaluate_cancel(cancel_of(("bob", "1")), MemoryHistory())
    assert reasons(result) == [Reason.CANCEL_OF_UNSIGNED]


def test_the_same_cancel_asked_again_is_approved_and_adds_nothing() -> None:
    history = signed()
    first = evaluate_cancel(cancel_of(("bob", "1")), history)
    assert isinstance(first, Approval)
    history.record(first, NOW)
    again = evaluate_cancel(cancel_of(("bob", "1")), history)
    assert isinstance(again, Approval) and again.payments == 0


# --- an operator's cancel (pool.cancel version 2): the request goes back to the queue --------

AGAIN = manifest(
    [S1], [utxo(7, BTC, 100, index=7)], [request("bob", "1", 10_000_000)], fee_rate=1000
)


def operator_cancel_of(*cancels: tuple[str, str], rate: int = 3000) -> CancelManifest:
    return CancelManifest(ORIGINAL, rate, cancels, version=OPERATOR_CANCEL_VERSION)


def operator_cancelled() -> tuple[MemoryHistory, Approval]:
    history = signed()
    approval = evaluate_cancel(operator_cancel_of(("bob", "1")), history)
    assert isinstance(approval, Approval)
    history.record(approval, NOW)
    return history, approval


def pay_again(history: MemoryHistory, m: Manifest = AGAIN) -> Approval | list[Refusal]:
    return evaluate(encode_manifest(m), list(build_round(m).psbts), history)


def test_an_operator_cancel_records_the_request_with_the_replacement_that_dropped_it() -> None:
    _, approval = operator_cancelled()
    replacement = build_cancel(operator_cancel_of(("bob", "1"))).transactions[0].txid_hex
    assert approval.cancels == ()
    assert approval.requeues == (("bob", "1", (replacement,)),)


def test_an_operator_cancelled_request_is_paid_again_once_its_replacement_is_confirmed() -> None:
    history, approval = operator_cancelled()
    history.confirmed.add(approval.txids[0])
    result = pay_again(history)
    assert isinstance(result, Approval)
    assert result.repaid == (("bob", "1"),)


def test_a_hostile_coordinator_cannot_pay_an_operator_cancelled_request_before_the_chain_shows_it_unpaid() -> (  # noqa: E501
    None
):
    """It holds the original fully signed: paying the request again while the replacement is
    not confirmed would let both confirm."""
    history, _ = operator_cancelled()
    result = pay_again(history)
    assert reasons(result) == [Reason.CANCEL_NOT_SETTLED]
    assert isinstance(result, list) and result[0].scope is Scope.REQUEST


def test_a_hostile_coordinator_cannot_pay_an_operator_cancelled_request_a_third_time() -> None:
    history, approval = operator_cancelled()
    history.confirmed.add(approval.txids[0])
    second = pay_again(history)
    assert isinstance(second, Approval)
    history.record(second, NOW)
    third = manifest(
        [S1], [utxo(8, BTC, 100, index=8)], [request("bob", "1", 10_000_000)], fee_rate=1000
    )
    assert reasons(pay_again(history, third)) == [Reason.DOUBLE_SIGN]


def test_an_operator_cancel_cannot_drop_a_request_it_does_not_name() -> None:
    """The redirect attempt: the PSBT drops alice's payment while the manifest names bob's."""
    history = signed()
    c = operator_cancel_of(("bob", "1"))
    hostile = [t.psbt for t in build_cancel(operator_cancel_of(("alice", "1"))).transactions]
    assert isinstance(evaluate(encode_cancel(c), hostile, history), list)


def test_an_operator_cancel_of_a_transaction_this_signer_never_signed_is_refused() -> None:
    result = evaluate_cancel(operator_cancel_of(("bob", "1")), MemoryHistory())
    assert reasons(result) == [Reason.CANCEL_OF_UNSIGNED]


def test_a_request_a_client_cancelled_stays_unpayable_even_after_its_replacement_confirms() -> None:
    history = signed()
    approval = evaluate_cancel(cancel_of(("bob", "1")), history)
    assert isinstance(approval, Approval)
    history.record(approval, NOW)
    history.confirmed.add(approval.txids[0])
    assert reasons(pay_again(history)) == [Reason.DOUBLE_SIGN]


def test_two_rounds_judged_side_by_side_never_both_pay_an_operator_cancelled_request() -> None:
    """The first is still at the device (not recorded): the second sees it as recorded."""
    history, approval = operator_cancelled()
    history.confirmed.add(approval.txids[0])
    first = pay_again(history)
    assert isinstance(first, Approval) and first.repaid == (("bob", "1"),)
    at_device = _WithRoundsInProgress(history, [first])
    second = manifest(
        [S1], [utxo(8, BTC, 100, index=8)], [request("bob", "1", 10_000_000)], fee_rate=1000
    )
    result = evaluate(encode_manifest(second), list(build_round(second).psbts), at_device)  # type: ignore[arg-type]
    assert reasons(result) == [Reason.DOUBLE_SIGN]
