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
from typing import Protocol, TypeVar

from pool.address import address_to_script_pubkey, script_pubkey_to_address
from pool.descriptor import DescriptorKey
from pool.errors import VpoolError
from pool.manifest import Manifest, WithdrawalRequest, decode_manifest, manifest_counts
from pool.networks import Network
from pool.psbt import Psbt, PsbtInput
from pool.refunds import (
    PlannedRefund,
    RefundRequest,
    RefundSource,
    build_refunds,
    decode_refund_manifest,
    sender_script,
)
from pool.series import Series
from pool.sighash import SIGHASH_ALL
from pool.tx import OutPoint, Transaction
from pool.withdrawal import PlannedTransaction, RoundPlan, build_round

POLICY_RULES_VERSION = 3
"""Bumped whenever a rule of this module changes meaning; part of the policy hash.
2: refund rounds. 3: caps on requests and UTXOs, PSBT and input counts before the rebuild."""


class RoundKind(StrEnum):
    """The kind of a round; each kind has its own policy. Written in the audit trail."""

    WITHDRAWAL = "withdrawal"
    REFUND = "refund"


class Reason(StrEnum):
    """Why a round (or a request of it) is refused. Stable strings: clients match on them."""

    OVERSIZED_MESSAGE = "OVERSIZED_MESSAGE"
    ROUND_TOO_LARGE = "ROUND_TOO_LARGE"
    """The manifest has more requests or UTXOs than this signer's ``max_requests`` or
    ``max_inputs``; checked before decoding. Final for this manifest: only a smaller round can
    pass."""
    MALFORMED_MANIFEST = "MALFORMED_MANIFEST"
    MALFORMED_PSBT = "MALFORMED_PSBT"
    WRONG_NETWORK = "WRONG_NETWORK"
    SERIES_NOT_REGISTERED = "SERIES_NOT_REGISTERED"
    SERIES_MISMATCH = "SERIES_MISMATCH"
    NOT_A_COSIGNER = "NOT_A_COSIGNER"
    PSBT_COUNT_MISMATCH = "PSBT_COUNT_MISMATCH"
    MANIFEST_MISMATCH = "MANIFEST_MISMATCH"
    INPUT_NOT_IN_POOL = "INPUT_NOT_IN_POOL"
    EXTRA_INPUT = "EXTRA_INPUT"
    MISSING_INPUT = "MISSING_INPUT"
    UNKNOWN_INPUT = "UNKNOWN_INPUT"
    INPUT_UTXO_MISMATCH = "INPUT_UTXO_MISMATCH"
    WITNESS_SCRIPT_MISMATCH = "WITNESS_SCRIPT_MISMATCH"
    DERIVATION_MISMATCH = "DERIVATION_MISMATCH"
    SIGHASH_NOT_ALL = "SIGHASH_NOT_ALL"
    EXTRA_OUTPUT = "EXTRA_OUTPUT"
    MISSING_OUTPUT = "MISSING_OUTPUT"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    DESTINATION_MISMATCH = "DESTINATION_MISMATCH"
    CHANGE_NOT_TO_POOL = "CHANGE_NOT_TO_POOL"
    TX_FIELDS_MISMATCH = "TX_FIELDS_MISMATCH"
    PSBT_MISMATCH = "PSBT_MISMATCH"
    FEE_RATE_ABOVE_LIMIT = "FEE_RATE_ABOVE_LIMIT"
    FEE_ABOVE_LIMIT = "FEE_ABOVE_LIMIT"
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    ROUND_LIMIT_EXCEEDED = "ROUND_LIMIT_EXCEEDED"
    DAILY_LIMIT_EXCEEDED = "DAILY_LIMIT_EXCEEDED"
    DESTINATION_DENIED = "DESTINATION_DENIED"
    DESTINATION_NOT_ALLOWED = "DESTINATION_NOT_ALLOWED"
    REFUND_DESTINATION_NOT_REGISTERED = "REFUND_DESTINATION_NOT_REGISTERED"
    REFUND_ADDRESS_UNKNOWN = "REFUND_ADDRESS_UNKNOWN"
    REFUND_DESTINATION_NOT_SENDER = "REFUND_DESTINATION_NOT_SENDER"
    OPERATOR_REFUNDS_NOT_ALLOWED = "OPERATOR_REFUNDS_NOT_ALLOWED"
    DOUBLE_SIGN = "DOUBLE_SIGN"
    NOTHING_TO_SIGN = "NOTHING_TO_SIGN"
    DEVICE_REFUSED = "DEVICE_REFUSED"
    DEVICE_ERROR = "DEVICE_ERROR"
    DEVICE_TIMEOUT = "DEVICE_TIMEOUT"
    BAD_DEVICE_SIGNATURE = "BAD_DEVICE_SIGNATURE"


