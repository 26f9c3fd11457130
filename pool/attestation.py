"""Fee attestations (the voting pool's m identical ``txFeeNotice``s): each signer, having
rebuilt a round, signs one statement per transaction of it (each ladder rung and each cancel
replacement is a transaction of its own): the transaction's id, its whole fee, and each
client's share of it as ``pool.withdrawal`` / ``pool.ladder`` / ``pool.cancel`` compute them,
under the round's manifest hash, with an attestation key of its own. A client accepts its share
of the transaction that confirmed once m distinct signers whose attestation keys it pinned signed
one and the same statement naming it, and so detects a share the coordinator made up.

Statement (docs/fee-attestations.md), all integers little-endian::

    "vpool fee attestation" (21 ASCII bytes) | u8 version = 1
    | 32 manifest hash | 32 txid (display order, as written in hex) | u8 rung (0: not a rung)
    | u64 fee | compact size n | n × (var_bytes client id (UTF-8, 1..128 bytes) | u64 share)

Shares in strictly ascending order of the client id's bytes, adding up to the fee. The digest
signed is SHA256 of the whole statement (the tag is its first bytes, so no other vpool message
hashes to a statement); the signature is ECDSA over secp256k1, strict DER, low S
(``pool.ecdsa``), by the 33-byte compressed attestation public key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pool import ecdsa
from pool.cancel import CancelPlan
from pool.errors import EncodingError
from pool.hashes import sha256
from pool.serialize import Reader, compact_size, u8, u64le, var_bytes
from pool.withdrawal import RoundPlan

TAG = b"vpool fee attestation"
VERSION = 1
MAX_CLIENT_ID_BYTES = 128
MAX_RUNG = 255


@dataclass(frozen=True)
class FeeStatement:
    """What one statement says of one transaction of one round."""

    manifest_hash: bytes
    """The round (a cancel round's own manifest hash for its replacements)."""
    txid: str
    """Display hex."""
    rung: int
    """0 for a transaction as the round built it, k for rung k of its fee ladder."""
    fee: int
    shares: tuple[tuple[str, int], ...]
    """(client id, satoshis), strictly ascending client id bytes, adding up to ``fee``."""

    def share_of(self, client_id: str) -> int:
        return dict(self.shares).get(client_id, 0)


def encode_statement(statement: FeeStatement) -> bytes:
    """The canonical bytes; ``EncodingError`` for a statement that has none."""
    s = statement
    if len(s.manifest_hash) != 32:
        raise EncodingError("manifest hash must be 32 bytes")
    try:
        txid = bytes.fromhex(s.txid)
    except ValueError:
        raise EncodingError("txid must be hex") from None
    if len(txid) != 32:
        raise EncodingError("txid must be 32 bytes")
    if not 0 <= s.rung <= MAX_RUNG:
        raise EncodingError(f"rung must be 0 to {MAX_RUNG}")
    if sum(amount for _, amount in s.shares) != s.fee:
        raise EncodingError(f"the shares of {s.txid} do not add up to its fee")
    ids = [client.encode() for client, _ in s.shares]
    if ids != sorted(set(ids)):
        raise EncodingError("shares must be in strictly ascending client id order")
    out = bytearray(TAG + u8(VERSION) + s.manifest_hash + txid + u8(s.rung) + u64le(s.fee))
    out += compact_size(len(s.shares))
    for (_, amount), client in zip(s.shares, ids, strict=True):
        if not 1 <= len(client) <= MAX_CLIENT_ID_BYTES or amount < 0:
            raise EncodingError("client id must be 1 to 128 bytes, a share not negative")
        out += var_bytes(client) + u64le(amount)
    return bytes(out)


def decode_statement(data: bytes) -> FeeStatement:
    """The statement in ``data``; ``EncodingError`` unless ``data`` is one, canonically."""
    reader = Reader(data)
    if reader.read(len(TAG)) != TAG or reader.u8() != VERSION:
        raise EncodingError("not a vpool fee attestation of version 1")
    manifest_hash = reader.read(32)
    txid = reader.read(32).hex()
    rung = reader.u8()
    fee = reader.u64()
    shares = tuple(
        (_client_id(reader.var_bytes(MAX_CLIENT_ID_BYTES)), reader.u64())
        for _ in range(reader.compact_size())
    )
    reader.done()
    statement = FeeStatement(manifest_hash, txid, rung, fee, shares)
    if encode_statement(statement) != data:
        raise EncodingError("the statement is not in canonical form")
    return statement


def _client_id(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise EncodingError("a client id is not UTF-8") from None


def round_statements(plan: RoundPlan) -> tuple[FeeStatement, ...]:
    """One statement per PSBT of a withdrawal round, in the round's PSBT order: each
    transaction, then each rung of the fee ladder."""
    h = plan.manifest_hash
    return tuple(
        FeeStatement(h, t.txid_hex, 0, t.fee, t.fee_shares) for t in plan.transactions
    ) + tuple(FeeStatement(h, r.txid_hex, r.step, r.fee, r.fee_shares) for r in plan.rungs)


def cancel_statements(plan: CancelPlan) -> tuple[FeeStatement, ...]:
    """One statement per replacement of a cancel round, in its PSBT order."""
    return tuple(
        FeeStatement(plan.manifest_hash, t.txid_hex, 0, t.fee, t.fee_shares)
        for t in plan.transactions
    )


def attest(private_key: bytes, statement: bytes) -> bytes:
    """The attestation of ``statement`` (its canonical bytes) by ``private_key``."""
    return ecdsa.sign(private_key, sha256(statement))


@dataclass(frozen=True)
class Attestation:
    public_key: bytes
    """33-byte compressed secp256k1 key of the signer that attested."""
    statement: bytes
    """The statement's canonical bytes."""
    signature: bytes
    """DER, low S, over SHA256(statement)."""

    def is_valid(self) -> bool:
        return ecdsa.verify(self.public_key, self.signature, sha256(self.statement))


@dataclass(frozen=True)
class Verified:
    """A statement that enough pinned signers attested."""

    statement: FeeStatement
    signers: tuple[str, ...]
    """The pinned signers (by name) whose valid attestation of it was found, sorted."""


def verify_share(
    attestations: Sequence[Attestation],
    pinned_keys: Mapping[str, bytes],
    m: int,
    manifest_hash: bytes,
    txid: str,
) -> Verified | None:
    """The statement of transaction ``txid`` of round ``manifest_hash`` that at least ``m``
    distinct pinned signers attested (``pinned_keys``: signer name → attestation public key,
    from the operator's published signer list, never from the coordinator); None when there is
    none: too few attestations, or forged ones (an unpinned key, a signature that does not verify
    over the statement), or signers that disagree, or statements of another round or transaction.
    Two statements of one transaction that both reach m would mean m signers signed two fee
    splits of one transaction: also None."""
    if m < 1:
        raise ValueError("m must be at least 1")
    name_of = {key: name for name, key in pinned_keys.items()}
    by_statement: dict[bytes, set[str]] = {}
    for a in attestations:
        name = name_of.get(a.public_key)
        if name is None or not a.is_valid():
            continue
        try:
            statement = decode_statement(a.statement)
        except EncodingError:
            continue
        if statement.manifest_hash != manifest_hash or statement.txid != txid:
            continue
        by_statement.setdefault(a.statement, set()).add(name)
    agreed = [(raw, names) for raw, names in by_statement.items() if len(names) >= m]
    if len(agreed) != 1:
        return None
    raw, names = agreed[0]
    return Verified(decode_statement(raw), tuple(sorted(names)))
