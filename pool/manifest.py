"""The round manifest: everything the withdrawal algorithm needs, and nothing else.

A manifest is a value. Its canonical byte encoding (``encode_manifest``) is independent of the
order in which its lists were given (they are kept sorted), decodes back to an equal manifest,
and its SHA256 (``manifest_hash``) is the identity of the round: every signer that is handed the
same manifest rebuilds the same PSBTs, byte for byte.

Encoding (all integers little-endian, ``cs`` = CompactSize, ``vb`` = cs length + bytes)::

    "VPRM" | u8 encoding version (1) | u32 algorithm version | u8 network code
    cs #series, per series (ascending id):
        u32 id | u8 state (0 active, 1 retiring) | u8 m | cs #keys, per key (canonical order):
            4 fingerprint | cs #path | u32 × path | 78 serialized xpub (network's version)
    u32 tip height | 32 tip hash (display byte order, as RPCs print it)
    u64 fee rate (sat per 1000 vB) | u64 dust limit | u32 max weight | u32 min confirmations
    | u8 ladder rungs | u32 ladder step (sat per 1000 vB) | u32 max inputs per transaction
    | u32 max payments per transaction
    cs #change starts, per entry (ascending series id): u32 series id | u32 next change index
    cs #utxos, per utxo (ascending txid display hex, then vout):
        32 txid (internal order) | u32 vout | u64 value | u32 series | u8 branch | u32 index
        | u32 height
    cs #requests, per request (ascending request key):
        vb client id (UTF-8) | vb request id (UTF-8) | vb scriptPubKey | u64 amount | u64 extra fee

The decoder refuses anything that is not exactly what the encoder writes: unknown versions,
lists out of canonical order or with duplicates, trailing bytes.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pool.address import (
    address_to_script_pubkey,
    is_standard_script_pubkey,
    script_pubkey_to_address,
)
from pool.descriptor import DescriptorKey
from pool.errors import EncodingError, ManifestError, VpoolError
from pool.hashes import sha256
from pool.hdkeys import ExtendedPublicKey, KeyOrigin
from pool.networks import NETWORK_CODES, Network, get_network
from pool.serialize import Reader, compact_size, u8, u32le, u64le, var_bytes
from pool.series import CHANGE, RECEIVE, Series, SeriesState
from pool.tx import OutPoint

ALGORITHM_VERSION = 3
"""3: the fee ladder (``ladder_rungs``, ``ladder_step``; pool/ladder.py)."""
MAX_LADDER_RUNGS = 10
MIN_LADDER_STEP = 1_000
"""Satoshis per 1000 vB: a rung must beat the one before by the nodes' incremental relay fee."""
MAX_LADDER_STEP = 1_000_000
ENCODING_VERSION = 1
MAGIC = b"VPRM"

MAX_MONEY = 21_000_000 * 100_000_000
MAX_STANDARD_WEIGHT = 400_000
MIN_MAX_WEIGHT = 4_000
MAX_INDEX = 2**31 - 1
MAX_ID_BYTES = 128
MAX_SCRIPT_PUBKEY_LEN = 100
U32 = 2**32 - 1

_STATE_CODES = {SeriesState.ACTIVE: 0, SeriesState.RETIRING: 1}
_NETWORK_BY_CODE = {code: name for name, code in NETWORK_CODES.items()}


def request_key(client_id: str, request_id: str) -> bytes:
    """SHA256 of the length-prefixed client and request ids: the requests' canonical order.

    The length prefixes make the key injective: ("a1", "23") and ("a12", "3") differ, which the
    voting pool's unseparated ``server || tx#`` concatenation did not guarantee.
    """
    return sha256(var_bytes(client_id.encode()) + var_bytes(request_id.encode()))


