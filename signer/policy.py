"""The signer's policy: every rule a round must pass before any device is asked to sign.

One module, one entry point per kind of round (``evaluate_round`` for withdrawals,
``evaluate_refund_round`` for refunds). Each rebuilds the round from its manifest with the pure
core and requires the PSBTs it is handed to be exactly what the manifest builds; then it applies
this signer's own rules. It reads the signer's history (signing log, amounts signed in
the rolling window) through the small ``SigningHistory`` interface and changes nothing itself: the
daemon records an approval only once the device has signed.

Refusals carry a machine-readable ``Reason`` and a message naming what is wrong. A refusal scoped
to a request lets the coordinator drop that request and rebuild the round instead of stalling it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Protocol, TypeVar

from pool.address import address_to_script_pubkey, script_pubkey_to_address
from pool.attestation import cancel_statements, encode_statement, round_statements
from pool.cancel import CancelManifest, CancelPlan, build_cancel, decode_cancel, is_cancel_manifest
from pool.descriptor import DescriptorKey, descriptor_checksum, strip_checksum
from pool.errors import VpoolError
from pool.manifest import Manifest, WithdrawalRequest, decode_manifest, manifest_counts
from pool.networks import Network
from pool.psbt import Psbt
from pool.refunds import (
    PlannedRefund,
    RefundRequest,
    RefundSource,
    build_refunds,
    decode_refund_manifest,
    sender_script,
)
from pool.replacement import Coin, check_replacement
from pool.script import parse_multisig_script
from pool.series import RECEIVE, Series
from pool.tx import OutPoint, Transaction
from pool.verify import compare_with_rebuild
from pool.vocabulary import Reason, Scope
from pool.weights import fee_for_weight, multisig_input_weight, output_weight, tx_weight
from pool.withdrawal import (
    PaidOutput,
    PlannedTransaction,
    RequestOutcome,
    RoundPlan,
    build_round,
)

POLICY_RULES_VERSION = 4
"""Bumped whenever a rule of this module changes meaning; part of the policy hash.
2: refund rounds. 3: approved series, change classified (internal, move, payment), limits per
destination, whole-fee rate, refund and move windows, same txid under another manifest, deposit
acknowledgements (a refund of an acknowledged deposit is refused), caps on requests and UTXOs,
PSBT and input counts before the rebuild. 4: a safe replacement pays a higher fee rate and no lower
fee (``pool.replacement``)."""


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    message: str
    scope: Scope = Scope.ROUND
    client_id: str = ""
    request_id: str = ""
    psbt_index: int | None = None
    input_index: int | None = None


@dataclass(frozen=True)
class PolicyConfig:
    """This signer's limits (``[policy]`` in signer.toml). Amounts in satoshis."""

    max_fee_rate: int = 100_000
    """Satoshis per 1000 vB (100 sat/vB): bounds the manifest's fee rate and, for each
    transaction, its whole fee per worst-case signed vsize."""
    max_fee: int = 1_000_000
    """Largest absolute fee of one transaction."""
    max_request_amount: int = 10 * 100_000_000
    max_round_amount: int = 50 * 100_000_000
    max_daily_amount: int = 100 * 100_000_000
    daily_window_seconds: int = 24 * 3600
    allow_destinations: frozenset[str] | None = None
    """When set, only these addresses may be paid."""
    deny_destinations: frozenset[str] = frozenset()
    max_manifest_bytes: int = 4_000_000
    max_psbts: int = 100
    max_psbt_bytes: int = 4_000_000
    max_requests: int = 3_000
    """Most requests in one round's manifest (``ROUND_TOO_LARGE`` before the rebuild)."""
    max_inputs: int = 2_000
    """Most UTXOs in one round's manifest, so most inputs of its PSBTs (``ROUND_TOO_LARGE``)."""
    cosigners: frozenset[str] = frozenset()
    """The pool's other keys, ``[fingerprint/path]xpub`` as ``keystore show-xpub`` prints them:
    a series may be registered only if each of its keys is this signer's or one of these."""
    min_threshold: int = 2
    """The smallest m of a series this signer registers (required in signer.toml)."""
    approved_series: frozenset[str] = frozenset()
    """BIP380 checksums of the canonical receive descriptors of the series the operator
    approved (``series_checksum``): the only series this signer registers and pays change to."""
    max_destination_amount: int = 10 * 100_000_000
    """Payments of one round to one scriptPubKey, summed."""
    max_destination_daily_amount: int = 20 * 100_000_000
    """Payments to one scriptPubKey in the rolling window, summed."""
    max_daily_refund_amount: int = 100 * 100_000_000
    """Refunds signed in the rolling window (the value of their outputs)."""
    max_daily_move_amount: int = 100 * 100_000_000
    """Value moved to another approved series (change of a transaction that spends none of that
    series' coins) in the rolling window."""
    allow_operator_refunds: bool = False
    """Sign refunds to destinations an operator chose (``AdminService.ProposeRefund``)."""
    deposit_confirmations: int = 6
    """Confirmations a deposit needs on this signer's own node before it acknowledges it
    (AcknowledgeDeposits); at least 1."""

    def version_hash(self) -> str:
        """SHA256 over the rules version and every setting: reported, and written in the audit."""
        doc = asdict(self)
        for key in ("allow_destinations", "deny_destinations", "cosigners", "approved_series"):
            value = doc[key]
            doc[key] = None if value is None else sorted(value)
        doc["rules_version"] = POLICY_RULES_VERSION
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1024)
def series_checksum(series: Series, network: Network) -> str:
    """What an operator approves a series by: the BIP380 checksum of its receive descriptor in
    canonical spelling (keys in the series' canonical order, origins in h notation), as
    ``Series.descriptor(RECEIVE).to_string`` writes it and the coordinator's ``AddSeries`` prints
    it. The change descriptor follows from it (same m and keys, branch 1)."""
    return descriptor_checksum(strip_checksum(series.descriptor(RECEIVE).to_string(network)))


@dataclass(frozen=True)
class SignedBefore:
    """What the signing log holds for an outpoint this signer already signed a spend of."""

    txid_hex: str
    tx: Transaction
    """The unsigned transaction signed then."""
    change_vout: int | None
    manifest_hash: bytes
    """The manifest it was signed under."""


class SigningHistory(Protocol):
    """The persisted facts the policy needs (implemented by ``signer.state``). Amounts are
    satoshis of the rounds recorded at or after ``since`` (unix seconds)."""

    def signed_spend(self, outpoint: OutPoint) -> SignedBefore | None: ...

    def amount_signed_since(self, since: float) -> int:
        """Payments (withdrawals, and change that counts as a payment)."""
        ...

    def amount_paid_to_since(self, script_pubkey: bytes, since: float) -> int:
        """Payments to one scriptPubKey."""
        ...

    def amount_refunded_since(self, since: float) -> int: ...

    def amount_moved_since(self, since: float) -> int: ...

    def acknowledged_deposit(self, outpoint: OutPoint) -> AcknowledgedDeposit | None:
        """The acknowledgement this signer gave the deposit at ``outpoint``, if any."""
        ...

    def cancelled_request(self, client_id: str, request_id: str) -> bool:
        """May this request never be paid again? This signer signed a client's cancel of it,
        or an operator's cancel and a later round already paid it again."""
        ...

    def requeued_cancel(self, client_id: str, request_id: str) -> tuple[str, ...]:
        """The replacements (txids) that dropped this request in an operator's cancel this
        signer signed, while no round paid it again since; () otherwise."""
        ...

    def transaction_confirmed(self, txid_hex: str) -> bool:
        """Is this transaction in a block deep enough on this signer's own node (its
        ``min_conf``)? False whenever it cannot tell."""
        ...


