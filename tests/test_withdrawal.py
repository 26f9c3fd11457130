"""The withdrawal algorithm's rules, one behaviour per test (see docs/withdrawal-algorithm.md)."""

from __future__ import annotations

from pool.manifest import WithdrawalRequest, request_key
from pool.script import p2wsh_script_pubkey
from pool.series import CHANGE, SeriesState
from pool.withdrawal import (
    SEQUENCE_RBF,
    RequestStatus,
    RoundPlan,
    build_round,
    eligible_inputs,
    input_spend_cost,
)
from tests.factories import BTC, make_series, manifest, p2tr, request, utxo

S1 = make_series(1, 2, (0, 1, 2))


def test_inputs_need_min_conf_confirmations() -> None:
    m = manifest([S1], [utxo(1, BTC, 995), utxo(2, BTC, 996)], [], tip_height=1000, min_conf=6)
    assert [u.height for u in eligible_inputs(m)] == [995]


def test_unconfirmed_inputs_are_not_eligible() -> None:
    m = manifest([S1], [utxo(1, BTC, 0)], [], min_conf=1)
    assert eligible_inputs(m) == []


def test_dust_inputs_are_not_eligible() -> None:
    m = manifest([S1], [utxo(1, 545, 10)], [], dust_limit=546, fee_rate=1000)
    assert eligible_inputs(m) == []


def test_inputs_that_cost_more_than_they_bring_are_not_eligible() -> None:
    cost = input_spend_cost(S1, 50_000)
    m = manifest(
        [S1], [utxo(1, cost, 10), utxo(2, cost + 1, 10)], [], dust_limit=546, fee_rate=50_000
    )
    assert [u.value for u in eligible_inputs(m)] == [cost + 1]


def test_oldest_inputs_are_spent_first() -> None:
    m = manifest([S1], [utxo(1, BTC, 300), utxo(2, BTC, 100), utxo(3, BTC, 200)], [])
    assert [u.height for u in eligible_inputs(m)] == [100, 200, 300]


def test_inputs_at_one_height_are_ordered_by_displayed_txid_then_vout() -> None:
    m = manifest([S1], [utxo(n, BTC, 100, vout=v) for n in range(4) for v in (1, 0)], [])
    order = [(u.outpoint.txid_hex, u.outpoint.vout) for u in eligible_inputs(m)]
    assert order == sorted(order)


def test_retiring_series_are_spent_before_the_active_one() -> None:
    old = make_series(1, 2, (3, 4, 5), SeriesState.RETIRING)
    new = make_series(2, 2, (0, 1, 2))
    m = manifest(
        [old, new],
        [utxo(1, BTC, 100, series=2), utxo(2, BTC, 900, series=1)],
        [],
        change_index=((2, 0),),
    )
    assert [u.series_id for u in eligible_inputs(m)] == [1, 2]


def _rotation(*requests_btc: float) -> RoundPlan:
    """A retiring series with two 1 BTC coins, the active one with one."""
    old = make_series(1, 2, (3, 4, 5), SeriesState.RETIRING)
    new = make_series(2, 2, (0, 1, 2))
    coins = [utxo(1, BTC, 100, series=1), utxo(2, BTC, 101, series=1), utxo(3, BTC, 102, series=2)]
    reqs = [request("a", str(k), int(amount * BTC)) for k, amount in enumerate(requests_btc)]
    return build_round(manifest([old, new], coins, reqs, change_index=((2, 0),)))


def test_a_transaction_spends_the_coins_of_one_series_only() -> None:
    plan = _rotation(2.5)
    assert [{u.series_id for u in t.inputs} for t in plan.transactions] == [{1}, {2}]
    assert plan.requests[0].status is RequestStatus.SPLIT


def test_a_sweeps_change_to_the_active_series_carries_no_key_paths() -> None:
    [sweep] = _rotation(0.5).transactions
    assert {u.series_id for u in sweep.inputs} == {1}
    assert sweep.change is not None and sweep.change.series_id == 2
    change = sweep.psbt.outputs[sweep.change.vout]
    assert not change.bip32_derivations and change.witness_script is None
    old_keys = {k.origin.fingerprint for k in make_series(1, 2, (3, 4, 5)).keys}
    assert {origin.fingerprint for origin in sweep.psbt.xpubs.values()} == old_keys


