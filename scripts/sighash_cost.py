#!/usr/bin/env python3
"""Measure the per-input cost of BIP143 digests, precomputed (pool.sighash) against naive.

For transactions of N inputs and N outputs, print the time to compute every input's SIGHASH_ALL
digest divided by N: with ``SegwitV0Sighasher`` (built once, outside the timing) and with a naive
implementation that rehashes all prevouts, sequences and outputs for each input. The first stays
flat as N grows; the second grows linearly, so signing a whole transaction is quadratic.

Usage: python scripts/sighash_cost.py [N ...]   (default: 10 1000)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pool.hashes import hash256
from pool.script import multisig_script, p2wsh_script_pubkey
from pool.serialize import u32le, u64le, var_bytes
from pool.sighash import SIGHASH_ALL, SegwitV0Sighasher
from pool.tx import OutPoint, Transaction, TxIn, TxOut

REPETITIONS = 5
WITNESS_SCRIPT = multisig_script(2, [bytes([2]) + bytes([k]) * 32 for k in (1, 2, 3)])
AMOUNT = 100_000


def sample_transaction(n: int) -> Transaction:
    """N P2WSH inputs and N P2WSH outputs."""
    return Transaction(
        version=2,
        inputs=tuple(TxIn(OutPoint(i.to_bytes(32, "little"), i % 4), 0xFFFFFFFD) for i in range(n)),
        outputs=tuple(TxOut(AMOUNT - 500, p2wsh_script_pubkey(WITNESS_SCRIPT)) for _ in range(n)),
        locktime=800_000,
    )


def naive_digest(tx: Transaction, index: int, script_code: bytes, amount: int) -> bytes:
    """BIP143 SIGHASH_ALL, recomputing the transaction-wide hashes on every call."""
    txin = tx.inputs[index]
    return hash256(
        u32le(tx.version)
        + hash256(b"".join(i.prevout.serialize() for i in tx.inputs))
        + hash256(b"".join(u32le(i.sequence) for i in tx.inputs))
        + txin.prevout.serialize()
        + var_bytes(script_code)
        + u64le(amount)
        + u32le(txin.sequence)
        + hash256(b"".join(o.serialize() for o in tx.outputs))
        + u32le(tx.locktime)
        + u32le(SIGHASH_ALL)
    )


def per_input_seconds(n: int, digest: Callable[[int], bytes]) -> float:
    """Best over REPETITIONS of the time to compute all n digests, divided by n."""
    best = float("inf")
    for _ in range(REPETITIONS):
        start = time.perf_counter()
        for index in range(n):
            digest(index)
        best = min(best, time.perf_counter() - start)
    return best / n


def measure(n: int) -> tuple[float, float]:
    """(precomputed, naive) seconds per input for a transaction of n inputs and n outputs."""
    tx = sample_transaction(n)
    sighasher = SegwitV0Sighasher(tx)
    for index in range(n):
        expected = sighasher.digest(index, WITNESS_SCRIPT, AMOUNT)
        assert naive_digest(tx, index, WITNESS_SCRIPT, AMOUNT) == expected
    fast = per_input_seconds(n, lambda i: sighasher.digest(i, WITNESS_SCRIPT, AMOUNT))
    slow = per_input_seconds(n, lambda i: naive_digest(tx, i, WITNESS_SCRIPT, AMOUNT))
    return fast, slow


def main(sizes: list[int]) -> None:
    print(f"{'inputs':>7} {'precomputed µs/input':>21} {'naive µs/input':>15} {'ratio':>7}")
    for n in sizes:
        fast, slow = measure(n)
        print(f"{n:>7} {fast * 1e6:>21.2f} {slow * 1e6:>15.2f} {slow / fast:>7.1f}")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [10, 1000])
