"""The coordinator keeps each withdrawal round within the signers' caps on UTXOs: it keeps the
UTXOs a round spends first and leaves the others for a later round. It caps each transaction's
shape at the smallest limit its configuration and the signers' devices set."""

from __future__ import annotations

from coordinator.config import RoundsConfig
from coordinator.withdrawal_rounds import shape_caps, within_inputs
from pool.manifest import Manifest
from pool.series import SeriesState
from pool.withdrawal import RequestStatus, build_round, eligible_inputs
from tests.factories import BTC, make_series, manifest, request, utxo
from vpool.v1.signer_pb2 import DeviceLimits

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


def test_without_limits_the_transactions_shape_is_not_capped() -> None:
    caps = shape_caps(RoundsConfig(), [DeviceLimits(), DeviceLimits(max_psbt_bytes=401 * 1024)])
    assert caps == {"max_tx_inputs": 0, "max_tx_payments": 0}


def test_a_ledger_caps_inputs_and_payments_leaving_room_for_the_change() -> None:
    caps = shape_caps(
        RoundsConfig(), [DeviceLimits(), DeviceLimits(max_inputs=512, max_outputs=512)]
    )
    assert caps == {"max_tx_inputs": 512, "max_tx_payments": 511}


def test_the_smallest_of_the_configured_caps_and_the_devices_limits_wins() -> None:
    devices = [
        DeviceLimits(max_inputs=512, max_outputs=512),
        DeviceLimits(max_reviewed_payments=20),
    ]
    caps = shape_caps(RoundsConfig(max_tx_inputs=1_000, max_tx_payments=50), devices)
    assert caps == {"max_tx_inputs": 512, "max_tx_payments": 20}
    assert shape_caps(RoundsConfig(max_tx_inputs=100), devices)["max_tx_inputs"] == 100
