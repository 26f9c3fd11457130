"""Refund rounds: the refund manifest and the deterministic refund transactions.

A refund manifest names pool deposits to send back, each with the raw deposit transaction (so a
signer can check that the deposit really pays the pool) and its destination: the refund address
registered with the deposit address, the sender (derived from the raw transaction spent by the
deposit's first input, which the manifest then carries too), or an operator's choice.
``build_refunds`` turns it into one unsigned transaction per deposit; every signer rebuilds them
and signs only on byte equality. The rules are specified in ``docs/refund-algorithm.md``.

Encoding (all integers little-endian, ``cs`` = CompactSize, ``vb`` = cs length + bytes)::

    "VPRF" | u8 encoding version (1) | u32 algorithm version | u8 network code
    cs #series, per series (ascending id): as in the round manifest (pool/manifest.py)
    u32 tip height | 32 tip hash (display byte order, as RPCs print it)
    u64 fee rate (sat per 1000 vB) | u64 dust limit
    cs #refunds, per refund (ascending txid display hex, then vout):
        32 txid (internal order) | u32 vout | u64 value | u32 series | u32 index
        | u8 source (0 registered, 1 sender, 2 operator) | vb destination scriptPubKey
        | vb raw deposit transaction | vb raw previous transaction (empty unless sender)

The decoder refuses anything that is not exactly what the encoder writes: unknown versions,
lists out of canonical order or with duplicates, trailing bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pool.errors import EncodingError, ManifestError, VpoolError
from pool.hashes import sha256
from pool.manifest import (
    MAX_INDEX,
    MAX_MONEY,
    MAX_SCRIPT_PUBKEY_LEN,
    check_range,
    check_script_pubkey,
    check_shared_fields,
    decode_header,
    decode_series_list,
    encode_header,
    encode_series_list,
)
from pool.networks import Network, get_network
from pool.psbt import Psbt, PsbtOutput
from pool.psbt_fields import global_xpubs, pool_input
from pool.serialize import Reader, compact_size, u8, u32le, u64le, var_bytes
from pool.series import RECEIVE, Series
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.weights import fee_for_weight, multisig_input_weight, output_weight, tx_weight
from pool.withdrawal import SEQUENCE_RBF, TX_VERSION

REFUND_ALGORITHM_VERSION = 1
ENCODING_VERSION = 1
MAGIC = b"VPRF"
MAX_RAW_TX_BYTES = 4_000_000
"""The largest raw transaction a refund manifest carries (a whole block's worth)."""


class RefundSource(StrEnum):
    """Where a refund's destination comes from."""

    REGISTERED = "registered"
    """The refund address registered with the deposit address."""
    SENDER = "sender"
    """The output spent by the deposit's first input."""
    OPERATOR = "operator"
    """Chosen by an operator (``AdminService.ProposeRefund``)."""


_SOURCE_CODES = {RefundSource.REGISTERED: 0, RefundSource.SENDER: 1, RefundSource.OPERATOR: 2}
_SOURCE_BY_CODE = {code: source for source, code in _SOURCE_CODES.items()}


@dataclass(frozen=True)
class RefundRequest:
    """One deposit to send back to ``destination``."""

    outpoint: OutPoint
    """The deposit output."""
    value: int
    series_id: int
    index: int
    """Index of the deposit address on the receive branch (0) of the series."""
    deposit_tx: bytes
    """The raw deposit transaction, as in the block (witnesses allowed)."""
    prev_tx: bytes
    """The raw transaction spent by the deposit's first input; ``b""`` unless ``SENDER``."""
    destination: bytes
    """The scriptPubKey the refund pays."""
    source: RefundSource


def _outpoint_order(refund: RefundRequest) -> tuple[str, int]:
    return refund.outpoint.txid_hex, refund.outpoint.vout


@dataclass(frozen=True)
class RefundManifest:
    """The inputs of one refund round. Lists are normalized into canonical order on construction."""

    network: str
    series: tuple[Series, ...]
    tip_height: int
    tip_hash: bytes
    fee_rate: int
    """Satoshis per 1000 virtual bytes."""
    dust_limit: int
    refunds: tuple[RefundRequest, ...]
    version: int = REFUND_ALGORITHM_VERSION

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "series", tuple(sorted(self.series, key=lambda s: s.id)))
        setattr_(self, "refunds", tuple(sorted(self.refunds, key=_outpoint_order)))
        _validate(self)

    @property
    def net(self) -> Network:
        return get_network(self.network)

    def series_by_id(self) -> dict[int, Series]:
        return {s.id: s for s in self.series}


