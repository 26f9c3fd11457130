"""Cancel and replace (rules X1-X4 of docs/withdrawal-algorithm.md): the replacements of a
signed round's transactions without the payments of cancelled requests.

A cancel manifest holds the original round manifest (byte for byte: a signer rebuilds the
original transactions from it, and so knows, from its own rebuild, which output paid which
request), the cancelled requests and a higher fee rate. ``build_cancel`` derives, for each
transaction of the original plan that pays a cancelled request, its replacement:

- **X1** same inputs in the same order, same locktime and sequences, same PSBT input maps; the
  outputs of the cancelled requests removed, the other outputs in their order, the change last.
- **X2** with W the replacement's worst-case weight and r, r' the original and the cancel fee
  rates, ``bump = fee_for_weight(W, r') − fee_for_weight(W, r)``; the fee is the original
  fee plus ``bump``, and the change is the original change plus the removed amounts minus
  ``bump``. A transaction without change, or whose change would fall below the dust limit, is
  an error (nothing to take the removed amounts back to the pool).
- **X3** the cancel fee rate is at least the original's plus ``MIN_LADDER_STEP``: each
  replacement pays a higher fee rate and fee than its original (pool.replacement rule 3), and
  beats it by the nodes' incremental relay fee.
- **X4** fee shares: the fee split among the replacement's clients in proportion to the amounts
  it pays them, by the largest-remainder rule (pool.fees); when it pays no one, among the
  cancelled requests' clients in proportion to their removed amounts.

Two cancel versions, one layout: **1**, a client's cancel (the signer records the dropped
requests as never paid again); **2**, an operator's cancel (AdminService.CancelRound: the
dropped requests go back to the queue, and a signer pays one again only once its own node shows
the replacement that dropped it confirmed, and only once: docs/signer-policy.md, "Cancel").

Encoding: ``"VPRC" | u8 encoding version (1) | u32 cancel version (1 or 2) | u8 network code |
vb original manifest | u64 fee rate | cs #cancels, per cancel (ascending request key):
vb client id | vb request id``. The decoder refuses anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pool.errors import EncodingError, ManifestError
from pool.fees import largest_remainder
from pool.hashes import sha256
from pool.manifest import (
    MAX_ID_BYTES,
    MAX_MONEY,
    MIN_LADDER_STEP,
    Manifest,
    check_range,
    decode_header,
    decode_manifest,
    encode_header,
    encode_manifest,
    request_key,
)
from pool.psbt import Psbt
from pool.serialize import Reader, compact_size, compact_size_len, u64le, var_bytes
from pool.weights import fee_for_weight, output_weight
from pool.withdrawal import RoundPlan, build_round

CANCEL_MAGIC = b"VPRC"
CANCEL_ENCODING_VERSION = 1
CANCEL_VERSION = 1
"""A client's cancel: the dropped requests are never paid again."""
OPERATOR_CANCEL_VERSION = 2
"""An operator's cancel: the dropped requests are queued again once the replacement confirms."""
CANCEL_VERSIONS = (CANCEL_VERSION, OPERATOR_CANCEL_VERSION)
MAX_ORIGINAL_BYTES = 4_000_000


@dataclass(frozen=True)
class CancelManifest:
    original: Manifest
    """The manifest the transactions were built and signed under."""
    fee_rate: int
    """Satoshis per 1000 vB of the replacements (X3)."""
    cancels: tuple[tuple[str, str], ...]
    """(client id, request id) of each cancelled request, kept in ascending request key."""
    version: int = CANCEL_VERSION

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.cancels, key=lambda c: request_key(*c)))
        object.__setattr__(self, "cancels", ordered)
        if self.version not in CANCEL_VERSIONS:
            raise ManifestError("version", f"cancel version {self.version} is not supported")
        check_range("fee_rate", self.fee_rate, self.original.fee_rate + MIN_LADDER_STEP, MAX_MONEY)
        if not self.cancels:
            raise ManifestError("cancels", "must name at least one request")
        for i, (client, request) in enumerate(self.cancels):
            for name, text in (("client_id", client), ("request_id", request)):
                if not isinstance(text, str) or not 1 <= len(text.encode()) <= MAX_ID_BYTES:
                    raise ManifestError(f"cancels[{i}].{name}", "must be 1..128 UTF-8 bytes")
            if i and request_key(client, request) == request_key(*self.cancels[i - 1]):
                raise ManifestError(f"cancels[{i}]", f"request {request!r} appears twice")

    @property
    def network(self) -> str:
        return self.original.network

    @property
    def requeue(self) -> bool:
        """An operator's cancel (version 2): the dropped requests are paid by a later round
        once the replacement confirmed, instead of never."""
        return self.version == OPERATOR_CANCEL_VERSION


def encode_cancel(c: CancelManifest) -> bytes:
    out = bytearray(encode_header(CANCEL_MAGIC, CANCEL_ENCODING_VERSION, c.version, c.network))
    out += var_bytes(encode_manifest(c.original)) + u64le(c.fee_rate)
    out += compact_size(len(c.cancels))
    for client, request in c.cancels:
        out += var_bytes(client.encode()) + var_bytes(request.encode())
    return bytes(out)


