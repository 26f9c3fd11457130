"""BIP143 sighash rows: flat per input, and against python-bitcoinlib in the same process."""

from __future__ import annotations

from bitcoin.core import CTransaction
from bitcoin.core.script import SIGHASH_ALL as BL_SIGHASH_ALL
from bitcoin.core.script import SIGVERSION_WITNESS_V0, CScript, SignatureHash

from bench.common import Row, compare, row, timed
from pool.script import multisig_script, p2wsh_script_pubkey
from pool.sighash import SIGHASH_ALL, SegwitV0Sighasher
from pool.tx import OutPoint, Transaction, TxIn, TxOut

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


def _ours(tx: Transaction) -> float:
    """Seconds for every input's digest, the transaction-wide hashes included."""

    def run() -> None:
        sighasher = SegwitV0Sighasher(tx)
        for index in range(len(tx.inputs)):
            sighasher.digest(index, WITNESS_SCRIPT, AMOUNT, SIGHASH_ALL)

    return timed(run)


def flat_per_input(repetitions: int) -> Row:
    small, large = sample_transaction(10), sample_transaction(1000)
    # Per input: each 10-input measurement is repeated 100 times to be as long as the other.
    comparison = compare(
        lambda: _ours(large) / 1000,
        lambda: sum(_ours(small) for _ in range(100)) / 1000,
        repetitions,
    )
    return row(
        "BIP143 sighash per input, 1,000 ÷ 10 inputs",
        comparison.ratio,
        "×",
        "<= 1.5",
        f"{comparison.median_a * 1e6:.2f} µs per input at 1,000 inputs, "
        f"{comparison.median_b * 1e6:.2f} µs at 10; {comparison.spread()}",
    )


def against_bitcoinlib(repetitions: int) -> Row:
    tx = sample_transaction(1000)
    theirs = CTransaction.deserialize(tx.serialize())
    script = CScript(WITNESS_SCRIPT)
    ours = SegwitV0Sighasher(tx)
    for index in (0, 500, 999):
        expected = ours.digest(index, WITNESS_SCRIPT, AMOUNT, SIGHASH_ALL)
        got = SignatureHash(script, theirs, index, BL_SIGHASH_ALL, AMOUNT, SIGVERSION_WITNESS_V0)
        assert got == expected, "python-bitcoinlib computes another digest"

    def bitcoinlib() -> float:
        def run() -> None:
            for index in range(0, 1000, 10):
                SignatureHash(script, theirs, index, BL_SIGHASH_ALL, AMOUNT, SIGVERSION_WITNESS_V0)

        return timed(run) * 10

    comparison = compare(bitcoinlib, lambda: _ours(tx), repetitions)
    return row(
        "sighash of 1,000 inputs vs python-bitcoinlib",
        comparison.ratio,
        "× faster",
        ">= 20",
        f"vpool {comparison.median_b * 1000:.2f} ms, python-bitcoinlib 0.12.2 "
        f"{comparison.median_a * 1000:.0f} ms (it rehashes prevouts, sequences and outputs for "
        f"each input, so it is timed on every 10th input and multiplied by 10); same digests "
        f"checked; {comparison.spread()}",
    )
