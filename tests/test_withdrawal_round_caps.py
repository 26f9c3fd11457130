"""The coordinator keeps each withdrawal round within the signers' caps on UTXOs: it keeps the
UTXOs a round spends first and leaves the others for a later round."""

from __future__ import annotations

from coordinator.withdrawal_rounds import within_inputs
from pool.manifest import Manifest
from pool.series import SeriesState
from pool.withdrawal import RequestStatus, build_round, eligible_inputs
from tests.factories import BTC, make_series, manifest, request, utxo

OLD = make_series(1, 2, (0, 1, 2), SeriesState.RETIRING)
NEW = make_series(2, 2, (3, 4, 5))
COINS = [
    utxo(1, BTC, 300, series=2),
    utxo(2, BTC, 100, series=2),
    utxo(3, BTC, 200, series=1),
    utxo(4, BTC, 50, series=2),
    utxo(5, 100, 10, series=2),  # not eligible: below the dust limit
]


def round_of(*requests_btc: float) -> Manifest:
    return manifest(
        [OLD, NEW],
        COINS,
        [request("alice", str(i), int(a * BTC)) for i, a in enumerate(requests_btc)],
        change_index=((2, 0),),
    )


def test_a_manifest_over_the_cap_keeps_the_utxos_first_in_spending_order() -> None:
    m = round_of(0.5)
    capped = within_inputs(m, 2)
    assert set(capped.utxos) == set(eligible_inputs(m)[:2])
    assert [u.series_id for u in eligible_inputs(capped)] == [1, 2]  # retiring first, then oldest
    assert [t.psbt.serialize() for t in build_round(capped).transactions] == [
        t.psbt.serialize() for t in build_round(m).transactions
    ]


def test_a_manifest_within_the_cap_is_unchanged() -> None:
    m = round_of(0.5)
    assert within_inputs(m, len(COINS)) is m


def test_a_round_needing_more_than_the_cap_defers_what_the_kept_utxos_cannot_pay() -> None:
    m = round_of(0.9, 0.9, 0.9)
    capped = within_inputs(m, 2)
    assert len(capped.utxos) == 2
    assert [o.status for o in build_round(m).requests].count(RequestStatus.DEFERRED) == 0
    assert [o.status for o in build_round(capped).requests].count(RequestStatus.DEFERRED) == 1