@dataclass(frozen=True)
class DepositClaim:
    """A deposit as the coordinator claims it (AcknowledgeDeposits)."""

    outpoint: OutPoint
    series_id: int
    index: int
    """Its receive address's index."""
    value: int

    @property
    def key(self) -> str:
        """``txid:vout``, txid in display hex."""
        return f"{self.outpoint.txid_hex}:{self.outpoint.vout}"


@dataclass(frozen=True)
class AcknowledgedDeposit:
    """What this signer recorded when it acknowledged a deposit."""

    claim: DepositClaim
    height: int
    """The height of its block on the signer's node then."""
    acknowledged_at: float


class OnChainOutput(Protocol):
    """An unspent output as the signer's own node reports it (``signer.chain.ChainUtxo``)."""

    @property
    def value(self) -> int: ...

    @property
    def script_pubkey(self) -> bytes: ...

    @property
    def confirmations(self) -> int: ...


@dataclass(frozen=True)
class Approval:
    """A round of any kind that passed every rule: what the daemon may sign and must then
    record."""

    manifest_hash: bytes
    psbts: tuple[Psbt, ...]
    """The round's PSBTs, in order: byte for byte the ones the policy rebuilt."""
    txids: tuple[str, ...]
    """The ids of the transactions the policy rebuilt, in order."""
    change_vouts: tuple[int | None, ...]
    """Each transaction's change output (None: no change; refunds never have one)."""
    payments: int
    """Satoshis leaving the pool in transactions never signed before (request outputs, and
    change to a series that is not approved): what this round adds to the payment limits.
    Re-signed transactions add nothing, their payments were counted when first signed; a safe
    replacement adds only the payments beyond those of the transactions it replaces; refunds
    add nothing here (they have their own window)."""
    fee_bumps: tuple[str, ...] = field(default=())
    """Txids signed as safe replacements of transactions signed before (a fee bump is the
    simplest case)."""
    destinations: tuple[tuple[bytes, int], ...] = field(default=())
    """``payments`` by scriptPubKey (ascending), for the per-destination window."""
    refunds: int = 0
    """Satoshis refunded by the refunds this signer signs for the first time."""
    moves: int = 0
    """Satoshis moved to another approved series in transactions never signed before."""
    cancels: tuple[tuple[str, str], ...] = ()
    """(client id, request id) of the requests a client's cancel round drops: recorded, never
    paid again by this signer."""
    requeues: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """(client id, request id, replacement txids) of the requests an operator's cancel round
    drops: paid again by a later round only once each replacement is confirmed, and once."""
    repaid: tuple[tuple[str, str], ...] = ()
    """(client id, request id) of operator-cancelled requests this round pays again: never paid
    a third time."""
    rungs: int = 0
    """The last ``rungs`` PSBTs are the fee ladder's (pool.ladder): signed, never written in
    the signing log (each spends exactly the inputs and pays exactly the payments of its
    transaction, which is)."""
    fee_statements: tuple[bytes, ...] = ()
    """One fee statement per PSBT (pool.attestation), from this signer's own rebuild of the
    manifest, never from anything the coordinator claims: what it attests once it signed."""


_Problem = tuple[Reason, str]
"""A reason and its message, before it is scoped."""


class _Refused(Exception):
    def __init__(self, refusals: list[Refusal]) -> None:
        super().__init__(refusals)
        self.refusals = refusals


def _refuse(
    reason: Reason,
    message: str,
    scope: Scope = Scope.ROUND,
    psbt_index: int | None = None,
    input_index: int | None = None,
) -> _Refused:
    return _Refused(
        [Refusal(reason, message, scope, psbt_index=psbt_index, input_index=input_index)]
    )


def evaluate_round(
    config: PolicyConfig,
    fingerprint: bytes,
    network: Network,
    registered: Mapping[int, Series],
    manifest_bytes: bytes,
    psbts: Sequence[bytes],
    history: SigningHistory,
    now: float,
) -> Approval | list[Refusal]:
    """Apply every rule; return an ``Approval`` or the list of refusals (never both).

    Order: sizes and counts, decoding, network, PSBT counts, series, rebuild and byte
    comparison (``rebuild_round``); then the signing log and the limits (``Rebuilt.judge``).
    Each stage runs only when the previous ones passed, so a refusal names the first problem,
    and the cheap checks come before the rebuild.
    """
    rebuilt = rebuild_round(config, fingerprint, network, registered, manifest_bytes, psbts)
    return rebuilt if isinstance(rebuilt, list) else rebuilt.judge(history, now)


@dataclass(frozen=True)
class Rebuilt:
    """A round that passed every rule that reads no signer state: sizes, counts, decoding,
    series and the byte-for-byte rebuild. ``judge(history, now)`` applies the rules that read
    the signer's history (signing log, limits): the daemon calls it under its signing lock, and
    the rebuild, the expensive part, outside it."""

    judge: Callable[[SigningHistory, float], Approval | list[Refusal]]
    manifest: Manifest | None = None
    """The withdrawal manifest as decoded by the rebuild (None for a refund round)."""


def rebuild_round(
    config: PolicyConfig,
    fingerprint: bytes,
    network: Network,
    registered: Mapping[int, Series],
    manifest_bytes: bytes,
    psbts: Sequence[bytes],
) -> Rebuilt | list[Refusal]:
    """The rules of a withdrawal round that read no signer state (``registered`` is a snapshot:
    a registered series never changes). A cancel manifest (pool.cancel) is a cancel round:
    ``rebuild_cancel_round``."""
    if is_cancel_manifest(manifest_bytes):
        return rebuild_cancel_round(config, fingerprint, network, registered, manifest_bytes, psbts)
    try:
        _check_sizes(config, manifest_bytes, psbts)
        _check_counts(config, manifest_bytes)
        manifest = _decode_manifest(decode_manifest, manifest_bytes, network)
        parsed = _parse_psbts(psbts, config)
        _check_psbt_counts(parsed, len(manifest.utxos), 1 + manifest.ladder_rungs)
        _check_series(manifest.series, registered, fingerprint, also=[manifest.active_series])
        plan = build_round(manifest)
        _compare_with_rebuild(parsed, plan.psbts, plan.change_vouts, registered, psbts)
        _check_something_to_sign(parsed, fingerprint)
    except _Refused as refused:
        return refused.refusals

    def judge(history: SigningHistory, now: float) -> Approval | list[Refusal]:
        return _judge_round(
            config, fingerprint, network, registered, manifest, plan, parsed, history, now
        )

    return Rebuilt(judge, manifest)


def _judge_round(
    config: PolicyConfig,
    fingerprint: bytes,
    network: Network,
    registered: Mapping[int, Series],
    manifest: Manifest,
    plan: RoundPlan,
    parsed: Sequence[Psbt],
    history: SigningHistory,
    now: float,
) -> Approval | list[Refusal]:
    """The rules of a rebuilt withdrawal round that read the signer's history. The signing log
    is checked for the transactions only: the ladder's rungs spend exactly their inputs and pay
    exactly their payments, so what may follow a transaction may follow its rungs (and a rung
    is checked as a fee bump of the one below it, ``_check_ladder``)."""
    n = len(plan.transactions)
    change_vouts = plan.change_vouts
    try:
        fresh, replacements = _check_signing_log(
            parsed[:n], change_vouts[:n], history, plan.manifest_hash
        )
        counted = [planned for planned, new in zip(plan.transactions, fresh, strict=True) if new]
        approved = approved_series_ids(config, registered, network, fingerprint)
        flows = _flows(manifest, plan, counted, approved, replacements)
        repaid = _check_not_cancelled(manifest, plan, counted, history)
        _check_limits(config, manifest, plan, network, flows, history, now)
        _check_ladder(config, plan)
    except _Refused as refused:
        return refused.refusals
    return Approval(
        manifest_hash=plan.manifest_hash,
        psbts=tuple(parsed),
        txids=tuple(p.tx.txid_hex for p in plan.psbts),
        change_vouts=tuple(change_vouts),
        rungs=len(plan.rungs),
        fee_statements=tuple(encode_statement(s) for s in round_statements(plan)),
        payments=flows.payments,
        fee_bumps=tuple(sorted(replacements)),
        destinations=tuple(sorted(flows.by_destination().items())),
        moves=flows.moves,
        repaid=repaid,
    )


