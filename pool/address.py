"""Addresses: base58check (p2pkh, p2sh) and bech32/bech32m segwit (BIP173, BIP350).

Only the encodings are implemented here; which script an address stands for is the whole of
its meaning, so the two public functions convert between addresses and scriptPubKeys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from functools import lru_cache

from pool.errors import AddressError
from pool.hashes import hash256
from pool.networks import NETWORKS, REGTEST, TESTNET, Network

# --- base58check -------------------------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def base58check_encode(payload: bytes) -> str:
    """Base58 of ``payload`` followed by the first 4 bytes of its double SHA256."""
    data = payload + hash256(payload)[:4]
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(digits))


def base58check_decode(text: str) -> bytes:
    """The payload of a base58check string. Error messages never quote the input (it may be a
    private key), only positions."""
    number = 0
    for pos, char in enumerate(text):
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise AddressError(f"invalid base58 character at position {pos}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    data = b"\x00" * zeros + body
    if len(data) < 5:
        raise AddressError("base58check string too short")
    payload, checksum = data[:-4], data[-4:]
    if hash256(payload)[:4] != checksum:
        raise AddressError("bad base58check checksum")
    return payload


# --- bech32 / bech32m --------------------------------------------------------------------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_MAX_LENGTH = 90


def _reduce_xor(values: Iterable[int]) -> int:
    out = 0
    for value in values:
        out ^= value
    return out


class Bech32Variant(Enum):
    """The checksum constant: BIP173 bech32 (witness v0) or BIP350 bech32m (v1..v16)."""

    BECH32 = 1
    BECH32M = 0x2BC830A3


_BECH32_TOP_XOR = tuple(
    _reduce_xor(gen for i, gen in enumerate(_BECH32_GENERATOR) if (top >> i) & 1)
    for top in range(32)
)
"""For each value of the checksum's top 5 bits, the xor of the generators those bits select."""


def _bech32_polymod(values: Iterable[int]) -> int:
    chk = 1
    table = _BECH32_TOP_XOR
    for value in values:
        chk = ((chk & 0x1FFFFFF) << 5 ^ value) ^ table[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: Sequence[int], variant: Bech32Variant) -> str:
    """Lowercase bech32/bech32m string of 5-bit ``data`` under ``hrp``."""
    polymod = _bech32_polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ variant.value
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in [*data, *checksum])