@dataclass(frozen=True)
class Utxo:
    """A pool output the round may spend, as the coordinator's UTXO snapshot sees it."""

    outpoint: OutPoint
    value: int
    series_id: int
    branch: int
    index: int
    height: int
    """Height of the block that confirmed it (0 = unconfirmed)."""

    def confirmations(self, tip_height: int) -> int:
        return tip_height - self.height + 1 if self.height > 0 else 0


@dataclass(frozen=True)
class WithdrawalRequest:
    """One client's withdrawal: pay ``amount`` to ``script_pubkey``; ``extra_fee`` on top."""

    client_id: str
    request_id: str
    script_pubkey: bytes
    amount: int
    extra_fee: int = 0
    key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", request_key(self.client_id, self.request_id))


def _outpoint_order(utxo: Utxo) -> tuple[str, int]:
    return utxo.outpoint.txid_hex, utxo.outpoint.vout


@dataclass(frozen=True)
class Manifest:
    """The inputs of one round. Lists are normalized into canonical order on construction."""

    network: str
    series: tuple[Series, ...]
    utxos: tuple[Utxo, ...]
    tip_height: int
    tip_hash: bytes
    fee_rate: int
    """Satoshis per 1000 virtual bytes."""
    change_index: tuple[tuple[int, int], ...]
    """(series id, next unused change index) pairs."""
    dust_limit: int
    max_weight: int
    min_conf: int
    requests: tuple[WithdrawalRequest, ...]
    ladder_rungs: int = 0
    """Replacements of each transaction at rising fee rates signed in the same round (0: none)."""
    ladder_step: int = 0
    """Satoshis per 1000 vB that each rung adds to the fee rate of the one before."""
    version: int = ALGORITHM_VERSION
    max_tx_inputs: int = 0
    """At most this many inputs in one transaction (0: no cap but ``max_weight``): the
    smallest limit of the signers' devices (Ledger: 512)."""
    max_tx_payments: int = 0
    """At most this many payment outputs in one transaction, change not counted (0: no cap):
    the smallest of the signers' device limits and of what their operators will review on an
    attended device."""

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "series", tuple(sorted(self.series, key=lambda s: s.id)))
        setattr_(self, "utxos", tuple(sorted(self.utxos, key=_outpoint_order)))
        setattr_(self, "change_index", tuple(sorted(tuple(e) for e in self.change_index)))
        setattr_(self, "requests", tuple(sorted(self.requests, key=lambda r: r.key)))
        _validate(self)

    @property
    def net(self) -> Network:
        return get_network(self.network)

    @cached_property
    def encoding(self) -> bytes:
        """``encode_manifest(self)``, made once (a manifest never changes)."""
        return encode_manifest(self)

    def series_by_id(self) -> dict[int, Series]:
        return {s.id: s for s in self.series}

    @property
    def active_series(self) -> Series:
        return next(s for s in self.series if s.state is SeriesState.ACTIVE)

    def next_change_index(self, series_id: int) -> int:
        return dict(self.change_index)[series_id]


# --------------------------------------------------------------------------- validation


def check_range(field_name: str, value: int, low: int, high: int) -> None:
    """Raise ``ManifestError`` naming ``field_name`` unless ``value`` is an int in low..high."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ManifestError(field_name, f"must be an integer in {low}..{high}, got {value!r}")


def check_shared_fields(
    network: str,
    series: Sequence[Series],
    tip_height: int,
    tip_hash: bytes,
    fee_rate: int,
    dust_limit: int,
) -> None:
    """Validate the fields a round manifest shares with a refund manifest (pool/refunds.py)."""
    if network not in NETWORK_CODES:
        raise ManifestError("network", f"unknown network {network!r}")
    ids = [s.id for s in series]
    for i, s in enumerate(series):
        if ids.count(s.id) > 1:
            raise ManifestError(f"series[{i}].id", f"series id {s.id} appears twice")
    check_range("tip_height", tip_height, 0, U32)
    if not isinstance(tip_hash, bytes) or len(tip_hash) != 32:
        raise ManifestError("tip_hash", "must be 32 bytes")
    check_range("fee_rate", fee_rate, 1, MAX_MONEY)
    check_range("dust_limit", dust_limit, 1, MAX_MONEY)


def check_script_pubkey(field_name: str, script_pubkey: bytes, net: Network) -> None:
    """Raise ``ManifestError`` naming ``field_name`` unless it is a standard address's script."""
    if not isinstance(script_pubkey, bytes) or not (
        0 < len(script_pubkey) <= MAX_SCRIPT_PUBKEY_LEN and is_standard_script_pubkey(script_pubkey)
    ):
        raise ManifestError(field_name, "must be the scriptPubKey of a standard address")


