"""The signers' fee attestations (pool.attestation), as they came with their signatures.

The coordinator keeps an attestation only when it is what it claims to be: a valid signature by
the key it names over a statement of this round naming one of its transactions. It does not
trust them for anything: a client verifies them against the signers' keys it pinned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, insert, select

from coordinator.signers import FeeAttestation
from coordinator.store.schema import fee_attestations
from pool.attestation import Attestation, decode_statement
from pool.errors import EncodingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredAttestation:
    txid: str
    signer_id: str
    public_key: bytes
    statement: bytes
    signature: bytes


def add_attestations(
    conn: Connection,
    seq: int,
    manifest_hash: bytes,
    txids: Iterable[str],
    signer_id: str,
    found: Sequence[FeeAttestation],
    now: float,
) -> int:
    """Store the signer's attestations of this round's transactions not stored yet; drop (and
    log) any that is not a valid attestation of one of them. The number stored."""
    ours = set(txids)
    known = {
        str(r.txid)
        for r in conn.execute(
            select(fee_attestations.c.txid).where(
                and_(fee_attestations.c.round_seq == seq, fee_attestations.c.signer_id == signer_id)
            )
        )
    }
    added = 0
    for a in found:
        try:
            statement = decode_statement(a.statement)
        except EncodingError as e:
            log.warning("signer %s: a fee attestation that is no statement: %s", signer_id, e)
            continue
        valid = Attestation(a.public_key, a.statement, a.signature).is_valid()
        if not valid or statement.manifest_hash != manifest_hash or statement.txid not in ours:
            log.warning(
                "signer %s: dropped a fee attestation of %s (bad signature, or another round)",
                signer_id,
                statement.txid,
            )
            continue
        if statement.txid in known:
            continue
        conn.execute(
            insert(fee_attestations).values(
                round_seq=seq,
                txid=statement.txid,
                signer_id=signer_id,
                public_key=a.public_key,
                statement=a.statement,
                signature=a.signature,
                at=now,
            )
        )
        known.add(statement.txid)
        added += 1
    return added


def attestations_of(conn: Connection, txids: Iterable[str]) -> dict[str, list[StoredAttestation]]:
    """Every stored attestation of these transactions, by txid (signers in id order)."""
    wanted = sorted(set(txids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(fee_attestations)
        .where(fee_attestations.c.txid.in_(wanted))
        .order_by(fee_attestations.c.txid, fee_attestations.c.signer_id)
    ).all()
    found: dict[str, list[StoredAttestation]] = {}
    for r in rows:
        found.setdefault(str(r.txid), []).append(
            StoredAttestation(
                str(r.txid),
                str(r.signer_id),
                bytes(r.public_key),
                bytes(r.statement),
                bytes(r.signature),
            )
        )
    return found
