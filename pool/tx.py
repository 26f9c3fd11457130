"""Immutable Bitcoin transactions and their strict codec (BIP144 segwit serialization).

Decoding is strict: truncated input, trailing bytes, non-minimal CompactSizes, a segwit marker
with a zero flag, an unknown flag, or a witness section whose stacks are all empty are refused,
so that every ``Transaction`` has exactly one serialization in each format.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pool.errors import EncodingError
from pool.hashes import hash256
from pool.serialize import Reader, compact_size, u32le, u64le, var_bytes

MAX_MONEY = 21_000_000 * 100_000_000
"""The largest output value that can be valid, in satoshis."""

WITNESS_SCALE_FACTOR = 4
_SEGWIT_MARKER = 0x00
_SEGWIT_FLAG = 0x01
_U32_MAX = 0xFFFFFFFF


def _check_u32(name: str, n: int) -> None:
    if not 0 <= n <= _U32_MAX:
        raise EncodingError(f"{name} {n} is not a 32-bit unsigned integer")


@dataclass(frozen=True)
class OutPoint:
    """A reference to a transaction output; ``txid`` is in internal (serialized) byte order."""

    txid: bytes
    vout: int

    def __post_init__(self) -> None:
        if len(self.txid) != 32:
            raise EncodingError(f"txid must be 32 bytes, got {len(self.txid)}")
        _check_u32("vout", self.vout)

    @classmethod
    def from_hex(cls, txid_hex: str, vout: int) -> OutPoint:
        """Build from the usual display hex (byte-reversed, as explorers and RPCs show it)."""
        try:
            raw = bytes.fromhex(txid_hex)
        except ValueError:
            raise EncodingError(f"txid {txid_hex!r} is not hex") from None
        return cls(raw[::-1], vout)

    @classmethod
    def from_str(cls, text: str) -> OutPoint:
        """Inverse of ``str()``: ``<txid display hex>:<vout>``."""
        txid_hex, _, vout = text.partition(":")
        try:
            index = int(vout)
        except ValueError:
            raise EncodingError(f"outpoint {text!r} is not <txid>:<vout>") from None
        return cls.from_hex(txid_hex, index)

    @property
    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    def serialize(self) -> bytes:
        return self.txid + u32le(self.vout)

    @classmethod
    def read(cls, reader: Reader) -> OutPoint:
        return cls(reader.read(32), reader.u32())

    def __str__(self) -> str:
        return f"{self.txid_hex}:{self.vout}"


@dataclass(frozen=True)
class TxIn:
    prevout: OutPoint
    sequence: int
    script_sig: bytes = b""

    def __post_init__(self) -> None:
        _check_u32("sequence", self.sequence)

    def serialize(self) -> bytes:
        return self.prevout.serialize() + var_bytes(self.script_sig) + u32le(self.sequence)

    @classmethod
    def read(cls, reader: Reader) -> TxIn:
        prevout = OutPoint.read(reader)
        script_sig = reader.var_bytes()
        return cls(prevout, reader.u32(), script_sig)


@dataclass(frozen=True)
class TxOut:
    value: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.value <= MAX_MONEY:
            raise EncodingError(f"output value {self.value} outside 0..{MAX_MONEY}")

    def serialize(self) -> bytes:
        return u64le(self.value) + var_bytes(self.script_pubkey)

    @classmethod
    def read(cls, reader: Reader) -> TxOut:
        return cls(reader.u64(), reader.var_bytes())

    @classmethod
    def parse(cls, data: bytes) -> TxOut:
        """Decode exactly one serialized output (as in a PSBT witness UTXO)."""
        reader = Reader(data)
        txout = cls.read(reader)
        reader.done()
        return txout


def serialize_witness_stack(stack: tuple[bytes, ...]) -> bytes:
    """CompactSize item count, then each item length-prefixed."""
    return compact_size(len(stack)) + b"".join(var_bytes(item) for item in stack)


def read_witness_stack(reader: Reader) -> tuple[bytes, ...]:
    return tuple(reader.var_bytes() for _ in range(_read_count(reader, "witness item")))


def _read_count(reader: Reader, what: str) -> int:
    """A CompactSize count, refused when the remaining bytes cannot hold that many items."""
    n = reader.compact_size()
    if n > reader.remaining:
        raise EncodingError(f"{n} {what}s cannot fit in the {reader.remaining} bytes left")
    return n


@dataclass(frozen=True)
class Transaction:
    """A transaction. ``witnesses`` is ``()`` when there are none, else one stack per input.

    A tuple of stacks that are all empty is normalized to ``()``, since both serialize alike.
    """

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int
    witnesses: tuple[tuple[bytes, ...], ...] = ()

    def __post_init__(self) -> None:
        _check_u32("version", self.version)
        _check_u32("locktime", self.locktime)
        if not self.inputs:
            raise EncodingError("a transaction needs at least one input")
        if not self.outputs:
            raise EncodingError("a transaction needs at least one output")
        if self.witnesses and len(self.witnesses) != len(self.inputs):
            raise EncodingError(
                f"{len(self.witnesses)} witness stacks for {len(self.inputs)} inputs"
            )
        if not any(self.witnesses):
            object.__setattr__(self, "witnesses", ())

    @property
    def has_witness(self) -> bool:
        return bool(self.witnesses)

    def serialize_without_witness(self) -> bytes:
        """The legacy serialization, which the txid commits to."""
        return u32le(self.version) + self._serialize_inputs_outputs() + u32le(self.locktime)

    def serialize(self) -> bytes:
        """BIP144 serialization with marker and flag when there are witnesses, else legacy."""
        if not self.has_witness:
            return self.serialize_without_witness()
        return (
            u32le(self.version)
            + bytes([_SEGWIT_MARKER, _SEGWIT_FLAG])
            + self._serialize_inputs_outputs()
            + b"".join(serialize_witness_stack(stack) for stack in self.witnesses)
            + u32le(self.locktime)
        )

    def _serialize_inputs_outputs(self) -> bytes:
        return (
            compact_size(len(self.inputs))
            + b"".join(txin.serialize() for txin in self.inputs)
            + compact_size(len(self.outputs))
            + b"".join(txout.serialize() for txout in self.outputs)
        )

    @cached_property
    def txid(self) -> bytes:
        """The txid in internal byte order (computed once: a transaction never changes)."""
        return hash256(self.serialize_without_witness())

    @property
    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    @property
    def wtxid(self) -> bytes:
        """The wtxid in internal byte order (equal to the txid without witnesses)."""
        return hash256(self.serialize())

    @property
    def weight(self) -> int:
        """Bitcoin Core's weight: base size × 3 + total size."""
        base = len(self.serialize_without_witness())
        return base * (WITNESS_SCALE_FACTOR - 1) + len(self.serialize())

    @property
    def vsize(self) -> int:
        return -(-self.weight // WITNESS_SCALE_FACTOR)

    @property
    def total_output_value(self) -> int:
        return sum(txout.value for txout in self.outputs)

    def with_witnesses(self, stacks: tuple[tuple[bytes, ...], ...]) -> Transaction:
        """The same transaction with these witness stacks (one per input, or ``()``)."""
        return Transaction(self.version, self.inputs, self.outputs, self.locktime, stacks)

    @classmethod
    def parse_with_txid(cls, data: bytes) -> tuple[Transaction, bytes]:
        """``parse`` and the txid; a transaction without witnesses is hashed as received (the
        parser accepts only the canonical encoding, so its bytes are its serialization)."""
        tx = cls.parse(data)
        return tx, tx.txid if tx.has_witness else hash256(data)

    @classmethod
    def parse(cls, data: bytes) -> Transaction:
        """Decode a whole transaction in either serialization; refuse anything non-canonical."""
        reader = Reader(data)
        version = reader.u32()
        n_inputs = _read_count(reader, "input")
        segwit = n_inputs == _SEGWIT_MARKER  # unambiguous, as transactions need an input
        if segwit:
            flag = reader.u8()
            if flag != _SEGWIT_FLAG:
                raise EncodingError(
                    f"zero inputs, or a segwit marker followed by flag 0x{flag:02x} (not 0x01)"
                )
            n_inputs = _read_count(reader, "input")
        inputs = tuple(TxIn.read(reader) for _ in range(n_inputs))
        outputs = tuple(TxOut.read(reader) for _ in range(_read_count(reader, "output")))
        witnesses: tuple[tuple[bytes, ...], ...] = ()
        if segwit:
            witnesses = tuple(read_witness_stack(reader) for _ in inputs)
            if not any(witnesses):
                raise EncodingError("segwit serialization with only empty witness stacks")
        locktime = reader.u32()
        reader.done()
        return cls(version, inputs, outputs, locktime, witnesses)
