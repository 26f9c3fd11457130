"""Signing one round: policy, then the device (once, in the background), then checks, then the
record, then the answer.

Withdrawal and refund rounds take the same path; only the policy differs with the kind. Nothing
reaches the device before the policy approves and the round's facts check out on this signer's
own node (``signer.chain_checks``); the device then gets each input's previous transaction from
that node. Every signature the device returns is verified against its input's exact BIP143
sighash; a round is recorded in the signing log, with its answer, *before* its signatures are
handed out. Every refused request leaves one audit entry, and every device attempt one more
(signed or failed); a request answered from a round already at the device, or from its kept
answer, leaves none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pool.attestation import attest
from pool.networks import Network
from pool.psbt import Psbt
from pool.roles import verify_partial_sigs
from pool.tx import OutPoint
from pool.vocabulary import Reason, RoundKind, Scope
from signer import chain_checks
from signer.audit import AuditLog, Decision, describe_psbts
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
from signer.device_monitor import DeviceLimits, TxShape, shape_problems
from signer.metrics import DEVICE_SIGN, count_request
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
    """Empty when the round is signed (or pending)."""
    pending_since: float | None = None
    """Set while the device has not answered yet: since when it has been asked (unix seconds).
    There are then no signatures and no refusals."""
    attestations: tuple[tuple[bytes, bytes], ...] = ()
    """(fee statement, signature by the attestation key) per PSBT of a signed withdrawal or
    cancel round (pool.attestation); empty otherwise."""

    @property
    def pending(self) -> bool:
        return self.pending_since is not None


_CLOSE_SECONDS = 10.0


class _BadSignature(Exception):
    """The device returned a signature that does not verify."""


def round_key(manifest: bytes, psbts: Sequence[bytes]) -> bytes:
    """The identity of a request: SHA256 of the manifest's hash and each PSBT's length and
    hash, as received. Identical requests have the same key; any other request another."""
    digest = hashlib.sha256(hashlib.sha256(manifest).digest())
    for raw in psbts:
        digest.update(len(raw).to_bytes(8, "big") + hashlib.sha256(raw).digest())
    return digest.digest()


@dataclass
class _Job:
    """A round that passed every check and was handed to the device worker."""

    key: bytes
    manifest_hash: bytes
    approval: Approval
    started: float
    outpoints: frozenset[OutPoint]
    done: threading.Event = field(default_factory=threading.Event)
    result: RoundResult | None = None
    timeout: DeviceTimeout | None = None
    """The device overran its deadline (reported as DEADLINE_EXCEEDED)."""


class _WithRoundsInProgress:
    """The signing history as the policy must see it while rounds are at the device: their
    payments, refunds and moves already count in the windows (they are recorded only once the
    device signed), so two rounds judged side by side cannot together pass a limit."""

    def __init__(self, history: SigningHistory, in_progress: Sequence[Approval]) -> None:
        self._history = history
        self._in_progress = in_progress

    def amount_signed_since(self, since: float) -> int:
        return self._history.amount_signed_since(since) + sum(a.payments for a in self._in_progress)

    def amount_paid_to_since(self, script_pubkey: bytes, since: float) -> int:
        extra = sum(
            amount
            for a in self._in_progress
            for script, amount in a.destinations
            if script == script_pubkey
        )
        return self._history.amount_paid_to_since(script_pubkey, since) + extra

    def amount_refunded_since(self, since: float) -> int:
        return self._history.amount_refunded_since(since) + sum(
            a.refunds for a in self._in_progress
        )

    def amount_moved_since(self, since: float) -> int:
        return self._history.amount_moved_since(since) + sum(a.moves for a in self._in_progress)

    def cancelled_request(self, client_id: str, request_id: str) -> bool:
        """A round at the device that cancels the request (client) or pays it again (after an
        operator's cancel) counts as recorded: two rounds judged side by side never pay it
        again both."""
        key = (client_id, request_id)
        if any(key in a.cancels or key in a.repaid for a in self._in_progress):
            return True
        return bool(self._history.cancelled_request(client_id, request_id))

    def requeued_cancel(self, client_id: str, request_id: str) -> tuple[str, ...]:
        for a in self._in_progress:
            for c, r, txids in a.requeues:
                if (c, r) == (client_id, request_id):
                    return txids
        return tuple(self._history.requeued_cancel(client_id, request_id))

    def __getattr__(self, name: str) -> Any:
        """Whatever else the history offers, unchanged."""
        return getattr(self._history, name)


class RoundSigner:
    """Signs rounds: each round once, in the background, on one device worker thread.

    A request is identified by its manifest hash and PSBTs as received (``round_key``). The
    first request of a round runs the policy and the chain checks; once they pass, the round's
    outpoints are reserved and the device worker asks the device, once. The call waits up to
    ``answer_within`` seconds for the device and otherwise answers *pending*; every later
    identical request gets the same answer (pending, then the signatures or the device's
    refusal), kept in the signer's state once final, so a restart does not prompt again.

    The rebuild of a withdrawal round (decoding, rebuild, byte comparison: everything that reads
    no signer state) runs before the lock is taken. ``lock`` is held for the rest of the
    evaluation (the clock, every rule that reads the signing log or the limits' window, the
    reservation) and again for the record once the device signed, never while the device is
    asked: a person may take minutes, and deposit acknowledgements take the lock too. A round
    that spends an outpoint reserved by a round at the device is refused SIGNING_IN_PROGRESS,
    and the payments of rounds at the device count in the limits' windows.
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
        answer_within: float = 2.0,
        device_limits: DeviceLimits | None = None,
        attestation_key: bytes | None = None,
    ) -> None:
        """``chain`` is this signer's own node; None (development only) refuses every round.
        ``answer_within``: seconds a call waits for the device before it answers pending;
        ``device_limits``: what the device and its person take in one transaction;
        ``attestation_key``: signs the fee statements of the rounds signed (None: none)."""
        self._device_limits = device_limits or DeviceLimits()
        self._attestation_key = attestation_key
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
        self._answer_within = answer_within
        self.lock = threading.Lock()
        """Held while a round is evaluated and reserved, and while a signed round is recorded;
        deposit acknowledgements take it too (signer.acknowledgements), so the two never
        interleave. Never held while the device is asked."""
        self._jobs_lock = threading.Lock()
        self._jobs: dict[bytes, _Job] = {}
        """Rounds at the device, and rounds whose device attempt failed (until reported)."""
        self._reserved: dict[OutPoint, _Job] = {}
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def close(self, wait: float = _CLOSE_SECONDS) -> None:
        """Stop the device worker once the rounds queued before end (waiting up to ``wait``
        seconds for it)."""
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(wait)

    def in_progress(self) -> list[tuple[bytes, float]]:
        """(manifest hash, since) of every round at the device."""
        with self._jobs_lock:
            return [
                (j.manifest_hash, j.started) for j in self._jobs.values() if not j.done.is_set()
            ]

    def sign_round(self, kind: RoundKind, manifest: bytes, psbts: Sequence[bytes]) -> RoundResult:
        """Sign the round, refuse it, or answer pending while its device is asked; a device
        that overran its deadline raises ``DeviceTimeout`` (once: a later request asks again)."""
        key = round_key(manifest, psbts)
        job = self._known(key)
        if job is None:
            stored = self._stored(key)
            if stored is not None:
                return stored
            rebuilt = self._rebuild(kind, manifest, psbts)
            with self.lock:
                job = self._known(key)
                if job is None:
                    stored = self._stored(key)
                    if stored is not None:
                        return stored
                    started = self._start(kind, manifest, psbts, key, rebuilt, self._clock())
                    if isinstance(started, RoundResult):
                        return started
                    job = started
        return self._answer(job)

    def _known(self, key: bytes) -> _Job | None:
        """The round's job; one whose device attempt failed is handed out once, then forgotten
        (the next request starts a new attempt)."""
        with self._jobs_lock:
            job = self._jobs.get(key)
            if job is not None and job.done.is_set():
                del self._jobs[key]
            return job

    def _stored(self, key: bytes) -> RoundResult | None:
        answer = self._state.round_answer(key)
        return None if answer is None else _decode_answer(answer)

    def _answer(self, job: _Job) -> RoundResult:
        if not job.done.wait(self._answer_within):
            return RoundResult(job.manifest_hash, {}, [], pending_since=job.started)
        with self._jobs_lock:  # a failed attempt is reported once; the next request retries
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]
        if job.timeout is not None:
            raise job.timeout
        assert job.result is not None
        return job.result

    def _start(
        self,
        kind: RoundKind,
        manifest: bytes,
        psbts: Sequence[bytes],
        key: bytes,
        rebuilt: Rebuilt | list[Refusal],
        now: float,
    ) -> _Job | RoundResult:
        """Under the lock: evaluate the round; if it passes, reserve it and queue it for the
        device."""
        digest = hashlib.sha256(manifest).digest()
        audit = partial(self._audit, kind, manifest, psbts, now=now)

        def refuse(refusals: list[Refusal]) -> RoundResult:
            reasons = [str(refusal.reason) for refusal in refusals]
            audit(Decision.REFUSED, reasons)
            log.info(
                "%s round %s refused: %s",
                kind,
                digest.hex(),
                ", ".join(reasons),
                extra={"round_id": digest.hex(), "kind": str(kind), "decision": "refused",
                       "reasons": reasons},
            )  # fmt: skip
            return RoundResult(digest, {}, refusals)

        if isinstance(rebuilt, list):
            return refuse(rebuilt)
        if self._chain is None:
            refusal = Refusal(
                Reason.CHAIN_NOT_CONFIGURED,
                "this signer runs without a node (chain.dev_without_node): it signs nothing",
            )
            return refuse([refusal])
        chain = RoundChain(self._chain)
        with self._jobs_lock:
            at_device = [j.approval for j in self._jobs.values() if not j.done.is_set()]
        try:
            history: SigningHistory = _WithRoundsInProgress(
                ChainReleasedHistory(self._state, chain, self._chain_rules.min_conf), at_device
            )
            verdict = rebuilt.judge(history, now)
            if isinstance(verdict, list):
                return refuse(verdict)
            too_large = self._shape_refusals(verdict, psbts)
            if too_large:
                return refuse(too_large)
            busy = self._reservation_refusals(verdict)
            if busy:
                return refuse(busy)
            checked = chain_checks.check_round(
                chain, self._chain_rules, kind, manifest, verdict, rebuilt.manifest
            )
        except ChainUnavailable as e:
            return refuse([Refusal(Reason.CHAIN_UNAVAILABLE, str(e))])
        if isinstance(checked, list):
            return refuse(checked)
        outpoints = frozenset(i.prevout for p in verdict.psbts for i in p.tx.inputs)
        job = _Job(key, digest, verdict, now, outpoints)
        with self._jobs_lock:
            self._jobs[key] = job
            for outpoint in outpoints:
                self._reserved[outpoint] = job
        log.info("%s round %s passed: asking the device", kind, digest.hex())
        self._submit(partial(self._run, job, kind, manifest, psbts, checked))
        return job

    def _shape_refusals(self, approval: Approval, psbts: Sequence[bytes]) -> list[Refusal]:
        """The round's transactions against what the device and its person take
        (``signer.device_monitor.shape_problems``); final for this manifest."""
        shapes = [
            TxShape(
                len(raw), len(p.tx.inputs), len(p.tx.outputs), len(p.tx.outputs) - (c is not None)
            )
            for raw, p, c in zip(psbts, approval.psbts, approval.change_vouts, strict=True)
        ]
        return [
            Refusal(Reason.ROUND_TOO_LARGE, problem)
            for problem in shape_problems(self._device_limits, shapes)
        ]

    def _reservation_refusals(self, approval: Approval) -> list[Refusal]:
        refusals = []
        with self._jobs_lock:
            for i, psbt in enumerate(approval.psbts):
                for j, txin in enumerate(psbt.tx.inputs):
                    other = self._reserved.get(txin.prevout)
                    if other is not None:
                        refusals.append(
                            Refusal(
                                Reason.SIGNING_IN_PROGRESS,
                                f"PSBT {i} input {j} spends {txin.prevout}, which round "
                                f"{other.manifest_hash.hex()} spends too and is at the device "
                                f"since {other.started:.0f}",
                                Scope.INPUT,
                                psbt_index=i,
                                input_index=j,
                            )
                        )
        return refusals

    def _submit(self, work: Callable[[], None]) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="device-worker", daemon=True)
            self._worker.start()
        self._queue.put(work)

    def _work(self) -> None:
        """The device worker: one round at a time, in the order they passed."""
        while True:
            work = self._queue.get()
            if work is None:
                return
            work()

    def _run(
        self,
        job: _Job,
        kind: RoundKind,
        manifest: bytes,
        psbts: Sequence[bytes],
        checked: Sequence[Psbt],
    ) -> None:
        """On the device worker: ask the device once, then record and keep the answer."""
        digest = job.manifest_hash
        failure: Refusal | None = None
        signatures: dict[int, list[Signature]] = {}
        started = time.monotonic()
        try:
            signatures = self._device_sign(checked)
        except DeviceTimeout as e:
            job.timeout = e
        except DeviceRefused as e:
            failure = Refusal(Reason.DEVICE_REFUSED, str(e))
        except BackendError as e:
            failure = Refusal(Reason.DEVICE_ERROR, str(e))
        except _BadSignature as e:
            failure = Refusal(Reason.BAD_DEVICE_SIGNATURE, str(e))
        except Exception as e:  # the worker must outlive any one round
            log.exception("%s round %s: the device worker failed", kind, digest.hex())
            failure = Refusal(Reason.DEVICE_ERROR, f"internal error: {type(e).__name__}")
        result = "timeout" if job.timeout else "failed" if failure else "signed"
        DEVICE_SIGN.observe(time.monotonic() - started, kind=str(kind), result=result)
        with self.lock:
            now = self._clock()
            audit = partial(self._audit, kind, manifest, psbts, now=now)
            if job.timeout is not None:
                audit(Decision.FAILED, [Reason.DEVICE_TIMEOUT])
                log.warning("%s round %s failed: %s", kind, digest.hex(), job.timeout)
            elif failure is not None:
                job.result = RoundResult(digest, {}, [failure])
                if failure.reason in _FINAL_DEVICE_REASONS:
                    self._state.record_answer(job.key, digest, _encode_answer(job.result), now)
                audit(Decision.FAILED, [str(failure.reason)])
                log.info("%s round %s failed: %s", kind, digest.hex(), failure.reason)
            else:
                job.result = RoundResult(
                    digest, signatures, [], attestations=self._attest(job.approval)
                )
                answer = (job.key, _encode_answer(job.result))
                self._state.record_signed(job.approval, now, answer)
                # The approval's PSBTs are the policy's parse of exactly these bytes: described
                # once, for the audit log and the log line alike.
                described = describe_psbts(psbts, self._network, job.approval.psbts)
                audit(Decision.SIGNED, [], transactions=described)
                count = sum(len(s) for s in signatures.values())
                log.info(
                    "%s round %s signed: %d signatures",
                    kind,
                    digest.hex(),
                    count,
                    extra=signed_fields(kind, digest, described),
                )
            with self._jobs_lock:
                for outpoint in job.outpoints:
                    if self._reserved.get(outpoint) is job:
                        del self._reserved[outpoint]
                final = job.timeout is None and (
                    failure is None or failure.reason in _FINAL_DEVICE_REASONS
                )
                if final:  # kept in the state from now on
                    self._jobs.pop(job.key, None)
                job.done.set()

    def _attest(self, approval: Approval) -> tuple[tuple[bytes, bytes], ...]:
        """This signer's attestation of each fee statement of its own rebuild of the round."""
        key = self._attestation_key
        if key is None:
            return ()
        return tuple((statement, attest(key, statement)) for statement in approval.fee_statements)

    def _audit(
        self,
        kind: RoundKind,
        manifest: bytes,
        psbts: Sequence[bytes],
        decision: Decision,
        reasons: Sequence[str],
        *,
        now: float,
        transactions: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if transactions is None:
            transactions = describe_psbts(psbts, self._network)
        self._audit_log.append(
            kind=kind,
            manifest=manifest,
            psbts=psbts,
            decision=decision,
            reasons=reasons,
            policy_hash=self.policy_hash,
            signer_id=self._signer_id,
            now=now,
            transactions=transactions,
        )
        count_request(str(kind), str(decision), [str(r) for r in reasons])

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


def signed_fields(
    kind: RoundKind, digest: bytes, transactions: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The log fields of a signed round: what left the pool, to whom (change included)."""
    outputs = [o for t in transactions for o in t.get("outputs", ())]
    return {
        "round_id": digest.hex(),
        "kind": str(kind),
        "decision": "signed",
        "txids": [t.get("txid") for t in transactions],
        "outputs": outputs,
        "amount_sat": sum(int(o["amount"]) for o in outputs),
        "destinations": [o.get("address", o.get("script")) for o in outputs],
        "fee_sat": sum(int(t["fee"]) for t in transactions if t.get("fee") is not None),
    }


_FINAL_DEVICE_REASONS = frozenset({Reason.DEVICE_REFUSED, Reason.BAD_DEVICE_SIGNATURE})
"""Device answers kept as the round's final answer; a device error or timeout is not final:
it is reported once, and a later identical request asks the device again."""


def _encode_answer(result: RoundResult) -> str:
    return json.dumps(
        {
            "signatures": {
                str(index): [[i, key.hex(), sig.hex()] for i, key, sig in sigs]
                for index, sigs in result.signatures.items()
            },
            "refusals": [
                {
                    "reason": str(r.reason),
                    "message": r.message,
                    "scope": str(r.scope),
                    "client_id": r.client_id,
                    "request_id": r.request_id,
                    "psbt_index": r.psbt_index,
                    "input_index": r.input_index,
                }
                for r in result.refusals
            ],
            "manifest_hash": result.manifest_hash.hex(),
            "attestations": [[st.hex(), sig.hex()] for st, sig in result.attestations],
        },
        sort_keys=True,
    )


def _decode_answer(text: str) -> RoundResult:
    data = json.loads(text)
    return RoundResult(
        bytes.fromhex(data["manifest_hash"]),
        {
            int(index): [(int(i), bytes.fromhex(k), bytes.fromhex(s)) for i, k, s in sigs]
            for index, sigs in data["signatures"].items()
        },
        [
            Refusal(
                Reason(r["reason"]),
                r["message"],
                Scope(r["scope"]),
                r["client_id"],
                r["request_id"],
                r["psbt_index"],
                r["input_index"],
            )
            for r in data["refusals"]
        ],
        attestations=tuple(
            (bytes.fromhex(st), bytes.fromhex(sig)) for st, sig in data.get("attestations", [])
        ),
    )


def _verify(index: int, psbt: Psbt, signatures: dict[tuple[int, bytes], bytes]) -> None:
    """Each signature must verify against its input's BIP143 sighash (SIGHASH_ALL)."""
    for input_index, pubkey, valid in verify_partial_sigs(psbt, added=signatures):
        if not valid:
            raise _BadSignature(
                f"PSBT {index} input {input_index}: the device's signature for key "
                f"{pubkey.hex()} does not verify"
            )
