"""Golden vectors: the same manifest must give byte-identical results everywhere.

Each file in tests/vectors/ was produced by scripts/gen_vectors.py. These tests rebuild every
vector from its manifest alone and compare byte for byte. A failing vector means the algorithm
changed: that needs a new algorithm version, not regenerated vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pool.manifest import decode_manifest, encode_manifest, manifest_from_json, manifest_hash
from pool.withdrawal import RoundPlan, build_round
from tests.factories import sign_first_m

VECTORS = sorted((Path(__file__).parent / "vectors").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def plan_of(doc: dict[str, Any]) -> RoundPlan:
    return build_round(decode_manifest(bytes.fromhex(doc["manifest_hex"])))


def test_there_are_at_least_fifteen_vectors() -> None:
    assert len(VECTORS) >= 15


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_readable_manifest_encodes_to_the_vector_bytes(path: Path) -> None:
    doc = load(path)
    manifest = manifest_from_json(doc["manifest"])
    assert encode_manifest(manifest).hex() == doc["manifest_hex"]
    assert manifest_hash(manifest).hex() == doc["manifest_hash"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_psbts_and_txids_match_byte_for_byte(path: Path) -> None:
    doc = load(path)
    plan = plan_of(doc)
    expected = doc["expected"]["transactions"]
    assert [t.psbt.to_base64() for t in plan.transactions] == [t["psbt"] for t in expected]
    assert [t.txid_hex for t in plan.transactions] == [t["txid"] for t in expected]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_fees_change_and_fee_shares_match(path: Path) -> None:
    doc = load(path)
    plan = plan_of(doc)
    expected = doc["expected"]
    for got, want in zip(plan.transactions, expected["transactions"], strict=True):
        assert got.fee == want["fee"]
        assert got.max_weight == want["max_weight"]
        assert dict(got.fee_shares) == want["fee_shares"]
        change = None if got.change is None else [got.change.index, got.change.value]
        assert change == (
            None if want["change"] is None else [want["change"]["index"], want["change"]["value"]]
        )
    assert plan.next_change_index == expected["next_change_index"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_request_statuses_and_outputs_match(path: Path) -> None:
    doc = load(path)
    plan = plan_of(doc)
    got = [
        {
            "client_id": r.client_id,
            "request_id": r.request_id,
            "status": r.status.value,
            "outputs": [f"{o.txid_hex}:{o.vout}:{o.amount}" for o in r.outputs],
        }
        for r in plan.requests
    ]
    assert got == doc["expected"]["requests"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_signed_transactions_match(path: Path) -> None:
    doc = load(path)
    manifest = decode_manifest(bytes.fromhex(doc["manifest_hex"]))
    plan = build_round(manifest)
    signed = [sign_first_m(psbt, manifest).serialize().hex() for psbt in plan.psbts]
    assert signed == doc["expected"]["signed_transactions"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_ladder_rungs_match(path: Path) -> None:
    plan = plan_of(load(path))
    got = [
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
    ]
    assert got == load(path)["expected"]["rungs"]