def is_cancel_manifest(data: bytes) -> bool:
    return data[: len(CANCEL_MAGIC)] == CANCEL_MAGIC


def decode_cancel(data: bytes) -> CancelManifest:
    reader = Reader(data)
    _, version, network = decode_header(
        reader, CANCEL_MAGIC, (CANCEL_ENCODING_VERSION,), "cancel manifest"
    )
    original = decode_manifest(reader.var_bytes(MAX_ORIGINAL_BYTES))
    if original.network != network:
        raise EncodingError("the original manifest is for another network")
    fee_rate = reader.u64()
    cancels = []
    for _ in range(reader.compact_size()):
        client = reader.var_bytes(MAX_ID_BYTES).decode("utf-8", errors="strict")
        request = reader.var_bytes(MAX_ID_BYTES).decode("utf-8", errors="strict")
        cancels.append((client, request))
    reader.done()
    cancel = CancelManifest(original, fee_rate, tuple(cancels), version)
    if encode_cancel(cancel) != bytes(data):
        raise EncodingError("cancels are not in canonical order")
    return cancel


def cancel_hash(c: CancelManifest) -> bytes:
    return sha256(encode_cancel(c))


@dataclass(frozen=True)
class CancelTransaction:
    of: int
    """Index of the transaction it replaces in the original plan."""
    replaced_txid: str
    psbt: Psbt
    fee: int
    change_vout: int
    dropped: tuple[int, ...]
    """The original transaction's vouts it no longer pays (the cancelled requests')."""
    fee_shares: tuple[tuple[str, int], ...]

    @property
    def txid_hex(self) -> str:
        return self.psbt.tx.txid_hex


@dataclass(frozen=True)
class CancelPlan:
    manifest_hash: bytes
    original: RoundPlan
    transactions: tuple[CancelTransaction, ...]


def build_cancel(c: CancelManifest) -> CancelPlan:
    """Rules X1-X4; ``ManifestError`` naming the cancel a replacement cannot be built for."""
    plan = build_round(c.original)
    paid_by: dict[tuple[str, int], tuple[str, str]] = {}  # (txid, vout) → request
    for outcome in plan.requests:
        for out in outcome.outputs:
            paid_by[(out.txid_hex, out.vout)] = (outcome.client_id, outcome.request_id)
    cancelled = set(c.cancels)
    for i, cancel in enumerate(c.cancels):
        if cancel not in paid_by.values():
            raise ManifestError(f"cancels[{i}]", f"request {cancel[1]!r} is not paid by the round")
    built = []
    for index, planned in enumerate(plan.transactions):
        tx = planned.psbt.tx
        dropped = tuple(
            vout for vout in range(len(tx.outputs)) if paid_by.get((tx.txid_hex, vout)) in cancelled
        )
        if not dropped:
            continue
        if planned.change is None:
            raise ManifestError("cancels", f"transaction {index} has no change to take them")
        change_vout = planned.change.vout
        kept = [k for k in range(len(tx.outputs)) if k not in dropped and k != change_vout]
        removed = sum(tx.outputs[k].value for k in dropped)
        weight = (
            planned.max_weight
            - sum(output_weight(len(tx.outputs[k].script_pubkey)) for k in dropped)
            - 4 * (compact_size_len(len(tx.outputs)) - compact_size_len(len(kept) + 1))
        )
        bump = fee_for_weight(weight, c.fee_rate) - fee_for_weight(weight, c.original.fee_rate)
        change = tx.outputs[change_vout]
        new_change = change.value + removed - bump
        if new_change < c.original.dust_limit:
            raise ManifestError("fee_rate", f"transaction {index}'s change would be dust")
        outputs = [tx.outputs[k] for k in kept] + [replace(change, value=new_change)]
        maps = [planned.psbt.outputs[k] for k in kept] + [planned.psbt.outputs[change_vout]]
        psbt = replace(planned.psbt, tx=replace(tx, outputs=tuple(outputs)), outputs=tuple(maps))
        fee = planned.fee + bump
        weights: dict[str, int] = {}
        for k in kept:
            client = paid_by[(tx.txid_hex, k)][0]
            weights[client] = weights.get(client, 0) + tx.outputs[k].value
        if not weights:
            for k in dropped:
                client = paid_by[(tx.txid_hex, k)][0]
                weights[client] = weights.get(client, 0) + tx.outputs[k].value
        shares = largest_remainder(fee, weights)
        built.append(
            CancelTransaction(
                of=index,
                replaced_txid=tx.txid_hex,
                psbt=psbt,
                fee=fee,
                change_vout=len(kept),
                dropped=dropped,
                fee_shares=tuple((k, shares[k]) for k in sorted(shares, key=str.encode)),
            )
        )
    return CancelPlan(cancel_hash(c), plan, tuple(built))
