"""A strict, canonical BIP174 codec for PSBT version 0.

Parsing refuses anything BIP174 forbids or leaves ambiguous: bad magic, duplicate keys, key data
of the wrong length for its type, fields of PSBT version 2 (BIP370), an unsigned transaction with
scriptSigs or witnesses, a non-witness UTXO that is not the transaction spent, map counts that do
not match the transaction, non-minimal CompactSizes, trailing bytes, and oversized input. Every
error is a ``PsbtError`` naming the map and the key type.

Serialization is canonical: within each map the entries are written in ascending order of their
full key bytes, so equal PSBTs always have equal bytes. Key types this module does not interpret
(hash preimages, taproot fields, proprietary and unknown types) are kept verbatim in ``unknown``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from pool.ecdsa import is_valid_public_key
from pool.errors import PsbtError, VpoolError
from pool.hdkeys import KeyOrigin
from pool.serialize import Reader, compact_size, u32le, var_bytes
from pool.tx import OutPoint, Transaction, TxOut, read_witness_stack, serialize_witness_stack

MAGIC = b"psbt\xff"
DEFAULT_MAX_SIZE = 4_000_000
"""The largest PSBT ``parse`` accepts by default, in bytes."""

SERIALIZED_XPUB_LEN = 78

GLOBAL_UNSIGNED_TX = 0x00
GLOBAL_XPUB = 0x01
GLOBAL_VERSION = 0xFB

IN_NON_WITNESS_UTXO = 0x00
IN_WITNESS_UTXO = 0x01
IN_PARTIAL_SIG = 0x02
IN_SIGHASH_TYPE = 0x03
IN_REDEEM_SCRIPT = 0x04
IN_WITNESS_SCRIPT = 0x05
IN_BIP32_DERIVATION = 0x06
IN_FINAL_SCRIPTSIG = 0x07
IN_FINAL_SCRIPTWITNESS = 0x08

OUT_REDEEM_SCRIPT = 0x00
OUT_WITNESS_SCRIPT = 0x01
OUT_BIP32_DERIVATION = 0x02

_GLOBAL_NAMES = {
    GLOBAL_UNSIGNED_TX: "PSBT_GLOBAL_UNSIGNED_TX",
    GLOBAL_XPUB: "PSBT_GLOBAL_XPUB",
    0x02: "PSBT_GLOBAL_TX_VERSION",
    0x03: "PSBT_GLOBAL_FALLBACK_LOCKTIME",
    0x04: "PSBT_GLOBAL_INPUT_COUNT",
    0x05: "PSBT_GLOBAL_OUTPUT_COUNT",
    0x06: "PSBT_GLOBAL_TX_MODIFIABLE",
    GLOBAL_VERSION: "PSBT_GLOBAL_VERSION",
}
_INPUT_NAMES = {
    IN_NON_WITNESS_UTXO: "PSBT_IN_NON_WITNESS_UTXO",
    IN_WITNESS_UTXO: "PSBT_IN_WITNESS_UTXO",
    IN_PARTIAL_SIG: "PSBT_IN_PARTIAL_SIG",
    IN_SIGHASH_TYPE: "PSBT_IN_SIGHASH_TYPE",
    IN_REDEEM_SCRIPT: "PSBT_IN_REDEEM_SCRIPT",
    IN_WITNESS_SCRIPT: "PSBT_IN_WITNESS_SCRIPT",
    IN_BIP32_DERIVATION: "PSBT_IN_BIP32_DERIVATION",
    IN_FINAL_SCRIPTSIG: "PSBT_IN_FINAL_SCRIPTSIG",
    IN_FINAL_SCRIPTWITNESS: "PSBT_IN_FINAL_SCRIPTWITNESS",
    0x0E: "PSBT_IN_PREVIOUS_TXID",
    0x0F: "PSBT_IN_OUTPUT_INDEX",
    0x10: "PSBT_IN_SEQUENCE",
    0x11: "PSBT_IN_REQUIRED_TIME_LOCKTIME",
    0x12: "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME",
}
_OUTPUT_NAMES = {
    OUT_REDEEM_SCRIPT: "PSBT_OUT_REDEEM_SCRIPT",
    OUT_WITNESS_SCRIPT: "PSBT_OUT_WITNESS_SCRIPT",
    OUT_BIP32_DERIVATION: "PSBT_OUT_BIP32_DERIVATION",
    0x03: "PSBT_OUT_AMOUNT",
    0x04: "PSBT_OUT_SCRIPT",
}
_INPUT_KEYLESS = frozenset(
    {
        IN_NON_WITNESS_UTXO,
        IN_WITNESS_UTXO,
        IN_SIGHASH_TYPE,
        IN_REDEEM_SCRIPT,
        IN_WITNESS_SCRIPT,
        IN_FINAL_SCRIPTSIG,
        IN_FINAL_SCRIPTWITNESS,
    }
)
"""The input fields interpreted here whose key data must be empty."""
# BIP370 (PSBT version 2) fields, which BIP174 excludes from version 0.
_GLOBAL_V2_ONLY = frozenset(range(0x02, 0x07))
_INPUT_V2_ONLY = frozenset(range(0x0E, 0x13))
_OUTPUT_V2_ONLY = frozenset({0x03, 0x04})


# --- small helpers -----------------------------------------------------------------------------


@contextmanager
def _context(label: str) -> Iterator[None]:
    """Prefix any core error raised inside with ``label`` and turn it into a ``PsbtError``."""
    try:
        yield
    except VpoolError as exc:
        raise PsbtError(f"{label}: {exc}") from None


def _key_name(key_type: int, names: dict[int, str]) -> str:
    """``PSBT_IN_PARTIAL_SIG (0x02)`` style, for error messages."""
    return f"{names.get(key_type, 'unknown key type')} (0x{key_type:02x})"


def _key(key_type: int, key_data: bytes = b"") -> bytes:
    return compact_size(key_type) + key_data


def _split_key(key: bytes) -> tuple[int, bytes]:
    """``(key type, key data)`` of a full key; the type is a minimal CompactSize."""
    reader = Reader(key)
    key_type = reader.compact_size()
    return key_type, reader.read(reader.remaining)


def _require_no_key_data(key_data: bytes) -> None:
    if key_data:
        raise PsbtError(f"key data must be empty, got {len(key_data)} bytes")


def _check_pubkeys(pubkeys: Iterable[bytes], key_type: int, names: dict[int, str]) -> None:
    """Every key of a map's entries of ``key_type`` is a valid public key (the error names the
    key type)."""
    for pubkey in pubkeys:
        if len(pubkey) not in (33, 65):
            what = _key_name(key_type, names)
            raise PsbtError(f"{what}: a public key must be 33 or 65 bytes, got {len(pubkey)}")
        if not is_valid_public_key(pubkey):
            what = _key_name(key_type, names)
            raise PsbtError(f"{what}: {pubkey.hex()} is not a valid public key")


def _check_unknown(unknown: dict[bytes, bytes], names: dict[int, str]) -> None:
    """Unknown entries must be well-formed keys of types this module does not interpret."""
    for key in unknown:
        with _context(f"unknown key {key.hex()}"):
            key_type, _ = _split_key(key)
        if key_type in names:
            raise PsbtError(f"unknown entries hold key type {_key_name(key_type, names)}")


def _encode_origin(origin: KeyOrigin) -> bytes:
    return origin.fingerprint + b"".join(u32le(index) for index in origin.path)


def _decode_origin(value: bytes) -> KeyOrigin:
    if len(value) < 4 or len(value) % 4:
        raise PsbtError(
            f"key origin must be a 4-byte fingerprint and 4 bytes per step, got {len(value)}"
        )
    path = struct.unpack(f"<{len(value) // 4 - 1}I", value[4:])
    return KeyOrigin(value[:4], path)


def _decode_u32(value: bytes) -> int:
    if len(value) != 4:
        raise PsbtError(f"value must be a 4-byte integer, got {len(value)} bytes")
    return int.from_bytes(value, "little")


def _decode_witness(value: bytes) -> tuple[bytes, ...]:
    reader = Reader(value)
    stack = read_witness_stack(reader)
    reader.done()
    return stack


class _Entry(NamedTuple):
    key_type: int
    key_data: bytes
    key: bytes
    value: bytes
    names: dict[int, str]

    @property
    def label(self) -> str:
        """``PSBT_IN_PARTIAL_SIG (0x02)`` style: what errors about this entry start with."""
        return _key_name(self.key_type, self.names)


def _read_map(reader: Reader, names: dict[int, str]) -> list[_Entry]:
    """The entries of one map, up to its separator; duplicate keys are refused."""
    entries: list[_Entry] = []
    seen: set[bytes] = set()
    while key := reader.var_bytes():
        key_type, key_data = _split_key(key)
        # What ``with _context(label)`` does, with the label made only for an error.
        try:
            if key in seen:
                raise PsbtError(f"duplicate key {key.hex()}")
            seen.add(key)
            entries.append(_Entry(key_type, key_data, key, reader.var_bytes(), names))
        except VpoolError as exc:
            raise PsbtError(f"{_key_name(key_type, names)}: {exc}") from None
    return entries


def _refuse_v2_only(key_type: int, v2_only: frozenset[int]) -> None:
    if key_type in v2_only:
        raise PsbtError("this key type is not allowed in PSBT version 0")


def _check_version(version: int) -> None:
    if version != 0:
        raise PsbtError(f"only PSBT version 0 is supported, got version {version}")


def _write_map(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Entries in ascending order of their full key bytes, then the 0x00 separator."""
    return b"".join(var_bytes(key) + var_bytes(value) for key, value in sorted(entries)) + b"\0"


