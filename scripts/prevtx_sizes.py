#!/usr/bin/env python3
"""Measure what attaching previous transactions (``non_witness_utxo``) costs a SignRound message.

Devices need each input's previous transaction next to its ``witness_utxo`` (Trezor and BitBox02
refuse segwit v0 inputs without it). Either the coordinator attaches them to the PSBTs it sends,
or each signer adds them from its own node before it asks its device. This builds realistic
withdrawal rounds with the real algorithm (2-of-3 P2WSH inputs, 20 requests, 2 sat/vB) and
prints the size of the SignRound message (manifest + PSBTs) without and with the previous
transactions attached, for coins that came from:

- 1-output deposits: a typical wallet payment, 1 P2WPKH input, the deposit and a change output;
- exchange batch payouts of 200 and of 2000 outputs (3 inputs), each coin from its own batch
  (the usual case: one user's deposit in one exchange's batch).

Previous transactions are counted witness-stripped (what the signer attaches; with witnesses
they are larger still). BIP174 has no sharing between inputs or PSBTs: every input carries its
own copy.

Usage: python scripts/prevtx_sizes.py [N ...]   (input counts; default: 100 600)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pool.hashes import sha256
from pool.manifest import Utxo, encode_manifest
from pool.psbt import Psbt
from pool.series import RECEIVE, Series
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.withdrawal import build_round
from tests.factories import BTC, make_series, manifest, p2wpkh, request

COIN_VALUE = BTC // 10
REQUESTS = 20
DEFAULT_LIMIT = 8 * 1024 * 1024
"""The signer's default ``server.max_message_bytes``."""


def deposit_tx(tag: str, pool_script: bytes) -> Transaction:
    """A wallet payment: one P2WPKH input, the deposit and a change output."""
    spent = TxIn(OutPoint(sha256(f"{tag}/in".encode()), 0), 0xFFFFFFFD)
    outputs = (TxOut(COIN_VALUE, pool_script), TxOut(123_456, p2wpkh(f"{tag}/change")))
    return Transaction(2, (spent,), outputs, 0)


def batch_tx(outputs: int) -> Callable[[str, bytes], Transaction]:
    """An exchange batch payout of ``outputs`` outputs (3 inputs), one of them the deposit."""

    def build(tag: str, pool_script: bytes) -> Transaction:
        spent = tuple(
            TxIn(OutPoint(sha256(f"{tag}/in {k}".encode()), k), 0xFFFFFFFD) for k in range(3)
        )
        others = tuple(TxOut(50_000 + k, p2wpkh(f"{tag}/user {k}")) for k in range(outputs - 1))
        return Transaction(2, spent, (TxOut(COIN_VALUE, pool_script), *others), 0)

    return build


def sizes(
    series: Series, n_inputs: int, source: Callable[[str, bytes], Transaction]
) -> tuple[int, int, int]:
    """(message bytes without, with previous transactions; number of PSBTs)."""
    previous: dict[bytes, Transaction] = {}
    utxos = []
    for i in range(n_inputs):
        tx = source(f"coin {i}", series.derive(RECEIVE, i).script_pubkey)
        previous[tx.txid] = tx
        utxos.append(Utxo(OutPoint(tx.txid, 0), COIN_VALUE, series.id, RECEIVE, i, 100))
    total = n_inputs * COIN_VALUE * 9 // 10  # the round spends (almost) every coin
    requests = [request("exchange", f"r{k}", total // REQUESTS) for k in range(REQUESTS)]
    m = manifest([series], utxos, requests, tip_height=1000)
    plan = build_round(m)
    psbts = [t.psbt for t in plan.transactions]
    manifest_bytes = len(encode_manifest(m))
    without = manifest_bytes + sum(len(p.serialize()) for p in psbts)
    with_previous = manifest_bytes + sum(len(attach(p, previous).serialize()) for p in psbts)
    return without, with_previous, len(psbts)


def attach(psbt: Psbt, previous: dict[bytes, Transaction]) -> Psbt:
    inputs = tuple(
        replace(inp, non_witness_utxo=previous[txin.prevout.txid].serialize_without_witness())
        for inp, txin in zip(psbt.inputs, psbt.tx.inputs, strict=True)
    )
    return replace(psbt, inputs=inputs)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.2f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


def main(counts: Sequence[int]) -> None:
    series = make_series(1, 2, [0, 1, 2])
    sources = [
        ("1-output deposits", deposit_tx),
        ("batch payouts, 200 outputs", batch_tx(200)),
        ("batch payouts, 2000 outputs", batch_tx(2000)),
    ]
    print(f"{'inputs':>6}  {'coins from':<28} {'PSBTs':>5}  {'without':>9}  {'with':>9}  ratio")
    for n in counts:
        for name, source in sources:
            without, with_previous, count = sizes(series, n, source)
            over = "  (above the 8 MiB gRPC limit)" if with_previous > DEFAULT_LIMIT else ""
            print(
                f"{n:>6}  {name:<28} {count:>5}  {_size(without):>9}  {_size(with_previous):>9}"
                f"  x{with_previous / without:.1f}{over}"
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 600])