def _validate(m: Manifest) -> None:
    if m.version != ALGORITHM_VERSION:
        raise ManifestError(
            "version",
            f"algorithm version {m.version} is not supported (this is version {ALGORITHM_VERSION})",
        )
    check_shared_fields(m.network, m.series, m.tip_height, m.tip_hash, m.fee_rate, m.dust_limit)
    _validate_series(m)
    check_range("max_weight", m.max_weight, MIN_MAX_WEIGHT, MAX_STANDARD_WEIGHT)
    check_range("min_conf", m.min_conf, 1, U32)
    check_range("ladder_rungs", m.ladder_rungs, 0, MAX_LADDER_RUNGS)
    if m.ladder_rungs:
        check_range("ladder_step", m.ladder_step, MIN_LADDER_STEP, MAX_LADDER_STEP)
    else:
        check_range("ladder_step", m.ladder_step, 0, 0)
    check_range("max_tx_inputs", m.max_tx_inputs, 0, U32)
    check_range("max_tx_payments", m.max_tx_payments, 0, U32)
    _validate_change_index(m)
    _validate_utxos(m)
    _validate_requests(m)


def _validate_series(m: Manifest) -> None:
    if not m.series:
        raise ManifestError("series", "a manifest needs at least one series")
    active = [s.id for s in m.series if s.state is SeriesState.ACTIVE]
    if len(active) != 1:
        raise ManifestError("series", f"exactly one series must be active, found {len(active)}")


def _validate_change_index(m: Manifest) -> None:
    known = {s.id for s in m.series}
    seen: set[int] = set()
    for i, (series_id, index) in enumerate(m.change_index):
        if series_id not in known:
            raise ManifestError(f"change_index[{i}]", f"unknown series {series_id}")
        if series_id in seen:
            raise ManifestError(f"change_index[{i}]", f"series {series_id} appears twice")
        seen.add(series_id)
        check_range(f"change_index[{i}].index", index, 0, MAX_INDEX)
    if m.active_series.id not in seen:
        raise ManifestError("change_index", "missing the next change index of the active series")


def _validate_utxos(m: Manifest) -> None:
    known = {s.id for s in m.series}
    previous: tuple[str, int] | None = None
    for i, u in enumerate(m.utxos):
        where = f"utxos[{i}]"
        order = _outpoint_order(u)
        if order == previous:
            raise ManifestError(f"{where}.outpoint", f"outpoint {u.outpoint} appears twice")
        previous = order
        check_range(f"{where}.value", u.value, 1, MAX_MONEY)
        if u.series_id not in known:
            raise ManifestError(f"{where}.series_id", f"unknown series {u.series_id}")
        if u.branch not in (RECEIVE, CHANGE):
            raise ManifestError(f"{where}.branch", f"must be 0 or 1, got {u.branch!r}")
        check_range(f"{where}.index", u.index, 0, MAX_INDEX)
        check_range(f"{where}.height", u.height, 0, m.tip_height)


