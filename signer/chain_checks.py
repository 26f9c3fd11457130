"""The manifest's facts checked against the signer's own node, before any device is asked.

Rebuilding a round proves that its PSBTs follow from its manifest, not that the manifest is true.
Under segwit v0 a signature commits only to its own input's amount, so a manifest that under-states
amounts makes the signer sign parts of a transaction whose real fee is unbounded; a manifest that
names coins that do not exist, pays no pool script or pins an invented tip makes it sign
transactions that can never be mined. So, for every input of every PSBT of a round (withdrawal or
refund), the signer asks its own node (``signer.chain.ChainView``):

- the outpoint is a confirmed, unspent output (``INPUT_NOT_ON_CHAIN``);
- its value and scriptPubKey are the PSBT's ``witness_utxo`` (``INPUT_AMOUNT_MISMATCH``,
  ``INPUT_SCRIPT_MISMATCH``), and, in a withdrawal, its height is the manifest's
  (``INPUT_HEIGHT_MISMATCH``);
- it has at least the signer's own ``min_conf`` confirmations, a coinbase at least 100
  (``INPUT_IMMATURE``);

and for the round: the pinned tip is a block of the signer's best chain (``TIP_AHEAD_OF_NODE``,
``TIP_NOT_ON_CHAIN``), at most ``max_tip_lag`` blocks behind its tip (``TIP_TOO_OLD``), and each
transaction's nLockTime lets it be mined in the next block (``LOCKTIME_IN_FUTURE``). Then the
signer fetches each input's previous transaction from its node, checks that it hashes to the
outpoint's txid and that its output is the input's amount and script (``PREVIOUS_TX_*``), and
hands the device PSBTs carrying both ``witness_utxo`` and ``non_witness_utxo``.

The rules are pure functions of what the node answered (``input_problem``, ``tip_problem``,
``locktime_problem``, ``previous_tx_problem``, ``released_by_chain``); ``check_round`` asks the
node and applies them. ``ChainReleasedHistory`` is the signing log as the chain sees it: an entry
whose transaction can no longer be mined does not block an honest spend (docs/signer-policy.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pool.cancel import decode_cancel, is_cancel_manifest
from pool.errors import VpoolError
from pool.manifest import Manifest, decode_manifest
from pool.psbt import Psbt
from pool.refunds import decode_refund_manifest
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.vocabulary import Reason, RoundKind, Scope
from signer.chain import ChainUnavailable, ChainUtxo, ChainView
from signer.policy import AcknowledgedDeposit, Approval, Refusal, SignedBefore, SigningHistory

COINBASE_MATURITY = 100
LOCKTIME_THRESHOLD = 500_000_000
"""nLockTime values from here on are unix times, not heights."""

Problem = tuple[Reason, str]


@dataclass(frozen=True)
class ChainRules:
    """The operator's own rules about its chain (``[chain]`` in signer.toml)."""

    min_conf: int = 6
    """Confirmations an input needs on this signer's node."""
    max_tip_lag: int = 6
    """How many blocks the manifest's pinned tip may be behind this signer's tip."""


# --------------------------------------------------------------------------- pure rules


def input_problem(
    claimed: TxOut, claimed_height: int | None, found: ChainUtxo | None, min_conf: int
) -> Problem | None:
    """What is wrong with an input whose UTXO the round claims is ``claimed`` (confirmed at
    ``claimed_height``, when the manifest says), given what the node ``found``."""
    if found is None:
        return Reason.INPUT_NOT_ON_CHAIN, "is not a confirmed unspent output on this signer's node"
    if found.value != claimed.value:
        return (
            Reason.INPUT_AMOUNT_MISMATCH,
            f"is worth {found.value} sat on this signer's node, not {claimed.value}",
        )
    if found.script_pubkey != claimed.script_pubkey:
        return (
            Reason.INPUT_SCRIPT_MISMATCH,
            f"pays script {found.script_pubkey.hex()} on this signer's node, not "
            f"{claimed.script_pubkey.hex()}",
        )
    if claimed_height is not None and found.height != claimed_height:
        return (
            Reason.INPUT_HEIGHT_MISMATCH,
            f"was confirmed at height {found.height} on this signer's node, not {claimed_height}",
        )
    if found.confirmations < min_conf:
        return (
            Reason.INPUT_IMMATURE,
            f"has {found.confirmations} confirmations, this signer wants {min_conf}",
        )
    if found.coinbase and found.confirmations < COINBASE_MATURITY:
        return (
            Reason.INPUT_IMMATURE,
            f"is a coinbase output with {found.confirmations} confirmations, not "
            f"{COINBASE_MATURITY}",
        )
    return None


