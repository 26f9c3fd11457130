#!/usr/bin/env python3
"""Generate the golden refund vectors in tests/vectors/refunds/ (run with `make vectors`).

Each vector is a JSON file: the refund manifest (readable form, canonical hex and hash) and
everything `build_refunds` must produce from it: PSBTs (base64), txids, amounts, fees, worst-case
weights, the refunds skipped with their reasons, and each transaction signed by the first m keys
and finalized (hex). Keys come from fixed seeds; never use them for anything else.

A change to the algorithm that changes a vector must bump the refund algorithm version;
regenerating vectors is never a fix for a failing vector test.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pool.address import script_pubkey_to_address
from pool.manifest import series_to_json
from pool.refunds import (
    RefundManifest,
    RefundSource,
    build_refunds,
    encode_refund_manifest,
    refund_manifest_hash,
    refund_weight,
)
from pool.script import p2wsh_script_pubkey
from pool.series import SeriesState
from pool.weights import fee_for_weight
from scripts.gen_vectors import ROOT, write_vectors
from tests.factories import BTC, make_series, p2pkh, p2sh, p2tr, p2wpkh, sign_first_m
from tests.refund_factories import deposit, refund_manifest

VECTOR_DIR = ROOT / "tests" / "vectors" / "refunds"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    manifest: RefundManifest


def cases() -> list[Case]:
    s1 = make_series(1, 2, (0, 1, 2))
    retiring = make_series(1, 2, (3, 4, 5), SeriesState.RETIRING)
    active = make_series(2, 3, (10, 11, 12, 13, 14))
    mainnet = make_series(7, 3, (10, 11, 12, 13, 14), network="mainnet")
    sender = RefundSource.SENDER
    fee = fee_for_weight(refund_weight(mainnet, p2wpkh("any")), 25_000)
    return [
        Case(
            "01-registered-refund",
            "One deposit refunded to the refund address registered with its deposit address.",
            refund_manifest([s1], [deposit("alice", s1, 3, 50_000_000)]),
        ),
        Case(
            "02-senders-operator-two-series",
            "Refunds of deposits to a retiring and an active series: to senders of every "
            "standard type (one deposit at vout 1), to a registered address, and to an "
            "operator's choice.",
            refund_manifest(
                [retiring, active],
                [
                    deposit("pkh", retiring, 0, 1_000_000, source=sender, sender=p2pkh("s1")),
                    deposit("wpkh", active, 1, 2_000_000, source=sender, vout=1),
                    deposit("sh", active, 2, 3_000_000, source=sender, sender=p2sh("s3")),
                    deposit(
                        "wsh",
                        active,
                        3,
                        4_000_000,
                        source=sender,
                        sender=p2wsh_script_pubkey(b"s4"),
                    ),
                    deposit("tr", retiring, 4, 5_000_000, source=sender, sender=p2tr("s5")),
                    deposit("reg", active, 5, 6_000_000, destination=p2pkh("registered")),
                    deposit(
                        "op",
                        active,
                        6,
                        7_000_000,
                        source=RefundSource.OPERATOR,
                        destination=p2tr("operator"),
                    ),
                ],
                fee_rate=1_500,
                tip_height=2_500,
            ),
        ),
        Case(
            "03-mainnet-dust-skipped",
            "Mainnet 3-of-5 at 25 sat/vB with a 330 sat dust limit: a refund that would pay "
            "329 sat is skipped, one that pays exactly 330 sat is built.",
            refund_manifest(
                [mainnet],
                [
                    deposit("big", mainnet, 0, BTC, destination=p2wpkh("big")),
                    deposit("dust", mainnet, 1, fee + 329, destination=p2wpkh("dust")),
                    deposit("edge", mainnet, 2, fee + 330, destination=p2wpkh("edge")),
                ],
                network="mainnet",
                tip_height=850_000,
                fee_rate=25_000,
                dust_limit=330,
            ),
        ),
    ]


def manifest_json(m: RefundManifest) -> dict[str, Any]:
    """A readable form: descriptors and addresses instead of raw keys and scripts."""
    net = m.net
    return {
        "version": m.version,
        "network": m.network,
        "series": series_to_json(m.series, net),
        "tip": {"height": m.tip_height, "hash": m.tip_hash.hex()},
        "fee_rate_sat_per_kvb": m.fee_rate,
        "dust_limit": m.dust_limit,
        "refunds": [
            {
                "outpoint": str(r.outpoint),
                "value": r.value,
                "series": r.series_id,
                "index": r.index,
                "source": r.source.value,
                "destination": script_pubkey_to_address(r.destination, net),
                "deposit_tx": r.deposit_tx.hex(),
                "prev_tx": r.prev_tx.hex(),
            }
            for r in m.refunds
        ],
    }


def vector(case: Case) -> dict[str, Any]:
    m = case.manifest
    plan = build_refunds(m)
    return {
        "name": case.name,
        "description": case.description,
        "manifest": manifest_json(m),
        "manifest_hex": encode_refund_manifest(m).hex(),
        "manifest_hash": refund_manifest_hash(m).hex(),
        "expected": {
            "transactions": [
                {
                    "deposit": str(t.refund.outpoint),
                    "txid": t.txid_hex,
                    "psbt": t.psbt.to_base64(),
                    "amount": t.amount,
                    "fee": t.fee,
                    "max_weight": t.max_weight,
                }
                for t in plan.transactions
            ],
            "skipped": [{"deposit": str(o), "reason": reason} for o, reason in plan.skipped],
            "signed_transactions": [
                sign_first_m(t.psbt, m).serialize().hex() for t in plan.transactions
            ],
        },
    }


def main() -> int:
    write_vectors(VECTOR_DIR, (vector(case) for case in cases()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
