"""Scripts of the pool: bare m-of-n CHECKMULTISIG witness scripts and their P2WSH outputs."""

from __future__ import annotations

from collections.abc import Sequence

from pool.errors import VpoolError
from pool.hashes import sha256

OP_1 = 0x51
OP_16 = 0x60
OP_CHECKMULTISIG = 0xAE
MAX_MULTISIG_KEYS = 15
"""vpool's bound on n (also the largest n whose witness script stays below 520 bytes)."""


def _small_int(op: int) -> int:
    if not OP_1 <= op <= OP_16:
        raise VpoolError(f"expected OP_1..OP_16, found opcode 0x{op:02x}")
    return op - OP_1 + 1


def sort_pubkeys_bip67(pubkeys: Sequence[bytes]) -> tuple[bytes, ...]:
    """BIP67: compressed public keys in lexicographic byte order."""
    return tuple(sorted(pubkeys))


def multisig_script(m: int, pubkeys: Sequence[bytes]) -> bytes:
    """``OP_m <pk1> ... <pkn> OP_n OP_CHECKMULTISIG`` with the keys in the given order."""
    n = len(pubkeys)
    if not 1 <= n <= MAX_MULTISIG_KEYS:
        raise VpoolError(f"multisig needs 1..{MAX_MULTISIG_KEYS} keys, got {n}")
    if not 1 <= m <= n:
        raise VpoolError(f"multisig threshold {m} outside 1..{n}")
    out = bytearray([OP_1 + m - 1])
    for pk in pubkeys:
        if len(pk) != 33 or pk[0] not in (2, 3):
            raise VpoolError("multisig keys must be 33-byte compressed public keys")
        out += b"\x21" + pk
    out += bytes([OP_1 + n - 1, OP_CHECKMULTISIG])
    return bytes(out)


def parse_multisig_script(script: bytes) -> tuple[int, tuple[bytes, ...]]:
    """Return ``(m, pubkeys)`` of a bare multisig script; raise ``VpoolError`` otherwise."""
    if len(script) < 3 + 34 or script[-1] != OP_CHECKMULTISIG:
        raise VpoolError("not a multisig script")
    m = _small_int(script[0])
    n = _small_int(script[-2])
    if len(script) != 3 + 34 * n:
        raise VpoolError("multisig script length does not match its key count")
    keys = []
    for i in range(n):
        chunk = script[1 + 34 * i : 1 + 34 * (i + 1)]
        if chunk[0] != 0x21 or chunk[1] not in (2, 3):
            raise VpoolError("multisig script key is not a pushed compressed public key")
        keys.append(chunk[1:])
    if not 1 <= m <= n:
        raise VpoolError(f"multisig threshold {m} outside 1..{n}")
    return m, tuple(keys)


def p2wsh_script_pubkey(witness_script: bytes) -> bytes:
    """``OP_0 <sha256(witness_script)>``."""
    return b"\x00\x20" + sha256(witness_script)


def multisig_witness_script_len(n: int) -> int:
    """Length of an n-key multisig witness script: OP_m + n × (push + 33) + OP_n + CHECKMULTISIG."""
    return 3 + 34 * n