def test_change_to_the_series_spent_from_keeps_its_key_paths() -> None:
    [t] = build_round(
        manifest([S1], [utxo(0, BTC, 100)], [request("a", "1", BTC // 2)])
    ).transactions
    assert t.change is not None
    assert len(t.psbt.outputs[t.change.vout].bip32_derivations) == 3


def test_requests_are_paid_in_request_key_order() -> None:
    reqs = [request(c, "1", 1_000_000) for c in ("alice", "bob", "carol", "dave")]
    plan = build_round(manifest([S1], [utxo(1, BTC, 100)], reqs))
    keys = [request_key(r.client_id, r.request_id) for r in plan.requests]
    assert keys == sorted(keys)
    vouts = [r.outputs[0].vout for r in plan.requests]
    assert vouts == sorted(vouts)


def test_largest_request_is_deferred_when_funds_are_short() -> None:
    reqs = [
        request("a", "1", 30_000_000),
        request("b", "1", 80_000_000),
        request("c", "1", 40_000_000),
    ]
    plan = build_round(manifest([S1], [utxo(1, BTC, 100)], reqs))
    assert plan.outcome("b", "1").status is RequestStatus.DEFERRED
    assert plan.outcome("a", "1").status is RequestStatus.SUCCESS
    assert plan.outcome("c", "1").status is RequestStatus.SUCCESS


def test_equal_largest_requests_defer_the_lower_request_key() -> None:
    reqs = [request("a", "1", 60_000_000), request("b", "1", 60_000_000)]
    plan = build_round(manifest([S1], [utxo(1, BTC, 100)], reqs))
    lower = min(("a", "b"), key=lambda c: request_key(c, "1"))
    higher = ({"a", "b"} - {lower}).pop()
    assert plan.outcome(lower, "1").status is RequestStatus.DEFERRED
    assert plan.outcome(higher, "1").status is RequestStatus.SUCCESS


def test_fees_are_counted_when_deciding_what_to_defer() -> None:
    reqs = [request("a", "1", 60_000_000), request("b", "1", 40_000_000)]
    plan = build_round(manifest([S1], [utxo(1, BTC, 100)], reqs))
    assert plan.outcome("a", "1").status is RequestStatus.DEFERRED
    assert plan.outcome("b", "1").status is RequestStatus.SUCCESS


def test_a_request_can_be_paid_beside_a_larger_one_and_deferred_alone() -> None:
    """Why rule D1 packs again after each deferral instead of bisecting on their number: here
    packing succeeds with both requests and fails once the larger one is gone. The first eight
    inputs are worth little; a transaction full of them carries 563 sat of a P2WPKH output but
    only 466 sat of a P2TR one (a larger output, a larger fee), below the 546 sat dust limit."""
    small_coins = [utxo(i, 600, 1 + i, index=i) for i in range(8)]
    big_coin = utxo(100, BTC, 100, index=100)
    larger = next(
        r for k in range(100) if (r := request("v", f"v{k}", 500_000)).key < request_key("r", "r")
    )
    smaller = request("r", "r", 100_000, script=p2tr)

    def plan(*requests: WithdrawalRequest) -> RoundPlan:
        m = manifest([S1], [*small_coins, big_coin], requests, fee_rate=4_600, max_weight=4_000)
        return build_round(m)

    both = plan(larger, smaller)
    assert both.outcome("v", larger.request_id).status is RequestStatus.SPLIT
    assert both.outcome("v", larger.request_id).outputs[0].amount == 563
    assert both.outcome("r", "r").status is RequestStatus.SUCCESS
    assert plan(smaller).outcome("r", "r").status is RequestStatus.DEFERRED


def test_transactions_are_version_2_locked_to_the_tip_and_replaceable() -> None:
    plan = build_round(manifest([S1], [utxo(1, BTC, 100)], [request("a", "1", 1_000_000)]))
    tx = plan.transactions[0].psbt.tx
    assert (tx.version, tx.locktime) == (2, 1000)
    assert {i.sequence for i in tx.inputs} == {SEQUENCE_RBF}


def test_change_pays_the_active_series_next_change_address() -> None:
    m = manifest([S1], [utxo(1, BTC, 100)], [request("a", "1", 1_000_000)], change_index=((1, 7),))
    plan = build_round(m)
    t = plan.transactions[0]
    assert t.change is not None and (t.change.series_id, t.change.index) == (1, 7)
    derived = S1.derive(CHANGE, 7)
    assert t.psbt.tx.outputs[-1].script_pubkey == derived.script_pubkey
    assert t.psbt.outputs[-1].witness_script == derived.witness_script
    assert plan.next_change_index == 8


def test_dust_change_goes_to_the_fee() -> None:
    # 1 sat/vB for 189 vB leaves 311 sat of change, below the 546 sat dust limit
    m = manifest([S1], [utxo(1, 10_000_000, 100)], [request("a", "1", 9_999_500)], fee_rate=1000)
    t = build_round(m).transactions[0]
    assert t.change is None
    assert t.fee == 500
    assert len(t.psbt.tx.outputs) == 1


def test_weight_limit_splits_the_round_into_several_transactions() -> None:
    utxos = [utxo(i, BTC, 100 + i, index=i) for i in range(12)]
    reqs = [request("a", str(k), 50_000_000) for k in range(12)]
    plan = build_round(manifest([S1], utxos, reqs, max_weight=4_000))
    assert len(plan.transactions) > 1
    assert all(t.max_weight <= 4_000 for t in plan.transactions)
    assert all(r.status is RequestStatus.SUCCESS for r in plan.requests)


def test_a_request_too_large_for_one_transaction_is_split() -> None:
    utxos = [utxo(i, BTC, 100 + i, index=i) for i in range(12)]
    plan = build_round(manifest([S1], utxos, [request("a", "big", 10 * BTC)], max_weight=4_000))
    outcome = plan.outcome("a", "big")
    assert outcome.status is RequestStatus.SPLIT
    assert sum(o.amount for o in outcome.outputs) == 10 * BTC
    assert len({o.txid_hex for o in outcome.outputs}) == len(outcome.outputs)


def test_a_cap_on_inputs_per_transaction_splits_the_round() -> None:
    utxos = [utxo(i, BTC // 4, 100 + i, index=i) for i in range(12)]
    reqs = [request("a", str(k), BTC // 2) for k in range(4)]
    plan = build_round(manifest([S1], utxos, reqs, max_tx_inputs=3))
    assert len(plan.transactions) == 4
    assert all(len(t.inputs) <= 3 for t in plan.transactions)
    assert all(r.status is RequestStatus.SUCCESS for r in plan.requests)


def test_a_request_larger_than_the_inputs_one_transaction_may_take_is_split() -> None:
    utxos = [utxo(i, BTC, 100 + i, index=i) for i in range(6)]
    plan = build_round(manifest([S1], utxos, [request("a", "big", 4 * BTC)], max_tx_inputs=2))
    outcome = plan.outcome("a", "big")
    assert outcome.status is RequestStatus.SPLIT
    assert sum(o.amount for o in outcome.outputs) == 4 * BTC
    assert all(len(t.inputs) <= 2 for t in plan.transactions)


def test_a_cap_on_payments_per_transaction_splits_the_round() -> None:
    utxos = [utxo(i, BTC, 100 + i, index=i) for i in range(3)]
    reqs = [request("a", str(k), 10_000) for k in range(7)]
    plan = build_round(manifest([S1], utxos, reqs, max_tx_payments=3))
    payments = [len(t.psbt.tx.outputs) - (t.change is not None) for t in plan.transactions]
    assert payments == [3, 3, 1]
    assert all(r.status is RequestStatus.SUCCESS for r in plan.requests)


def test_extra_fee_is_paid_once_by_its_client() -> None:
    utxos = [utxo(i, BTC, 100 + i, index=i) for i in range(12)]
    reqs = [request("a", "big", 10 * BTC, extra_fee=12_345), request("b", "1", 1_000_000)]
    plan = build_round(manifest([S1], utxos, reqs, max_weight=4_000))
    no_extra = build_round(
        manifest(
            [S1],
            utxos,
            [request("a", "big", 10 * BTC), request("b", "1", 1_000_000)],
            max_weight=4_000,
        )
    )
    assert plan.total_fee == no_extra.total_fee + 12_345


def test_fee_shares_follow_the_amounts_paid() -> None:
    reqs = [request("a", "1", 30_000_000), request("b", "1", 10_000_000)]
    t = build_round(manifest([S1], [utxo(1, BTC, 100)], reqs)).transactions[0]
    shares = dict(t.fee_shares)
    assert shares["a"] + shares["b"] == t.fee
    assert abs(shares["a"] - 3 * shares["b"]) <= 4


def test_psbt_inputs_carry_utxo_script_and_every_key_derivation() -> None:
    m = manifest([S1], [utxo(1, BTC, 100, branch=0, index=9)], [request("a", "1", 1_000_000)])
    psbt = build_round(m).transactions[0].psbt
    inp = psbt.inputs[0]
    derived = S1.derive(0, 9)
    assert inp.witness_utxo is not None and inp.witness_utxo.value == BTC
    assert inp.witness_utxo.script_pubkey == p2wsh_script_pubkey(derived.witness_script)
    assert inp.witness_script == derived.witness_script
    assert sorted(inp.bip32_derivations) == sorted(derived.pubkeys)
    assert {o.path[-2:] for o in inp.bip32_derivations.values()} == {(0, 9)}
    assert len(psbt.xpubs) == 3


def test_an_empty_round_has_no_transactions() -> None:
    plan = build_round(manifest([S1], [utxo(1, BTC, 100)], [], change_index=((1, 5),)))
    assert plan.transactions == ()
    assert plan.next_change_index == 5


def test_without_eligible_inputs_every_request_is_deferred() -> None:
    plan = build_round(manifest([S1], [utxo(1, BTC, 999)], [request("a", "1", 1_000_000)]))
    assert [r.status for r in plan.requests] == [RequestStatus.DEFERRED]
    assert plan.transactions == ()
