"""Exact worst-case transaction weights for the pool's transactions.

Every input of the pool spends a P2WSH m-of-n ``CHECKMULTISIG`` output. Its witness is
``<empty> <sig_1> ... <sig_m> <witness script>``; a low-S DER signature with its sighash byte is
at most 72 bytes, so the estimate below is an upper bound of the signed transaction's weight
whichever m signers sign. Weights are in weight units (WU); vsize = ceil(weight / 4).
"""

from __future__ import annotations

from pool.script import multisig_witness_script_len
from pool.serialize import compact_size_len

MAX_SIGNATURE_LEN = 72
"""DER signature with low S (at most 71 bytes) plus the sighash byte."""

P2WSH_SCRIPT_PUBKEY_LEN = 34
TX_FIXED_BASE = 4 + 4
"""nVersion and nLockTime."""
SEGWIT_MARKER_WEIGHT = 2
"""Marker and flag bytes: witness data, one weight unit each."""
INPUT_BASE = 32 + 4 + 1 + 4
"""Outpoint, empty scriptSig (its length byte) and nSequence."""


def multisig_input_weight(m: int, n: int) -> int:
    """Worst-case weight of one P2WSH m-of-n input, signed."""
    script_len = multisig_witness_script_len(n)
    witness = (
        compact_size_len(m + 2)  # number of stack items
        + 1  # the empty item CHECKMULTISIG's extra pop consumes
        + m * (1 + MAX_SIGNATURE_LEN)
        + compact_size_len(script_len)
        + script_len
    )
    return 4 * INPUT_BASE + witness


def output_weight(script_pubkey_len: int) -> int:
    """Weight of one output: value, script length, script."""
    return 4 * (8 + compact_size_len(script_pubkey_len) + script_pubkey_len)


P2WSH_OUTPUT_WEIGHT = output_weight(P2WSH_SCRIPT_PUBKEY_LEN)


def tx_weight(n_inputs: int, n_outputs: int, inputs_weight: int, outputs_weight: int) -> int:
    """Weight of a segwit transaction from its counts and the summed weight of its parts."""
    base = TX_FIXED_BASE + compact_size_len(n_inputs) + compact_size_len(n_outputs)
    return 4 * base + SEGWIT_MARKER_WEIGHT + inputs_weight + outputs_weight


def vsize(weight: int) -> int:
    return (weight + 3) // 4


def fee_for_weight(weight: int, fee_rate_sat_per_kvb: int) -> int:
    """Fee at ``fee_rate`` (satoshis per 1000 vbytes) for ``weight``, rounded up to the satoshi."""
    return -(-vsize(weight) * fee_rate_sat_per_kvb // 1000)
