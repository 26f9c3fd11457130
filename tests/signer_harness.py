"""Shared pieces of the signer's tests: the SignRound and registration requests the daemon tests
send, and an in-memory signing history for the policy tests.

The signer processes, PKI and configs themselves live in ``vpool.devnet``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.refunds import RefundManifest, build_refunds, encode_refund_manifest
from pool.series import CHANGE, RECEIVE, Series
from pool.tx import OutPoint
from pool.vocabulary import Reason
from pool.withdrawal import build_round
from signer.policy import AcknowledgedDeposit, Approval, DepositClaim, Refusal, SignedBefore
from vpool.v1 import common_pb2, signer_pb2, signer_pb2_grpc

CALL_TIMEOUT = 20.0
ANSWER_TIMEOUT = 120.0
"""Seconds a test waits for a device to answer a round (a loaded machine makes HWI slow)."""


def sign_until_answered(
    stub: signer_pb2_grpc.SignerServiceStub, request: signer_pb2.SignRoundRequest
) -> signer_pb2.SignRoundResponse:
    """Ask SignRound again with the same request while the signer says ``pending`` (its device
    has not answered within ``answer_within_seconds``), as the coordinator does; the answer."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:
        answer: signer_pb2.SignRoundResponse = stub.SignRound(request, timeout=CALL_TIMEOUT)
        if not answer.pending:
            return answer
        assert time.monotonic() < deadline, "the device never answered the round"
        time.sleep(0.2)


# --- rounds ----------------------------------------------------------------------------------


def round_request(m: Manifest) -> signer_pb2.SignRoundRequest:
    """The SignRound request of a manifest: its encoding and the PSBTs it builds."""
    plan = build_round(m)
    return signer_pb2.SignRoundRequest(
        kind=signer_pb2.ROUND_KIND_WITHDRAWAL,
        manifest=encode_manifest(m),
        psbts=[t.psbt.serialize() for t in plan.transactions],
    )


def refund_round_request(m: RefundManifest) -> signer_pb2.SignRoundRequest:
    """The SignRound request of a refund manifest: its encoding and the PSBTs it builds."""
    plan = build_refunds(m)
    return signer_pb2.SignRoundRequest(
        kind=signer_pb2.ROUND_KIND_REFUND,
        manifest=encode_refund_manifest(m),
        psbts=[t.psbt.serialize() for t in plan.transactions],
    )


def deposit_address_request(
    series: Series, index: int, refund_address: str = ""
) -> signer_pb2.RegisterDepositAddressRequest:
    return signer_pb2.RegisterDepositAddressRequest(
        network=common_pb2.NETWORK_REGTEST,
        series_id=series.id,
        index=index,
        refund_address=refund_address,
    )


def register_request(series: Series) -> signer_pb2.RegisterSeriesRequest:
    return signer_pb2.RegisterSeriesRequest(
        network=common_pb2.NETWORK_REGTEST,
        series_id=series.id,
        receive_descriptor=series.descriptor(RECEIVE).to_string(REGTEST),
        change_descriptor=series.descriptor(CHANGE).to_string(REGTEST),
    )


def with_signatures(psbt: Psbt, signed: signer_pb2.SignedPsbt) -> Psbt:
    """``psbt`` with the partial signatures of one SignRound answer added."""
    inputs = list(psbt.inputs)
    for sig in signed.signatures:
        current = inputs[sig.input_index]
        partial = {**current.partial_sigs, bytes(sig.pubkey): bytes(sig.signature)}
        inputs[sig.input_index] = replace(current, partial_sigs=partial)
    return replace(psbt, inputs=tuple(inputs))


# --- policy ----------------------------------------------------------------------------------


@dataclass
class MemoryHistory:
    """An in-memory stand-in for the signing history of ``signer.state.SignerState``."""

    spends: dict[OutPoint, SignedBefore] = field(default_factory=dict)
    amounts: list[tuple[float, int]] = field(default_factory=list)
    """(when, satoshis) of each approval recorded: its payments."""
    paid_to: list[tuple[float, bytes, int]] = field(default_factory=list)
    """(when, scriptPubKey, satoshis) of the payments per destination."""
    refunds: list[tuple[float, int]] = field(default_factory=list)
    moves: list[tuple[float, int]] = field(default_factory=list)
    acknowledged: dict[OutPoint, AcknowledgedDeposit] = field(default_factory=dict)
    cancelled: set[tuple[str, str]] = field(default_factory=set)
    requeued: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    """Operator-cancelled requests not paid again yet → the replacements that dropped them."""
    confirmed: set[str] = field(default_factory=set)
    """Txids the signer's node shows confirmed deep enough."""

    def signed_spend(self, outpoint: OutPoint) -> SignedBefore | None:
        return self.spends.get(outpoint)

    def amount_signed_since(self, since: float) -> int:
        return sum(a for t, a in self.amounts if t >= since)

    def amount_paid_to_since(self, script_pubkey: bytes, since: float) -> int:
        return sum(a for t, s, a in self.paid_to if t >= since and s == script_pubkey)

    def amount_refunded_since(self, since: float) -> int:
        return sum(a for t, a in self.refunds if t >= since)

    def amount_moved_since(self, since: float) -> int:
        return sum(a for t, a in self.moves if t >= since)

    def acknowledged_deposit(self, outpoint: OutPoint) -> AcknowledgedDeposit | None:
        return self.acknowledged.get(outpoint)

    def cancelled_request(self, client_id: str, request_id: str) -> bool:
        return (client_id, request_id) in self.cancelled

    def requeued_cancel(self, client_id: str, request_id: str) -> tuple[str, ...]:
        return self.requeued.get((client_id, request_id), ())

    def transaction_confirmed(self, txid_hex: str) -> bool:
        return txid_hex in self.confirmed

    def acknowledge(self, claim: DepositClaim, height: int = 100, now: float = 0.0) -> None:
        self.acknowledged[claim.outpoint] = AcknowledgedDeposit(claim, height, now)

    def record(self, approval: Approval, now: float = 0.0) -> None:
        logged = len(approval.psbts) - approval.rungs  # as signer.state: rungs not logged
        pairs = zip(approval.psbts, approval.change_vouts, strict=True)
        for psbt, change in list(pairs)[:logged]:
            for txin in psbt.tx.inputs:
                self.spends[txin.prevout] = SignedBefore(
                    psbt.tx.txid_hex, psbt.tx, change, approval.manifest_hash
                )
        self.amounts.append((now, approval.payments))
        self.cancelled |= set(approval.cancels)
        for client, request, txids in approval.requeues:
            if (client, request) not in self.cancelled:
                self.requeued[(client, request)] = txids
        for key in approval.repaid:  # as signer.state: paid again once, never a third time
            self.requeued.pop(key, None)
            self.cancelled.add(key)
        self.paid_to += [(now, script, amount) for script, amount in approval.destinations]
        self.refunds.append((now, approval.refunds))
        self.moves.append((now, approval.moves))


def reasons(result: Approval | list[Refusal]) -> list[Reason]:
    """The reason codes of a refusal."""
    assert isinstance(result, list), "expected a refusal, the round was approved"
    return [r.reason for r in result]
