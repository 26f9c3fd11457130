"""The round engine's decisions as pure functions of what the store holds about one round.

No I/O, no clock: ``coordinator.rounds`` (the driver) reads the round's facts from the store,
asks these functions what to do, persists the change and only then acts (asks the signers,
broadcasts, abandons). The money decisions live here, with fast tests without processes
(tests/test_round_state.py):

- ``to_ask``: which signers are asked (again) for a round.
- ``conclude``: once the signers are done or the round deadline passed, the verdict: broadcast,
  broadcast the signed transactions and wait for the others, wait (a round with any valid
  signature, or a signer whose device is still asked, is never abandoned), rebuild without the
  refused requests, or abandon.
- ``cancel_action``: what AdminService.CancelRound does with a round: abandon it (a signing
  round without any valid signature), replace its unconfirmed transactions by a cancel round
  (a signed or broadcast round), or refuse, saying why (``cancel_refusal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from coordinator.round_kinds import RefusedRequest, RequestKey
from coordinator.store.rounds import FINAL_OUTCOMES, Outcome, OutcomeRecord, RoundStatus
from pool.vocabulary import Finality, RoundKind, finality


def final_for_request(reason_code: str) -> bool:
    """A signer's per-request refusal that rejects the request for good
    (``pool.vocabulary``: finality ``REQUEST``); any other is transient: back to the queue."""
    return finality(reason_code) is Finality.REQUEST


class Verdict(StrEnum):
    """What the driver does with a round once its signers are done (or its deadline passed)."""

    BROADCAST = "broadcast"
    """Every transaction is signed: send them."""
    PARTLY_SIGNED = "partly signed"
    """Send the signed transactions; the round stays signing for the others."""
    WAIT = "wait"
    """Keep the round signing, its coins reserved and its requests in it; ask it again."""
    REBUILD = "rebuild"
    """Abandon it and build it again without the refused requests (once)."""
    ABANDON = "abandon"
    """Give it up: inputs released, requests put back."""


@dataclass(frozen=True)
class RoundFacts:
    """What the verdict depends on."""

    kind: RoundKind
    signer_ids: tuple[str, ...]
    """The configured signers."""
    m: int
    """Signatures needed on every input."""
    transactions: int
    signed_transactions: int
    """Transactions with m valid signatures on every input (finalized)."""
    signed_by: tuple[str, ...]
    """Signers with at least one valid signature stored in the round."""
    outcomes: tuple[OutcomeRecord, ...]
    rebuilt_from: int | None
    """The round this one replaced, if any (a round is rebuilt once)."""


def to_ask(
    signer_ids: Sequence[str], outcomes: Sequence[OutcomeRecord], waiting: bool
) -> list[str]:
    """The signers to ask: those without a final outcome; ``waiting`` (the round is past its
    deadline): every signer but those that signed everything they were asked (a refusal may be
    transient, and a faulty answer too: a signer whose operator repaired it must be heard, or a
    round signed by fewer than m honest signers waits forever; every answer is verified
    again)."""
    final = (Outcome.SIGNED,) if waiting else FINAL_OUTCOMES
    done = {o.signer_id for o in outcomes if o.outcome in final}
    return [s for s in signer_ids if s not in done]


def request_refusals(outcomes: Sequence[OutcomeRecord]) -> dict[RequestKey, RefusedRequest]:
    """(client id, request id) → that request's refusals in the round."""
    refused: dict[RequestKey, RefusedRequest] = {}
    for o in outcomes:
        for r in o.refusals:
            if r.scope != "request":
                continue
            entry = refused.setdefault((r.client_id, r.request_id), RefusedRequest(False, []))
            entry.final = entry.final or final_for_request(r.reason_code)
            entry.reasons.append(f"{r.reason_code} by {o.signer_id}: {r.message}")
    return refused


