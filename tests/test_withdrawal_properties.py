"""Property tests of the withdrawal algorithm over random manifests (hypothesis)."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pool.manifest import Manifest, decode_manifest, encode_manifest
from pool.series import SeriesState
from pool.weights import vsize
from pool.withdrawal import RequestStatus, RoundPlan, build_round
from tests.factories import (
    BTC,
    make_series,
    manifest,
    p2pkh,
    p2tr,
    p2wpkh,
    request,
    sign_first_m,
    utxo,
)

SERIES_CHOICES = [
    (make_series(1, 2, (0, 1, 2)),),
    (make_series(1, 1, (3,)),),
    (make_series(1, 3, (4, 5, 6, 7, 8)),),
    (make_series(1, 2, (0, 1, 2), SeriesState.RETIRING), make_series(2, 2, (3, 4, 5))),
]
SCRIPTS = [p2wpkh, p2tr, p2pkh]


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    series = draw(st.sampled_from(SERIES_CHOICES))
    ids = [s.id for s in series]
    tip = 1000
    dust = draw(st.integers(294, 2_000))
    n_utxos = draw(st.integers(0, 30))
    utxos = [
        utxo(
            i,
            draw(st.one_of(st.integers(1, 10_000), st.integers(10_000, 3 * BTC))),
            draw(st.integers(0, tip)),
            series=draw(st.sampled_from(ids)),
            branch=draw(st.integers(0, 1)),
            index=draw(st.integers(0, 50)),
            vout=draw(st.integers(0, 3)),
        )
        for i in range(n_utxos)
    ]
    clients = ["alice", "bob", "carol", "dave"]
    n_requests = draw(st.integers(0, 20))
    requests = [
        request(
            draw(st.sampled_from(clients)),
            f"r{k}",
            draw(st.one_of(st.integers(dust, 100_000), st.integers(dust, 2 * BTC))),
            extra_fee=draw(st.sampled_from([0, 0, 0, 1, 250, 10_000])),
            script=draw(st.sampled_from(SCRIPTS)),
        )
        for k in range(n_requests)
    ]
    return manifest(
        series,
        utxos,
        requests,
        tip_height=tip,
        fee_rate=draw(st.integers(1_000, 60_000)),
        change_index=[(i, draw(st.integers(0, 100))) for i in ids],
        dust_limit=dust,
        max_weight=draw(st.sampled_from([4_000, 6_000, 10_000, 40_000, 400_000])),
        min_conf=draw(st.integers(1, 10)),
        max_tx_inputs=draw(st.sampled_from([0, 0, 0, 1, 2, 5])),
        max_tx_payments=draw(st.sampled_from([0, 0, 0, 1, 3])),
    )


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def input_value(plan: RoundPlan, t: int) -> int:
    return sum(u.value for u in plan.transactions[t].inputs)


@PROPERTY
@given(manifests())
def test_value_is_conserved_in_every_transaction(m: Manifest) -> None:
    plan = build_round(m)
    for i, t in enumerate(plan.transactions):
        assert input_value(plan, i) == t.psbt.tx.total_output_value + t.fee
        assert [inp.witness_utxo.value for inp in t.psbt.inputs if inp.witness_utxo] == [
            u.value for u in t.inputs
        ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_fee_covers_the_rate_for_the_signed_transaction(m: Manifest) -> None:
    plan = build_round(m)
    for t in plan.transactions:
        signed = sign_first_m(t.psbt, m)
        assert signed.weight <= t.max_weight <= m.max_weight
        assert t.fee * 1000 >= m.fee_rate * vsize(signed.weight)


@PROPERTY
@given(manifests())
def test_no_output_is_below_the_dust_limit(m: Manifest) -> None:
    for t in build_round(m).transactions:
        assert all(o.value >= m.dust_limit for o in t.psbt.tx.outputs)


@PROPERTY
@given(manifests())
def test_fee_shares_add_up_to_the_fee(m: Manifest) -> None:
    for t in build_round(m).transactions:
        assert sum(share for _, share in t.fee_shares) == t.fee
        assert all(share >= 0 for _, share in t.fee_shares)


@PROPERTY
@given(manifests())
def test_every_request_is_paid_exactly_or_deferred(m: Manifest) -> None:
    plan = build_round(m)
    outputs = {
        (t.txid_hex, vout): o for t in plan.transactions for vout, o in enumerate(t.psbt.tx.outputs)
    }
    for req, outcome in zip(m.requests, plan.requests, strict=True):
        assert (outcome.client_id, outcome.request_id) == (req.client_id, req.request_id)
        if outcome.status is RequestStatus.DEFERRED:
            assert outcome.outputs == ()
            continue
        assert sum(o.amount for o in outcome.outputs) == req.amount
        assert (outcome.status is RequestStatus.SPLIT) == (len(outcome.outputs) > 1)
        for o in outcome.outputs:
            assert outputs[(o.txid_hex, o.vout)].value == o.amount
            assert outputs[(o.txid_hex, o.vout)].script_pubkey == req.script_pubkey


@PROPERTY
@given(manifests())
def test_no_transaction_passes_the_manifests_shape_caps(m: Manifest) -> None:
    for t in build_round(m).transactions:
        payments = len(t.psbt.tx.outputs) - (t.change is not None)
        assert not 0 < m.max_tx_inputs < len(t.inputs)
        assert not 0 < m.max_tx_payments < payments


@PROPERTY
@given(manifests())
def test_every_transaction_spends_one_series(m: Manifest) -> None:
    for t in build_round(m).transactions:
        assert len({u.series_id for u in t.inputs}) == 1


@PROPERTY
@given(manifests())
def test_no_utxo_is_spent_twice(m: Manifest) -> None:
    spent = [str(u.outpoint) for t in build_round(m).transactions for u in t.inputs]
    assert len(spent) == len(set(spent))


@PROPERTY
@given(manifests(), st.randoms(use_true_random=False))
def test_shuffling_the_manifest_lists_changes_nothing(m: Manifest, rnd: random.Random) -> None:
    def shuffled(items: tuple[object, ...]) -> tuple[object, ...]:
        out = list(items)
        rnd.shuffle(out)
        return tuple(out)

    other = replace(
        m,
        series=shuffled(m.series),
        utxos=shuffled(m.utxos),
        requests=shuffled(m.requests),
        change_index=shuffled(m.change_index),
    )
    assert encode_manifest(other) == encode_manifest(m)
    ours, theirs = build_round(m), build_round(other)
    assert [t.psbt.serialize() for t in ours.transactions] == [
        t.psbt.serialize() for t in theirs.transactions
    ]


@PROPERTY
@given(manifests())
def test_encoding_round_trips(m: Manifest) -> None:
    data = encode_manifest(m)
    assert decode_manifest(data) == m
    assert encode_manifest(decode_manifest(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3_000), st.integers(294, 1_000), st.integers(1_000, 3_000))
def test_change_around_the_dust_limit_never_makes_a_dust_output(
    shortfall: int, dust: int, fee_rate: int
) -> None:
    m = manifest(
        SERIES_CHOICES[0],
        [utxo(1, BTC, 100)],
        [request("alice", "1", BTC - shortfall)],
        fee_rate=fee_rate,
        dust_limit=dust,
    )
    for t in build_round(m).transactions:
        assert all(o.value >= dust for o in t.psbt.tx.outputs)
        assert t.fee * 1000 >= fee_rate * vsize(t.max_weight)


@st.composite
def short_manifests(draw: st.DrawFn) -> Manifest:
    """Many requests and a few UTXOs: funds are short, most rounds defer (rule D1)."""
    series = draw(st.sampled_from(SERIES_CHOICES))
    ids = [s.id for s in series]
    dust = draw(st.integers(294, 1_000))
    utxos = [
        utxo(
            i,
            draw(st.integers(10_000, 2 * BTC)),
            draw(st.integers(1, 990)),
            series=draw(st.sampled_from(ids)),
            index=i,
        )
        for i in range(draw(st.integers(1, 5)))
    ]
    requests = [
        request(
            f"client{k % 7}",
            f"r{k}",
            draw(st.one_of(st.integers(dust, 3 * dust), st.integers(dust, 5_000_000))),
            extra_fee=draw(st.sampled_from([0, 0, 0, 1, 1_000])),
            script=draw(st.sampled_from(SCRIPTS)),
        )
        for k in range(draw(st.integers(50, 300)))
    ]
    return manifest(
        series,
        utxos,
        requests,
        fee_rate=draw(st.integers(1_000, 100_000)),
        change_index=[(i, 0) for i in ids],
        dust_limit=dust,
        max_weight=draw(st.sampled_from([4_000, 10_000, 400_000])),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(short_manifests(), st.data())
def test_the_deferred_requests_are_the_largest_and_deferring_them_first_changes_nothing(
    m: Manifest, data: st.DataObject
) -> None:
    plan = build_round(m)
    deferred = [r for r, o in zip(m.requests, plan.requests, strict=True) if not o.outputs]
    largest_first = sorted(m.requests, key=lambda r: (-r.amount, r.key))
    assert sorted(deferred, key=lambda r: (-r.amount, r.key)) == largest_first[: len(deferred)]
    gone = data.draw(st.integers(0, len(deferred)))
    fewer = replace(m, requests=tuple(largest_first[gone:]))
    assert [t.psbt.serialize() for t in build_round(fewer).transactions] == [
        t.psbt.serialize() for t in plan.transactions
    ]
