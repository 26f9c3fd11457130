"""The fee ladder (pool.ladder, rules L1-L4): every rung a safe replacement of the one below,
within what its manifest allows, its fee shared as the transaction's."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pool.errors import ManifestError
from pool.manifest import Manifest, decode_manifest, encode_manifest
from pool.psbt import Psbt
from pool.replacement import Coin, check_replacement
from pool.script import parse_multisig_script
from pool.tx import OutPoint
from pool.weights import multisig_input_weight
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, manifest, request, utxo

S1 = make_series(1, 2, (0, 1, 2))


def laddered(rungs: int = 3, step: int = 2_000, **changes: object) -> Manifest:
    base = manifest(
        [S1],
        [utxo(i, BTC, 100 + i, index=i) for i in range(2)],
        [request("alice", "1", 30_000_000), request("bob", "1", 10_000_000)],
        fee_rate=1000,
    )
    return replace(base, ladder_rungs=rungs, ladder_step=step, **changes)  # type: ignore[arg-type]


def coins(psbt: Psbt) -> dict[OutPoint, Coin]:
    found = {}
    for txin, inp in zip(psbt.tx.inputs, psbt.inputs, strict=True):
        assert inp.witness_utxo is not None and inp.witness_script is not None
        m, keys = parse_multisig_script(inp.witness_script)
        found[txin.prevout] = Coin(inp.witness_utxo.value, multisig_input_weight(m, len(keys)))
    return found


class _Signed:
    def __init__(self, psbt: Psbt, change_vout: int | None) -> None:
        self.tx, self.change_vout, self.txid_hex = psbt.tx, change_vout, psbt.tx.txid_hex


def test_no_rungs_means_no_ladder() -> None:
    assert build_round(laddered(rungs=0, step=0)).rungs == ()


def test_each_transaction_gets_its_rungs_at_rising_fee_rates() -> None:
    plan = build_round(laddered())
    assert [(r.of, r.step, r.fee_rate) for r in plan.rungs] == [
        (0, 1, 3000),
        (0, 2, 5000),
        (0, 3, 7000),
    ]


def test_each_rung_is_a_safe_replacement_of_the_one_below() -> None:
    plan = build_round(laddered())
    base = plan.transactions[0]
    below = _Signed(base.psbt, plan.change_vouts[0])
    for rung in plan.rungs:
        verdict = check_replacement([below], rung.psbt.tx, below.change_vout, coins(rung.psbt))
        assert (verdict.problem, verdict.added) == (None, frozenset())
        below = _Signed(rung.psbt, below.change_vout)


def test_a_rung_changes_only_the_change_output() -> None:
    plan = build_round(laddered())
    base, rung = plan.transactions[0].psbt, plan.rungs[0].psbt
    change = plan.change_vouts[0]
    assert base.tx.inputs == rung.tx.inputs and base.inputs == rung.inputs
    others = [o for k, o in enumerate(base.tx.outputs) if k != change]
    assert others == [o for k, o in enumerate(rung.tx.outputs) if k != change]
    assert change is not None
    assert base.tx.outputs[change].value - rung.tx.outputs[change].value == (
        plan.rungs[0].fee - plan.transactions[0].fee
    )


def test_rung_fee_shares_add_up_to_the_rung_fee() -> None:
    for rung in build_round(laddered()).rungs:
        assert sum(amount for _, amount in rung.fee_shares) == rung.fee


def test_the_bump_is_shared_in_proportion_to_the_amounts_paid() -> None:
    plan = build_round(laddered())
    base = dict(plan.transactions[0].fee_shares)
    top = dict(plan.rungs[-1].fee_shares)
    extra = {c: top[c] - base[c] for c in top}
    assert abs(extra["alice"] - 3 * extra["bob"]) <= 3


def test_the_ladder_stops_before_the_change_falls_below_dust() -> None:
    one = manifest([S1], [utxo(1, BTC, 100)], [request("a", "1", BTC - 10_000)], fee_rate=1000)
    plan = build_round(replace(one, ladder_rungs=10, ladder_step=5_000))
    change = plan.change_vouts[0]
    assert change is not None and 0 < len(plan.rungs) < 10
    assert all(r.psbt.tx.outputs[change].value >= one.dust_limit for r in plan.rungs)


def test_the_ladder_is_part_of_the_manifest_and_its_hash() -> None:
    m = laddered()
    assert decode_manifest(encode_manifest(m)) == m
    assert build_round(m).manifest_hash != build_round(laddered(step=3_000)).manifest_hash


@pytest.mark.parametrize(
    ("rungs", "step", "field"),
    [(11, 2_000, "ladder_rungs"), (3, 999, "ladder_step"), (0, 1_000, "ladder_step")],
)
def test_ladder_settings_out_of_range_are_refused_naming_the_field(
    rungs: int, step: int, field: str
) -> None:
    with pytest.raises(ManifestError, match=field):
        laddered(rungs=rungs, step=step)
