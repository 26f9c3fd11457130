"""Witnessing deposits before the coordinator credits them (SignerService.AcknowledgeDeposits).

For each deposit the coordinator claims, the signer asks its own node for the output (confirmed
and unspent), then applies ``signer.policy.acknowledgement_refusal``: its receive address is one
registered with this signer (series and deposit address), derived here; the value is the one
claimed; it has this signer's ``deposit_confirmations``; and this signer never signed a spend of
it. An acknowledgement is recorded (``signer.state``) before it is answered, and from then on the
refund policy refuses every refund of the deposit (``DEPOSIT_CREDITED``).

The node is asked first, without the lock; the signing history is read and the acknowledgement
recorded under the lock ``signer.rounds.RoundSigner`` holds while it evaluates, signs and records
a round. So an acknowledgement and the signing of the deposit's refund exclude each other: one of
them comes first and the other sees it. (A round waiting for a person at a hardware device holds
the lock: acknowledgements wait for it, and the coordinator asks again after its deadline.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pool.networks import Network
from pool.series import Series
from pool.vocabulary import Reason, Scope
from signer.chain import ChainUnavailable, ChainUtxo, ChainView
from signer.policy import (
    DepositClaim,
    PolicyConfig,
    Refusal,
    acknowledgement_refusal,
    repeated_acknowledgement,
)
from signer.state import SignerState

log = logging.getLogger(__name__)

MAX_CLAIMS = 1000
"""Deposits one AcknowledgeDeposits call may name."""
_Found = ChainUtxo | None | tuple[Reason, str]
"""A claim's output on the signer's node (None: no such confirmed unspent output), or why the
node cannot tell."""


@dataclass(frozen=True)
class Verdict:
    """The answer about one claimed deposit."""

    claim: DepositClaim
    acknowledged: bool
    already_acknowledged: bool = False
    refusal: Refusal | None = None
    confirmations: int = 0
    """As this signer's node reported them (0: not found or not asked)."""


class Acknowledger:
    def __init__(
        self,
        network: Network,
        policy: PolicyConfig,
        state: SignerState,
        chain: ChainView | None,
        lock: threading.Lock,
        clock: Callable[[], float],
    ) -> None:
        self._network = network
        self._policy = policy
        self._state = state
        self._chain = chain
        self._lock = lock
        self._clock = clock

    def acknowledge(self, claims: Sequence[DepositClaim]) -> list[Verdict]:
        """One verdict per claim, in order; every acknowledgement is recorded before this
        returns."""
        found = self._look_up(claims)
        registered = self._state.registered_series(self._network)
        verdicts = []
        with self._lock:
            now = self._clock()
            for claim in claims:
                verdicts.append(self._decide(claim, found.get(claim), registered, now))
        acknowledged = sum(v.acknowledged for v in verdicts)
        log.info("acknowledged %d of %d deposits", acknowledged, len(verdicts))
        return verdicts

    def _look_up(self, claims: Sequence[DepositClaim]) -> dict[DepositClaim, _Found]:
        """Each claim's output on this signer's node (None: none there), or why the node
        could not tell."""
        found: dict[DepositClaim, _Found] = {}
        if self._chain is None:
            why = (Reason.CHAIN_NOT_CONFIGURED, "this signer runs without a node")
            return {c: why for c in claims}
        for claim in claims:
            if self._state.acknowledged_deposit(claim.outpoint) is not None:
                continue  # answered from the record
            try:
                found[claim] = self._chain.utxo(claim.outpoint)
            except ChainUnavailable as e:
                log.warning("node unavailable while acknowledging deposits: %s", e)
                unavailable = (Reason.CHAIN_UNAVAILABLE, f"this signer's node cannot be asked: {e}")
                found.update({c: unavailable for c in claims if c not in found})
                break
        return found

    def _decide(
        self,
        claim: DepositClaim,
        found: _Found,
        registered: Mapping[int, Series],
        now: float,
    ) -> Verdict:
        prior = self._state.acknowledged_deposit(claim.outpoint)
        if prior is not None:
            refusal = repeated_acknowledgement(claim, prior)
            if refusal is not None:
                return Verdict(claim, False, refusal=refusal)
            return Verdict(claim, True, already_acknowledged=True)
        if isinstance(found, tuple):
            reason, why = found
            refusal = Refusal(
                reason,
                f"deposit {claim.key}: {why}",
                Scope.REQUEST,
                request_id=claim.key,
            )
            return Verdict(claim, False, refusal=refusal)
        series = registered.get(claim.series_id)
        address_registered = (
            self._state.refund_address(self._network.name, claim.series_id, claim.index) is not None
        )
        refusal = acknowledgement_refusal(
            self._policy, self._network, claim, series, address_registered, found, self._state
        )
        confirmations = 0 if found is None else found.confirmations
        if refusal is not None:
            return Verdict(claim, False, refusal=refusal, confirmations=confirmations)
        assert found is not None  # acknowledgement_refusal refuses a missing output
        if not self._state.record_acknowledgement(self._network.name, claim, found.height, now):
            refusal = Refusal(
                Reason.DEPOSIT_REFUNDED,
                f"deposit {claim.key}: this signer signed a spend of it",
                Scope.REQUEST,
                request_id=claim.key,
            )
            return Verdict(claim, False, refusal=refusal, confirmations=confirmations)
        return Verdict(claim, True, confirmations=confirmations)