def _check_not_cancelled(
    manifest: Manifest,
    plan: RoundPlan,
    counted: Sequence[PlannedTransaction],
    history: SigningHistory,
) -> tuple[tuple[str, str], ...]:
    """A request this signer signed a client's cancel of is never paid again by a transaction
    it signs now (docs/signer-policy.md, "Cancel"): whichever of the original and its
    replacement confirms, the request is paid at most once. A request it signed an operator's
    cancel of (pool.cancel version 2) is paid again only once every replacement that dropped it
    is confirmed on this signer's own node (the original can then never be mined), and only
    once. Returns the operator-cancelled requests this round pays again."""
    txids = {t.txid_hex for t in counted}
    refusals = []
    repaid = []
    for request, o in zip(manifest.requests, _ordered_outcomes(manifest, plan), strict=True):
        if not any(p.txid_hex in txids for p in o.outputs):
            continue
        if history.cancelled_request(o.client_id, o.request_id):
            refusals.append(
                _request_refusal(
                    Reason.DOUBLE_SIGN,
                    f"request {o.request_id!r} of client {o.client_id!r} was cancelled out of a "
                    "transaction this signer signed; a cancelled request is never paid again",
                    request,
                )
            )
            continue
        replacements = history.requeued_cancel(o.client_id, o.request_id)
        if not replacements:
            continue
        unconfirmed = [t for t in replacements if not history.transaction_confirmed(t)]
        if unconfirmed:
            refusals.append(
                _request_refusal(
                    Reason.CANCEL_NOT_SETTLED,
                    f"request {o.request_id!r} of client {o.client_id!r} was cancelled by an "
                    "operator out of a transaction this signer signed; it is paid again only "
                    f"once the replacement {', '.join(unconfirmed)} is confirmed on this "
                    "signer's node (until then the original may still be mined)",
                    request,
                )
            )
            continue
        repaid.append((o.client_id, o.request_id))
    if refusals:
        raise _Refused(refusals)
    return tuple(repaid)


def _ordered_outcomes(manifest: Manifest, plan: RoundPlan) -> list[RequestOutcome]:
    outcomes = _outcomes(manifest, plan)
    return [outcomes[r.key] for r in manifest.requests]


def rebuild_cancel_round(
    config: PolicyConfig,
    fingerprint: bytes,
    network: Network,
    registered: Mapping[int, Series],
    manifest_bytes: bytes,
    psbts: Sequence[bytes],
) -> Rebuilt | list[Refusal]:
    """A cancel round (pool.cancel): the replacements of transactions of a round this signer
    may have signed, without the payments of the cancelled requests. Rebuilt from the cancel
    manifest and compared byte for byte like any round; ``_judge_cancel`` applies the signing
    log."""
    try:
        _check_sizes(config, manifest_bytes, psbts)
        cancel = _decode_manifest(decode_cancel, manifest_bytes, network)
        original = cancel.original
        if len(original.requests) > config.max_requests or len(original.utxos) > config.max_inputs:
            raise _refuse(
                Reason.ROUND_TOO_LARGE, "the cancelled round is above max_requests or max_inputs"
            )
        parsed = _parse_psbts(psbts, config)
        _check_series(original.series, registered, fingerprint, also=[original.active_series])
        try:
            plan = build_cancel(cancel)
        except VpoolError as exc:
            raise _refuse(Reason.MALFORMED_MANIFEST, f"cancel manifest: {exc}") from None
        wanted = [t.psbt for t in plan.transactions]
        _compare_with_rebuild(
            parsed, wanted, [t.change_vout for t in plan.transactions], registered, psbts
        )
        _check_something_to_sign(parsed, fingerprint)
    except _Refused as refused:
        return refused.refusals

    def judge(history: SigningHistory, now: float) -> Approval | list[Refusal]:
        try:
            return _judge_cancel(config, cancel, plan, parsed, history)
        except _Refused as refused:
            return refused.refusals

    return Rebuilt(judge)


def _judge_cancel(
    config: PolicyConfig,
    cancel: CancelManifest,
    plan: CancelPlan,
    parsed: Sequence[Psbt],
    history: SigningHistory,
) -> Approval:
    """Each replacement is a safe replacement of what this signer signed on its inputs, where a
    dropped payment must be one of the cancelled requests' in the original transaction as this
    signer rebuilt it, signed under the original manifest (pool.replacement, ``may_drop``); and
    within this signer's fee limits. One cancel per transaction: a transaction replaced before
    is replaced again only as a safe replacement without any dropped payment."""
    _check_fee_rate(config, cancel.fee_rate)
    original_hash = plan.original.manifest_hash
    for i, t in enumerate(plan.transactions):
        tx = t.psbt.tx
        conflicts: dict[str, tuple[SignedBefore, int]] = {}
        for j, txin in enumerate(tx.inputs):
            before = history.signed_spend(txin.prevout)
            if before is None:
                continue
            if before.txid_hex == tx.txid_hex:
                _check_same_manifest(before, plan.manifest_hash, i, j)
            else:
                conflicts.setdefault(before.txid_hex, (before, j))
        signed_original = {
            txid for txid, (b, _) in conflicts.items() if b.manifest_hash == original_hash
        }
        if t.replaced_txid not in signed_original and tx.txid_hex not in {
            b.txid_hex
            for b in (history.signed_spend(txin.prevout) for txin in tx.inputs)
            if b is not None
        }:
            raise _refuse(
                Reason.CANCEL_OF_UNSIGNED,
                f"PSBT {i} cancels out of transaction {t.replaced_txid}, which this signer did "
                "not sign under the cancel's original manifest: nothing of its own to cancel",
                psbt_index=i,
            )
        droppable = {(t.replaced_txid, v) for v in t.dropped}

        def may_drop(
            txid: str,
            vout: int,
            ours: set[str] = signed_original,
            droppable: set[tuple[str, int]] = droppable,
        ) -> bool:
            return txid in ours and (txid, vout) in droppable

        if conflicts:
            verdict = check_replacement(
                [b for b, _ in conflicts.values()], tx, t.change_vout, _coins(t.psbt), may_drop
            )
            problem = verdict.problem
            if problem is None and verdict.added:
                problem = (tx.txid_hex, "it adds a payment")
            if problem is not None:
                before, j = conflicts.get(problem[0], next(iter(conflicts.values())))
                raise _refuse(
                    Reason.DOUBLE_SIGN,
                    f"PSBT {i} (cancel) spends {tx.inputs[j].prevout}, signed in "
                    f"{before.txid_hex}, and is not a safe replacement of it: {problem[1]}",
                    scope=Scope.INPUT,
                    psbt_index=i,
                    input_index=j,
                )
        excess = _fee_excess(config, i, t.fee)
        if excess is not None:
            raise _refuse(Reason.FEE_ABOVE_LIMIT, excess, psbt_index=i)
        size, limit = _whole_fee_limit(config, t.psbt)
        if t.fee > limit:
            raise _refuse(
                Reason.TX_FEE_RATE_ABOVE_LIMIT,
                f"PSBT {i} pays {t.fee} sat for {size} vB, above this signer's limit of "
                f"{config.max_fee_rate} sat/kvB",
                psbt_index=i,
            )
    return Approval(
        manifest_hash=plan.manifest_hash,
        psbts=tuple(parsed),
        txids=tuple(t.txid_hex for t in plan.transactions),
        change_vouts=tuple(t.change_vout for t in plan.transactions),
        payments=0,
        fee_bumps=tuple(sorted(t.txid_hex for t in plan.transactions)),
        cancels=() if cancel.requeue else cancel.cancels,
        requeues=_requeues(cancel, plan) if cancel.requeue else (),
        fee_statements=tuple(encode_statement(s) for s in cancel_statements(plan)),
    )