# --- maps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PsbtInput:
    """One input map. Its dicts are copied on construction; derive changed maps with ``replace``."""

    witness_utxo: TxOut | None = None
    non_witness_utxo: bytes | None = None
    """The whole previous transaction, kept as its raw bytes."""
    partial_sigs: dict[bytes, bytes] = field(default_factory=dict)
    """Public key → DER signature followed by its sighash byte."""
    sighash_type: int | None = None
    redeem_script: bytes | None = None
    witness_script: bytes | None = None
    bip32_derivations: dict[bytes, KeyOrigin] = field(default_factory=dict)
    final_script_sig: bytes | None = None
    final_script_witness: tuple[bytes, ...] | None = None
    unknown: dict[bytes, bytes] = field(default_factory=dict)
    """Full key (type and key data) → value, for every key type not interpreted here."""

    def __post_init__(self) -> None:
        for name in ("partial_sigs", "bip32_derivations", "unknown"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        _check_pubkeys(self.partial_sigs, IN_PARTIAL_SIG, _INPUT_NAMES)
        _check_pubkeys(self.bip32_derivations, IN_BIP32_DERIVATION, _INPUT_NAMES)
        if self.sighash_type is not None and not 0 <= self.sighash_type <= 0xFFFFFFFF:
            label = _key_name(IN_SIGHASH_TYPE, _INPUT_NAMES)
            raise PsbtError(f"{label}: not a 32-bit unsigned integer")
        _check_unknown(self.unknown, _INPUT_NAMES)

    @property
    def is_finalized(self) -> bool:
        return self.final_script_sig is not None or self.final_script_witness is not None

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        """The ``(full key, value)`` pairs of this map, in no particular order."""
        if self.non_witness_utxo is not None:
            yield _key(IN_NON_WITNESS_UTXO), self.non_witness_utxo
        if self.witness_utxo is not None:
            yield _key(IN_WITNESS_UTXO), self.witness_utxo.serialize()
        for pubkey, signature in self.partial_sigs.items():
            yield _key(IN_PARTIAL_SIG, pubkey), signature
        if self.sighash_type is not None:
            yield _key(IN_SIGHASH_TYPE), u32le(self.sighash_type)
        if self.redeem_script is not None:
            yield _key(IN_REDEEM_SCRIPT), self.redeem_script
        if self.witness_script is not None:
            yield _key(IN_WITNESS_SCRIPT), self.witness_script
        for pubkey, origin in self.bip32_derivations.items():
            yield _key(IN_BIP32_DERIVATION, pubkey), _encode_origin(origin)
        if self.final_script_sig is not None:
            yield _key(IN_FINAL_SCRIPTSIG), self.final_script_sig
        if self.final_script_witness is not None:
            yield _key(IN_FINAL_SCRIPTWITNESS), serialize_witness_stack(self.final_script_witness)
        yield from self.unknown.items()


def _decode_input(entries: list[_Entry]) -> PsbtInput:
    witness_utxo: TxOut | None = None
    non_witness_utxo: bytes | None = None
    sighash_type: int | None = None
    redeem_script: bytes | None = None
    witness_script: bytes | None = None
    final_script_sig: bytes | None = None
    final_script_witness: tuple[bytes, ...] | None = None
    partial_sigs: dict[bytes, bytes] = {}
    derivations: dict[bytes, KeyOrigin] = {}
    unknown: dict[bytes, bytes] = {}
    entry: _Entry | None = None
    try:  # for each entry, what ``with _context(entry.label)`` does
        for entry in entries:
            _refuse_v2_only(entry.key_type, _INPUT_V2_ONLY)
            if entry.key_type == IN_PARTIAL_SIG:
                partial_sigs[entry.key_data] = entry.value
            elif entry.key_type == IN_BIP32_DERIVATION:
                derivations[entry.key_data] = _decode_origin(entry.value)
            elif entry.key_type not in _INPUT_KEYLESS:
                unknown[entry.key] = entry.value
            else:
                _require_no_key_data(entry.key_data)
                if entry.key_type == IN_NON_WITNESS_UTXO:
                    non_witness_utxo = entry.value
                elif entry.key_type == IN_WITNESS_UTXO:
                    witness_utxo = TxOut.parse(entry.value)
                elif entry.key_type == IN_SIGHASH_TYPE:
                    sighash_type = _decode_u32(entry.value)
                elif entry.key_type == IN_REDEEM_SCRIPT:
                    redeem_script = entry.value
                elif entry.key_type == IN_WITNESS_SCRIPT:
                    witness_script = entry.value
                elif entry.key_type == IN_FINAL_SCRIPTSIG:
                    final_script_sig = entry.value
                else:
                    final_script_witness = _decode_witness(entry.value)
    except VpoolError as exc:
        assert entry is not None
        raise PsbtError(f"{entry.label}: {exc}") from None
    return PsbtInput(
        witness_utxo=witness_utxo,
        non_witness_utxo=non_witness_utxo,
        partial_sigs=partial_sigs,
        sighash_type=sighash_type,
        redeem_script=redeem_script,
        witness_script=witness_script,
        bip32_derivations=derivations,
        final_script_sig=final_script_sig,
        final_script_witness=final_script_witness,
        unknown=unknown,
    )


@dataclass(frozen=True)
class PsbtOutput:
    """One output map. Its dicts are copied on construction."""

    redeem_script: bytes | None = None
    witness_script: bytes | None = None
    bip32_derivations: dict[bytes, KeyOrigin] = field(default_factory=dict)
    unknown: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("bip32_derivations", "unknown"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        _check_pubkeys(self.bip32_derivations, OUT_BIP32_DERIVATION, _OUTPUT_NAMES)
        _check_unknown(self.unknown, _OUTPUT_NAMES)

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        """The ``(full key, value)`` pairs of this map, in no particular order."""
        if self.redeem_script is not None:
            yield _key(OUT_REDEEM_SCRIPT), self.redeem_script
        if self.witness_script is not None:
            yield _key(OUT_WITNESS_SCRIPT), self.witness_script
        for pubkey, origin in self.bip32_derivations.items():
            yield _key(OUT_BIP32_DERIVATION, pubkey), _encode_origin(origin)
        yield from self.unknown.items()


def _decode_output(entries: list[_Entry]) -> PsbtOutput:
    redeem_script: bytes | None = None
    witness_script: bytes | None = None
    derivations: dict[bytes, KeyOrigin] = {}
    unknown: dict[bytes, bytes] = {}
    entry: _Entry | None = None
    try:  # for each entry, what ``with _context(entry.label)`` does
        for entry in entries:
            _refuse_v2_only(entry.key_type, _OUTPUT_V2_ONLY)
            if entry.key_type == OUT_BIP32_DERIVATION:
                derivations[entry.key_data] = _decode_origin(entry.value)
            elif entry.key_type == OUT_REDEEM_SCRIPT:
                _require_no_key_data(entry.key_data)
                redeem_script = entry.value
            elif entry.key_type == OUT_WITNESS_SCRIPT:
                _require_no_key_data(entry.key_data)
                witness_script = entry.value
            else:
                unknown[entry.key] = entry.value
    except VpoolError as exc:
        assert entry is not None
        raise PsbtError(f"{entry.label}: {exc}") from None
    return PsbtOutput(redeem_script, witness_script, derivations, unknown)


# --- the PSBT ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Psbt:
    """A version 0 PSBT: the unsigned transaction and one map per input and per output."""

    tx: Transaction
    inputs: tuple[PsbtInput, ...]
    outputs: tuple[PsbtOutput, ...]
    xpubs: dict[bytes, KeyOrigin] = field(default_factory=dict)
    """78-byte serialized extended public key → its origin."""
    version: int = 0
    unknown: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "xpubs", dict(self.xpubs))
        object.__setattr__(self, "unknown", dict(self.unknown))
        with _context("global map"):
            self._check_globals()
        if len(self.inputs) != len(self.tx.inputs):
            raise PsbtError(f"{len(self.inputs)} input maps for {len(self.tx.inputs)} inputs")
        if len(self.outputs) != len(self.tx.outputs):
            raise PsbtError(f"{len(self.outputs)} output maps for {len(self.tx.outputs)} outputs")
        for index, (psbt_input, txin) in enumerate(zip(self.inputs, self.tx.inputs, strict=True)):
            if psbt_input.non_witness_utxo is not None:
                label = _key_name(IN_NON_WITNESS_UTXO, _INPUT_NAMES)
                with _context(f"input {index}"), _context(label):
                    _check_previous_tx(psbt_input.non_witness_utxo, txin.prevout)

    def _check_globals(self) -> None:
        with _context(_key_name(GLOBAL_VERSION, _GLOBAL_NAMES)):
            _check_version(self.version)
        with _context(_key_name(GLOBAL_UNSIGNED_TX, _GLOBAL_NAMES)):
            if self.tx.has_witness:
                raise PsbtError("the unsigned transaction has witnesses")
            for index, txin in enumerate(self.tx.inputs):
                if txin.script_sig:
                    raise PsbtError(f"input {index} of the unsigned transaction has a scriptSig")
        with _context(_key_name(GLOBAL_XPUB, _GLOBAL_NAMES)):
            for xpub in self.xpubs:
                if len(xpub) != SERIALIZED_XPUB_LEN:
                    raise PsbtError(
                        f"key data must be a {SERIALIZED_XPUB_LEN}-byte extended public key,"
                        f" got {len(xpub)} bytes"
                    )
        _check_unknown(self.unknown, _GLOBAL_NAMES)

    @classmethod
    def from_unsigned_tx(cls, tx: Transaction) -> Psbt:
        """A PSBT with empty maps (the BIP174 Creator)."""
        return cls(
            tx,
            tuple(PsbtInput() for _ in tx.inputs),
            tuple(PsbtOutput() for _ in tx.outputs),
        )

    def serialize(self) -> bytes:
        """The canonical encoding: every map's entries in ascending key order."""
        return (
            MAGIC
            + _write_map(self._global_entries())
            + b"".join(_write_map(psbt_input.entries()) for psbt_input in self.inputs)
            + b"".join(_write_map(psbt_output.entries()) for psbt_output in self.outputs)
        )

    def _global_entries(self) -> Iterator[tuple[bytes, bytes]]:
        yield _key(GLOBAL_UNSIGNED_TX), self.tx.serialize_without_witness()
        for xpub, origin in self.xpubs.items():
            yield _key(GLOBAL_XPUB, xpub), _encode_origin(origin)
        yield from self.unknown.items()

    def to_base64(self) -> str:
        return base64.b64encode(self.serialize()).decode("ascii")

    @classmethod
    def from_base64(cls, text: str, max_size: int = DEFAULT_MAX_SIZE) -> Psbt:
        """Decode canonical base64 (no whitespace), then ``parse``."""
        if len(text) > 4 * -(-max_size // 3):
            raise PsbtError(f"PSBT exceeds the limit of {max_size} bytes")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise PsbtError("PSBT is not valid base64") from None
        if base64.b64encode(data).decode("ascii") != text:
            raise PsbtError("PSBT base64 is not canonical")
        return cls.parse(data, max_size)

    @classmethod
    def parse(cls, data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Psbt:
        """Decode a binary PSBT strictly; refuse it before reading when over ``max_size``."""
        if len(data) > max_size:
            raise PsbtError(f"PSBT of {len(data)} bytes exceeds the limit of {max_size} bytes")
        if not data.startswith(MAGIC):
            raise PsbtError("not a PSBT: the magic bytes 70736274ff are missing")
        reader = Reader(data[len(MAGIC) :])
        with _context("global map"):
            tx, xpubs, unknown = _decode_globals(_read_map(reader, _GLOBAL_NAMES))
        inputs: list[PsbtInput] = []
        for index in range(len(tx.inputs)):
            with _context(f"input {index}"):
                inputs.append(_decode_input(_read_map(reader, _INPUT_NAMES)))
        outputs: list[PsbtOutput] = []
        for index in range(len(tx.outputs)):
            with _context(f"output {index}"):
                outputs.append(_decode_output(_read_map(reader, _OUTPUT_NAMES)))
        if reader.remaining:
            raise PsbtError(f"{reader.remaining} trailing bytes after the last output map")
        return cls(tx, tuple(inputs), tuple(outputs), xpubs, unknown=unknown)


def _decode_globals(
    entries: list[_Entry],
) -> tuple[Transaction, dict[bytes, KeyOrigin], dict[bytes, bytes]]:
    """The unsigned transaction, xpubs and unknown entries; the version is checked first."""
    for entry in entries:
        if entry.key_type == GLOBAL_VERSION:
            with _context(entry.label):
                _require_no_key_data(entry.key_data)
                _check_version(_decode_u32(entry.value))
    tx: Transaction | None = None
    xpubs: dict[bytes, KeyOrigin] = {}
    unknown: dict[bytes, bytes] = {}
    for entry in entries:
        with _context(entry.label):
            _refuse_v2_only(entry.key_type, _GLOBAL_V2_ONLY)
            if entry.key_type == GLOBAL_XPUB:
                xpubs[entry.key_data] = _decode_origin(entry.value)
            elif entry.key_type == GLOBAL_UNSIGNED_TX:
                _require_no_key_data(entry.key_data)
                tx = Transaction.parse(entry.value)
            elif entry.key_type != GLOBAL_VERSION:
                unknown[entry.key] = entry.value
    if tx is None:
        raise PsbtError("PSBT_GLOBAL_UNSIGNED_TX (0x00) is missing")
    return tx, xpubs, unknown


def _check_previous_tx(raw: bytes, prevout: OutPoint) -> None:
    """The non-witness UTXO must be the transaction the input spends, with that output."""
    txid, outputs = _previous_tx_outline(raw)
    if txid != prevout.txid:
        txid_hex = txid[::-1].hex()
        raise PsbtError(f"transaction {txid_hex} is not {prevout.txid_hex}, the one spent")
    if prevout.vout >= outputs:
        raise PsbtError(f"the previous transaction has no output {prevout.vout}")


@lru_cache(maxsize=4096)
def _previous_tx_outline(raw: bytes) -> tuple[bytes, int]:
    """``(txid, output count)`` of a previous transaction, parsed once however many inputs (and
    copies of a PSBT) carry it."""
    previous, txid = Transaction.parse_with_txid(raw)
    return txid, len(previous.outputs)
