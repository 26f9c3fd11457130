"""The coordinator's store of fee attestations (coordinator.store.attestations), on SQLite and
PostgreSQL: it keeps valid attestations of the round's own transactions, once, and nothing else."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine, insert

from coordinator.signers import FeeAttestation
from coordinator.store.attestations import add_attestations, attestations_of
from coordinator.store.schema import rounds, transaction
from pool import ecdsa
from pool.attestation import FeeStatement, attest, encode_statement

SECRET = b"\x07" * 32
PUBLIC = ecdsa.public_key(SECRET)
ROUND = b"\x42" * 32
TXID = "ab" * 32
STATEMENT = FeeStatement(ROUND, TXID, 0, 300, (("alice", 200), ("bob", 100)))


def signed(statement: FeeStatement, secret: bytes = SECRET) -> FeeAttestation:
    raw = encode_statement(statement)
    return FeeAttestation(PUBLIC, raw, attest(secret, raw))


def a_round(engine: Engine) -> int:
    with transaction(engine) as conn:
        seq = conn.execute(
            insert(rounds).values(
                manifest_hash=ROUND.hex(), manifest=b"m", status="signing", kind="withdrawal",
                detail="", created_at=0.0, updated_at=0.0,
            )
        ).inserted_primary_key  # fmt: skip
        assert seq is not None
        return int(seq[0])


def add(engine: Engine, seq: int, found: list[FeeAttestation]) -> int:
    with transaction(engine) as conn:
        return add_attestations(conn, seq, ROUND, [TXID], "signer-1", found, 1.0)


def test_a_valid_attestation_of_the_rounds_transaction_is_kept_once(engine: Engine) -> None:
    seq = a_round(engine)
    assert add(engine, seq, [signed(STATEMENT)]) == 1
    assert add(engine, seq, [signed(STATEMENT)]) == 0  # the same answer again
    with engine.connect() as conn:
        [kept] = attestations_of(conn, [TXID])[TXID]
    assert (kept.signer_id, kept.public_key) == ("signer-1", PUBLIC)
    assert kept.statement == encode_statement(STATEMENT)


def test_an_attestation_whose_signature_does_not_verify_is_dropped(engine: Engine) -> None:
    assert add(engine, a_round(engine), [signed(STATEMENT, b"\x08" * 32)]) == 0


def test_an_attestation_of_another_round_or_transaction_is_dropped(engine: Engine) -> None:
    seq = a_round(engine)
    other_round = replace(STATEMENT, manifest_hash=b"\x43" * 32)
    other_tx = replace(STATEMENT, txid="cd" * 32)
    assert add(engine, seq, [signed(other_round), signed(other_tx)]) == 0


def test_bytes_that_are_no_statement_are_dropped(engine: Engine) -> None:
    junk = FeeAttestation(PUBLIC, b"junk", attest(SECRET, b"junk"))
    assert add(engine, a_round(engine), [junk]) == 0