class Scope(StrEnum):
    ROUND = "round"
    REQUEST = "request"
    """One withdrawal request (``client_id``, ``request_id``), or in a refund round one deposit:
    ``request_id`` is its outpoint ``txid:vout`` (txid in display hex), ``client_id`` empty."""
    INPUT = "input"


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
    """Satoshis per 1000 vB (100 sat/vB)."""
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
    """The smallest m of a series this signer registers."""
    allow_operator_refunds: bool = False
    """Sign refunds to destinations an operator chose (``AdminService.ProposeRefund``)."""

    def version_hash(self) -> str:
        """SHA256 over the rules version and every setting: reported, and written in the audit."""
        doc = asdict(self)
        for key in ("allow_destinations", "deny_destinations", "cosigners"):
            value = doc[key]
            doc[key] = None if value is None else sorted(value)
        doc["rules_version"] = POLICY_RULES_VERSION
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SignedBefore:
    """What the signing log holds for an outpoint this signer already signed a spend of."""

    txid_hex: str
    tx: Transaction
    """The unsigned transaction signed then."""
    change_vout: int | None


class SigningHistory(Protocol):
    """The persisted facts the policy needs (implemented by ``signer.state``)."""

    def signed_spend(self, outpoint: OutPoint) -> SignedBefore | None: ...

    def amount_signed_since(self, since: float) -> int: ...


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
    """Satoshis leaving the pool (non-change outputs) in transactions never signed before:
    what this round adds to the limits. Re-signed transactions and fee bumps add nothing, their
    payments were counted when first signed; refunds add nothing (the depositor's own coins)."""
    fee_bumps: tuple[str, ...] = field(default=())
    """Txids signed as fee bumps of transactions signed before."""


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


def rebuild_round(
    config: PolicyConfig,
    fingerprint: bytes,
    network: Network,
    registered: Mapping[int, Series],
    manifest_bytes: bytes,
    psbts: Sequence[bytes],
) -> Rebuilt | list[Refusal]:
    """The rules of a withdrawal round that read no signer state (``registered`` is a snapshot:
    a registered series never changes)."""
    try:
        _check_sizes(config, manifest_bytes, psbts)
        _check_counts(config, manifest_bytes)
        manifest = _decode_manifest(decode_manifest, manifest_bytes, network)
        parsed = _parse_psbts(psbts, config)
        _check_psbt_counts(parsed, len(manifest.utxos))
        _check_series(manifest.series, registered, fingerprint, also=[manifest.active_series])
        plan = build_round(manifest)
        change_vouts = [_change_vout(t) for t in plan.transactions]
        _compare_with_rebuild(parsed, [t.psbt for t in plan.transactions], change_vouts, registered)
        _check_something_to_sign(parsed, fingerprint)
    except _Refused as refused:
        return refused.refusals

    def judge(history: SigningHistory, now: float) -> Approval | list[Refusal]:
        return _judge_round(config, network, manifest, plan, parsed, change_vouts, history, now)

    return Rebuilt(judge)


def _judge_round(
    config: PolicyConfig,
    network: Network,
    manifest: Manifest,
    plan: RoundPlan,
    parsed: Sequence[Psbt],
    change_vouts: Sequence[int | None],
    history: SigningHistory,
    now: float,
) -> Approval | list[Refusal]:
    """The rules of a rebuilt withdrawal round that read the signer's history."""
    try:
        fresh, bumps = _check_signing_log(parsed, change_vouts, history)
        payments = sum(
            _payments(planned)
            for planned, new in zip(plan.transactions, fresh, strict=True)
            if new and planned.txid_hex not in bumps
        )
        _check_limits(config, manifest, plan, network, payments, history, now)
    except _Refused as refused:
        return refused.refusals
    return Approval(
        manifest_hash=plan.manifest_hash,
        psbts=tuple(parsed),
        txids=tuple(t.txid_hex for t in plan.transactions),
        change_vouts=tuple(change_vouts),
        payments=payments,
        fee_bumps=tuple(bumps),
    )


