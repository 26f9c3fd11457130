"""The safe-replacement rule: when may a transaction that spends a coin of an earlier, signed
transaction be signed too (docs/signer-policy.md, "Safe replacement").

A transaction that got a signature may be broadcast by anyone holding m signatures, so a second
spend of one of its inputs is signed only if, whichever of the two confirms, every payment is
made exactly once. Let T be the candidate and B1 … Bk the earlier transactions (the signer's own
signing log) that spend at least one input of T. T is a safe replacement iff, for every Bi:

1. T spends every input of Bi (it may spend more);
2. every payment of Bi (an output other than its change, by scriptPubKey and value) is still
   paid by T, the payments of B1 … Bk together a sub-multiset of T's payments, except a payment
   ``may_drop`` allows (a cancel the signer itself recorded, ``signer.policy``);
3. T's fee rate (whole fee per worst-case signed vsize) is higher than Bi's, and its fee is not
   lower (a replacement that pays less would not be relayed, and is no bump).

The signer's fee limits apply to T as to any transaction of a round (``signer.policy``). The
function is pure: the values and worst-case weights of T's inputs come from the caller (the
signer takes them from the PSBTs it rebuilt and checked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pool.tx import OutPoint, Transaction
from pool.weights import output_weight, tx_weight, vsize


class Replaced(Protocol):
    """An earlier signed transaction, as a signing log holds it."""

    @property
    def txid_hex(self) -> str: ...

    @property
    def tx(self) -> Transaction: ...

    @property
    def change_vout(self) -> int | None: ...


@dataclass(frozen=True)
class Coin:
    """An input of the candidate: its value and worst-case signed weight."""

    value: int
    weight: int


@dataclass(frozen=True)
class Verdict:
    """``problem``: (txid of the first transaction not safely replaced, why), or None.
    ``added``: the vouts of the candidate's payments beyond those it inherits (new payments:
    they count toward the limits). ``dropped``: the payments (txid, vout) of the replaced
    transactions the candidate no longer makes (each one allowed by ``may_drop``)."""

    problem: tuple[str, str] | None
    added: frozenset[int] = frozenset()
    dropped: tuple[tuple[str, int], ...] = ()


def payments(tx: Transaction, change_vout: int | None) -> list[tuple[int, bytes, int]]:
    """``(vout, scriptPubKey, value)`` of every output but the change."""
    return [(k, o.script_pubkey, o.value) for k, o in enumerate(tx.outputs) if k != change_vout]


def fee_and_vsize(tx: Transaction, coins: Mapping[OutPoint, Coin]) -> tuple[int, int]:
    """Whole fee and worst-case signed vsize of ``tx``, whose inputs are all in ``coins``."""
    spent = [coins[i.prevout] for i in tx.inputs]
    fee = sum(c.value for c in spent) - sum(o.value for o in tx.outputs)
    outputs_weight = sum(output_weight(len(o.script_pubkey)) for o in tx.outputs)
    weight = tx_weight(
        len(tx.inputs), len(tx.outputs), sum(c.weight for c in spent), outputs_weight
    )
    return fee, vsize(weight)


def _never(txid_hex: str, vout: int) -> bool:
    return False


def check_replacement(
    replaced: Sequence[Replaced],
    tx: Transaction,
    change_vout: int | None,
    coins: Mapping[OutPoint, Coin],
    may_drop: Callable[[str, int], bool] = _never,
) -> Verdict:
    """Is ``tx`` (its inputs' values and weights in ``coins``) a safe replacement of every
    transaction of ``replaced``? See the module's rules; the first broken one is named."""
    inputs = {i.prevout for i in tx.inputs}
    unmatched: dict[tuple[bytes, int], list[int]] = {}
    for vout, script, value in payments(tx, change_vout):
        unmatched.setdefault((script, value), []).append(vout)
    fee, size = fee_and_vsize(tx, coins)
    dropped: list[tuple[str, int]] = []
    for before in replaced:
        missing = [i.prevout for i in before.tx.inputs if i.prevout not in inputs]
        if missing:
            return Verdict((before.txid_hex, f"it does not spend its input {missing[0]}"))
        for vout, script, value in payments(before.tx, before.change_vout):
            left = unmatched.get((script, value))
            if left:
                left.pop(0)
            elif may_drop(before.txid_hex, vout):
                dropped.append((before.txid_hex, vout))
            else:
                return Verdict(
                    (
                        before.txid_hex,
                        f"it does not pay its output {vout} ({value} sat to {script.hex()})",
                    )
                )
        old_fee, old_size = fee_and_vsize(before.tx, coins)
        if fee * old_size <= old_fee * size or fee < old_fee:
            return Verdict(
                (
                    before.txid_hex,
                    f"its fee ({fee} sat for {size} vB) is not above that of the transaction "
                    f"it replaces ({old_fee} sat for {old_size} vB)",
                )
            )
    added = frozenset(vout for vouts in unmatched.values() for vout in vouts)
    return Verdict(None, added, tuple(dropped))
