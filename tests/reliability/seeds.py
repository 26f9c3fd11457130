"""Valid encodings the fuzzers mutate: a small withdrawal manifest, its first PSBT, a refund
manifest."""

from __future__ import annotations

from pool.manifest import Manifest
from pool.refunds import encode_refund_manifest
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, manifest, request, utxo
from tests.refund_factories import deposit, refund_manifest

SERIES = make_series(1, 2, [0, 1, 2])


def sample_manifest() -> Manifest:
    return manifest(
        [SERIES],
        [utxo(1, BTC, 900), utxo(2, 2 * BTC, 901, index=1)],
        [request("alice", "w-1", BTC // 2), request("bob", "w-2", BTC)],
    )


def sample_psbt() -> bytes:
    plan = build_round(sample_manifest())
    return plan.transactions[0].psbt.serialize()


def sample_refund_manifest() -> bytes:
    return encode_refund_manifest(refund_manifest([SERIES], [deposit("fuzz", SERIES, 0, 50_000)]))
