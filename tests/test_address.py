"""Addresses: BIP173/BIP350 vectors, base58check, round trips and network checks."""

from __future__ import annotations

import pytest
from embit.networks import NETWORKS as EMBIT_NETWORKS
from embit.script import Script as EmbitScript
from embit.script import address_to_scriptpubkey as embit_address_to_script_pubkey
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.address import (
    Bech32Variant,
    address_to_script_pubkey,
    base58check_decode,
    base58check_encode,
    bech32_decode,
    bech32_encode,
    encode_segwit_address,
    script_pubkey_to_address,
    shown_address_script_pubkey,
)
from pool.errors import AddressError
from pool.networks import MAINNET, REGTEST, SIGNET, TESTNET, Network

VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11" + "l" * 83 + "udsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

INVALID_BECH32M = [
    ("\x20" + "1xj0phk", "outside the printable ASCII range"),
    ("\x7f" + "1g6xzxy", "outside the printable ASCII range"),
    ("\x80" + "1vctc34", "outside the printable ASCII range"),
    (
        "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
        "longer than 90 characters",
    ),
    ("qyrz8wqd2c9m", "no separator"),
    ("1qyrz8wqd2c9m", "empty human-readable part"),
    ("y1b0jsk6g", "invalid bech32 character 'b'"),
    ("lt1igcx5c0", "invalid bech32 character 'i'"),
    ("in1muywd", "checksum too short"),
    ("mm1crxm3i", "invalid bech32 character 'i'"),
    ("au1s5cgom", "invalid bech32 character 'o'"),
    ("M1VUXWEZ", "bad bech32 checksum"),
    ("16plkw9", "empty human-readable part"),
    ("1p2gdwpf", "empty human-readable part"),
]

VALID_SEGWIT = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]

INVALID_SEGWIT = [
    (
        "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
        "unknown bech32 address prefix 'tc'",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
        "witness v1 address must use a bech32m checksum, not bech32",
    ),
    (
        "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
        "witness v2 address must use a bech32m checksum, not bech32",
    ),
    (
        "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
        "witness v16 address must use a bech32m checksum, not bech32",
    ),
    (
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
        "witness v0 address must use a bech32 checksum, not bech32m",
    ),
    (
        "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",
        "witness v0 address must use a bech32 checksum, not bech32m",
    ),
    (
        "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",
        "invalid bech32 character 'o'",
    ),
    (
        "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",
        "witness version 17 outside 0..16",
    ),
    ("bc1pw5dgrnzv", "witness program must be 2 to 40 bytes, got 1"),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
        "witness program must be 2 to 40 bytes, got 41",
    ),
    ("BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P", "witness v0 program must be 20 or 32 bytes, got 16"),
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq", "mixed case"),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",
        "more than 4 bits of padding",
    ),
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j", "non-zero padding"),
    ("bc1gmk9yu", "empty data part"),
]

BASE58_ADDRESSES = [
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", MAINNET),
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", MAINNET),
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", TESTNET),
    ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", REGTEST),
]

P2WPKH_PROGRAM = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")
P2WSH_PROGRAM = bytes(range(32))


def _network_of(address: str) -> Network:
    return MAINNET if address.lower().startswith("bc1") else TESTNET


@pytest.mark.parametrize("text", VALID_BECH32)
def test_bech32_vectors_decode_as_bech32(text: str) -> None:
    assert bech32_decode(text)[2] is Bech32Variant.BECH32


@pytest.mark.parametrize("text", VALID_BECH32M)
def test_bech32m_vectors_decode_as_bech32m(text: str) -> None:
    assert bech32_decode(text)[2] is Bech32Variant.BECH32M