def bech32_decode(text: str) -> tuple[str, list[int], Bech32Variant]:
    """Return ``(hrp, data, variant)`` of a bech32 or bech32m string (data without checksum)."""
    if len(text) > _BECH32_MAX_LENGTH:
        raise AddressError(f"bech32 string longer than {_BECH32_MAX_LENGTH} characters")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise AddressError("bech32 string has a character outside the printable ASCII range")
    if text.lower() != text and text.upper() != text:
        raise AddressError("bech32 string has mixed case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 0:
        raise AddressError("bech32 string has no separator '1'")
    if sep == 0:
        raise AddressError("bech32 string has an empty human-readable part")
    if len(text) - sep - 1 < 6:
        raise AddressError("bech32 checksum too short")
    hrp, data_part = text[:sep], text[sep + 1 :]
    data = []
    for char in data_part:
        if char not in _BECH32_INDEX:
            raise AddressError(f"invalid bech32 character {char!r}")
        data.append(_BECH32_INDEX[char])
    polymod = _bech32_polymod(_hrp_expand(hrp) + data)
    for variant in Bech32Variant:
        if polymod == variant.value:
            return hrp, data[:-6], variant
    raise AddressError("bad bech32 checksum")


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup a sequence of ``from_bits``-bit values into ``to_bits``-bit values."""
    acc = bits = 0
    out = []
    mask = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & mask)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & mask)
    elif bits >= from_bits:
        raise AddressError("bech32 data has more than 4 bits of padding")
    elif (acc << (to_bits - bits)) & mask:
        raise AddressError("bech32 data has non-zero padding")
    return out


# --- segwit ------------------------------------------------------------------------------------


def encode_segwit_address(network: Network, version: int, program: bytes) -> str:
    """The bech32 (v0) or bech32m (v1..v16) address of a witness program."""
    _check_witness_program(version, program)
    variant = Bech32Variant.BECH32 if version == 0 else Bech32Variant.BECH32M
    return bech32_encode(
        network.bech32_hrp, [version, *_convert_bits(program, 8, 5, True)], variant
    )


def _check_witness_program(version: int, program: bytes) -> None:
    if not 0 <= version <= 16:
        raise AddressError(f"witness version {version} outside 0..16")
    if not 2 <= len(program) <= 40:
        raise AddressError(f"witness program must be 2 to 40 bytes, got {len(program)}")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError(f"witness v0 program must be 20 or 32 bytes, got {len(program)}")


def _decode_segwit_address(address: str, network: Network) -> bytes:
    hrp, data, variant = bech32_decode(address)
    if hrp != network.bech32_hrp:
        owners = _network_names(n for n in NETWORKS.values() if n.bech32_hrp == hrp)
        if owners:
            raise AddressError(f"address is for {owners}, not {network.name}")
        raise AddressError(f"unknown bech32 address prefix {hrp!r}")
    if not data:
        raise AddressError("bech32 address has an empty data part")
    version = data[0]
    if version > 16:
        raise AddressError(f"witness version {version} outside 0..16")
    program = bytes(_convert_bits(data[1:], 5, 8, False))
    _check_witness_program(version, program)
    if version == 0 and variant is not Bech32Variant.BECH32:
        raise AddressError("witness v0 address must use a bech32 checksum, not bech32m")
    if version > 0 and variant is not Bech32Variant.BECH32M:
        raise AddressError(f"witness v{version} address must use a bech32m checksum, not bech32")
    return _witness_script_pubkey(version, program)


def _witness_script_pubkey(version: int, program: bytes) -> bytes:
    opcode = 0 if version == 0 else 0x50 + version
    return bytes([opcode, len(program)]) + program


def _parse_witness_script_pubkey(script_pubkey: bytes) -> tuple[int, bytes] | None:
    """``(version, program)`` of a standard witness output script, else None."""
    if not 4 <= len(script_pubkey) <= 42 or script_pubkey[1] != len(script_pubkey) - 2:
        return None
    opcode = script_pubkey[0]
    if opcode == 0:
        version = 0
    elif 0x51 <= opcode <= 0x60:
        version = opcode - 0x50
    else:
        return None
    program = script_pubkey[2:]
    if version == 0 and len(program) not in (20, 32):
        return None
    return version, program


# --- base58 addresses --------------------------------------------------------------------------


def _p2pkh_script_pubkey(key_hash: bytes) -> bytes:
    return b"\x76\xa9\x14" + key_hash + b"\x88\xac"


def _p2sh_script_pubkey(script_hash: bytes) -> bytes:
    return b"\xa9\x14" + script_hash + b"\x87"


def _decode_base58_address(address: str, network: Network) -> bytes:
    payload = base58check_decode(address)
    if len(payload) != 21:
        raise AddressError(f"base58 address payload must be 21 bytes, got {len(payload)}")
    version, digest = payload[0], payload[1:]
    if version == network.p2pkh_prefix:
        return _p2pkh_script_pubkey(digest)
    if version == network.p2sh_prefix:
        return _p2sh_script_pubkey(digest)
    owners = _network_names(
        n for n in NETWORKS.values() if version in (n.p2pkh_prefix, n.p2sh_prefix)
    )
    if owners:
        raise AddressError(f"address is for {owners}, not {network.name}")
    raise AddressError(f"unknown base58 address version 0x{version:02x}")


# --- public API --------------------------------------------------------------------------------


def _network_names(networks: Iterable[Network]) -> str:
    return "/".join(n.name for n in networks)


def _is_bech32_like(address: str) -> bool:
    """True when the address should be read as bech32: its prefix is a known hrp, or it is a
    well-formed bech32 string of any hrp (so that an unknown hrp gets a precise message)."""
    sep = address.rfind("1")
    if sep > 0 and address[:sep].lower() in {n.bech32_hrp for n in NETWORKS.values()}:
        return True
    try:
        bech32_decode(address)
    except AddressError:
        return False
    return True


def address_to_script_pubkey(address: str, network: Network) -> bytes:
    """The scriptPubKey an address of ``network`` pays to; ``AddressError`` otherwise."""
    if _is_bech32_like(address):
        return _decode_segwit_address(address, network)
    return _decode_base58_address(address, network)


def shown_address_script_pubkey(address: str, network: Network) -> bytes:
    """The scriptPubKey of an address a hardware wallet showed for ``network``.

    Devices know no regtest: every one but Jade shows a regtest address under testnet's prefix
    (``tb1…``), which pays the same script as the ``bcrt1…`` one. So a device's answer is read
    on ``network`` and, for regtest, on testnet as well, and compared by script, never as a
    string. Any other prefix (a mainnet address for a test pool, say) is an ``AddressError``.
    """
    try:
        return address_to_script_pubkey(address, network)
    except AddressError:
        if network != REGTEST:
            raise
    return address_to_script_pubkey(address, TESTNET)


def is_standard_script_pubkey(script_pubkey: bytes) -> bool:
    """Whether ``script_pubkey_to_address`` gives an address (on any network), without encoding
    one: p2pkh, p2sh or a witness v0..v16 output script."""
    spk = script_pubkey
    return (
        (len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac")
        or (len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22:] == b"\x87")
        or _parse_witness_script_pubkey(spk) is not None
    )


def script_pubkey_to_address(script_pubkey: bytes, network: Network) -> str | None:
    """The address of a p2pkh, p2sh or witness v0..v16 output script; None if non-standard.
    Kept for the next call (the policy, the audit entry and the log line each name a round's
    destinations)."""
    return _address_of(bytes(script_pubkey), network)


@lru_cache(maxsize=1 << 14)
def _address_of(script_pubkey: bytes, network: Network) -> str | None:
    spk = script_pubkey
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return base58check_encode(bytes([network.p2pkh_prefix]) + spk[3:23])
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22:] == b"\x87":
        return base58check_encode(bytes([network.p2sh_prefix]) + spk[2:22])
    witness = _parse_witness_script_pubkey(spk)
    if witness is None:
        return None
    return encode_segwit_address(network, *witness)