def _requeues(
    cancel: CancelManifest, plan: CancelPlan
) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Each request an operator's cancel drops, with the replacements (this signer's own
    rebuild) that drop an output of it."""
    by_output = {
        (out.txid_hex, out.vout): (o.client_id, o.request_id)
        for o in plan.original.requests
        for out in o.outputs
    }
    dropped_by: dict[tuple[str, str], list[str]] = {}
    for t in plan.transactions:
        for vout in t.dropped:
            dropped_by.setdefault(by_output[(t.replaced_txid, vout)], []).append(t.txid_hex)
    return tuple((c, r, tuple(dropped_by[(c, r)])) for c, r in cancel.cancels)


def _check_ladder(config: PolicyConfig, plan: RoundPlan) -> None:
    """Each rung of the fee ladder is a fee bump of the one below it (its transaction for the
    first): a safe replacement (``pool.replacement``) adding no payment, within this signer's
    fee limits (``max_fee``, ``max_fee_rate`` on its rate and on its whole fee per worst-case
    signed vsize). The rungs were rebuilt from the manifest, so this holds for an honest
    round; it is checked all the same, as the limits are this signer's own."""
    n = len(plan.transactions)
    change_vouts = plan.change_vouts
    below: dict[int, SignedBefore] = {}
    for k, rung in enumerate(plan.rungs):
        index = n + k
        name = f"PSBT {index} (rung {rung.step} of transaction {rung.of})"
        if rung.fee_rate > config.max_fee_rate:
            raise _refuse(
                Reason.FEE_RATE_ABOVE_LIMIT,
                f"{name} is at {rung.fee_rate} sat/kvB, above this signer's limit of "
                f"{config.max_fee_rate} (lower the pool's ladder rungs or step)",
                psbt_index=index,
            )
        excess = _fee_excess(config, index, rung.fee)
        if excess is not None:
            raise _refuse(Reason.FEE_ABOVE_LIMIT, f"{name}: {excess}", psbt_index=index)
        size, limit = _whole_fee_limit(config, rung.psbt)
        if rung.fee > limit:
            raise _refuse(
                Reason.TX_FEE_RATE_ABOVE_LIMIT,
                f"{name} pays {rung.fee} sat for {size} vB, above this signer's limit of "
                f"{config.max_fee_rate} sat/kvB",
                psbt_index=index,
            )
        previous = below.get(rung.of)
        if previous is None:
            base = plan.transactions[rung.of].psbt.tx
            previous = SignedBefore(base.txid_hex, base, change_vouts[rung.of], plan.manifest_hash)
        verdict = check_replacement(
            [previous], rung.psbt.tx, change_vouts[index], _coins(rung.psbt)
        )
        if verdict.problem is not None or verdict.added:
            why = "it adds a payment" if verdict.problem is None else verdict.problem[1]
            raise _refuse(
                Reason.DOUBLE_SIGN,
                f"{name} is not a fee bump of {previous.txid_hex}: {why}",
                psbt_index=index,
            )
        below[rung.of] = SignedBefore(
            rung.txid_hex, rung.psbt.tx, change_vouts[index], plan.manifest_hash
        )


# --------------------------------------------------------------------------- decoding


def _check_sizes(config: PolicyConfig, manifest_bytes: bytes, psbts: Sequence[bytes]) -> None:
    if len(manifest_bytes) > config.max_manifest_bytes:
        raise _refuse(
            Reason.OVERSIZED_MESSAGE,
            f"manifest is {len(manifest_bytes)} bytes, the limit is {config.max_manifest_bytes}",
        )
    if len(psbts) > config.max_psbts:
        raise _refuse(
            Reason.OVERSIZED_MESSAGE, f"{len(psbts)} PSBTs, the limit is {config.max_psbts}"
        )
    for i, raw in enumerate(psbts):
        if len(raw) > config.max_psbt_bytes:
            raise _refuse(
                Reason.OVERSIZED_MESSAGE,
                f"PSBT {i} is {len(raw)} bytes, the limit is {config.max_psbt_bytes}",
                psbt_index=i,
            )


def _check_counts(config: PolicyConfig, manifest_bytes: bytes) -> None:
    """The caps on requests and UTXOs, read from the encoding before it is decoded."""
    try:
        utxos, requests = manifest_counts(manifest_bytes)
    except VpoolError as exc:
        raise _refuse(Reason.MALFORMED_MANIFEST, f"manifest does not decode: {exc}") from None
    if requests > config.max_requests:
        raise _refuse(
            Reason.ROUND_TOO_LARGE,
            f"manifest has {requests} requests, the limit is {config.max_requests} (max_requests)",
        )
    if utxos > config.max_inputs:
        raise _refuse(
            Reason.ROUND_TOO_LARGE,
            f"manifest has {utxos} UTXOs, the limit is {config.max_inputs} (max_inputs)",
        )


def _check_psbt_counts(parsed: Sequence[Psbt], utxos: int, versions: int = 1) -> None:
    """Each transaction spends at least one of the manifest's UTXOs, and none twice; with a fee
    ladder, each transaction comes in at most ``versions`` versions (itself and its rungs)."""
    inputs = sum(len(p.tx.inputs) for p in parsed)
    if len(parsed) > utxos * versions or inputs > utxos * versions:
        raise _refuse(
            Reason.PSBT_COUNT_MISMATCH,
            f"{len(parsed)} PSBTs with {inputs} inputs sent, the manifest has {utxos} UTXOs"
            + (f" and {versions - 1} ladder rungs" if versions > 1 else ""),
        )


class _OfNetwork(Protocol):
    @property
    def network(self) -> str: ...


_M = TypeVar("_M", bound=_OfNetwork)


def _decode_manifest(decode: Callable[[bytes], _M], data: bytes, network: Network) -> _M:
    """Decode a manifest of either kind (errors name the field at fault) for ``network``."""
    try:
        manifest = decode(data)
    except VpoolError as exc:
        raise _refuse(Reason.MALFORMED_MANIFEST, f"manifest does not decode: {exc}") from None
    if manifest.network != network.name:
        raise _refuse(
            Reason.WRONG_NETWORK,
            f"manifest is for {manifest.network}, this signer is on {network.name}",
        )
    return manifest


def _parse_psbts(psbts: Sequence[bytes], config: PolicyConfig) -> list[Psbt]:
    parsed = []
    for i, raw in enumerate(psbts):
        try:
            parsed.append(Psbt.parse(raw, max_size=config.max_psbt_bytes))
        except VpoolError as exc:
            raise _refuse(
                Reason.MALFORMED_PSBT, f"PSBT {i} does not parse: {exc}", psbt_index=i
            ) from None
    return parsed


# --------------------------------------------------------------------------- series


def _check_series(
    series: Sequence[Series],
    registered: Mapping[int, Series],
    fingerprint: bytes,
    also: Sequence[Series] = (),
) -> None:
    """The series this signer signs for are the ones registered with this signer, identical in
    m and keys; a series of ``also`` (a withdrawal's active series: it receives the change) need
    not be registered, but if its id is, it must be identical too (an unregistered series gets
    change only as a payment, see ``_change_kind``)."""
    ours = [s for s in series if _has_fingerprint(s, fingerprint)]
    if not ours:
        raise _refuse(Reason.NOT_A_COSIGNER, "this signer's key is in none of the round's series")
    must_know = {s.id: s for s in ours}
    may_know = {s.id: s for s in also if s.id not in must_know}
    for one in [*must_know.values(), *may_know.values()]:
        known = registered.get(one.id)
        if known is None:
            if one.id in may_know:
                continue
            raise _refuse(
                Reason.SERIES_NOT_REGISTERED,
                f"series {one.id} is not registered with this signer",
            )
        if (known.m, known.keys) != (one.m, one.keys):
            raise _refuse(
                Reason.SERIES_MISMATCH,
                f"series {one.id} differs from the one registered with this signer",
            )