@pytest.mark.parametrize(("text", "message"), INVALID_BECH32M)
def test_invalid_bech32m_vectors_are_refused(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        bech32_decode(text)


@pytest.mark.parametrize("text", VALID_BECH32 + VALID_BECH32M)
def test_bech32_encode_reproduces_decoded_strings(text: str) -> None:
    hrp, data, variant = bech32_decode(text)
    assert bech32_encode(hrp, data, variant) == text.lower()


@pytest.mark.parametrize(("address", "script_hex"), VALID_SEGWIT)
def test_segwit_vectors_give_their_script_pubkeys(address: str, script_hex: str) -> None:
    assert address_to_script_pubkey(address, _network_of(address)).hex() == script_hex


@pytest.mark.parametrize(("address", "script_hex"), VALID_SEGWIT)
def test_segwit_script_pubkeys_give_the_lowercase_address(address: str, script_hex: str) -> None:
    assert script_pubkey_to_address(bytes.fromhex(script_hex), _network_of(address)) == (
        address.lower()
    )


@pytest.mark.parametrize(("address", "message"), INVALID_SEGWIT)
def test_invalid_segwit_vectors_are_refused(address: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        address_to_script_pubkey(address, _network_of(address))


@pytest.mark.parametrize(("address", "network"), BASE58_ADDRESSES)
def test_base58_addresses_match_embit(address: str, network: Network) -> None:
    expected = embit_address_to_script_pubkey(address).data
    assert address_to_script_pubkey(address, network) == expected


@pytest.mark.parametrize(("address", "network"), BASE58_ADDRESSES)
def test_base58_addresses_round_trip(address: str, network: Network) -> None:
    script_pubkey = address_to_script_pubkey(address, network)
    assert script_pubkey_to_address(script_pubkey, network) == address


def test_p2wpkh_address_matches_embit_on_regtest() -> None:
    script_pubkey = b"\x00\x14" + P2WPKH_PROGRAM
    expected = EmbitScript(script_pubkey).address(EMBIT_NETWORKS["regtest"])
    assert script_pubkey_to_address(script_pubkey, REGTEST) == expected


def test_regtest_uses_bcrt_hrp() -> None:
    assert encode_segwit_address(REGTEST, 0, P2WPKH_PROGRAM).startswith("bcrt1q")


def test_regtest_accepts_testnet_base58_addresses() -> None:
    address = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"
    assert address_to_script_pubkey(address, REGTEST) == address_to_script_pubkey(address, TESTNET)


def test_testnet_and_signet_share_segwit_addresses() -> None:
    address = encode_segwit_address(TESTNET, 0, P2WPKH_PROGRAM)
    assert address_to_script_pubkey(address, SIGNET) == b"\x00\x14" + P2WPKH_PROGRAM


def test_mainnet_segwit_address_is_refused_on_regtest() -> None:
    with pytest.raises(AddressError, match=r"^address is for mainnet, not regtest$"):
        address_to_script_pubkey("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", REGTEST)


def test_testnet_segwit_address_is_refused_on_regtest() -> None:
    address = encode_segwit_address(TESTNET, 0, P2WPKH_PROGRAM)
    with pytest.raises(AddressError, match=r"^address is for testnet/signet, not regtest$"):
        address_to_script_pubkey(address, REGTEST)


def test_a_device_showing_a_regtest_address_under_testnets_prefix_shows_the_same_script() -> None:
    shown = encode_segwit_address(TESTNET, 0, P2WSH_PROGRAM)
    assert shown.startswith("tb1")
    assert shown_address_script_pubkey(shown, REGTEST) == bytes([0, 32]) + P2WSH_PROGRAM


def test_a_device_showing_the_regtest_prefix_is_read_as_well() -> None:
    shown = encode_segwit_address(REGTEST, 0, P2WSH_PROGRAM)
    assert shown_address_script_pubkey(shown, REGTEST) == bytes([0, 32]) + P2WSH_PROGRAM


def test_a_device_showing_a_mainnet_address_for_a_regtest_pool_is_refused() -> None:
    shown = encode_segwit_address(MAINNET, 0, P2WSH_PROGRAM)
    with pytest.raises(AddressError, match=r"^address is for mainnet, not testnet$"):
        shown_address_script_pubkey(shown, REGTEST)


def test_a_device_showing_a_regtest_address_for_a_testnet_pool_is_refused() -> None:
    shown = encode_segwit_address(REGTEST, 0, P2WSH_PROGRAM)
    with pytest.raises(AddressError, match=r"^address is for regtest, not testnet$"):
        shown_address_script_pubkey(shown, TESTNET)


def test_regtest_segwit_address_is_refused_on_testnet() -> None:
    address = encode_segwit_address(REGTEST, 0, P2WPKH_PROGRAM)
    with pytest.raises(AddressError, match=r"^address is for regtest, not testnet$"):
        address_to_script_pubkey(address, TESTNET)


def test_mainnet_base58_address_is_refused_on_testnet() -> None:
    with pytest.raises(AddressError, match=r"^address is for mainnet, not testnet$"):
        address_to_script_pubkey("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", TESTNET)


def test_testnet_base58_address_is_refused_on_mainnet() -> None:
    with pytest.raises(AddressError, match=r"^address is for testnet/signet/regtest, not mainnet$"):
        address_to_script_pubkey("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", MAINNET)


def test_segwit_address_with_a_typo_has_a_bad_checksum() -> None:
    with pytest.raises(AddressError, match=r"^bad bech32 checksum$"):
        address_to_script_pubkey("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", MAINNET)


def test_base58_address_with_a_typo_has_a_bad_checksum() -> None:
    with pytest.raises(AddressError, match=r"^bad base58check checksum$"):
        address_to_script_pubkey("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", MAINNET)


def test_base58_address_of_unknown_version_is_refused() -> None:
    address = base58check_encode(b"\x30" + bytes(20))
    with pytest.raises(AddressError, match=r"unknown base58 address version 0x30"):
        address_to_script_pubkey(address, MAINNET)


def test_base58_address_of_wrong_length_is_refused() -> None:
    address = base58check_encode(b"\x00" + bytes(21))
    with pytest.raises(AddressError, match=r"payload must be 21 bytes, got 22"):
        address_to_script_pubkey(address, MAINNET)


def test_base58_error_names_the_position_not_the_text() -> None:
    with pytest.raises(AddressError, match=r"^invalid base58 character at position 3$"):
        base58check_decode("abc0def")


def test_base58check_keeps_leading_zero_bytes() -> None:
    payload = b"\x00\x00\x01\x02"
    encoded = base58check_encode(payload)
    assert encoded.startswith("11")
    assert base58check_decode(encoded) == payload


@pytest.mark.parametrize(
    "script_hex",
    [
        "",
        "6a0401020304",  # OP_RETURN
        "00150102030405060708090a0b0c0d0e0f101112131415",  # v0 program of 21 bytes
        "0014751e76e8199196d454941c45d1b3a323f1433b",  # push longer than the script
        "5101ff",  # v1 program of 1 byte
        "76a914751e76e8199196d454941c45d1b3a323f1433bd688ad",  # p2pkh with CHECKSIGVERIFY
    ],
)
def test_non_standard_scripts_have_no_address(script_hex: str) -> None:
    assert script_pubkey_to_address(bytes.fromhex(script_hex), MAINNET) is None


@settings(max_examples=60, deadline=None)
@given(
    version=st.integers(min_value=0, max_value=16),
    program=st.binary(min_size=2, max_size=40),
    network=st.sampled_from([MAINNET, TESTNET, REGTEST]),
)
def test_witness_programs_round_trip(version: int, program: bytes, network: Network) -> None:
    if version == 0 and len(program) not in (20, 32):
        program = program[:20].ljust(20, b"\x00")
    address = encode_segwit_address(network, version, program)
    script_pubkey = address_to_script_pubkey(address, network)
    assert script_pubkey_to_address(script_pubkey, network) == address