def _change_vout(planned: PlannedTransaction) -> int | None:
    return None if planned.change is None else planned.change.vout


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


def _check_psbt_counts(parsed: Sequence[Psbt], utxos: int) -> None:
    """Each transaction spends at least one of the manifest's UTXOs, and none twice."""
    inputs = sum(len(p.tx.inputs) for p in parsed)
    if len(parsed) > utxos or inputs > utxos:
        raise _refuse(
            Reason.PSBT_COUNT_MISMATCH,
            f"{len(parsed)} PSBTs with {inputs} inputs sent, the manifest has {utxos} UTXOs",
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
    """The series this signer signs for, and ``also`` (a withdrawal's active series: it receives
    the change), are the ones registered with this signer, identical in m and keys."""
    ours = [s for s in series if _has_fingerprint(s, fingerprint)]
    if not ours:
        raise _refuse(Reason.NOT_A_COSIGNER, "this signer's key is in none of the round's series")
    must_know = {s.id: s for s in [*ours, *also]}
    for one in must_know.values():
        known = registered.get(one.id)
        if known is None:
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

    A registered series is trusted as "the pool" (change may pay it), so a coordinator must not be
    able to slip in a series with its own key: every key must be this signer's own (checked by
    ``is_own_key`` against the device) or a cosigner the operator configured.
    """
    if series.m < config.min_threshold:
        return f"threshold {series.m} is below this signer's minimum of {config.min_threshold}"
    allowed = {DescriptorKey.parse(text, network) for text in config.cosigners}
    for position, key in enumerate(series.keys):
        if key not in allowed and not is_own_key(key):
            return (
                f"key {position} ([{key.origin.to_string()}]) is neither this signer's key nor "
                "one of its configured cosigners"
            )
    return None


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
) -> None:
    """The PSBTs must be, byte for byte, the ones the manifest builds (``wanted``)."""
    if len(parsed) != len(wanted):
        raise _refuse(
            Reason.PSBT_COUNT_MISMATCH,
            f"{len(parsed)} PSBTs sent, the manifest builds {len(wanted)}",
        )
    refusals: list[Refusal] = []
    for i, (got, want, change_vout) in enumerate(zip(parsed, wanted, change_vouts, strict=True)):
        if got.serialize() == want.serialize():
            continue
        found = _differences(got, want, change_vout, registered) or [
            (Reason.PSBT_MISMATCH, "PSBT fields differ from the manifest's", None)
        ]
        seen: set[Reason] = set()
        for reason, message, input_index in found:
            if reason not in seen:
                seen.add(reason)
                scope = Scope.ROUND if input_index is None else Scope.INPUT
                refusals.append(
                    Refusal(
                        reason, f"PSBT {i}: {message}", scope, psbt_index=i, input_index=input_index
                    )
                )
    if refusals:
        raise _Refused(refusals)


_Difference = tuple[Reason, str, int | None]


def _differences(
    got: Psbt, want: Psbt, change_vout: int | None, registered: Mapping[int, Series]
) -> list[_Difference]:
    selected = {i.prevout for i in want.tx.inputs}
    foreign: list[_Difference] = [
        (Reason.INPUT_NOT_IN_POOL, f"input {j} is not a pool output", j)
        for j, (txin, inp) in enumerate(zip(got.tx.inputs, got.inputs, strict=True))
        if txin.prevout not in selected and not _is_pool_input(inp, registered)
    ]
    if foreign:
        return foreign
    if selected.isdisjoint(i.prevout for i in got.tx.inputs):
        return [(Reason.MANIFEST_MISMATCH, "spends none of the inputs the manifest selects", None)]
    diffs = _input_differences(got, want)
    g, w = got.tx, want.tx
    if (g.version, g.locktime) != (w.version, w.locktime) or any(
        (a.sequence, a.script_sig) != (b.sequence, b.script_sig)
        for a, b in zip(g.inputs, w.inputs, strict=False)
    ):
        diffs.append((Reason.TX_FIELDS_MISMATCH, "version, locktime or sequences differ", None))
    diffs += _output_differences(got, want, change_vout)
    if got.xpubs != want.xpubs:
        diffs.append((Reason.DERIVATION_MISMATCH, "global xpubs differ", None))
    return diffs


def _input_differences(got: Psbt, want: Psbt) -> list[_Difference]:
    diffs: list[_Difference] = []
    for j, inp in enumerate(got.inputs):
        if inp.sighash_type not in (None, SIGHASH_ALL):
            diffs.append(
                (Reason.SIGHASH_NOT_ALL, f"input {j} asks for sighash {inp.sighash_type:#x}", j)
            )
    wanted = want.tx.inputs
    for j, txin in enumerate(got.tx.inputs):
        g = got.inputs[j]
        if j >= len(wanted) or txin.prevout != wanted[j].prevout:
            if j >= len(wanted):
                diffs.append((Reason.EXTRA_INPUT, f"input {j} is not in the manifest's round", j))
            else:
                diffs.append((Reason.UNKNOWN_INPUT, f"input {j} is not the one selected", j))
            continue
        w = want.inputs[j]
        if g.witness_utxo != w.witness_utxo:
            diffs.append((Reason.INPUT_UTXO_MISMATCH, f"input {j} amount or script differs", j))
        if g.witness_script != w.witness_script:
            diffs.append((Reason.WITNESS_SCRIPT_MISMATCH, f"input {j} witness script differs", j))
        if g.bip32_derivations != w.bip32_derivations:
            diffs.append((Reason.DERIVATION_MISMATCH, f"input {j} key derivations differ", j))
        if (g.partial_sigs, g.unknown, g.final_script_witness) != (
            w.partial_sigs,
            w.unknown,
            w.final_script_witness,
        ):
            diffs.append((Reason.PSBT_MISMATCH, f"input {j} carries unexpected fields", j))
    if len(got.tx.inputs) < len(wanted):
        diffs.append((Reason.MISSING_INPUT, "an input the manifest selects is missing", None))
    return diffs


def _is_pool_input(inp: PsbtInput, registered: Mapping[int, Series]) -> bool:
    """Does the input's UTXO pay a pool script at the path its derivations claim?

    A pool input's derivations name one (branch, index) of each series holding its keys, so an
    input claiming more places than there are registered series is not one; each place claimed
    is derived once.
    """
    if inp.witness_utxo is None:
        return False
    accounts: dict[tuple[bytes, tuple[int, ...]], list[Series]] = {}
    for series in registered.values():
        for key in series.keys:
            accounts.setdefault((key.origin.fingerprint, key.origin.path), []).append(series)
    claimed: set[tuple[int, int, int]] = set()
    for origin in inp.bip32_derivations.values():
        path = origin.path
        if len(path) < 2 or path[-2] not in (0, 1) or path[-1] >= 2**31:
            continue
        for series in accounts.get((origin.fingerprint, path[:-2]), ()):
            claimed.add((series.id, path[-2], path[-1]))
    if len(claimed) > len(registered):
        return False
    script = inp.witness_utxo.script_pubkey
    by_id = {series.id: series for series in registered.values()}
    return any(by_id[i].derive(b, n).script_pubkey == script for i, b, n in sorted(claimed))


def _output_differences(got: Psbt, want: Psbt, change_vout: int | None) -> list[_Difference]:
    g, w = got.tx.outputs, want.tx.outputs
    if len(g) > len(w):
        return [
            (Reason.EXTRA_OUTPUT, f"{len(g) - len(w)} output(s) the manifest does not pay", None)
        ]
    if len(g) < len(w):
        return [(Reason.MISSING_OUTPUT, "an output the manifest pays is missing", None)]
    diffs: list[_Difference] = []
    for k, (go, wo) in enumerate(zip(g, w, strict=True)):
        if go.script_pubkey != wo.script_pubkey:
            if k == change_vout:
                diffs.append(
                    (Reason.CHANGE_NOT_TO_POOL, f"change output {k} leaves the pool", None)
                )
            else:
                diffs.append(
                    (Reason.DESTINATION_MISMATCH, f"output {k} pays another address", None)
                )
        if go.value != wo.value:
            diffs.append(
                (Reason.AMOUNT_MISMATCH, f"output {k} pays {go.value}, not {wo.value}", None)
            )
        gp, wp = got.outputs[k], want.outputs[k]
        if gp.witness_script != wp.witness_script:
            diffs.append(
                (Reason.WITNESS_SCRIPT_MISMATCH, f"output {k} witness script differs", None)
            )
        if gp.bip32_derivations != wp.bip32_derivations:
            diffs.append((Reason.DERIVATION_MISMATCH, f"output {k} key derivations differ", None))
    return diffs


# --------------------------------------------------------------------------- signing log


def _check_signing_log(
    parsed: Sequence[Psbt], change_vouts: Sequence[int | None], history: SigningHistory
) -> tuple[list[bool], list[str]]:
    """Never sign two different spends of one outpoint, except a fee bump of the one signed.

    Returns, per transaction, whether it is new (not signed before), and the fee bumps' txids.
    """
    fresh: list[bool] = []
    bumps: list[str] = []
    for i, (psbt, change_vout) in enumerate(zip(parsed, change_vouts, strict=True)):
        tx, txid = psbt.tx, psbt.tx.txid_hex
        new = False
        bump_of: dict[str, bool] = {}  # compared once per transaction signed before, not per input
        for j, txin in enumerate(tx.inputs):
            before = history.signed_spend(txin.prevout)
            if before is None:
                new = True
            elif before.txid_hex != txid:
                if before.txid_hex not in bump_of:
                    bump_of[before.txid_hex] = _is_fee_bump(before, tx, change_vout)
                if not bump_of[before.txid_hex]:
                    raise _refuse(
                        Reason.DOUBLE_SIGN,
                        f"PSBT {i} input {j} spends {txin.prevout}, already signed in "
                        f"{before.txid_hex} with other outputs",
                        scope=Scope.INPUT,
                        psbt_index=i,
                        input_index=j,
                    )
                new = True
                if txid not in bumps:
                    bumps.append(txid)
        fresh.append(new)
    return fresh, bumps


def _is_fee_bump(before: SignedBefore, tx: Transaction, new_vout: int | None) -> bool:
    """Same inputs, every payment unchanged, only the change lower (or gone)."""
    if {i.prevout for i in before.tx.inputs} != {i.prevout for i in tx.inputs}:
        return False
    old_change = before.tx.outputs[before.change_vout] if before.change_vout is not None else None
    old_payments = [o for k, o in enumerate(before.tx.outputs) if k != before.change_vout]
    new_payments = [o for k, o in enumerate(tx.outputs) if k != new_vout]
    if old_payments != new_payments:
        return False
    if new_vout is None:
        return True
    new_change = tx.outputs[new_vout]
    return (
        old_change is not None
        and new_change.script_pubkey == old_change.script_pubkey
        and new_change.value < old_change.value
    )


# --------------------------------------------------------------------------- limits


def _payments(planned: PlannedTransaction) -> int:
    change = planned.change.value if planned.change is not None else 0
    return planned.psbt.tx.total_output_value - change


def _check_limits(
    config: PolicyConfig,
    manifest: Manifest,
    plan: RoundPlan,
    network: Network,
    payments: int,
    history: SigningHistory,
    now: float,
) -> None:
    _check_fee_rate(config, manifest.fee_rate)
    for i, planned in enumerate(plan.transactions):
        excess = _fee_excess(config, i, planned.fee)
        if excess is not None:
            raise _refuse(Reason.FEE_ABOVE_LIMIT, excess, psbt_index=i)
    refusals = _request_refusals(config, manifest, plan, network)
    if refusals:
        raise _Refused(refusals)
    if payments > config.max_round_amount:
        raise _refuse(
            Reason.ROUND_LIMIT_EXCEEDED,
            f"round pays {payments} sat, above the per-round limit of {config.max_round_amount}",
        )
    window = history.amount_signed_since(now - config.daily_window_seconds)
    if window + payments > config.max_daily_amount:
        raise _refuse(
            Reason.DAILY_LIMIT_EXCEEDED,
            f"{window} sat signed in the last {config.daily_window_seconds} s; {payments} more "
            f"would pass the limit of {config.max_daily_amount}",
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


def _request_refusals(
    config: PolicyConfig, manifest: Manifest, plan: RoundPlan, network: Network
) -> list[Refusal]:
    """Rules about one request: the coordinator can drop it and rebuild the round."""
    paid = {(o.client_id, o.request_id) for o in plan.requests if o.outputs}
    lists = bool(config.deny_destinations) or config.allow_destinations is not None
    refusals = []
    for request in manifest.requests:
        if (request.client_id, request.request_id) not in paid:
            continue
        # Encoding an address costs more than the rest of this loop: only for the lists.
        address = (script_pubkey_to_address(request.script_pubkey, network) or "?") if lists else ""
        if request.amount > config.max_request_amount:
            refusals.append(
                _request_refusal(
                    Reason.REQUEST_LIMIT_EXCEEDED,
                    f"request pays {request.amount} sat, above the per-request limit of "
                    f"{config.max_request_amount}",
                    request,
                )
            )
        if address in config.deny_destinations:
            refusals.append(
                _request_refusal(Reason.DESTINATION_DENIED, f"{address} is denied", request)
            )
        elif config.allow_destinations is not None and address not in config.allow_destinations:
            refusals.append(
                _request_refusal(
                    Reason.DESTINATION_NOT_ALLOWED, f"{address} is not on the allow list", request
                )
            )
    return refusals


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
) -> Approval | list[Refusal]:
    """Apply every rule of a refund round; return an ``Approval`` or the refusals.

    Order: sizes, decoding, network, series, rebuild and byte comparison, fee rate; then, for each
    refund this signer signs, its destination, the deny list, its fee and the signing log, each
    refusal scoped to the deposit so that the coordinator can drop it and rebuild.
    ``refund_addresses(series_id, index)`` is the refund address this signer registered for a
    deposit address ("" for none, None if never registered). Refunds pay the depositors' own
    coins back: they count toward no amount limit.
    """
    try:
        _check_sizes(config, manifest_bytes, psbts)
        manifest = _decode_manifest(decode_refund_manifest, manifest_bytes, network)
        parsed = _parse_psbts(psbts, config)
        _check_series(manifest.series, registered_series, fingerprint)
        plan = build_refunds(manifest)
        no_change: list[int | None] = [None] * len(plan.transactions)
        wanted = [t.psbt for t in plan.transactions]
        _compare_with_rebuild(parsed, wanted, no_change, registered_series)
        _check_something_to_sign(parsed, fingerprint)
        _check_fee_rate(config, manifest.fee_rate)
        refusals = [
            refusal
            for i, planned in enumerate(plan.transactions)
            if _signs_input(fingerprint, planned.psbt)
            for refusal in _refund_refusals(config, network, refund_addresses, history, i, planned)
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
    )


_Problem = tuple[Reason, str]


def _refund_refusals(
    config: PolicyConfig,
    network: Network,
    refund_addresses: Callable[[int, int], str | None],
    history: SigningHistory,
    psbt_index: int,
    planned: PlannedRefund,
) -> list[Refusal]:
    """The rules about one refund, each refusal scoped to its deposit."""
    refund = planned.refund
    registered = refund_addresses(refund.series_id, refund.index)
    address = script_pubkey_to_address(refund.destination, network) or refund.destination.hex()
    problems = [
        _destination_problem(config, network, refund, registered, address),
        _denied(config, address),
        _fee_problem(config, psbt_index, planned.fee),
        _refunded_before(history, planned),
    ]
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


def _refunded_before(history: SigningHistory, planned: PlannedRefund) -> _Problem | None:
    """A deposit is spent once: a signed refund is final (no fee bump), and a deposit whose
    spend was signed is never refunded."""
    before = history.signed_spend(planned.refund.outpoint)
    if before is None or before.txid_hex == planned.txid_hex:
        return None
    return (
        Reason.DOUBLE_SIGN,
        f"its spend {before.txid_hex} was signed already; a deposit is spent only once",
    )
