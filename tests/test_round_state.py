"""The round engine's money decisions (coordinator.round_state), without processes: which
signers are asked, the verdict once they are done, and what CancelRound may do. The same paths
run end to end with real signers in tests/test_round_engine.py and tests/test_e2e.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator.round_state import (
    CancelAction,
    RoundFacts,
    Verdict,
    cancel_action,
    cancel_refusal,
    conclude,
    refused_for_good,
    request_refusals,
    to_ask,
)
from coordinator.signers import Refusal
from coordinator.store.rounds import Outcome, OutcomeRecord, RoundStatus
from pool.vocabulary import RoundKind

SIGNERS = ("signer-1", "signer-2", "signer-3")


def answer(signer_id: str, outcome: Outcome, *refusals: Refusal) -> OutcomeRecord:
    signatures = 2 if outcome is Outcome.SIGNED else 0
    return OutcomeRecord(signer_id, outcome, signatures, "", tuple(refusals), at=0.0)


def request_refusal(code: str, request_id: str = "w-1") -> Refusal:
    return Refusal("request", code, "no", client_id="alice", request_id=request_id)


def facts(*outcomes: OutcomeRecord, signed_transactions: int = 0) -> RoundFacts:
    return RoundFacts(
        kind=RoundKind.WITHDRAWAL,
        signer_ids=SIGNERS,
        m=2,
        transactions=2,
        signed_transactions=signed_transactions,
        signed_by=tuple(o.signer_id for o in outcomes if o.outcome is Outcome.SIGNED),
        outcomes=outcomes,
        rebuilt_from=None,
    )


DENIED = request_refusal("DESTINATION_DENIED")
TRANSIENT = request_refusal("DESTINATION_LIMIT_EXCEEDED")


def test_a_round_with_every_transaction_signed_is_broadcast_whatever_the_refusals() -> None:
    done = facts(
        answer("signer-1", Outcome.SIGNED),
        answer("signer-2", Outcome.SIGNED),
        answer("signer-3", Outcome.REFUSED, DENIED),
        signed_transactions=2,
    )
    assert conclude(done) is Verdict.BROADCAST


def test_a_round_with_some_transactions_signed_broadcasts_them_and_waits() -> None:
    assert conclude(facts(signed_transactions=1)) is Verdict.PARTLY_SIGNED


def test_a_round_one_signer_signed_waits_at_its_deadline_instead_of_being_abandoned() -> None:
    one = facts(answer("signer-1", Outcome.SIGNED), answer("signer-2", Outcome.DOWN))
    assert conclude(one) is Verdict.WAIT


def test_a_round_without_any_signature_is_abandoned() -> None:
    none = facts(answer("signer-1", Outcome.DOWN), answer("signer-2", Outcome.TIMEOUT))
    assert conclude(none) is Verdict.ABANDON


def test_a_round_whose_signer_device_is_still_asked_waits_even_without_a_signature() -> None:
    asked = facts(answer("signer-1", Outcome.PENDING), answer("signer-2", Outcome.DOWN))
    assert conclude(asked) is Verdict.WAIT


def test_a_faulty_signer_signatures_do_not_keep_a_round_waiting() -> None:
    faulty = facts(answer("signer-1", Outcome.FAULTY), answer("signer-2", Outcome.DOWN))
    assert conclude(faulty) is Verdict.ABANDON


def test_refused_requests_rebuild_an_unsigned_round_once() -> None:
    refused = facts(
        answer("signer-1", Outcome.REFUSED, TRANSIENT), answer("signer-2", Outcome.DOWN)
    )
    assert conclude(refused) is Verdict.REBUILD
    assert conclude(replace(refused, rebuilt_from=7)) is Verdict.ABANDON


def test_a_signed_round_waits_while_its_requests_are_refused_only_for_transient_reasons() -> None:
    transient = facts(
        answer("signer-1", Outcome.SIGNED),
        answer("signer-2", Outcome.REFUSED, TRANSIENT),
        answer("signer-3", Outcome.REFUSED, TRANSIENT),
    )
    assert not refused_for_good(transient)
    assert conclude(transient) is Verdict.WAIT


def test_a_signed_round_refused_for_good_below_m_is_rebuilt_without_the_refused_requests() -> None:
    dead = facts(
        answer("signer-1", Outcome.SIGNED),
        answer("signer-2", Outcome.REFUSED, DENIED),
        answer("signer-3", Outcome.REFUSED, DENIED),
    )
    assert refused_for_good(dead)
    assert conclude(dead) is Verdict.REBUILD
    assert conclude(replace(dead, rebuilt_from=7)) is Verdict.WAIT


def test_one_final_refusal_of_three_signers_leaves_m_reachable() -> None:
    outvoted = facts(
        answer("signer-1", Outcome.SIGNED),
        answer("signer-2", Outcome.REFUSED, DENIED),
        answer("signer-3", Outcome.DOWN),
    )
    assert not refused_for_good(outvoted)
    assert conclude(outvoted) is Verdict.WAIT


def test_any_refusal_of_a_refund_is_for_good() -> None:
    refund = replace(
        facts(
            answer("signer-1", Outcome.SIGNED),
            answer("signer-2", Outcome.REFUSED, TRANSIENT),
            answer("signer-3", Outcome.REFUSED, TRANSIENT),
        ),
        kind=RoundKind.REFUND,
    )
    assert refused_for_good(refund)
    assert conclude(refund) is Verdict.REBUILD


def test_request_refusals_are_grouped_by_request_and_final_when_any_is() -> None:
    found = request_refusals(
        [
            answer("signer-1", Outcome.REFUSED, TRANSIENT),
            answer("signer-2", Outcome.REFUSED, DENIED, request_refusal("X", "w-2")),
            answer("signer-3", Outcome.REFUSED, Refusal("round", "POLICY", "no")),
        ]
    )
    assert set(found) == {("alice", "w-1"), ("alice", "w-2")}
    assert found[("alice", "w-1")].final and len(found[("alice", "w-1")].reasons) == 2
    assert not found[("alice", "w-2")].final


@pytest.mark.parametrize(
    ("waiting", "asked"),
    [(False, ["signer-3", "signer-4", "signer-5"]), (True, ["signer-2", "signer-3", "signer-4",
                                                             "signer-5", "signer-6"])],
)  # fmt: skip
def test_signers_asked_again_are_those_without_a_final_answer_and_all_but_signers_once_waiting(
    waiting: bool, asked: list[str]
) -> None:
    outcomes = [
        answer("signer-1", Outcome.SIGNED),
        answer("signer-2", Outcome.REFUSED, TRANSIENT),
        answer("signer-3", Outcome.PENDING),
        answer("signer-4", Outcome.DOWN),
        answer("signer-6", Outcome.FAULTY),
    ]
    signer_ids = [f"signer-{i}" for i in range(1, 7)]
    assert to_ask(signer_ids, outcomes, waiting) == asked


def test_cancel_abandons_only_a_signing_round_without_any_signature() -> None:
    assert cancel_refusal("r", RoundStatus.SIGNING, 0, []) is None
    refused = cancel_refusal("r", RoundStatus.SIGNING, 0, ["signer-2"])
    assert refused is not None
    assert refused.startswith("round r was signed by signer-2 but no transaction has m signatures")
    assert "colluding signer" in refused
    refused = cancel_refusal("r", RoundStatus.SIGNING, 1, ["signer-1", "signer-2"])
    assert refused is not None and "cancel it once every transaction is signed" in refused
    assert cancel_refusal("r", RoundStatus.BROADCAST, 2, []) == "round r is broadcast, not signing"


@pytest.mark.parametrize("status", [RoundStatus.SIGNED, RoundStatus.BROADCAST])
def test_cancel_of_a_signed_or_broadcast_round_replaces_its_transactions(
    status: RoundStatus,
) -> None:
    assert cancel_action("r", status, 2, ["signer-1", "signer-2"]) is CancelAction.REPLACE


def test_cancel_of_a_signing_round_without_signatures_abandons_it() -> None:
    assert cancel_action("r", RoundStatus.SIGNING, 0, []) is CancelAction.ABANDON


@pytest.mark.parametrize(
    ("status", "signed", "signed_by"),
    [
        (RoundStatus.SIGNING, 0, ["signer-2"]),  # partial signatures: m - 1 could be completed
        (RoundStatus.SIGNING, 1, ["signer-1", "signer-2"]),
        (RoundStatus.COMPLETED, 1, ["signer-1", "signer-2"]),
        (RoundStatus.ABANDONED, 0, []),
    ],
)
def test_cancel_of_any_other_round_is_refused_with_its_reason(
    status: RoundStatus, signed: int, signed_by: list[str]
) -> None:
    refusal = cancel_action("r", status, signed, signed_by)
    assert not isinstance(refusal, CancelAction) and refusal.startswith("round r ")
