"""BIP143 signature hashes for segwit v0 inputs, with the per-transaction hashes computed once.

``SegwitV0Sighasher`` hashes the prevouts, sequences and outputs when it is built, so each
further digest hashes a preimage of constant size (apart from the script code): signing every
input of a transaction costs time linear in its size, not quadratic.
"""

from __future__ import annotations

from pool.errors import SignatureError
from pool.hashes import hash256
from pool.serialize import u32le, u64le, var_bytes
from pool.tx import MAX_MONEY, Transaction

SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
SIGHASH_TYPES = frozenset(
    base | acp
    for base in (SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE)
    for acp in (0, SIGHASH_ANYONECANPAY)
)
"""The six defined sighash types (Bitcoin Core's standardness rule for signatures)."""

_ZERO_HASH = bytes(32)


class SegwitV0Sighasher:
    """Computes BIP143 digests for the inputs of one transaction."""

    __slots__ = (
        "_hash_outputs",
        "_hash_prevouts",
        "_hash_sequence",
        "_locktime",
        "_tx",
        "_version",
    )

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._version = u32le(tx.version)
        self._locktime = u32le(tx.locktime)
        self._hash_prevouts = hash256(b"".join(txin.prevout.serialize() for txin in tx.inputs))
        self._hash_sequence = hash256(b"".join(u32le(txin.sequence) for txin in tx.inputs))
        self._hash_outputs = hash256(b"".join(txout.serialize() for txout in tx.outputs))

    def digest(
        self, input_index: int, script_code: bytes, amount: int, sighash_type: int = SIGHASH_ALL
    ) -> bytes:
        """The digest a signature of input ``input_index`` commits to.

        ``script_code`` is the witness script for P2WSH; ``amount`` is the value of the output
        being spent, in satoshis.
        """
        if not 0 <= input_index < len(self._tx.inputs):
            raise SignatureError(f"input index {input_index} outside 0..{len(self._tx.inputs) - 1}")
        if sighash_type not in SIGHASH_TYPES:
            raise SignatureError(f"undefined sighash type 0x{sighash_type:02x}")
        if not 0 <= amount <= MAX_MONEY:
            raise SignatureError(f"amount {amount} outside 0..{MAX_MONEY}")
        txin = self._tx.inputs[input_index]
        base = sighash_type & 0x1F
        anyone_can_pay = bool(sighash_type & SIGHASH_ANYONECANPAY)
        commits_to_all_sequences = not anyone_can_pay and base == SIGHASH_ALL
        preimage = b"".join(
            (
                self._version,
                _ZERO_HASH if anyone_can_pay else self._hash_prevouts,
                self._hash_sequence if commits_to_all_sequences else _ZERO_HASH,
                txin.prevout.serialize(),
                var_bytes(script_code),
                u64le(amount),
                u32le(txin.sequence),
                self._outputs_hash(input_index, base),
                self._locktime,
                u32le(sighash_type),
            )
        )
        return hash256(preimage)

    def _outputs_hash(self, input_index: int, base: int) -> bytes:
        if base == SIGHASH_ALL:
            return self._hash_outputs
        if base == SIGHASH_SINGLE and input_index < len(self._tx.outputs):
            return hash256(self._tx.outputs[input_index].serialize())
        return _ZERO_HASH