def _has_fingerprint(series: Series, fingerprint: bytes) -> bool:
    return any(k.origin.fingerprint == fingerprint for k in series.keys)


def registration_refusal(
    config: PolicyConfig,
    series: Series,
    network: Network,
    is_own_key: Callable[[DescriptorKey], bool],
) -> str | None:
    """Why this signer must not register ``series``, or None if it may.

    A registered series is trusted as "the pool" (change may pay it), so a coordinator, even with
    some signers on its side, must not be able to slip in a series of its choosing: the series
    holds this signer's own key (checked by ``is_own_key`` against the device), its m is at
    least ``min_threshold``, every other key is a cosigner the operator configured, and the
    operator approved it by the checksum of its receive descriptor (``approved_series``).
    """
    own = [position for position, key in enumerate(series.keys) if is_own_key(key)]
    if not own:
        return "the series does not hold this signer's key"
    if series.m < config.min_threshold:
        return f"threshold {series.m} is below this signer's minimum of {config.min_threshold}"
    allowed = {DescriptorKey.parse(text, network) for text in config.cosigners}
    for position, key in enumerate(series.keys):
        if position not in own and key not in allowed:
            return (
                f"key {position} ([{key.origin.to_string()}]) is neither this signer's key nor "
                "one of its configured cosigners"
            )
    checksum = series_checksum(series, network)
    if checksum not in config.approved_series:
        return (
            f"series checksum {checksum} (of the receive descriptor) is not in this signer's "
            "approved_series"
        )
    return None


def approved_series_ids(
    config: PolicyConfig,
    registered: Mapping[int, Series],
    network: Network,
    fingerprint: bytes,
) -> frozenset[int]:
    """The registered series this signer may pay change to, under its configuration now: they
    hold its key, their m is at least ``min_threshold`` and the operator approves them.
    (A series registered before the operator withdrew its approval is no longer one.)"""
    return frozenset(
        series_id
        for series_id, series in registered.items()
        if _has_fingerprint(series, fingerprint)
        and series.m >= config.min_threshold
        and series_checksum(series, network) in config.approved_series
    )


def _check_something_to_sign(parsed: Sequence[Psbt], fingerprint: bytes) -> None:
    if not any(_signs_input(fingerprint, p) for p in parsed):
        raise _refuse(Reason.NOTHING_TO_SIGN, "no input of this round is this signer's")


def _signs_input(fingerprint: bytes, psbt: Psbt) -> bool:
    return any(
        origin.fingerprint == fingerprint
        for inp in psbt.inputs
        for origin in inp.bip32_derivations.values()
    )


# --------------------------------------------------------------------------- rebuild


def _compare_with_rebuild(
    parsed: Sequence[Psbt],
    wanted: Sequence[Psbt],
    change_vouts: Sequence[int | None],
    registered: Mapping[int, Series],
    received: Sequence[bytes],
) -> None:
    """The PSBTs must be, byte for byte, the ones the manifest builds (``pool.verify``):
    ``received``, the bytes ``parsed`` came from, are compared as they came."""
    differences = compare_with_rebuild(parsed, wanted, change_vouts, registered, received)
    if differences:
        raise _Refused(
            [
                Refusal(
                    d.reason,
                    d.message,
                    Scope.ROUND if d.input_index is None else Scope.INPUT,
                    psbt_index=d.psbt_index,
                    input_index=d.input_index,
                )
                for d in differences
            ]
        )


# --------------------------------------------------------------------------- signing log


def _check_signing_log(
    parsed: Sequence[Psbt],
    change_vouts: Sequence[int | None],
    history: SigningHistory,
    manifest_hash: bytes,
) -> tuple[list[bool], dict[str, frozenset[int]]]:
    """Never sign two spends of one outpoint unless the later is a safe replacement of the
    earlier (``pool.replacement.check_replacement``); never sign one transaction under two
    manifests.

    Returns, per transaction, whether it is new (not signed before), and for each safe
    replacement (by txid) the outputs it adds beyond the payments of the transactions it
    replaces: only those count toward the limits.
    """
    fresh: list[bool] = []
    replacements: dict[str, frozenset[int]] = {}
    for i, (psbt, change_vout) in enumerate(zip(parsed, change_vouts, strict=True)):
        tx, txid = psbt.tx, psbt.tx.txid_hex
        new = False
        conflicts: dict[str, tuple[SignedBefore, int]] = {}  # txid -> (signed before, input)
        for j, txin in enumerate(tx.inputs):
            before = history.signed_spend(txin.prevout)
            if before is None:
                new = True
            elif before.txid_hex == txid:
                _check_same_manifest(before, manifest_hash, i, j)
            else:
                conflicts.setdefault(before.txid_hex, (before, j))
        if conflicts:
            verdict = check_replacement(
                [b for b, _ in conflicts.values()], tx, change_vout, _coins(psbt)
            )
            problem, added = verdict.problem, verdict.added
            if problem is not None:
                before, j = conflicts[problem[0]]
                raise _refuse(
                    Reason.DOUBLE_SIGN,
                    f"PSBT {i} input {j} spends {tx.inputs[j].prevout}, already signed in "
                    f"{before.txid_hex}, and PSBT {i} is not a safe replacement of it: "
                    f"{problem[1]}",
                    scope=Scope.INPUT,
                    psbt_index=i,
                    input_index=j,
                )
            new = True
            replacements[txid] = added
        fresh.append(new)
    return fresh, replacements


def _check_same_manifest(
    before: SignedBefore, manifest_hash: bytes, psbt_index: int, input_index: int
) -> None:
    """A transaction signed before may be signed again under its own manifest only: another
    manifest that rebuilds to the same txid claims other facts the txid does not commit to (an
    input's amount: BIP143 signs only its own input's amount), the segwit v0 fee attack."""
    if before.manifest_hash != manifest_hash:
        raise _refuse(
            Reason.SAME_TX_OTHER_MANIFEST,
            f"PSBT {psbt_index} is transaction {before.txid_hex}, signed already under manifest "
            f"{before.manifest_hash.hex()}, not this one",
            scope=Scope.INPUT,
            psbt_index=psbt_index,
            input_index=input_index,
        )


def _coins(psbt: Psbt) -> dict[OutPoint, Coin]:
    """Each input's value and worst-case signed weight, from the rebuilt PSBT (its witness UTXO
    and witness script, both compared with the manifest's rebuild)."""
    coins = {}
    for txin, inp in zip(psbt.tx.inputs, psbt.inputs, strict=True):
        if inp.witness_utxo is None or inp.witness_script is None:
            raise VpoolError(f"input {txin.prevout} has no witness UTXO or script")
        m, keys = parse_multisig_script(inp.witness_script)
        coins[txin.prevout] = Coin(inp.witness_utxo.value, multisig_input_weight(m, len(keys)))
    return coins


# --------------------------------------------------------------------------- limits


class ChangeKind(StrEnum):
    """What a withdrawal transaction's change is, for the limits."""

    INTERNAL = "internal"
    """To an approved series whose coins the transaction spends: counts toward nothing."""
    MOVE = "move"
    """To another approved series (a sweep to a successor): counts in the move window."""
    PAYMENT = "payment"
    """To any other series: a payment to its scriptPubKey, counted like one."""


def _change_kind(planned: PlannedTransaction, approved: frozenset[int]) -> ChangeKind:
    assert planned.change is not None
    series_id = planned.change.series_id
    if series_id not in approved:
        return ChangeKind.PAYMENT
    if any(u.series_id == series_id for u in planned.inputs):
        return ChangeKind.INTERNAL
    return ChangeKind.MOVE


@dataclass(frozen=True)
class _ChangePayment:
    psbt_index: int
    script_pubkey: bytes
    value: int


