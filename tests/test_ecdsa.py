"""pool.ecdsa: deterministic low-S signing and strict verification."""

from __future__ import annotations

import ecdsa as pure_python_ecdsa
import pytest
from ecdsa.util import sigdecode_der
from hypothesis import given, settings
from hypothesis import strategies as st

from pool import ecdsa
from pool.errors import SignatureError

# BIP143's native P2WPKH example: key, public key, digest and the RFC6979 signature Bitcoin Core
# made (an implementation-independent check of the deterministic nonce).
BIP143_KEY = bytes.fromhex("619c335025c7f4012e556c2a58b2506e30b8511b53ade95ea316fd8c3286feb9")
BIP143_PUBKEY = bytes.fromhex("025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357")
BIP143_DIGEST = bytes.fromhex("c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670")
BIP143_SIGNATURE = bytes.fromhex(
    "304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a954c4518331"
    "561406f90300e8f3358f51928d43c212a8caed02de67eebee"
)

_keys = st.integers(1, ecdsa.CURVE_ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
_digests = st.binary(min_size=32, max_size=32)


def _der(r: int, s: int) -> bytes:
    """Minimal DER encoding of two positive integers."""

    def integer(n: int) -> bytes:
        body = n.to_bytes((n.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(body)]) + body

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def _r_s(der: bytes) -> tuple[int, int]:
    len_r = der[3]
    return int.from_bytes(der[4 : 4 + len_r], "big"), int.from_bytes(der[6 + len_r :], "big")


def test_public_key_is_the_compressed_point() -> None:
    assert ecdsa.public_key(BIP143_KEY) == BIP143_PUBKEY


def test_sign_reproduces_bitcoin_cores_rfc6979_signature() -> None:
    assert ecdsa.sign(BIP143_KEY, BIP143_DIGEST) == BIP143_SIGNATURE


def test_sign_is_deterministic() -> None:
    digest = bytes(range(32))
    assert ecdsa.sign(BIP143_KEY, digest) == ecdsa.sign(BIP143_KEY, digest)


def test_sign_differs_for_another_digest() -> None:
    assert ecdsa.sign(BIP143_KEY, bytes(32)) != ecdsa.sign(BIP143_KEY, bytes(31) + b"\x01")


@settings(max_examples=50, deadline=None)
@given(_keys, _digests)
def test_signatures_are_strict_der_and_low_s(key: bytes, digest: bytes) -> None:
    signature = ecdsa.sign(key, digest)
    assert ecdsa.is_strict_der(signature)
    assert ecdsa.is_low_s(signature)
    assert _r_s(signature)[1] <= ecdsa.HALF_CURVE_ORDER


@settings(max_examples=30, deadline=None)
@given(_keys, _digests)
def test_signatures_verify_with_an_independent_implementation(key: bytes, digest: bytes) -> None:
    signature = ecdsa.sign(key, digest)
    verifying_key = pure_python_ecdsa.VerifyingKey.from_string(
        ecdsa.public_key(key), curve=pure_python_ecdsa.SECP256k1
    )
    assert verifying_key.verify_digest(signature, digest, sigdecode=sigdecode_der)
    assert ecdsa.verify(ecdsa.public_key(key), signature, digest)


def test_verify_accepts_the_bip143_signature() -> None:
    assert ecdsa.verify(BIP143_PUBKEY, BIP143_SIGNATURE, BIP143_DIGEST)


def test_verify_refuses_the_high_s_twin_of_a_valid_signature() -> None:
    r, s = _r_s(BIP143_SIGNATURE)
    high_s = _der(r, ecdsa.CURVE_ORDER - s)
    assert ecdsa.is_strict_der(high_s)
    assert not ecdsa.is_low_s(high_s)
    assert not ecdsa.verify(BIP143_PUBKEY, high_s, BIP143_DIGEST)


def test_verify_refuses_a_wrong_digest() -> None:
    wrong = bytes([BIP143_DIGEST[0] ^ 1]) + BIP143_DIGEST[1:]
    assert not ecdsa.verify(BIP143_PUBKEY, BIP143_SIGNATURE, wrong)


def test_verify_refuses_another_public_key() -> None:
    other = ecdsa.public_key(bytes(31) + b"\x01")
    assert not ecdsa.verify(other, BIP143_SIGNATURE, BIP143_DIGEST)


def test_verify_refuses_an_uncompressed_public_key() -> None:
    uncompressed = pure_python_ecdsa.VerifyingKey.from_string(
        BIP143_PUBKEY, curve=pure_python_ecdsa.SECP256k1
    ).to_string("uncompressed")
    assert ecdsa.is_valid_public_key(uncompressed)
    assert not ecdsa.verify(uncompressed, BIP143_SIGNATURE, BIP143_DIGEST)


def test_verify_refuses_a_public_key_off_the_curve() -> None:
    off_curve = b"\x02" + bytes(31) + b"\x05"
    assert not ecdsa.is_valid_public_key(off_curve)
    assert not ecdsa.verify(off_curve, BIP143_SIGNATURE, BIP143_DIGEST)


def test_verify_refuses_a_signature_with_r_above_the_curve_order() -> None:
    _, s = _r_s(BIP143_SIGNATURE)
    oversized = _der(ecdsa.CURVE_ORDER + 1, s)
    assert ecdsa.is_strict_der(oversized)
    assert not ecdsa.verify(BIP143_PUBKEY, oversized, BIP143_DIGEST)


def test_verify_refuses_the_signature_with_its_sighash_byte() -> None:
    assert not ecdsa.verify(BIP143_PUBKEY, BIP143_SIGNATURE + b"\x01", BIP143_DIGEST)


def _mutated(edit: dict[int, int]) -> bytes:
    sig = bytearray(BIP143_SIGNATURE)
    for index, value in edit.items():
        sig[index] = value
    return bytes(sig)


_R_LEN = BIP143_SIGNATURE[3]
_S_AT = 4 + _R_LEN

MALFORMED_DER = {
    "empty": b"",
    "too short": bytes.fromhex("30050201010201"),
    "too long": b"\x30\x47\x02\x21\x00" + b"\x80" + bytes(31) + b"\x02\x22" + bytes(34),
    "not a sequence": _mutated({0: 0x31}),
    "sequence length too long": _mutated({1: BIP143_SIGNATURE[1] + 1}),
    "sequence length too short": _mutated({1: BIP143_SIGNATURE[1] - 1}),
    "r length past the end": _mutated({3: 0x50}),
    "s length mismatch": _mutated({_S_AT + 1: BIP143_SIGNATURE[_S_AT + 1] - 1}),
    "r not an integer": _mutated({2: 0x03}),
    "s not an integer": _mutated({_S_AT: 0x03}),
    "r zero length": bytes.fromhex("3006020002020101"),
    "s zero length": bytes.fromhex("3006020201010200"),
    "r negative": _mutated({4: BIP143_SIGNATURE[4] | 0x80}),
    "s negative": _mutated({_S_AT + 2: BIP143_SIGNATURE[_S_AT + 2] | 0x80}),
    "r padded": bytes.fromhex("300702020001020101"),
    "s padded": bytes.fromhex("300702010102020001"),
    "trailing byte": BIP143_SIGNATURE + b"\x01",
}


@pytest.mark.parametrize("encoding", MALFORMED_DER.values(), ids=MALFORMED_DER.keys())
def test_malformed_der_is_not_strict(encoding: bytes) -> None:
    assert not ecdsa.is_strict_der(encoding)
    assert not ecdsa.is_low_s(encoding)


@pytest.mark.parametrize(
    "encoding",
    [
        bytes.fromhex("3006020101020101"),
        bytes.fromhex("300702020080020101"),
        bytes.fromhex("300702010102020080"),
    ],
    ids=["one-byte integers", "r padded because its high bit is set", "s padded likewise"],
)
def test_minimal_der_is_strict(encoding: bytes) -> None:
    assert ecdsa.is_strict_der(encoding)


@pytest.mark.parametrize("key", [bytes(32), ecdsa.CURVE_ORDER.to_bytes(32, "big"), bytes(31)])
def test_invalid_private_key_is_refused(key: bytes) -> None:
    with pytest.raises(SignatureError, match="private key"):
        ecdsa.sign(key, BIP143_DIGEST)


def test_digest_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(SignatureError, match="32 bytes"):
        ecdsa.sign(BIP143_KEY, bytes(33))