def tip_problem(
    pinned_height: int,
    pinned_hash: str,
    node_height: int,
    node_hash_at_pinned: str | None,
    max_tip_lag: int,
) -> Problem | None:
    """Is the manifest's pinned tip a block of the node's best chain, recent enough?"""
    if pinned_height > node_height:
        return (
            Reason.TIP_AHEAD_OF_NODE,
            f"the manifest's tip {pinned_height} is above this signer's tip {node_height}",
        )
    if node_hash_at_pinned != pinned_hash:
        return (
            Reason.TIP_NOT_ON_CHAIN,
            f"the manifest's tip {pinned_hash} at height {pinned_height} is not on this signer's "
            f"best chain (it has {node_hash_at_pinned} there)",
        )
    if node_height - pinned_height > max_tip_lag:
        return (
            Reason.TIP_TOO_OLD,
            f"the manifest's tip {pinned_height} is {node_height - pinned_height} blocks behind "
            f"this signer's tip {node_height}; at most {max_tip_lag} allowed",
        )
    return None


def locktime_problem(locktime: int, node_height: int) -> Problem | None:
    """A transaction may go in the next block only if its (height) nLockTime is below it."""
    if locktime >= LOCKTIME_THRESHOLD or locktime > node_height:
        return (
            Reason.LOCKTIME_IN_FUTURE,
            f"nLockTime {locktime} is not below the next block {node_height + 1}",
        )
    return None


@dataclass(frozen=True)
class PreviousTx:
    """A transaction from this signer's node, parsed once however many inputs spend it."""

    txid: bytes
    outputs: tuple[TxOut, ...]
    stripped: bytes
    """Its witness-stripped serialization (BIP174 allows either; the stripped form is smaller
    and what devices hash)."""

    @classmethod
    def parse(cls, raw: bytes) -> PreviousTx:
        """Raises ``VpoolError`` when ``raw`` does not parse."""
        tx, txid = Transaction.parse_with_txid(raw)
        stripped = tx.serialize_without_witness() if tx.has_witness else raw
        return cls(txid, tx.outputs, stripped)


def previous_tx_problem(
    raw: bytes | PreviousTx | None, outpoint: OutPoint, claimed: TxOut
) -> Problem | None:
    """The node's previous transaction must be the one spent, with the claimed output."""
    if raw is None:
        return (
            Reason.PREVIOUS_TX_UNAVAILABLE,
            f"this signer's node does not give transaction {outpoint.txid_hex} (does it keep a "
            "transaction index?)",
        )
    try:
        previous = raw if isinstance(raw, PreviousTx) else PreviousTx.parse(raw)
    except VpoolError as e:
        return Reason.PREVIOUS_TX_MISMATCH, f"the node's previous transaction does not parse: {e}"
    if previous.txid != outpoint.txid:
        return (
            Reason.PREVIOUS_TX_MISMATCH,
            f"the node's previous transaction is {previous.txid[::-1].hex()}, not "
            f"{outpoint.txid_hex}",
        )
    if outpoint.vout >= len(previous.outputs) or previous.outputs[outpoint.vout] != claimed:
        return (
            Reason.PREVIOUS_TX_MISMATCH,
            f"output {outpoint.vout} of the node's previous transaction is not the input's "
            "amount and script",
        )
    return None


def released_by_chain(
    before: SignedBefore, outpoint: OutPoint, unspent: Callable[[OutPoint], bool]
) -> bool:
    """Can the transaction signed before (spending ``outpoint``) never be mined any more?

    Yes when ``outpoint`` is still a confirmed unspent output (so the old transaction is not
    confirmed) while another of its inputs is no longer one: that input was spent by a
    *different*, confirmed transaction (every input this signer signs was a confirmed unspent
    output on its node when it signed), so the old transaction conflicts with the chain. A
    transaction merely broadcast, or stuck in a mempool, releases nothing: with
    ``include_mempool=false`` its inputs still look unspent.
    """
    if not unspent(outpoint):
        return False
    return any(not unspent(txin.prevout) for txin in before.tx.inputs if txin.prevout != outpoint)


