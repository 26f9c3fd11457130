"""Signing one round: policy, then the device, then checks, then the record, then the answer.

Withdrawal and refund rounds take the same path; only the policy differs with the kind. Nothing
reaches the device before the policy approves and the round's facts check out on this signer's
own node (``signer.chain_checks``); the device then gets each input's previous transaction from
that node. Every signature the device returns is
verified against its input's exact BIP143 sighash; a round is recorded in the signing log
*before* its signatures are handed out, and every request leaves one audit entry.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from pool.networks import Network
from pool.psbt import Psbt
from pool.roles import verify_partial_sigs
from pool.vocabulary import Reason, RoundKind
from signer import chain_checks
from signer.audit import AuditLog, Decision
from signer.backends.base import (
    Backend,
    BackendError,
    DeviceRefused,
    DeviceTimeout,
    new_signatures,
    our_keys,
)
from signer.chain import ChainUnavailable, ChainView
from signer.chain_checks import ChainReleasedHistory, ChainRules, RoundChain
from signer.policy import (
    Approval,
    PolicyConfig,
    Rebuilt,
    Refusal,
    SigningHistory,
    evaluate_refund_round,
    rebuild_round,
)
from signer.state import SignerState

log = logging.getLogger(__name__)

Signature = tuple[int, bytes, bytes]
"""(input index, public key, DER signature + sighash byte)."""


@dataclass(frozen=True)
class RoundResult:
    manifest_hash: bytes
    """SHA256 of the manifest as received."""
    signatures: dict[int, list[Signature]]
    """By PSBT index; every PSBT with an input of ours, when the round is signed."""
    refusals: list[Refusal]
    """Empty when the round is signed."""


class _BadSignature(Exception):
    """The device returned a signature that does not verify."""


class RoundSigner:
    """Signs rounds one at a time (the lock also orders the signing log).

    The rebuild of a withdrawal round (decoding, rebuild, byte comparison: everything that reads
    no signer state) runs before the lock is taken, so a large or hostile round costs its own
    caller's thread and never holds up another round. Under the lock: the clock, every rule that
    reads the signing log or the limits' window, the device, the record and the audit entry, so
    that two rounds can never both pass the signing log or the limits before either is recorded.
    """

    def __init__(
        self,
        signer_id: str,
        network: Network,
        policy: PolicyConfig,
        backend: Backend,
        state: SignerState,
        audit: AuditLog,
        clock: Callable[[], float],
        chain: ChainView | None,
        chain_rules: ChainRules,
    ) -> None:
        """``chain`` is this signer's own node; None (development only) refuses every round."""
        self._signer_id = signer_id
        self._network = network
        self._policy = policy
        self.policy_hash = policy.version_hash()
        self._backend = backend
        self._fingerprint = backend.fingerprint()
        self._state = state
        self._audit_log = audit
        self._clock = clock
        self._chain = chain
        self._chain_rules = chain_rules
        self.lock = threading.Lock()
        """Held while a round is evaluated, signed and recorded; deposit acknowledgements take it
        too (signer.acknowledgements), so the two never interleave."""

    def sign_round(self, kind: RoundKind, manifest: bytes, psbts: Sequence[bytes]) -> RoundResult:
        """Sign the round or refuse it; a device that overruns its deadline raises
        ``DeviceTimeout`` (after the audit entry is written)."""
        rebuilt = self._rebuild(kind, manifest, psbts)
        with self.lock:
            return self._sign_round(kind, manifest, psbts, rebuilt, self._clock())

    def _sign_round(
        self,
        kind: RoundKind,
        manifest: bytes,
        psbts: Sequence[bytes],
        rebuilt: Rebuilt | list[Refusal],
        now: float,
    ) -> RoundResult:
        digest = hashlib.sha256(manifest).digest()

        def audit(decision: Decision, reasons: Sequence[str]) -> None:
            self._audit_log.append(
                kind=kind,
                manifest=manifest,
                psbts=psbts,
                decision=decision,
                reasons=reasons,
                policy_hash=self.policy_hash,
                signer_id=self._signer_id,
                now=now,
            )

        def finish(decision: Decision, refusals: list[Refusal]) -> RoundResult:
            reasons = [str(refusal.reason) for refusal in refusals]
            audit(decision, reasons)
            log.info("%s round %s %s: %s", kind, digest.hex(), decision, ", ".join(reasons))
            return RoundResult(digest, {}, refusals)

        if isinstance(rebuilt, list):
            return finish(Decision.REFUSED, rebuilt)
        if self._chain is None:
            refusal = Refusal(
                Reason.CHAIN_NOT_CONFIGURED,
                "this signer runs without a node (chain.dev_without_node): it signs nothing",
            )
            return finish(Decision.REFUSED, [refusal])
        chain = RoundChain(self._chain)
        try:
            history: SigningHistory = ChainReleasedHistory(self._state, chain)
            verdict = rebuilt.judge(history, now)
            if isinstance(verdict, list):
                return finish(Decision.REFUSED, verdict)
            checked = chain_checks.check_round(chain, self._chain_rules, kind, manifest, verdict)
        except ChainUnavailable as e:
            return finish(Decision.REFUSED, [Refusal(Reason.CHAIN_UNAVAILABLE, str(e))])
        if isinstance(checked, list):
            return finish(Decision.REFUSED, checked)
        try:
            signatures = self._device_sign(checked)
        except DeviceTimeout as e:
            audit(Decision.FAILED, [Reason.DEVICE_TIMEOUT])
            log.warning("%s round %s failed: %s", kind, digest.hex(), e)
            raise
        except DeviceRefused as e:
            return finish(Decision.FAILED, [Refusal(Reason.DEVICE_REFUSED, str(e))])
        except BackendError as e:
            return finish(Decision.FAILED, [Refusal(Reason.DEVICE_ERROR, str(e))])
        except _BadSignature as e:
            return finish(Decision.FAILED, [Refusal(Reason.BAD_DEVICE_SIGNATURE, str(e))])
        self._state.record_signed(verdict, now)
        audit(Decision.SIGNED, [])
        count = sum(len(s) for s in signatures.values())
        log.info("%s round %s signed: %d signatures", kind, digest.hex(), count)
        return RoundResult(digest, signatures, [])

    def _rebuild(
        self, kind: RoundKind, manifest: bytes, psbts: Sequence[bytes]
    ) -> Rebuilt | list[Refusal]:
        """The rules of the round's kind that read no signer state; the rest is in ``judge``,
        which reads the signing log as the chain releases it.

        Registered series are read once, before: a registered series never changes, and a round
        that names one registered meanwhile is refused as if it had come first. A refund round's
        policy reads the refund addresses and the signing log throughout, so it runs whole in
        ``judge``, under the lock.
        """
        if kind is RoundKind.REFUND:
            return Rebuilt(partial(self._evaluate_refund, manifest, psbts))
        return rebuild_round(
            self._policy,
            self._fingerprint,
            self._network,
            self._state.registered_series(self._network),
            manifest,
            psbts,
        )

    def _evaluate_refund(
        self, manifest: bytes, psbts: Sequence[bytes], history: SigningHistory, now: float
    ) -> Approval | list[Refusal]:
        return evaluate_refund_round(
            self._policy,
            self._fingerprint,
            self._network,
            self._state.registered_series(self._network),
            self._refund_address,
            manifest,
            psbts,
            history,
            now,
        )

    def _refund_address(self, series_id: int, index: int) -> str | None:
        return self._state.refund_address(self._network.name, series_id, index)

    def _device_sign(self, psbts: Sequence[Psbt]) -> dict[int, list[Signature]]:
        """The backend's signatures for every PSBT with an input of ours, all verified
        (``psbts`` carry each input's previous transaction, from this signer's node)."""
        signed: dict[int, list[Signature]] = {}
        for index, psbt in enumerate(psbts):
            wanted = our_keys(psbt, self._fingerprint)
            if not wanted:
                continue
            found = new_signatures(psbt, self._backend.sign(psbt), self._fingerprint)
            if len(found) != len(wanted):
                raise BackendError(
                    f"PSBT {index}: the device made {len(found)} of {len(wanted)} signatures"
                )
            _verify(index, psbt, found)
            signed[index] = [(i, pubkey, sig) for (i, pubkey), sig in sorted(found.items())]
        return signed


def _verify(index: int, psbt: Psbt, signatures: dict[tuple[int, bytes], bytes]) -> None:
    """Each signature must verify against its input's BIP143 sighash (SIGHASH_ALL)."""
    inputs = list(psbt.inputs)
    for (input_index, pubkey), signature in signatures.items():
        sigs = {**inputs[input_index].partial_sigs, pubkey: signature}
        inputs[input_index] = replace(inputs[input_index], partial_sigs=sigs)
    for input_index, pubkey, valid in verify_partial_sigs(replace(psbt, inputs=tuple(inputs))):
        if not valid:
            raise _BadSignature(
                f"PSBT {index} input {input_index}: the device's signature for key "
                f"{pubkey.hex()} does not verify"
            )