def refused_for_good(facts: RoundFacts) -> bool:
    """Fewer than m signers are left once those that refused a request of the round for good
    or were faulty are counted out: the round can never be signed as it is, whatever the others
    do. For good: a withdrawal refused for a final reason (``final_for_request``); any
    refusal of a refund (the deposit then waits for an operator's proposal)."""
    out = {
        o.signer_id
        for o in facts.outcomes
        if o.outcome is Outcome.FAULTY
        or any(
            r.scope == "request"
            and (facts.kind is RoundKind.REFUND or final_for_request(r.reason_code))
            for r in o.refusals
        )
    }
    return len([s for s in facts.signer_ids if s not in out]) < facts.m


def conclude(facts: RoundFacts) -> Verdict:
    """The verdict on a round whose signers are done or whose deadline passed.

    m valid signatures on every input win over any refusal (the pool is m-of-n). A round with
    any valid signature, or with a signer whose device is still asked (``pending``), waits:
    abandoning it would leave the signature behind, and every later round spending its coins
    with other outputs would be refused DOUBLE_SIGN. The one exception: signers refused its
    requests for good so that m can never be reached; it is then rebuilt without them (once).
    A round without any signature is rebuilt without refused requests (once), else abandoned.
    """
    if facts.signed_transactions == facts.transactions:
        return Verdict.BROADCAST
    if facts.signed_transactions:
        return Verdict.PARTLY_SIGNED
    rebuild = bool(request_refusals(facts.outcomes)) and facts.rebuilt_from is None
    pending = any(o.outcome is Outcome.PENDING for o in facts.outcomes)
    if (facts.signed_by or pending) and not (rebuild and refused_for_good(facts)):
        return Verdict.WAIT
    return Verdict.REBUILD if rebuild else Verdict.ABANDON


class CancelAction(StrEnum):
    """What AdminService.CancelRound does with a round."""

    ABANDON = "abandon"
    """No valid signature was given: abandoned at once, its requests back in the queue."""
    REPLACE = "replace"
    """Its transactions are signed: those not in a block are replaced by a cancel round
    without their payments (coordinator.cancels, operator cancel), whose withdrawals go back
    to the queue once the replacement confirms."""


def cancel_action(
    round_id: str, status: RoundStatus, signed_transactions: int, signed_by: Sequence[str]
) -> CancelAction | str:
    """What CancelRound does with the round, or why it refuses.

    A signing round with some signatures but no complete transaction is refused: none of its
    transactions can be broadcast without m signatures, but m - 1 of them plus a colluding
    signer's could complete one later, so abandoning it would not make it safe to pay its
    requests elsewhere; it is kept and asked again (it is cancelled by replacement once it is
    signed). A signing round with some transactions signed is refused likewise (cancel it
    once the others are signed)."""
    if status in (RoundStatus.SIGNED, RoundStatus.BROADCAST):
        return CancelAction.REPLACE
    refusal = cancel_refusal(round_id, status, signed_transactions, signed_by)
    return CancelAction.ABANDON if refusal is None else refusal


def cancel_refusal(
    round_id: str, status: RoundStatus, signed_transactions: int, signed_by: Sequence[str]
) -> str | None:
    """Why CancelRound may not abandon the round now, or None when it may: only a signing round
    without any valid signature is abandoned (a device still asked may sign it later: that is
    the operator's call, never the engine's)."""
    if status is not RoundStatus.SIGNING:
        return f"round {round_id} is {status}, not signing"
    if signed_transactions:
        return (
            f"round {round_id} has signed transactions and others still signing: they are "
            "broadcast and followed; cancel it once every transaction is signed (then by "
            "replacement)"
        )
    if signed_by:
        return (
            f"round {round_id} was signed by {', '.join(signed_by)} but no transaction has m "
            "signatures: a partial signature could still be completed by a colluding signer, "
            "so the round stays open and is asked again until it has its signatures; cancel "
            "it then (by replacement)"
        )
    return None