# --------------------------------------------------------------------------- I/O


class RoundChain:
    """A ``ChainView`` for one round: each outpoint is asked once (the checks, the log release
    and the previous transactions then agree with one another)."""

    def __init__(self, chain: ChainView) -> None:
        self._chain = chain
        self._utxos: dict[OutPoint, ChainUtxo | None] = {}
        self._raw: dict[str, bytes | None] = {}
        self._tip: tuple[int, str] | None = None

    def tip(self) -> tuple[int, str]:
        if self._tip is None:
            self._tip = self._chain.tip()
        return self._tip

    def block_hash(self, height: int) -> str | None:
        return self._chain.block_hash(height)

    def utxo(self, outpoint: OutPoint) -> ChainUtxo | None:
        if outpoint not in self._utxos:
            self._utxos[outpoint] = self._chain.utxo(outpoint)
        return self._utxos[outpoint]

    def raw_transaction(self, txid_hex: str) -> bytes | None:
        if txid_hex in self._raw:
            return self._raw[txid_hex]
        return self._chain.raw_transaction(txid_hex)

    def prefetch(self, outpoints: Iterable[OutPoint]) -> None:
        """Ask the node for these outpoints at once, when it can answer a batch (``utxos``);
        later ``utxo`` calls answer from what it said."""
        batch = getattr(self._chain, "utxos", None)
        missing = list(dict.fromkeys(o for o in outpoints if o not in self._utxos))
        if batch is not None and missing:
            self._utxos.update(batch(missing))

    def prefetch_transactions(self, txids_hex: Iterable[str]) -> None:
        """The same for previous transactions (``raw_transactions``)."""
        batch = getattr(self._chain, "raw_transactions", None)
        missing = list(dict.fromkeys(t for t in txids_hex if t not in self._raw))
        if batch is not None and missing:
            self._raw.update(batch(missing))

    def unspent(self, outpoint: OutPoint) -> bool:
        return self.utxo(outpoint) is not None

    def confirmations(self, txid_hex: str) -> int:
        """The transaction's confirmations on the node (0 when the node cannot say)."""
        ask = getattr(self._chain, "confirmations", None)
        return 0 if ask is None else int(ask(txid_hex))


class ChainReleasedHistory:
    """The signing history as the policy should see it: an entry whose transaction the chain
    made unminable (``released_by_chain``) is not there. May raise ``ChainUnavailable``."""

    def __init__(self, history: SigningHistory, chain: RoundChain, min_conf: int = 6) -> None:
        self._history = history
        self._chain = chain
        self._min_conf = max(min_conf, 1)

    def transaction_confirmed(self, txid_hex: str) -> bool:
        """In a block of the node's best chain, at least ``min_conf`` deep (an operator's cancel
        releases a request for a new payment only then: a shallower replacement could still be
        reorganised out and the original mined)."""
        return self._chain.confirmations(txid_hex) >= self._min_conf

    def signed_spend(self, outpoint: OutPoint) -> SignedBefore | None:
        before = self._history.signed_spend(outpoint)
        if before is not None and released_by_chain(before, outpoint, self._chain.unspent):
            return None
        return before

    def amount_signed_since(self, since: float) -> int:
        return self._history.amount_signed_since(since)

    def acknowledged_deposit(self, outpoint: OutPoint) -> AcknowledgedDeposit | None:
        """Acknowledgements are never released: a credited deposit stays unrefundable."""
        return self._history.acknowledged_deposit(outpoint)

    def __getattr__(self, name: str) -> Any:
        """Whatever else the history offers, unchanged."""
        return getattr(self._history, name)


