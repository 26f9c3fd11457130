"""Fee attestations (pool.attestation): the statement's canonical bytes, and the check a client
makes: m pinned signers attested the same share of the transaction, and nothing forged, altered
or of another round counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pool import ecdsa
from pool.attestation import (
    TAG,
    Attestation,
    FeeStatement,
    attest,
    decode_statement,
    encode_statement,
    round_statements,
    verify_share,
)
from pool.errors import EncodingError
from pool.hashes import sha256
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, manifest, request, utxo

KEYS = {f"signer-{i}": bytes([i + 1]) * 32 for i in range(3)}
PINNED = {name: ecdsa.public_key(secret) for name, secret in KEYS.items()}
ROUND = b"\x42" * 32
TXID = "ab" * 32
HONEST = FeeStatement(ROUND, TXID, 0, 1_000, (("alice", 700), ("bob", 300)))


def attested(statement: FeeStatement, *signers: str) -> list[Attestation]:
    raw = encode_statement(statement)
    return [Attestation(PINNED[s], raw, attest(KEYS[s], raw)) for s in signers]


def test_m_signers_attesting_the_same_statement_verify_the_share() -> None:
    found = verify_share(attested(HONEST, "signer-0", "signer-1"), PINNED, 2, ROUND, TXID)
    assert found is not None
    assert found.statement.share_of("alice") == 700
    assert found.signers == ("signer-0", "signer-1")


def test_fewer_than_m_attestations_verify_nothing() -> None:
    assert verify_share(attested(HONEST, "signer-0"), PINNED, 2, ROUND, TXID) is None


def test_one_signer_attesting_twice_counts_once() -> None:
    twice = attested(HONEST, "signer-0") * 2
    assert verify_share(twice, PINNED, 2, ROUND, TXID) is None


def test_a_forged_signature_is_detected() -> None:
    good = attested(HONEST, "signer-0")
    raw = encode_statement(HONEST)
    forged = Attestation(PINNED["signer-1"], raw, ecdsa.sign(b"\x09" * 32, sha256(raw)))
    assert verify_share([*good, forged], PINNED, 2, ROUND, TXID) is None


def test_a_statement_signed_by_an_unpinned_key_does_not_count() -> None:
    mallory = b"\x09" * 32
    raw = encode_statement(HONEST)
    fake = Attestation(ecdsa.public_key(mallory), raw, attest(mallory, raw))
    assert verify_share([*attested(HONEST, "signer-0"), fake], PINNED, 2, ROUND, TXID) is None


def test_a_share_altered_under_honest_signatures_is_detected() -> None:
    altered = encode_statement(replace(HONEST, shares=(("alice", 600), ("bob", 400))))
    moved = [Attestation(a.public_key, altered, a.signature) for a in attested(HONEST, *KEYS)]
    assert verify_share(moved, PINNED, 2, ROUND, TXID) is None


def test_signers_that_disagree_do_not_add_up_to_m() -> None:
    other = replace(HONEST, shares=(("alice", 699), ("bob", 301)))
    found = [*attested(HONEST, "signer-0"), *attested(other, "signer-1")]
    assert verify_share(found, PINNED, 2, ROUND, TXID) is None


def test_a_statement_of_another_round_does_not_verify_this_one() -> None:
    elsewhere = replace(HONEST, manifest_hash=b"\x43" * 32)
    assert verify_share(attested(elsewhere, *KEYS), PINNED, 2, ROUND, TXID) is None


def test_a_statement_of_another_transaction_does_not_verify_this_one() -> None:
    other_tx = replace(HONEST, txid="cd" * 32)
    assert verify_share(attested(other_tx, *KEYS), PINNED, 2, ROUND, TXID) is None


def test_the_statement_round_trips() -> None:
    assert decode_statement(encode_statement(HONEST)) == HONEST


def test_the_encoding_is_the_documented_layout() -> None:
    raw = encode_statement(FeeStatement(ROUND, TXID, 2, 5, (("a", 5),)))
    assert raw == (
        TAG + b"\x01" + ROUND + bytes.fromhex(TXID) + b"\x02"
        + (5).to_bytes(8, "little") + b"\x01" + b"\x01a" + (5).to_bytes(8, "little")
    )  # fmt: skip


def test_shares_that_do_not_add_up_to_the_fee_have_no_encoding() -> None:
    with pytest.raises(EncodingError, match="add up"):
        encode_statement(replace(HONEST, shares=(("alice", 1),)))


def test_shares_out_of_order_have_no_encoding() -> None:
    with pytest.raises(EncodingError, match="ascending"):
        encode_statement(replace(HONEST, shares=(("bob", 300), ("alice", 700))))


def test_trailing_bytes_are_not_a_statement() -> None:
    with pytest.raises(EncodingError):
        decode_statement(encode_statement(HONEST) + b"\x00")


def test_round_statements_name_every_transaction_and_rung_with_the_cores_shares() -> None:
    base = manifest(
        [make_series(1, 2, (0, 1, 2))],
        [utxo(i, BTC, 100 + i, index=i) for i in range(2)],
        [request("alice", "1", 30_000_000), request("bob", "1", 10_000_000)],
        fee_rate=1000,
    )
    plan = build_round(replace(base, ladder_rungs=2, ladder_step=2_000))
    assert plan.rungs
    statements = round_statements(plan)
    assert [s.txid for s in statements] == [p.tx.txid_hex for p in plan.psbts]
    assert [s.rung for s in statements][len(plan.transactions) :] == [r.step for r in plan.rungs]
    assert statements[0].shares == plan.transactions[0].fee_shares
    assert all(s.manifest_hash == plan.manifest_hash for s in statements)