# --------------------------------------------------------------------------- sender


def _is_sender_type(script_pubkey: bytes) -> bool:
    """P2PKH, P2WPKH, P2SH, P2WSH or P2TR."""
    spk, n = script_pubkey, len(script_pubkey)
    return (
        (n == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac")
        or (n == 23 and spk[:2] == b"\xa9\x14" and spk[22:] == b"\x87")
        or (n == 22 and spk[:2] == b"\x00\x14")
        or (n == 34 and spk[:2] in (b"\x00\x20", b"\x51\x20"))
    )


def sender_script(deposit_tx: Transaction, prev_tx: Transaction) -> bytes | None:
    """The scriptPubKey of the output the deposit's first input spends, if ``prev_tx`` is the
    transaction spent and that output is P2PKH, P2WPKH, P2SH, P2WSH or P2TR; else None."""
    prevout = deposit_tx.inputs[0].prevout
    if prev_tx.txid != prevout.txid or prevout.vout >= len(prev_tx.outputs):
        return None
    script = prev_tx.outputs[prevout.vout].script_pubkey
    return script if _is_sender_type(script) else None


# --------------------------------------------------------------------------- validation


def _validate(m: RefundManifest) -> None:
    if m.version != REFUND_ALGORITHM_VERSION:
        raise ManifestError(
            "version",
            f"refund algorithm version {m.version} is not supported"
            f" (this is version {REFUND_ALGORITHM_VERSION})",
        )
    check_shared_fields(m.network, m.series, m.tip_height, m.tip_hash, m.fee_rate, m.dust_limit)
    for i, refund in enumerate(m.refunds):
        if i and _outpoint_order(refund) == _outpoint_order(m.refunds[i - 1]):
            raise ManifestError(
                f"refunds[{i}].outpoint", f"outpoint {refund.outpoint} appears twice"
            )
        _validate_refund(m, f"refunds[{i}]", refund)


def _parse_tx(field_name: str, raw: bytes) -> Transaction:
    """Parse a raw transaction of the manifest; errors name ``field_name``."""
    if not isinstance(raw, bytes) or not 0 < len(raw) <= MAX_RAW_TX_BYTES:
        raise ManifestError(field_name, f"must be a raw transaction of 1..{MAX_RAW_TX_BYTES} bytes")
    try:
        return Transaction.parse(raw)
    except VpoolError as exc:
        raise ManifestError(field_name, f"not a transaction: {exc}") from None


def _validate_refund(m: RefundManifest, where: str, r: RefundRequest) -> None:
    """Field ranges, then rules V2 (destination), V1 (deposit) and V3 (source)."""
    check_range(f"{where}.value", r.value, 1, MAX_MONEY)
    if r.series_id not in m.series_by_id():
        raise ManifestError(f"{where}.series_id", f"unknown series {r.series_id}")
    check_range(f"{where}.index", r.index, 0, MAX_INDEX)
    if not isinstance(r.source, RefundSource):
        raise ManifestError(f"{where}.source", f"must be a RefundSource, got {r.source!r}")
    check_script_pubkey(f"{where}.destination", r.destination, m.net)  # V2
    deposit = _validate_deposit(m, where, r)
    _validate_source(where, r, deposit)


def _validate_deposit(m: RefundManifest, where: str, r: RefundRequest) -> Transaction:
    """Rule V1: the raw deposit is the outpoint's transaction and pays the claimed pool address."""
    deposit = _parse_tx(f"{where}.deposit_tx", r.deposit_tx)
    if deposit.txid != r.outpoint.txid:
        raise ManifestError(
            f"{where}.deposit_tx",
            f"transaction {deposit.txid_hex} is not {r.outpoint.txid_hex}, the deposit's",
        )
    if r.outpoint.vout >= len(deposit.outputs):
        raise ManifestError(
            f"{where}.outpoint", f"the deposit transaction has no output {r.outpoint.vout}"
        )
    output = deposit.outputs[r.outpoint.vout]
    if output.value != r.value:
        raise ManifestError(
            f"{where}.value", f"the deposit output holds {output.value} sat, not {r.value}"
        )
    series = m.series_by_id()[r.series_id]
    expected = series.derive(RECEIVE, r.index)
    if output.script_pubkey != expected.script_pubkey:
        raise ManifestError(
            f"{where}.deposit_tx",
            f"output {r.outpoint.vout} does not pay receive address {r.index} of series"
            f" {r.series_id} ({expected.address(m.net)})",
        )
    return deposit


def _validate_source(where: str, r: RefundRequest, deposit: Transaction) -> None:
    """Rule V3: a sender refund carries the previous transaction and pays its sender."""
    if r.source is not RefundSource.SENDER:
        if r.prev_tx != b"":
            raise ManifestError(f"{where}.prev_tx", f"must be empty for a {r.source} refund")
        return
    prev = _parse_tx(f"{where}.prev_tx", r.prev_tx)
    spent = deposit.inputs[0].prevout
    if prev.txid != spent.txid:
        raise ManifestError(
            f"{where}.prev_tx",
            f"transaction {prev.txid_hex} is not {spent.txid_hex}, the one the deposit's first"
            " input spends",
        )
    sender = sender_script(deposit, prev)
    if sender is None:
        raise ManifestError(
            f"{where}.prev_tx",
            f"output {spent} is missing or not P2PKH, P2WPKH, P2SH, P2WSH or P2TR: no sender",
        )
    if r.destination != sender:
        raise ManifestError(
            f"{where}.destination", f"is not the sender's scriptPubKey {sender.hex()}"
        )


# --------------------------------------------------------------------------- encoding


def encode_refund_manifest(m: RefundManifest) -> bytes:
    """The canonical byte encoding (see the module docstring)."""
    out = bytearray(encode_header(MAGIC, ENCODING_VERSION, m.version, m.network))
    out += encode_series_list(m.series, m.net)
    out += u32le(m.tip_height) + m.tip_hash + u64le(m.fee_rate) + u64le(m.dust_limit)
    out += compact_size(len(m.refunds))
    for r in m.refunds:
        out += r.outpoint.serialize() + u64le(r.value) + u32le(r.series_id) + u32le(r.index)
        out += u8(_SOURCE_CODES[r.source]) + var_bytes(r.destination)
        out += var_bytes(r.deposit_tx) + var_bytes(r.prev_tx)
    return bytes(out)


def refund_manifest_hash(m: RefundManifest) -> bytes:
    """SHA256 of the canonical encoding: the refund round's identity."""
    return sha256(encode_refund_manifest(m))


def _decode_refund(reader: Reader) -> RefundRequest:
    outpoint, value = OutPoint.read(reader), reader.u64()
    series_id, index, code = reader.u32(), reader.u32(), reader.u8()
    if code not in _SOURCE_BY_CODE:
        raise EncodingError(f"unknown refund source code {code}")
    destination = reader.var_bytes(MAX_SCRIPT_PUBKEY_LEN)
    deposit_tx = reader.var_bytes(MAX_RAW_TX_BYTES)
    prev_tx = reader.var_bytes(MAX_RAW_TX_BYTES)
    return RefundRequest(
        outpoint=outpoint,
        value=value,
        series_id=series_id,
        index=index,
        deposit_tx=deposit_tx,
        prev_tx=prev_tx,
        destination=destination,
        source=_SOURCE_BY_CODE[code],
    )


def decode_refund_manifest(data: bytes) -> RefundManifest:
    """Decode and validate; raise ``EncodingError`` or ``ManifestError`` on anything else."""
    reader = Reader(data)
    _, version, network = decode_header(reader, MAGIC, (ENCODING_VERSION,), "refund manifest")
    series = decode_series_list(reader, get_network(network))
    tip_height, tip_hash = reader.u32(), reader.read(32)
    fee_rate, dust_limit = reader.u64(), reader.u64()
    refunds = [_decode_refund(reader) for _ in range(reader.compact_size())]
    reader.done()
    manifest = RefundManifest(
        network=network,
        series=tuple(series),
        tip_height=tip_height,
        tip_hash=tip_hash,
        fee_rate=fee_rate,
        dust_limit=dust_limit,
        refunds=tuple(refunds),
        version=version,
    )
    if encode_refund_manifest(manifest) != bytes(data):
        raise EncodingError("refund manifest lists are not in canonical order")
    return manifest


# --------------------------------------------------------------------------- transactions


@dataclass(frozen=True)
class PlannedRefund:
    psbt: Psbt
    refund: RefundRequest
    amount: int
    """Satoshis paid to the destination: the deposit's value minus ``fee``."""
    fee: int
    max_weight: int
    """Upper bound of the signed transaction's weight (worst-case signatures)."""

    @property
    def txid_hex(self) -> str:
        return self.psbt.tx.txid_hex


@dataclass(frozen=True)
class RefundPlan:
    manifest_hash: bytes
    transactions: tuple[PlannedRefund, ...]
    """One per refund built, in the manifest's order."""
    skipped: tuple[tuple[OutPoint, str], ...]
    """(deposit outpoint, reason) of each refund left out, in the manifest's order."""


def refund_weight(series: Series, destination: bytes) -> int:
    """Rule F1: worst-case weight of a refund (one input of ``series``, one output)."""
    input_weight = multisig_input_weight(series.m, series.n)
    return tx_weight(1, 1, input_weight, output_weight(len(destination)))


def _refund_psbt(m: RefundManifest, series: Series, r: RefundRequest, amount: int) -> Psbt:
    """Rules T1-T2: the unsigned refund transaction and its PSBT fields."""
    tx = Transaction(
        TX_VERSION,
        (TxIn(r.outpoint, SEQUENCE_RBF),),
        (TxOut(amount, r.destination),),
        m.tip_height,
    )
    return Psbt(
        tx=tx,
        inputs=(pool_input(series, RECEIVE, r.index, r.value),),
        outputs=(PsbtOutput(),),
        xpubs=global_xpubs((series,), m.net),
    )


def build_refunds(m: RefundManifest) -> RefundPlan:
    """Build one unsigned refund per deposit of the manifest; pure and deterministic."""
    series = m.series_by_id()
    planned: list[PlannedRefund] = []
    skipped: list[tuple[OutPoint, str]] = []
    for r in m.refunds:
        weight = refund_weight(series[r.series_id], r.destination)
        fee = fee_for_weight(weight, m.fee_rate)
        amount = r.value - fee
        if amount < m.dust_limit:  # S1
            skipped.append(
                (
                    r.outpoint,
                    f"{r.value} sat minus a fee of {fee} sat leaves {amount} sat,"
                    f" below the dust limit of {m.dust_limit} sat",
                )
            )
            continue
        psbt = _refund_psbt(m, series[r.series_id], r, amount)
        planned.append(PlannedRefund(psbt, r, amount, fee, weight))
    return RefundPlan(refund_manifest_hash(m), tuple(planned), tuple(skipped))