def check_round(
    chain: RoundChain,
    rules: ChainRules,
    kind: RoundKind,
    manifest: bytes,
    approval: Approval,
    decoded: Manifest | None = None,
) -> tuple[Psbt, ...] | list[Refusal]:
    """The approved round's PSBTs with each input's previous transaction attached, or the
    refusals. Raises ``ChainUnavailable`` when the node cannot answer. ``decoded``: the
    withdrawal manifest as the policy decoded it from ``manifest`` (else decoded here)."""
    pinned_height, pinned_hash, heights = _pinned(kind, manifest, decoded)
    node_height, _ = chain.tip()
    at_pinned = chain.block_hash(pinned_height) if pinned_height <= node_height else None
    # A cancel pins its original round's tip, which may be as old as the stuck transaction:
    # it must still be on this signer's best chain, at any depth.
    max_lag = node_height if is_cancel_manifest(manifest) else rules.max_tip_lag
    problem = tip_problem(pinned_height, pinned_hash, node_height, at_pinned, max_lag)
    if problem is not None:
        return [Refusal(*problem)]
    chain.prefetch(txin.prevout for psbt in approval.psbts for txin in psbt.tx.inputs)
    refusals: list[Refusal] = []
    for i, psbt in enumerate(approval.psbts):
        problem = locktime_problem(psbt.tx.locktime, node_height)
        if problem is not None:
            refusals.append(Refusal(problem[0], f"PSBT {i}: {problem[1]}", psbt_index=i))
        for j, claimed, txin in _inputs(psbt):
            found = chain.utxo(txin.prevout)
            problem = input_problem(claimed, heights.get(txin.prevout), found, rules.min_conf)
            if problem is not None:
                refusals.append(_input_refusal(problem, i, j, txin.prevout))
    if refusals:
        return refusals
    return _with_previous_transactions(chain, approval.psbts)


def _with_previous_transactions(
    chain: RoundChain, psbts: Sequence[Psbt]
) -> tuple[Psbt, ...] | list[Refusal]:
    """Each previous transaction is asked of the node, parsed and hashed once per round, however
    many inputs spend it."""
    chain.prefetch_transactions(txin.prevout.txid_hex for psbt in psbts for txin in psbt.tx.inputs)
    cache: dict[bytes, PreviousTx | bytes | None] = {}
    refusals: list[Refusal] = []
    attached: list[Psbt] = []
    for i, psbt in enumerate(psbts):
        inputs = list(psbt.inputs)
        for j, claimed, txin in _inputs(psbt):
            outpoint = txin.prevout
            if outpoint.txid not in cache:
                cache[outpoint.txid] = _previous(chain.raw_transaction(outpoint.txid_hex))
            previous = cache[outpoint.txid]
            problem = previous_tx_problem(previous, outpoint, claimed)
            if problem is not None:
                refusals.append(_input_refusal(problem, i, j, outpoint))
                continue
            assert isinstance(previous, PreviousTx)
            inputs[j] = replace(inputs[j], non_witness_utxo=previous.stripped)
        attached.append(replace(psbt, inputs=tuple(inputs)))
    return refusals or tuple(attached)


def _previous(raw: bytes | None) -> PreviousTx | bytes | None:
    """The node's transaction parsed, or as it came when it does not parse (the check says
    why)."""
    if raw is None:
        return None
    try:
        return PreviousTx.parse(raw)
    except VpoolError:
        return raw


def _inputs(psbt: Psbt) -> Iterable[tuple[int, TxOut, TxIn]]:
    for j, (inp, txin) in enumerate(zip(psbt.inputs, psbt.tx.inputs, strict=True)):
        # The policy approved the round: every input carries its witness UTXO.
        assert inp.witness_utxo is not None
        yield j, inp.witness_utxo, txin


def _input_refusal(problem: Problem, i: int, j: int, outpoint: OutPoint) -> Refusal:
    reason, message = problem
    return Refusal(
        reason,
        f"PSBT {i} input {j} ({outpoint}) {message}",
        Scope.INPUT,
        psbt_index=i,
        input_index=j,
    )


def _pinned(
    kind: RoundKind, manifest: bytes, decoded: Manifest | None
) -> tuple[int, str, dict[OutPoint, int]]:
    """The pinned tip (height, display hex) and the claimed heights of a decoded manifest (the
    policy decoded it already, so it decodes)."""
    if kind is RoundKind.REFUND:
        refund = decode_refund_manifest(manifest)
        return refund.tip_height, refund.tip_hash.hex(), {}
    if decoded is not None:
        withdrawal = decoded
    elif is_cancel_manifest(manifest):
        withdrawal = decode_cancel(manifest).original
    else:
        withdrawal = decode_manifest(manifest)
    heights = {u.outpoint: u.height for u in withdrawal.utxos}
    return withdrawal.tip_height, withdrawal.tip_hash.hex(), heights


__all__ = [
    "ChainReleasedHistory",
    "ChainRules",
    "ChainUnavailable",
    "RoundChain",
    "check_round",
    "input_problem",
    "locktime_problem",
    "previous_tx_problem",
    "released_by_chain",
    "tip_problem",
]
