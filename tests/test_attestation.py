"""Fee attestations (pool.attestation): a client accepts its share once m pinned signers signed
the same statement, and detects a forged or altered one."""

from __future__ import annotations

import pytest

from pool import ecdsa
from pool.attestation import (
    Attestation,
    FeeEntry,
    attest,
    decode_statement,
    encode_statement,
    verified_share,
)
from pool.errors import EncodingError

KEYS = {f"signer-{i}": bytes([i + 1]) * 32 for i in range(3)}
PINNED = {name: ecdsa.public_key(secret) for name, secret in KEYS.items()}
ROUND = b"\x42" * 32
TXID = "ab" * 32
HONEST = encode_statement(ROUND, [FeeEntry(TXID, 1_000, (("alice", 700), ("bob", 300)))])


def attested(statement: bytes, *signers: str) -> list[Attestation]:
    return [Attestation(PINNED[s], statement, attest(KEYS[s], statement)) for s in signers]


def test_m_signers_attesting_the_same_statement_verify_the_share() -> None:
    found = attested(HONEST, "signer-0", "signer-1")
    assert verified_share(found, PINNED, 2, "alice", TXID) == 700


def test_fewer_than_m_attestations_verify_nothing() -> None:
    assert verified_share(attested(HONEST, "signer-0"), PINNED, 2, "alice", TXID) is None


def test_a_forged_share_signed_by_an_unpinned_key_is_detected() -> None:
    forged = encode_statement(ROUND, [FeeEntry(TXID, 1_000, (("alice", 900), ("bob", 100)))])
    mallory = b"\x09" * 32
    fake = Attestation(ecdsa.public_key(mallory), forged, attest(mallory, forged))
    found = [*attested(forged, "signer-0"), fake]
    assert verified_share(found, PINNED, 2, "alice", TXID) is None


def test_a_signature_moved_onto_an_altered_statement_is_detected() -> None:
    altered = encode_statement(ROUND, [FeeEntry(TXID, 1_000, (("alice", 900), ("bob", 100)))])
    honest = attested(HONEST, "signer-0", "signer-1")
    moved = [Attestation(a.public_key, altered, a.signature) for a in honest]
    assert verified_share(moved, PINNED, 2, "alice", TXID) is None


def test_signers_that_disagree_do_not_add_up_to_m() -> None:
    other = encode_statement(ROUND, [FeeEntry(TXID, 1_000, (("alice", 699), ("bob", 301)))])
    found = [*attested(HONEST, "signer-0"), *attested(other, "signer-1")]
    assert verified_share(found, PINNED, 2, "alice", TXID) is None


def test_the_statement_round_trips_and_refuses_shares_that_do_not_add_up() -> None:
    assert decode_statement(HONEST)[0] == ROUND
    with pytest.raises(EncodingError, match="add up"):
        encode_statement(ROUND, [FeeEntry(TXID, 1_000, (("alice", 1),))])