@dataclass(frozen=True)
class _Flows:
    """Where the value of a round's counted transactions (never signed before, and the payments
    safe replacements add) goes."""

    requests: Mapping[bytes, int]
    """Satoshis paid per request (by request key)."""
    change_payments: tuple[_ChangePayment, ...]
    destinations_of_requests: Mapping[bytes, bytes]
    """Request key → scriptPubKey."""
    moves: int

    @property
    def payments(self) -> int:
        return sum(self.requests.values()) + sum(c.value for c in self.change_payments)

    def by_destination(self) -> dict[bytes, int]:
        totals: dict[bytes, int] = {}
        for key, amount in self.requests.items():
            script = self.destinations_of_requests[key]
            totals[script] = totals.get(script, 0) + amount
        for change in self.change_payments:
            totals[change.script_pubkey] = totals.get(change.script_pubkey, 0) + change.value
        return {script: amount for script, amount in totals.items() if amount}


def _outcomes(manifest: Manifest, plan: RoundPlan) -> dict[bytes, RequestOutcome]:
    """Each request's outcome in the plan, by request key."""
    by_ids = {(o.client_id, o.request_id): o for o in plan.requests}
    return {r.key: by_ids[(r.client_id, r.request_id)] for r in manifest.requests}


def _flows(
    manifest: Manifest,
    plan: RoundPlan,
    counted: Sequence[PlannedTransaction],
    approved: frozenset[int],
    replacements: Mapping[str, frozenset[int]],
) -> _Flows:
    """``counted``: the transactions never signed before and the safe replacements; of a
    replacement, only the payments it adds (``replacements``: txid → their vouts) count, and
    its change as any change does."""
    txids = {t.txid_hex for t in counted}

    def counts(output: PaidOutput) -> bool:
        added = replacements.get(output.txid_hex)
        return output.txid_hex in txids and (added is None or output.vout in added)

    requests: dict[bytes, int] = {}
    by_key = {r.key: r for r in manifest.requests}
    outcomes = _outcomes(manifest, plan)
    for request in manifest.requests:
        amount = sum(o.amount for o in outcomes[request.key].outputs if counts(o))
        if amount:
            requests[request.key] = amount
    change_payments: list[_ChangePayment] = []
    moves = 0
    for index, planned in enumerate(plan.transactions):
        if planned.txid_hex not in txids or planned.change is None:
            continue
        kind = _change_kind(planned, approved)
        if kind is ChangeKind.MOVE:
            moves += planned.change.value
        elif kind is ChangeKind.PAYMENT:
            script = planned.psbt.tx.outputs[planned.change.vout].script_pubkey
            change_payments.append(_ChangePayment(index, script, planned.change.value))
    return _Flows(
        requests=requests,
        change_payments=tuple(change_payments),
        destinations_of_requests={key: by_key[key].script_pubkey for key in requests},
        moves=moves,
    )


def _check_limits(
    config: PolicyConfig,
    manifest: Manifest,
    plan: RoundPlan,
    network: Network,
    flows: _Flows,
    history: SigningHistory,
    now: float,
) -> None:
    _check_fee_rate(config, manifest.fee_rate)
    for i, planned in enumerate(plan.transactions):
        excess = _fee_excess(config, i, planned.fee)
        if excess is not None:
            raise _refuse(Reason.FEE_ABOVE_LIMIT, excess, psbt_index=i)
    destinations = _DestinationWindow(config, history, now)
    refusals = _whole_fee_refusals(config, manifest, plan)
    refusals += _request_refusals(config, manifest, plan, network, flows, destinations)
    if refusals:
        raise _Refused(refusals)
    _check_change_payments(config, network, flows, destinations)
    payments = flows.payments
    if payments > config.max_round_amount:
        raise _refuse(
            Reason.ROUND_LIMIT_EXCEEDED,
            f"round pays {payments} sat, above the per-round limit of {config.max_round_amount}",
        )
    since = now - config.daily_window_seconds
    window = history.amount_signed_since(since)
    if window + payments > config.max_daily_amount:
        raise _refuse(
            Reason.DAILY_LIMIT_EXCEEDED,
            f"{window} sat signed in the last {config.daily_window_seconds} s; {payments} more "
            f"would pass the limit of {config.max_daily_amount}",
        )
    moved = history.amount_moved_since(since) if flows.moves else 0
    if moved + flows.moves > config.max_daily_move_amount:
        raise _refuse(
            Reason.MOVE_DAILY_LIMIT_EXCEEDED,
            f"{moved} sat moved to other series in the last {config.daily_window_seconds} s; "
            f"{flows.moves} more would pass the limit of {config.max_daily_move_amount}",
        )


def _check_fee_rate(config: PolicyConfig, fee_rate: int) -> None:
    if fee_rate > config.max_fee_rate:
        raise _refuse(
            Reason.FEE_RATE_ABOVE_LIMIT,
            f"fee rate {fee_rate} sat/kvB is above this signer's limit of {config.max_fee_rate}",
        )


def _fee_excess(config: PolicyConfig, psbt_index: int, fee: int) -> str | None:
    """Why the fee of one transaction is too high, or None."""
    if fee <= config.max_fee:
        return None
    return f"PSBT {psbt_index} pays a fee of {fee} sat, above the limit of {config.max_fee}"


def signed_vsize(psbt: Psbt) -> int:
    """Worst-case vsize of the transaction once signed (``pool.weights``): every input a P2WSH
    m-of-n multisig of its PSBT witness script with m signatures of the largest size."""
    inputs_weight = 0
    for j, inp in enumerate(psbt.inputs):
        if inp.witness_script is None:
            raise VpoolError(f"input {j} has no witness script")
        m, keys = parse_multisig_script(inp.witness_script)
        inputs_weight += multisig_input_weight(m, len(keys))
    outputs = psbt.tx.outputs
    outputs_weight = sum(output_weight(len(o.script_pubkey)) for o in outputs)
    weight = tx_weight(len(psbt.tx.inputs), len(outputs), inputs_weight, outputs_weight)
    return (weight + 3) // 4


def _whole_fee_limit(config: PolicyConfig, psbt: Psbt) -> tuple[int, int]:
    """(vsize, the largest whole fee ``max_fee_rate`` allows for it, rounded up as F1 does)."""
    size = signed_vsize(psbt)
    return size, fee_for_weight(4 * size, config.max_fee_rate)


def _whole_fee_refusals(config: PolicyConfig, manifest: Manifest, plan: RoundPlan) -> list[Refusal]:
    """Each transaction's whole fee (network fee, dust left to the fee, every extra fee) per
    worst-case signed vsize is at most ``max_fee_rate``. When the extra fees of the requests it
    pays cause the excess, the refusal is scoped to those requests (the coordinator drops them);
    otherwise to the round."""
    refusals: list[Refusal] = []
    outcomes = _outcomes(manifest, plan)
    for i, planned in enumerate(plan.transactions):
        size, limit = _whole_fee_limit(config, planned.psbt)
        if planned.fee <= limit:
            continue
        rate = planned.fee * 1000 // size
        message = (
            f"PSBT {i} pays {planned.fee} sat for {size} vB ({rate} sat/kvB with extra fees), "
            f"above this signer's limit of {config.max_fee_rate}"
        )
        extra = [
            r
            for r in manifest.requests
            if r.extra_fee and any(o.txid_hex == planned.txid_hex for o in outcomes[r.key].outputs)
        ]
        if not extra or planned.fee - sum(r.extra_fee for r in extra) > limit:
            raise _refuse(Reason.TX_FEE_RATE_ABOVE_LIMIT, message, psbt_index=i)
        refusals += [_request_refusal(Reason.TX_FEE_RATE_ABOVE_LIMIT, message, r) for r in extra]
    return refusals


