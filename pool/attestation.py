"""Fee attestations (the voting pool's m identical ``txFeeNotice``s): each signer, having
rebuilt a round, signs a statement of each transaction's fee and each client's share with an
attestation key of its own; a client accepts its share once m signers whose keys it pinned
attested the same statement, and so detects a share the coordinator made up.

This module is the pure core: the statement's canonical bytes, signing and verifying it, and
the m-of-n agreement check. (The signer daemon producing them, the coordinator storing them,
``GetFeeStatement`` returning them and ``vpool fees --verify`` are not wired yet.)

Statement: ``"vpool fee attestation" | u8 1 | 32 round id (manifest hash) | cs #transactions,
per transaction (the round's PSBTs in order, rungs included): 32 txid (display order) | u64 fee
| cs #shares, per share (ascending client id bytes): vb client id | u64 satoshis``. The digest
signed is its SHA256; the signature is bare DER, low S (``pool.ecdsa``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pool import ecdsa
from pool.errors import EncodingError
from pool.hashes import sha256
from pool.serialize import Reader, compact_size, u8, u64le, var_bytes

TAG = b"vpool fee attestation"
VERSION = 1
MAX_CLIENT_ID_BYTES = 128


@dataclass(frozen=True)
class FeeEntry:
    txid: str
    """Display hex."""
    fee: int
    shares: tuple[tuple[str, int], ...]
    """(client id, satoshis), ascending client id bytes, adding up to ``fee``."""


def encode_statement(round_id: bytes, entries: Sequence[FeeEntry]) -> bytes:
    if len(round_id) != 32:
        raise EncodingError("round id must be 32 bytes")
    out = bytearray(TAG + u8(VERSION) + round_id + compact_size(len(entries)))
    for entry in entries:
        if sum(amount for _, amount in entry.shares) != entry.fee:
            raise EncodingError(f"the shares of {entry.txid} do not add up to its fee")
        out += bytes.fromhex(entry.txid) + u64le(entry.fee) + compact_size(len(entry.shares))
        for client, amount in sorted(entry.shares, key=lambda s: s[0].encode()):
            out += var_bytes(client.encode()) + u64le(amount)
    return bytes(out)


def decode_statement(data: bytes) -> tuple[bytes, tuple[FeeEntry, ...]]:
    reader = Reader(data)
    if reader.read(len(TAG)) != TAG or reader.u8() != VERSION:
        raise EncodingError("not a vpool fee attestation of version 1")
    round_id = reader.read(32)
    entries = []
    for _ in range(reader.compact_size()):
        txid = reader.read(32).hex()
        fee = reader.u64()
        shares = tuple(
            (reader.var_bytes(MAX_CLIENT_ID_BYTES).decode(), reader.u64())
            for _ in range(reader.compact_size())
        )
        entries.append(FeeEntry(txid, fee, shares))
    reader.done()
    if encode_statement(round_id, entries) != data:
        raise EncodingError("the statement is not in canonical form")
    return round_id, tuple(entries)


def attest(private_key: bytes, statement: bytes) -> bytes:
    return ecdsa.sign(private_key, sha256(statement))


@dataclass(frozen=True)
class Attestation:
    public_key: bytes
    statement: bytes
    signature: bytes


def verified_share(
    attestations: Sequence[Attestation],
    pinned_keys: Mapping[str, bytes],
    m: int,
    client_id: str,
    txid: str,
) -> int | None:
    """The client's share of transaction ``txid`` if at least ``m`` distinct pinned signers
    (``pinned_keys``: signer id → attestation public key, obtained out of band) signed one and
    the same statement naming it; else None (too few, forged or disagreeing attestations)."""
    by_statement: dict[bytes, set[bytes]] = {}
    pinned = set(pinned_keys.values())
    for a in attestations:
        if a.public_key not in pinned:
            continue
        if not ecdsa.verify(a.public_key, a.signature, sha256(a.statement)):
            continue
        by_statement.setdefault(a.statement, set()).add(a.public_key)
    for statement, keys in by_statement.items():
        if len(keys) < m:
            continue
        _, entries = decode_statement(statement)
        for entry in entries:
            if entry.txid == txid:
                return dict(entry.shares).get(client_id, 0)
    return None
