"""The fee ladder (rules L1-L4 of docs/withdrawal-algorithm.md): replacements of a round's
transactions at rising fee rates, built from the manifest like the transactions themselves and
signed in the same ceremony, so that a stuck transaction is bumped without anyone at a device.

Rung k (1 ≤ k ≤ ``manifest.ladder_rungs``) of a transaction with change is the same
transaction (same inputs, same payments, same output order, same locktime and PSBT fields) whose
change is lower by ``bump(k) = fee_for_weight(W, r + k·s) − fee_for_weight(W, r)``, W the
transaction's worst-case weight (rule F1), r the manifest's fee rate and s its ladder step. A
rung whose change would fall below the dust limit is not built, nor any rung above it; a
transaction without change has no ladder. Each rung is a safe replacement of the one below it
(``pool.replacement``): same inputs, same payments, higher fee rate. Its fee shares are the
transaction's plus ``bump(k)`` split among the transaction's clients by the largest-remainder
rule, in proportion to the amounts the transaction pays each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pool.fees import largest_remainder
from pool.psbt import Psbt
from pool.weights import fee_for_weight


@dataclass(frozen=True)
class Rung:
    of: int
    """Index of the transaction it replaces, in the plan's transactions."""
    step: int
    """1 for the first rung."""
    fee_rate: int
    """Satoshis per 1000 vB: the manifest's fee rate plus ``step`` ladder steps."""
    psbt: Psbt
    fee: int
    fee_shares: tuple[tuple[str, int], ...]
    """(client id, satoshis) in ascending client id; they add up to ``fee``."""

    @property
    def txid_hex(self) -> str:
        return self.psbt.tx.txid_hex


def rung_fee_rate(fee_rate: int, ladder_step: int, step: int) -> int:
    """Rule L1: the fee rate of rung ``step``."""
    return fee_rate + step * ladder_step


def bump(max_weight: int, fee_rate: int, ladder_step: int, step: int) -> int:
    """Rule L2: the satoshis rung ``step`` takes from the change on top of the transaction's fee."""
    top = fee_for_weight(max_weight, rung_fee_rate(fee_rate, ladder_step, step))
    return top - fee_for_weight(max_weight, fee_rate)


def build_rungs(
    *,
    of: int,
    psbt: Psbt,
    change_vout: int | None,
    fee: int,
    max_weight: int,
    fee_shares: tuple[tuple[str, int], ...],
    paid_by_client: Mapping[str, int],
    fee_rate: int,
    ladder_rungs: int,
    ladder_step: int,
    dust_limit: int,
) -> tuple[Rung, ...]:
    """Rules L1-L4 for one transaction: its rungs, lowest first."""
    if change_vout is None:
        return ()
    change = psbt.tx.outputs[change_vout]
    base_shares = dict(fee_shares)
    rungs = []
    for step in range(1, ladder_rungs + 1):
        extra = bump(max_weight, fee_rate, ladder_step, step)
        if change.value - extra < dust_limit:  # L3: the ladder stops at dust change
            break
        outputs = list(psbt.tx.outputs)
        outputs[change_vout] = replace(change, value=change.value - extra)
        rung_psbt = replace(psbt, tx=replace(psbt.tx, outputs=tuple(outputs)))
        split = largest_remainder(extra, paid_by_client)  # L4
        shares = tuple(
            (client, base_shares.get(client, 0) + split.get(client, 0))
            for client in sorted(base_shares.keys() | split.keys(), key=str.encode)
        )
        rungs.append(
            Rung(
                of=of,
                step=step,
                fee_rate=rung_fee_rate(fee_rate, ladder_step, step),
                psbt=rung_psbt,
                fee=fee + extra,
                fee_shares=shares,
            )
        )
    return tuple(rungs)
