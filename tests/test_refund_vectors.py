"""Golden refund vectors: the same refund manifest must give byte-identical results everywhere.

Each file in tests/vectors/refunds/ was produced by scripts/gen_refund_vectors.py. These tests
rebuild every vector from its manifest alone and compare byte for byte. A failing vector means
the algorithm changed: that needs a new refund algorithm version, not regenerated vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pool.address import address_to_script_pubkey
from pool.manifest import series_from_json
from pool.networks import get_network
from pool.refunds import (
    RefundManifest,
    RefundPlan,
    RefundRequest,
    RefundSource,
    build_refunds,
    decode_refund_manifest,
    encode_refund_manifest,
    refund_manifest_hash,
)
from pool.tx import OutPoint
from tests.factories import sign_first_m

VECTORS = sorted((Path(__file__).parent / "vectors" / "refunds").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def manifest_of(doc: dict[str, Any]) -> RefundManifest:
    return decode_refund_manifest(bytes.fromhex(doc["manifest_hex"]))


def plan_of(doc: dict[str, Any]) -> RefundPlan:
    return build_refunds(manifest_of(doc))


def from_readable(doc: dict[str, Any]) -> RefundManifest:
    """The manifest of a vector's readable form (descriptors and addresses)."""
    net = get_network(doc["network"])

    def refund(r: dict[str, Any]) -> RefundRequest:
        return RefundRequest(
            outpoint=OutPoint.from_str(r["outpoint"]),
            value=r["value"],
            series_id=r["series"],
            index=r["index"],
            deposit_tx=bytes.fromhex(r["deposit_tx"]),
            prev_tx=bytes.fromhex(r["prev_tx"]),
            destination=address_to_script_pubkey(r["destination"], net),
            source=RefundSource(r["source"]),
        )

    return RefundManifest(
        version=doc["version"],
        network=doc["network"],
        series=series_from_json(doc["series"], net),
        tip_height=doc["tip"]["height"],
        tip_hash=bytes.fromhex(doc["tip"]["hash"]),
        fee_rate=doc["fee_rate_sat_per_kvb"],
        dust_limit=doc["dust_limit"],
        refunds=tuple(refund(r) for r in doc["refunds"]),
    )


def test_there_are_three_vectors() -> None:
    assert len(VECTORS) == 3


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_readable_manifest_encodes_to_the_vector_bytes(path: Path) -> None:
    doc = load(path)
    manifest = from_readable(doc["manifest"])
    assert encode_refund_manifest(manifest).hex() == doc["manifest_hex"]
    assert refund_manifest_hash(manifest).hex() == doc["manifest_hash"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_psbts_and_txids_match_byte_for_byte(path: Path) -> None:
    doc = load(path)
    plan = plan_of(doc)
    expected = doc["expected"]["transactions"]
    assert [t.psbt.to_base64() for t in plan.transactions] == [t["psbt"] for t in expected]
    assert [t.txid_hex for t in plan.transactions] == [t["txid"] for t in expected]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_amounts_fees_and_weights_match(path: Path) -> None:
    doc = load(path)
    got = [
        {
            "deposit": str(t.refund.outpoint),
            "amount": t.amount,
            "fee": t.fee,
            "max_weight": t.max_weight,
        }
        for t in plan_of(doc).transactions
    ]
    want = [
        {k: t[k] for k in ("deposit", "amount", "fee", "max_weight")}
        for t in doc["expected"]["transactions"]
    ]
    assert got == want


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_skipped_refunds_match(path: Path) -> None:
    doc = load(path)
    got = [{"deposit": str(o), "reason": reason} for o, reason in plan_of(doc).skipped]
    assert got == doc["expected"]["skipped"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_signed_transactions_match(path: Path) -> None:
    doc = load(path)
    manifest = manifest_of(doc)
    signed = [
        sign_first_m(t.psbt, manifest).serialize().hex()
        for t in build_refunds(manifest).transactions
    ]
    assert signed == doc["expected"]["signed_transactions"]
