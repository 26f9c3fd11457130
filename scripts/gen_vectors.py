#!/usr/bin/env python3
"""Generate the golden withdrawal vectors in tests/vectors/ (run with `make vectors`).

Each vector is a JSON file: the manifest (readable form, canonical hex and hash) and everything
`build_round` must produce from it: PSBTs (base64), txids, fees, fee shares, change, request
statuses and outputs, the next change index, and each transaction signed by the first m keys and
finalized (hex), which pins the signing path too. Keys come from fixed seeds; never use them for
anything else.

A change to the algorithm that changes a vector must bump the algorithm version; regenerating
vectors is never a fix for a failing vector test.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pool.address import script_pubkey_to_address
from pool.manifest import Manifest, encode_manifest, manifest_hash, manifest_to_json
from pool.series import SeriesState
from pool.withdrawal import build_round
from tests.factories import (
    BTC,
    make_series,
    manifest,
    p2pkh,
    p2sh,
    p2tr,
    p2wpkh,
    request,
    sign_first_m,
    utxo,
)

ROOT = Path(__file__).resolve().parent.parent
VECTOR_DIR = ROOT / "tests" / "vectors"
S1 = make_series(1, 2, (0, 1, 2))


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    manifest: Manifest


def cases() -> list[Case]:
    many_utxos = [utxo(i, 1 * BTC + i * 1000, 100 + i, index=i) for i in range(40)]
    s2_retiring = make_series(1, 2, (3, 4, 5), SeriesState.RETIRING)
    s2_active = make_series(2, 2, (0, 1, 2))
    s_mainnet = make_series(7, 3, (10, 11, 12, 13, 14), network="mainnet")
    return [
        Case(
            "01-one-request",
            "One request paid from one UTXO, with change.",
            manifest([S1], [utxo(1, 2 * BTC, 500)], [request("alice", "w-1", 50_000_000)]),
        ),
        Case(
            "02-many-requests-several-clients",
            "Twelve requests from three clients in one transaction; fee shared by amount.",
            manifest(
                [S1],
                many_utxos[:6],
                [
                    request(c, f"{c}-{k}", (k + 1) * 7_000_000 + len(c) * 1111)
                    for c in ("alice", "bob", "carol")
                    for k in range(4)
                ],
            ),
        ),
        Case(
            "03-not-enough-funds",
            "Funds for two of three requests: the largest is deferred.",
            manifest(
                [S1],
                [utxo(1, 1 * BTC, 500), utxo(2, 50_000_000, 501)],
                [
                    request("alice", "small", 30_000_000),
                    request("bob", "large", 90_000_000),
                    request("carol", "medium", 60_000_000),
                ],
            ),
        ),
        Case(
            "04-equal-amounts-tie-broken-by-key",
            "Two equal largest requests and funds for one: the lower request key is deferred.",
            manifest(
                [S1],
                [utxo(1, 1 * BTC, 500)],
                [request("alice", "a", 60_000_000), request("bob", "b", 60_000_000)],
            ),
        ),
        Case(
            "05-fees-make-request-unaffordable",
            "Inputs equal the amounts exactly; the fee defers the largest request.",
            manifest(
                [S1],
                [utxo(1, 30_000_000, 500), utxo(2, 20_000_000, 500)],
                [request("alice", "x", 30_000_000), request("bob", "y", 20_000_000)],
            ),
        ),
        Case(
            "06-weight-limit-splits-round",
            "Twenty requests and a 6,000 WU weight limit: several transactions.",
            manifest(
                [S1],
                many_utxos[:30],
                [request("client-" + str(k % 3), f"r{k}", 40_000_000) for k in range(20)],
                max_weight=6_000,
            ),
        ),
        Case(
            "07-request-too-large-for-one-transaction",
            "One request needs more inputs than fit in one transaction: status split.",
            manifest([S1], many_utxos[:20], [request("whale", "big", 12 * BTC)], max_weight=4_000),
        ),
        Case(
            "08-dust-change-absorbed",
            "The change would be below the dust limit, so it goes to the fee.",
            manifest(
                [S1],
                [utxo(1, 10_000_000, 500)],
                [request("alice", "w", 10_000_000 - 600 - 100)],
                fee_rate=1000,
            ),
        ),
        Case(
            "09-extra-fees",
            "Requests with extra fees: each client's share includes its own extra fee.",
            manifest(
                [S1],
                many_utxos[:3],
                [
                    request("alice", "1", 10_000_000, extra_fee=5_000),
                    request("bob", "1", 20_000_000),
                    request("carol", "1", 5_000_000, extra_fee=777),
                ],
            ),
        ),
        Case(
            "10-inputs-from-two-series",
            "A retiring series is spent first; change goes to the active series.",
            manifest(
                [s2_retiring, s2_active],
                [
                    utxo(1, 40_000_000, 900, series=2),
                    utxo(2, 30_000_000, 300, series=1, index=5),
                    utxo(3, 30_000_000, 950, series=1, branch=1, index=2),
                ],
                [request("alice", "w", 80_000_000)],
                change_index=((1, 3), (2, 0)),
            ),
        ),
        Case(
            "11-several-utxos-at-one-height",
            "Five UTXOs confirmed in one block are spent in txid order, then vout.",
            manifest(
                [S1],
                [utxo(n, 10_000_000, 700, index=n, vout=n % 2) for n in range(5)],
                [request("alice", "w", 35_000_000)],
            ),
        ),
        Case(
            "12-empty-round",
            "No requests: no transactions, the change index is unchanged.",
            manifest([S1], many_utxos[:3], [], change_index=((1, 17),)),
        ),
        Case(
            "13-immature-and-dust-inputs-skipped",
            "UTXOs below min_conf, unconfirmed, dust, or costing more than they bring (900 sat "
            "at 10 sat/vB) are not spent.",
            manifest(
                [S1],
                [
                    utxo(1, 5 * BTC, 998),
                    utxo(2, 5 * BTC, 0),
                    utxo(3, 500, 100),
                    utxo(4, 900, 100),
                    utxo(5, 1 * BTC, 995),
                ],
                [request("alice", "w", 50_000_000)],
                fee_rate=10_000,
            ),
        ),
        Case(
            "14-all-deferred",
            "No eligible input: every request is deferred, no transaction.",
            manifest(
                [S1],
                [utxo(1, 5 * BTC, 1000)],
                [request("alice", "1", 10_000_000), request("bob", "1", 20_000_000)],
            ),
        ),
        Case(
            "15-change-index-advances",
            "Three requests of five inputs each and room for eight inputs per transaction: "
            "three transactions with change at indexes 41, 42, 43.",
            manifest(
                [S1],
                [utxo(i, 25_000_000, 100 + i, index=i) for i in range(18)],
                [request("alice", f"{k}", 110_000_000) for k in range(3)],
                change_index=((1, 41),),
                max_weight=4_000,
            ),
        ),
        Case(
            "16-mainnet-3-of-5",
            "A mainnet 3-of-5 series at 12.5 sat/vB.",
            manifest(
                [s_mainnet],
                [utxo(1, 3 * BTC, 800_000, series=7), utxo(2, 1 * BTC, 800_001, series=7)],
                [request("exchange", "payout-1", 2 * BTC), request("custodian", "7", BTC // 3)],
                network="mainnet",
                tip_height=800_100,
                fee_rate=12_500,
                change_index=((7, 3),),
                dust_limit=330,
            ),
        ),
        Case(
            "17-destination-script-types",
            "Destinations of every standard type: P2PKH, P2SH, P2WPKH, P2TR.",
            manifest(
                [S1],
                [utxo(1, 2 * BTC, 500)],
                [
                    request("alice", "pkh", 1_000_000, script=p2pkh),
                    request("alice", "sh", 2_000_000, script=p2sh),
                    request("bob", "wpkh", 3_000_000, script=p2wpkh),
                    request("bob", "tr", 4_000_000, script=p2tr),
                ],
                fee_rate=1500,
            ),
        ),
        Case(
            "18-split-leaves-no-dust-remainder",
            "Eight inputs fit and carry 79,999,079 sat; the request is 300 sat more, so the "
            "first part pays 546 sat less and the second part pays the 546 sat dust limit.",
            manifest(
                [S1],
                [utxo(i, 10_000_000, 100 + i, index=i) for i in range(10)],
                [request("whale", "exact", 79_999_379)],
                max_weight=4_000,
                fee_rate=1000,
                dust_limit=546,
            ),
        ),
        Case(
            "19-fee-ladder",
            "Three rungs 2,000 sat/kvB apart (rules L1-L4): three replacements of the one "
            "transaction, each lowering its change; each bump split among its three clients.",
            replace(
                manifest(
                    [S1],
                    [utxo(i, 1 * BTC, 100 + i, index=i) for i in range(3)],
                    [
                        request("alice", "1", 70_000_000),
                        request("bob", "1", 20_000_000),
                        request("carol", "1", 150_000_000),
                    ],
                    fee_rate=1000,
                ),
                ladder_rungs=3,
                ladder_step=2_000,
            ),
        ),
        Case(
            "20-fee-ladder-stops-at-dust-change",
            "Ten rungs requested, but the change covers only the first rungs: the ladder stops "
            "before the change would fall below the dust limit.",
            replace(
                manifest(
                    [S1],
                    [utxo(1, 1 * BTC, 100)],
                    [request("alice", "1", 99_990_000)],
                    fee_rate=1000,
                ),
                ladder_rungs=10,
                ladder_step=5_000,
            ),
        ),
    ]


def vector(case: Case) -> dict[str, Any]:
    m = case.manifest
    plan = build_round(m)
    net = m.net
    return {
        "name": case.name,
        "description": case.description,
        "manifest": manifest_to_json(m),
        "manifest_hex": encode_manifest(m).hex(),
        "manifest_hash": manifest_hash(m).hex(),
        "expected": {
            "transactions": [
                {
                    "txid": t.txid_hex,
                    "psbt": t.psbt.to_base64(),
                    "inputs": [str(u.outpoint) for u in t.inputs],
                    "outputs": [
                        {
                            "address": script_pubkey_to_address(o.script_pubkey, net),
                            "value": o.value,
                        }
                        for o in t.psbt.tx.outputs
                    ],
                    "fee": t.fee,
                    "max_weight": t.max_weight,
                    "change": None
                    if t.change is None
                    else {
                        "series": t.change.series_id,
                        "index": t.change.index,
                        "vout": t.change.vout,
                        "value": t.change.value,
                    },
                    "fee_shares": dict(t.fee_shares),
                }
                for t in plan.transactions
            ],
            "requests": [
                {
                    "client_id": r.client_id,
                    "request_id": r.request_id,
                    "status": r.status.value,
                    "outputs": [f"{o.txid_hex}:{o.vout}:{o.amount}" for o in r.outputs],
                }
                for r in plan.requests
            ],
            "next_change_index": plan.next_change_index,
            "rungs": [
                {
                    "of": r.of,
                    "step": r.step,
                    "fee_rate": r.fee_rate,
                    "txid": r.txid_hex,
                    "psbt": r.psbt.to_base64(),
                    "fee": r.fee,
                    "fee_shares": dict(r.fee_shares),
                }
                for r in plan.rungs
            ],
            "signed_transactions": [sign_first_m(psbt, m).serialize().hex() for psbt in plan.psbts],
        },
    }


def write_vectors(directory: Path, vectors: Iterable[dict[str, Any]]) -> None:
    """Replace the JSON files in ``directory`` with one file per vector, named after it."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.json"):
        old.unlink()
    for doc in vectors:
        path = directory / f"{doc['name']}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    write_vectors(VECTOR_DIR, (vector(case) for case in cases()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