class _DestinationWindow:
    """Running sums of the payments to each scriptPubKey: this round's, and the window's."""

    def __init__(self, config: PolicyConfig, history: SigningHistory, now: float) -> None:
        self._config = config
        self._history = history
        self._since = now - config.daily_window_seconds
        self._round: dict[bytes, int] = {}
        self._window: dict[bytes, int] = {}

    def problem(self, script_pubkey: bytes, amount: int, address: str) -> _Problem | None:
        """Why ``amount`` more to ``script_pubkey`` passes a limit (then it is not added)."""
        config = self._config
        in_round = self._round.get(script_pubkey, 0) + amount
        if in_round > config.max_destination_amount:
            return (
                Reason.DESTINATION_LIMIT_EXCEEDED,
                f"{address} would be paid {in_round} sat in this round, above the "
                f"per-destination limit of {config.max_destination_amount}",
            )
        if script_pubkey not in self._window:
            self._window[script_pubkey] = self._history.amount_paid_to_since(
                script_pubkey, self._since
            )
        in_window = self._window[script_pubkey] + in_round
        if in_window > config.max_destination_daily_amount:
            return (
                Reason.DESTINATION_DAILY_LIMIT_EXCEEDED,
                f"{address} would be paid {in_window} sat in the last "
                f"{config.daily_window_seconds} s, above the per-destination limit of "
                f"{config.max_destination_daily_amount}",
            )
        self._round[script_pubkey] = in_round
        return None


def _destination_list_problem(config: PolicyConfig, address: str) -> _Problem | None:
    if address in config.deny_destinations:
        return Reason.DESTINATION_DENIED, f"{address} is denied"
    if config.allow_destinations is not None and address not in config.allow_destinations:
        return Reason.DESTINATION_NOT_ALLOWED, f"{address} is not on the allow list"
    return None


def _request_refusals(
    config: PolicyConfig,
    manifest: Manifest,
    plan: RoundPlan,
    network: Network,
    flows: _Flows,
    destinations: _DestinationWindow,
) -> list[Refusal]:
    """Rules about one request: the coordinator can drop it and rebuild the round. Requests are
    taken in the manifest's canonical order; a refused request adds nothing to the sums per
    destination, so the requests after it are judged as the rebuilt round will have them."""
    paid = {(o.client_id, o.request_id) for o in plan.requests if o.outputs}
    refusals = []
    for request in manifest.requests:
        if (request.client_id, request.request_id) not in paid:
            continue
        address = script_pubkey_to_address(request.script_pubkey, network) or "?"
        problems: list[_Problem] = []
        if request.amount > config.max_request_amount:
            problems.append(
                (
                    Reason.REQUEST_LIMIT_EXCEEDED,
                    f"request pays {request.amount} sat, above the per-request limit of "
                    f"{config.max_request_amount}",
                )
            )
        listed = _destination_list_problem(config, address)
        if listed is not None:
            problems.append(listed)
        amount = flows.requests.get(request.key, 0)
        if not problems and amount:
            limited = destinations.problem(request.script_pubkey, amount, address)
            if limited is not None:
                problems.append(limited)
        refusals += [_request_refusal(reason, message, request) for reason, message in problems]
    return refusals


def _check_change_payments(
    config: PolicyConfig, network: Network, flows: _Flows, destinations: _DestinationWindow
) -> None:
    """Change to a series that is not approved is a payment: the destination lists and the
    per-destination limits apply to it, for the round (no request to drop)."""
    for change in flows.change_payments:
        address = script_pubkey_to_address(change.script_pubkey, network) or "?"
        problem = _destination_list_problem(config, address) or destinations.problem(
            change.script_pubkey, change.value, address
        )
        if problem is not None:
            reason, message = problem
            raise _refuse(
                reason,
                f"PSBT {change.psbt_index}: change to a series this signer has not approved is "
                f"a payment: {message}",
                psbt_index=change.psbt_index,
            )


def _request_refusal(reason: Reason, message: str, request: WithdrawalRequest) -> Refusal:
    return Refusal(
        reason,
        message,
        Scope.REQUEST,
        client_id=request.client_id,
        request_id=request.request_id,
    )


# --------------------------------------------------------------------------- refund rounds


def evaluate_refund_round(
    config: PolicyConfig,
    fingerprint: bytes,
    network: Network,
    registered_series: Mapping[int, Series],
    refund_addresses: Callable[[int, int], str | None],
    manifest_bytes: bytes,
    psbts: Sequence[bytes],
    history: SigningHistory,
    now: float,
) -> Approval | list[Refusal]:
    """Apply every rule of a refund round; return an ``Approval`` or the refusals.

    Order: sizes, decoding, network, series, rebuild and byte comparison, fee rate; then, for each
    refund this signer signs, its destination, the deny list, its fee, its whole fee rate, the
    signing log and the refund window, each refusal scoped to the deposit so that the
    coordinator can drop it and rebuild. ``refund_addresses(series_id, index)`` is the refund
    address this signer registered for a deposit address ("" for none, None if never
    registered). Refunds count toward no payment limit, only toward their own window
    (``max_daily_refund_amount``).
    """
    try:
        _check_sizes(config, manifest_bytes, psbts)
        manifest = _decode_manifest(decode_refund_manifest, manifest_bytes, network)
        parsed = _parse_psbts(psbts, config)
        _check_series(manifest.series, registered_series, fingerprint)
        plan = build_refunds(manifest)
        no_change: list[int | None] = [None] * len(plan.transactions)
        wanted = [t.psbt for t in plan.transactions]
        _compare_with_rebuild(parsed, wanted, no_change, registered_series, psbts)
        _check_something_to_sign(parsed, fingerprint)
        _check_fee_rate(config, manifest.fee_rate)
        window = _RefundWindow(config, history, now)
        refusals = [
            refusal
            for i, planned in enumerate(plan.transactions)
            if _signs_input(fingerprint, planned.psbt)
            for refusal in _refund_refusals(
                config, network, refund_addresses, history, i, planned, window, plan.manifest_hash
            )
        ]
        if refusals:
            raise _Refused(refusals)
    except _Refused as refused:
        return refused.refusals
    return Approval(
        manifest_hash=plan.manifest_hash,
        psbts=tuple(parsed),
        txids=tuple(t.txid_hex for t in plan.transactions),
        change_vouts=tuple(no_change),
        payments=0,
        refunds=window.added,
    )


class _RefundWindow:
    """The refunds signed in the rolling window, and those this round adds (first signatures
    only: re-signing a refund adds nothing)."""

    def __init__(self, config: PolicyConfig, history: SigningHistory, now: float) -> None:
        self._config = config
        self._history = history
        self._since = now - config.daily_window_seconds
        self._before: int | None = None
        self.added = 0

    def problem(self, planned: PlannedRefund, history: SigningHistory) -> _Problem | None:
        """Why this refund passes the window (then it is not added), or None."""
        if history.signed_spend(planned.refund.outpoint) is not None:
            return None  # signed before: counted then
        if self._before is None:
            self._before = self._history.amount_refunded_since(self._since)
        total = self._before + self.added + planned.amount
        config = self._config
        if total > config.max_daily_refund_amount:
            return (
                Reason.REFUND_DAILY_LIMIT_EXCEEDED,
                f"{self._before + self.added} sat refunded in the last "
                f"{config.daily_window_seconds} s; {planned.amount} more would pass the limit "
                f"of {config.max_daily_refund_amount}",
            )
        self.added += planned.amount
        return None


