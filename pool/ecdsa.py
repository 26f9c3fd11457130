"""ECDSA over secp256k1 through libsecp256k1 (coincurve), with Bitcoin's signature rules.

Signatures here are bare DER, without the sighash byte. ``sign`` is RFC6979-deterministic and
always low-S; ``verify`` accepts only strict DER (BIP66), low-S (BIP146) signatures by a
compressed public key, which is what segwit v0 policy relays.
"""

from __future__ import annotations

from functools import lru_cache

from coincurve import PublicKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import cdata_to_der

from pool.errors import SignatureError

CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_CURVE_ORDER = CURVE_ORDER // 2
MIN_DER_LEN = 8
MAX_DER_LEN = 72


def _check_private_key(secret: bytes) -> None:
    if len(secret) != 32 or not 0 < int.from_bytes(secret, "big") < CURVE_ORDER:
        raise SignatureError("a private key must be 32 bytes encoding 1..n-1")


def _check_digest(digest: bytes) -> None:
    if len(digest) != 32:
        raise SignatureError(f"a digest must be 32 bytes, got {len(digest)}")


def public_key(private_key: bytes) -> bytes:
    """The 33-byte compressed public key of a private key.

    One point multiplication (coincurve's ``PrivateKey`` would make two: it derives the x-only
    key too)."""
    _check_private_key(private_key)
    return bytes(PublicKey.from_valid_secret(private_key).format(compressed=True))


def sign(private_key: bytes, digest: bytes) -> bytes:
    """A DER signature of a 32-byte digest: RFC6979 nonce, low S, no sighash byte."""
    _check_digest(digest)
    _check_private_key(private_key)
    # What coincurve's PrivateKey.sign does (libsecp256k1's default RFC6979 nonce), without the
    # two public keys its constructor derives first.
    signature = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_sign(
        GLOBAL_CONTEXT.ctx, signature, digest, private_key, ffi.NULL, ffi.NULL
    ):
        raise SignatureError("libsecp256k1 could not sign")
    return bytes(cdata_to_der(signature, GLOBAL_CONTEXT))


@lru_cache(maxsize=1 << 16)
def is_valid_public_key(key: bytes) -> bool:
    """True for a 33-byte compressed or 65-byte uncompressed encoding of a curve point."""
    return _parsed_public_key(key) is not None


@lru_cache(maxsize=1 << 14)
def _parsed_public_key(key: bytes) -> PublicKey | None:
    """The parsed point (kept: a signer verifies with the same keys round after round)."""
    if not (len(key) == 33 and key[0] in (2, 3)) and not (len(key) == 65 and key[0] == 4):
        return None
    try:
        return PublicKey(key)
    except ValueError:
        return None


def verify(public_key: bytes, der_signature: bytes, digest: bytes) -> bool:
    """True only for a strict-DER, low-S signature of ``digest`` by a compressed public key."""
    _check_digest(digest)
    if len(public_key) != 33:
        return False
    parsed = _parsed_public_key(public_key)
    if parsed is None or not is_low_s(der_signature):
        return False
    return bool(parsed.verify(der_signature, digest, hasher=None))


def _der_integers(sig: bytes) -> tuple[bytes, bytes] | None:
    """The R and S fields of a BIP66 strict DER signature (without sighash byte), else None."""
    if not MIN_DER_LEN <= len(sig) <= MAX_DER_LEN:
        return None
    if sig[0] != 0x30 or sig[1] != len(sig) - 2:
        return None
    len_r = sig[3]
    if 5 + len_r >= len(sig):
        return None
    len_s = sig[5 + len_r]
    if len_r + len_s + 6 != len(sig):
        return None
    r = sig[4 : 4 + len_r]
    s = sig[6 + len_r :]
    if sig[2] != 0x02 or sig[4 + len_r] != 0x02:
        return None
    if not (_is_minimal_positive_integer(r) and _is_minimal_positive_integer(s)):
        return None
    return r, s


def _is_minimal_positive_integer(field: bytes) -> bool:
    """A DER INTEGER body that is non-empty, not negative and without superfluous zero padding."""
    if not field or field[0] & 0x80:
        return False
    return not (len(field) > 1 and field[0] == 0 and not field[1] & 0x80)


def is_strict_der(sig: bytes) -> bool:
    """BIP66's encoding rules, for a DER signature without its sighash byte."""
    return _der_integers(sig) is not None


def is_low_s(der: bytes) -> bool:
    """True for a strict DER signature whose S is at most half the curve order."""
    fields = _der_integers(der)
    return fields is not None and int.from_bytes(fields[1], "big") <= HALF_CURVE_ORDER