def _validate_requests(m: Manifest) -> None:
    net = m.net
    for i, r in enumerate(m.requests):
        where = f"requests[{i}]"
        for name, text in (("client_id", r.client_id), ("request_id", r.request_id)):
            if not isinstance(text, str) or not 1 <= len(text.encode()) <= MAX_ID_BYTES:
                raise ManifestError(f"{where}.{name}", f"must be 1..{MAX_ID_BYTES} UTF-8 bytes")
        if i and r.key == m.requests[i - 1].key:
            raise ManifestError(
                f"{where}.request_id",
                f"request {r.request_id!r} of client {r.client_id!r} appears twice",
            )
        check_script_pubkey(f"{where}.script_pubkey", r.script_pubkey, net)
        check_range(f"{where}.amount", r.amount, m.dust_limit, MAX_MONEY)
        check_range(f"{where}.extra_fee", r.extra_fee, 0, MAX_MONEY)


# --------------------------------------------------------------------------- encoding


def encode_series_list(series: Sequence[Series], net: Network) -> bytes:
    """``cs #series``, then each series (id, state, m, keys with their origins and xpubs)."""
    out = bytearray(compact_size(len(series)))
    for s in series:
        out += u32le(s.id) + u8(_STATE_CODES[s.state]) + u8(s.m) + compact_size(len(s.keys))
        for key in s.keys:
            out += key.origin.fingerprint + compact_size(len(key.origin.path))
            out += b"".join(u32le(step) for step in key.origin.path)
            out += key.xpub.serialize(net)
    return bytes(out)


def encode_header(magic: bytes, encoding_version: int, version: int, network: str) -> bytes:
    """``magic | u8 encoding version | u32 algorithm version | u8 network code``."""
    return magic + u8(encoding_version) + u32le(version) + u8(NETWORK_CODES[network])


def decode_header(
    reader: Reader, magic: bytes, encoding_versions: Container[int], what: str
) -> tuple[int, int, str]:
    """Inverse of ``encode_header``: the encoding version, the algorithm version and the
    network name."""
    if reader.read(len(magic)) != magic:
        raise EncodingError(f"not a vpool {what} (bad magic)")
    if (enc := reader.u8()) not in encoding_versions:
        raise EncodingError(f"unknown {what} encoding version {enc}")
    version, code = reader.u32(), reader.u8()
    if code not in _NETWORK_BY_CODE:
        raise EncodingError(f"unknown network code {code}")
    return enc, version, _NETWORK_BY_CODE[code]


def encode_manifest(m: Manifest) -> bytes:
    """The canonical byte encoding (see the module docstring)."""
    net = m.net
    out = bytearray(encode_header(MAGIC, ENCODING_VERSION, m.version, m.network))
    out += encode_series_list(m.series, net)
    out += u32le(m.tip_height) + m.tip_hash
    out += u64le(m.fee_rate) + u64le(m.dust_limit) + u32le(m.max_weight) + u32le(m.min_conf)
    out += u8(m.ladder_rungs) + u32le(m.ladder_step)
    out += u32le(m.max_tx_inputs) + u32le(m.max_tx_payments)
    out += compact_size(len(m.change_index))
    for series_id, index in m.change_index:
        out += u32le(series_id) + u32le(index)
    out += compact_size(len(m.utxos))
    for u in m.utxos:
        out += u.outpoint.serialize() + u64le(u.value)
        out += u32le(u.series_id) + u8(u.branch) + u32le(u.index) + u32le(u.height)
    out += compact_size(len(m.requests))
    for r in m.requests:
        out += var_bytes(r.client_id.encode()) + var_bytes(r.request_id.encode())
        out += var_bytes(r.script_pubkey) + u64le(r.amount) + u64le(r.extra_fee)
    return bytes(out)


def manifest_hash(m: Manifest) -> bytes:
    """SHA256 of the canonical encoding: the round's identity."""
    return sha256(m.encoding)


def _text(reader: Reader, what: str) -> str:
    raw = reader.var_bytes(MAX_ID_BYTES)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise EncodingError(f"{what} is not UTF-8") from None