def _refund_refusals(
    config: PolicyConfig,
    network: Network,
    refund_addresses: Callable[[int, int], str | None],
    history: SigningHistory,
    psbt_index: int,
    planned: PlannedRefund,
    window: _RefundWindow,
    manifest_hash: bytes,
) -> list[Refusal]:
    """The rules about one refund, each refusal scoped to its deposit. The refund window is
    checked last, and only for a refund no other rule refuses."""
    refund = planned.refund
    registered = refund_addresses(refund.series_id, refund.index)
    address = script_pubkey_to_address(refund.destination, network) or refund.destination.hex()
    problems = [
        _destination_problem(config, network, refund, registered, address),
        _denied(config, address),
        _fee_problem(config, psbt_index, planned.fee),
        _whole_fee_problem(config, psbt_index, planned),
        _refunded_before(history, planned, manifest_hash),
        _acknowledged(history, planned),
    ]
    if not any(problems):
        problems.append(window.problem(planned, history))
    deposit = f"{refund.outpoint.txid_hex}:{refund.outpoint.vout}"
    return [
        Refusal(
            reason,
            f"deposit {deposit}: {message}",
            Scope.REQUEST,
            request_id=deposit,
            psbt_index=psbt_index,
        )
        for reason, message in filter(None, problems)
    ]


def _destination_problem(
    config: PolicyConfig,
    network: Network,
    refund: RefundRequest,
    registered: str | None,
    address: str,
) -> _Problem | None:
    """A refund address registered with this signer binds every refund of its deposit address,
    whatever the source; without one, only sender refunds and (if allowed) operator refunds."""
    deposit_address = f"deposit address {refund.index} of series {refund.series_id}"
    if refund.source is RefundSource.OPERATOR and not config.allow_operator_refunds:
        return (
            Reason.OPERATOR_REFUNDS_NOT_ALLOWED,
            f"pays {address}, chosen by an operator; this signer's policy does not allow "
            "operator refunds (allow_operator_refunds)",
        )
    if refund.source is RefundSource.SENDER and not _pays_sender(refund):
        return (
            Reason.REFUND_DESTINATION_NOT_SENDER,
            f"pays {address}, not the sender of the deposit",
        )
    if registered:
        if refund.destination != address_to_script_pubkey(registered, network):
            return (
                Reason.REFUND_DESTINATION_NOT_REGISTERED,
                f"pays {address}, not the refund address this signer registered for "
                f"{deposit_address}",
            )
        return None
    if refund.source is RefundSource.REGISTERED:
        how = "was never registered" if registered is None else "was registered without one"
        return (
            Reason.REFUND_ADDRESS_UNKNOWN,
            f"this signer has no refund address for {deposit_address} (it {how})",
        )
    return None


def _pays_sender(refund: RefundRequest) -> bool:
    """Re-derive the sender from the raw transactions (the manifest's constructor did too)."""
    try:
        deposit, previous = Transaction.parse(refund.deposit_tx), Transaction.parse(refund.prev_tx)
    except VpoolError:
        return False
    return sender_script(deposit, previous) == refund.destination


def _denied(config: PolicyConfig, address: str) -> _Problem | None:
    """The deny list applies to refunds; the allow list does not (it restricts withdrawals)."""
    if address not in config.deny_destinations:
        return None
    return Reason.DESTINATION_DENIED, f"{address} is denied"


def _fee_problem(config: PolicyConfig, psbt_index: int, fee: int) -> _Problem | None:
    excess = _fee_excess(config, psbt_index, fee)
    return None if excess is None else (Reason.FEE_ABOVE_LIMIT, excess)


def _whole_fee_problem(
    config: PolicyConfig, psbt_index: int, planned: PlannedRefund
) -> _Problem | None:
    size, limit = _whole_fee_limit(config, planned.psbt)
    if planned.fee <= limit:
        return None
    return (
        Reason.TX_FEE_RATE_ABOVE_LIMIT,
        f"PSBT {psbt_index} pays {planned.fee} sat for {size} vB, above this signer's limit of "
        f"{config.max_fee_rate} sat/kvB",
    )


def _refunded_before(
    history: SigningHistory, planned: PlannedRefund, manifest_hash: bytes
) -> _Problem | None:
    """A deposit is spent once: a signed refund is final (no fee bump), and a deposit whose
    spend was signed is never refunded; a refund is signed again only under its own manifest
    (another manifest with the same txid claims another deposit value)."""
    before = history.signed_spend(planned.refund.outpoint)
    if before is None:
        return None
    if before.txid_hex != planned.txid_hex:
        return (
            Reason.DOUBLE_SIGN,
            f"its spend {before.txid_hex} was signed already; a deposit is spent only once",
        )
    if before.manifest_hash != manifest_hash:
        return (
            Reason.SAME_TX_OTHER_MANIFEST,
            f"refund {before.txid_hex} was signed already under manifest "
            f"{before.manifest_hash.hex()}, not this one",
        )
    return None


def _acknowledged(history: SigningHistory, planned: PlannedRefund) -> _Problem | None:
    """A deposit this signer acknowledged may be credited: it is never refunded (by this signer,
    nor, since n - m + 1 signers acknowledged it before it was credited, by any m signers)."""
    acknowledged = history.acknowledged_deposit(planned.refund.outpoint)
    if acknowledged is None:
        return None
    return (
        Reason.DEPOSIT_CREDITED,
        "this signer acknowledged it for crediting; a credited deposit is never refunded",
    )


# --------------------------------------------------------------------------- acknowledgements


def acknowledgement_refusal(
    config: PolicyConfig,
    network: Network,
    claim: DepositClaim,
    series: Series | None,
    address_registered: bool,
    found: OnChainOutput | None,
    history: SigningHistory,
) -> Refusal | None:
    """Why this signer must not acknowledge ``claim``, or None if it may.

    ``series`` is the registered series the claim names (None if not registered),
    ``address_registered`` whether its receive address was registered with this signer, and
    ``found`` the output at the claim's outpoint as this signer's own node reports it (None: no
    confirmed unspent output there). The refusal's ``request_id`` is the deposit ``txid:vout``.
    """
    problem = _acknowledgement_problem(
        config, network, claim, series, address_registered, found, history
    )
    if problem is None:
        return None
    reason, message = problem
    return Refusal(reason, f"deposit {claim.key}: {message}", Scope.REQUEST, request_id=claim.key)


def repeated_acknowledgement(claim: DepositClaim, prior: AcknowledgedDeposit) -> Refusal | None:
    """A deposit acknowledged before is acknowledged again only for the same claim."""
    if prior.claim == claim:
        return None
    was = prior.claim
    return Refusal(
        Reason.DEPOSIT_CLAIM_MISMATCH,
        f"deposit {claim.key}: acknowledged before as {was.value} sat to receive address "
        f"{was.index} of series {was.series_id}",
        Scope.REQUEST,
        request_id=claim.key,
    )


def _acknowledgement_problem(
    config: PolicyConfig,
    network: Network,
    claim: DepositClaim,
    series: Series | None,
    address_registered: bool,
    found: OnChainOutput | None,
    history: SigningHistory,
) -> _Problem | None:
    before = history.signed_spend(claim.outpoint)
    if before is not None:
        return (
            Reason.DEPOSIT_REFUNDED,
            f"this signer signed its spend {before.txid_hex}; a refunded deposit is never credited",
        )
    address = f"receive address {claim.index} of series {claim.series_id}"
    if series is None or not address_registered:
        what = f"series {claim.series_id}" if series is None else address
        return (Reason.DEPOSIT_ADDRESS_NOT_REGISTERED, f"{what} is not registered with this signer")
    if found is None:
        return (
            Reason.DEPOSIT_NOT_FOUND,
            "this signer's node has no confirmed unspent output at this outpoint",
        )
    if found.script_pubkey != series.derive(RECEIVE, claim.index).script_pubkey:
        paid = script_pubkey_to_address(found.script_pubkey, network) or found.script_pubkey.hex()
        return (Reason.DEPOSIT_ADDRESS_MISMATCH, f"the output pays {paid}, not {address}")
    if found.value != claim.value:
        return (
            Reason.DEPOSIT_VALUE_MISMATCH,
            f"the output is worth {found.value} sat, not {claim.value}",
        )
    if found.confirmations < config.deposit_confirmations:
        return (
            Reason.DEPOSIT_UNCONFIRMED,
            f"{found.confirmations} confirmations on this signer's node, it needs "
            f"{config.deposit_confirmations}",
        )
    return None
