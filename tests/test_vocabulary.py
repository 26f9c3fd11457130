"""The shared vocabulary: every refusal reason has a finality, and the coordinator reads the
codes a signer sends with it."""

from __future__ import annotations

import pytest

from pool.vocabulary import FINALITY, Finality, Reason, finality


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_a_finality(reason: Reason) -> None:
    assert isinstance(FINALITY[reason], Finality)


def test_a_code_this_side_does_not_know_is_transient() -> None:
    assert finality("A_REASON_OF_A_NEWER_SIGNER") is Finality.TRANSIENT


@pytest.mark.parametrize(
    "reason",
    [Reason.REQUEST_LIMIT_EXCEEDED, Reason.DESTINATION_DENIED, Reason.DEPOSIT_CREDITED],
)
def test_a_request_no_round_can_pay_is_final_for_the_request(reason: Reason) -> None:
    assert finality(reason.value) is Finality.REQUEST


@pytest.mark.parametrize(
    "reason",
    [Reason.CHAIN_UNAVAILABLE, Reason.DESTINATION_DAILY_LIMIT_EXCEEDED, Reason.INPUT_IMMATURE],
)
def test_what_time_can_change_is_transient(reason: Reason) -> None:
    assert finality(reason.value) is Finality.TRANSIENT


@pytest.mark.parametrize("reason", [Reason.AMOUNT_MISMATCH, Reason.INPUT_AMOUNT_MISMATCH])
def test_a_lying_manifest_is_final_for_that_manifest(reason: Reason) -> None:
    assert finality(reason.value) is Finality.MANIFEST