def _decode_series(reader: Reader, net: Network) -> Series:
    series_id, state_code, m = reader.u32(), reader.u8(), reader.u8()
    states = {code: state for state, code in _STATE_CODES.items()}
    if state_code not in states:
        raise EncodingError(f"unknown series state code {state_code}")
    keys = []
    for _ in range(reader.compact_size()):
        fingerprint = reader.read(4)
        path = tuple(reader.u32() for _ in range(reader.compact_size()))
        xpub = ExtendedPublicKey.deserialize(reader.read(78), net)
        keys.append(DescriptorKey(KeyOrigin(fingerprint, path), xpub))
    series = Series(series_id, m, tuple(keys), states[state_code])
    if series.keys != tuple(keys):
        raise EncodingError(f"keys of series {series_id} are not in canonical order")
    return series


def decode_series_list(reader: Reader, net: Network) -> list[Series]:
    """Inverse of ``encode_series_list``; any malformed series is an ``EncodingError``."""
    try:
        return [_decode_series(reader, net) for _ in range(reader.compact_size())]
    except VpoolError as exc:
        if isinstance(exc, EncodingError):
            raise
        raise EncodingError(f"bad series: {exc}") from exc


def decode_manifest(data: bytes) -> Manifest:
    """Decode and validate; raise ``EncodingError`` or ``ManifestError`` on anything else."""
    reader = Reader(data)
    _, version, network = decode_header(reader, MAGIC, (ENCODING_VERSION,), "round manifest")
    net = get_network(network)
    series = decode_series_list(reader, net)
    tip_height, tip_hash = reader.u32(), reader.read(32)
    fee_rate, dust_limit = reader.u64(), reader.u64()
    max_weight, min_conf = reader.u32(), reader.u32()
    ladder_rungs, ladder_step = reader.u8(), reader.u32()
    max_tx_inputs, max_tx_payments = reader.u32(), reader.u32()
    change = [(reader.u32(), reader.u32()) for _ in range(reader.compact_size())]
    utxos = [
        Utxo(
            OutPoint.read(reader),
            reader.u64(),
            reader.u32(),
            reader.u8(),
            reader.u32(),
            reader.u32(),
        )
        for _ in range(reader.compact_size())
    ]
    requests = [
        WithdrawalRequest(
            _text(reader, "client id"),
            _text(reader, "request id"),
            reader.var_bytes(MAX_SCRIPT_PUBKEY_LEN),
            reader.u64(),
            reader.u64(),
        )
        for _ in range(reader.compact_size())
    ]
    reader.done()
    manifest = Manifest(
        network=network,
        series=tuple(series),
        utxos=tuple(utxos),
        tip_height=tip_height,
        tip_hash=tip_hash,
        fee_rate=fee_rate,
        change_index=tuple(change),
        dust_limit=dust_limit,
        max_weight=max_weight,
        min_conf=min_conf,
        requests=tuple(requests),
        ladder_rungs=ladder_rungs,
        ladder_step=ladder_step,
        version=version,
        max_tx_inputs=max_tx_inputs,
        max_tx_payments=max_tx_payments,
    )
    if manifest.encoding != bytes(data):
        raise EncodingError("manifest lists are not in canonical order")
    return manifest


def manifest_counts(data: bytes) -> tuple[int, int]:
    """(number of UTXOs, number of requests) that a manifest's encoding declares, read without
    decoding or validating anything else: a bound on the work ``decode_manifest`` and the
    rebuild would do, cheap enough to check first. ``EncodingError`` if the encoding is cut
    short before the counts."""
    reader = Reader(data)
    decode_header(reader, MAGIC, (ENCODING_VERSION,), "round manifest")
    for _ in range(reader.compact_size()):  # series: id, state, m, keys
        reader.read(4 + 1 + 1)
        for _ in range(reader.compact_size()):  # fingerprint, path, xpub
            reader.read(4)
            reader.read(4 * reader.compact_size() + 78)
    reader.read(4 + 32 + 8 + 8 + 4 + 4 + 1 + 4 + 4 + 4)  # tip, fees, weight, conf, ladder, caps
    reader.read(8 * reader.compact_size())  # change starts
    utxos = reader.compact_size()
    reader.read(_UTXO_ENCODED_LEN * utxos)
    return utxos, reader.compact_size()


_UTXO_ENCODED_LEN = 32 + 4 + 8 + 4 + 1 + 4 + 4
"""txid, vout, value, series, branch, index, height."""


# --------------------------------------------------------------------------- JSON form


def series_to_json(series: Sequence[Series], net: Network) -> list[dict[str, Any]]:
    """Each series as its id, state, and receive and change descriptors."""
    return [
        {
            "id": s.id,
            "state": s.state.value,
            "receive": s.descriptor(RECEIVE).to_string(net),
            "change": s.descriptor(CHANGE).to_string(net),
        }
        for s in series
    ]


def series_from_json(docs: Iterable[Mapping[str, Any]], net: Network) -> tuple[Series, ...]:
    """Inverse of ``series_to_json``."""
    return tuple(
        Series.from_descriptors(s["id"], s["receive"], s["change"], SeriesState(s["state"]), net)
        for s in docs
    )


def manifest_to_json(m: Manifest) -> dict[str, Any]:
    """A readable form (descriptors and addresses instead of raw keys and scripts)."""
    net = m.net
    return {
        "version": m.version,
        "network": m.network,
        "series": series_to_json(m.series, net),
        "tip": {"height": m.tip_height, "hash": m.tip_hash.hex()},
        "fee_rate_sat_per_kvb": m.fee_rate,
        "dust_limit": m.dust_limit,
        "max_weight": m.max_weight,
        "min_conf": m.min_conf,
        "ladder": {"rungs": m.ladder_rungs, "step_sat_per_kvb": m.ladder_step},
        "max_tx_inputs": m.max_tx_inputs,
        "max_tx_payments": m.max_tx_payments,
        "change_index": {str(series_id): index for series_id, index in m.change_index},
        "utxos": [
            {
                "outpoint": str(u.outpoint),
                "value": u.value,
                "series": u.series_id,
                "branch": u.branch,
                "index": u.index,
                "height": u.height,
            }
            for u in m.utxos
        ],
        "requests": [
            {
                "client_id": r.client_id,
                "request_id": r.request_id,
                "address": script_pubkey_to_address(r.script_pubkey, net),
                "amount": r.amount,
                "extra_fee": r.extra_fee,
            }
            for r in m.requests
        ],
    }


def manifest_from_json(doc: Mapping[str, Any]) -> Manifest:
    """Inverse of ``manifest_to_json``."""
    net = get_network(doc["network"])
    return Manifest(
        version=doc["version"],
        network=doc["network"],
        series=series_from_json(doc["series"], net),
        utxos=tuple(
            Utxo(
                OutPoint.from_str(u["outpoint"]),
                u["value"],
                u["series"],
                u["branch"],
                u["index"],
                u["height"],
            )
            for u in doc["utxos"]
        ),
        tip_height=doc["tip"]["height"],
        tip_hash=bytes.fromhex(doc["tip"]["hash"]),
        fee_rate=doc["fee_rate_sat_per_kvb"],
        change_index=tuple((int(k), v) for k, v in doc["change_index"].items()),
        dust_limit=doc["dust_limit"],
        max_weight=doc["max_weight"],
        min_conf=doc["min_conf"],
        ladder_rungs=doc.get("ladder", {}).get("rungs", 0),
        ladder_step=doc.get("ladder", {}).get("step_sat_per_kvb", 0),
        max_tx_inputs=doc.get("max_tx_inputs", 0),
        max_tx_payments=doc.get("max_tx_payments", 0),
        requests=tuple(
            WithdrawalRequest(
                r["client_id"],
                r["request_id"],
                address_to_script_pubkey(r["address"], net),
                r["amount"],
                r.get("extra_fee", 0),
            )
            for r in doc["requests"]
        ),
    )
