"""Pool descriptors: BIP380 checksums, BIP67 order, parsing rules, and bdk/embit cross-checks."""

from __future__ import annotations

import bdkpython as bdk
import pytest
from embit.descriptor import Descriptor as EmbitDescriptor
from embit.networks import NETWORKS as EMBIT_NETWORKS

from pool.address import script_pubkey_to_address
from pool.descriptor import (
    DescriptorKey,
    MultisigDescriptor,
    add_checksum,
    descriptor_checksum,
    strip_checksum,
)
from pool.errors import DescriptorError
from pool.hashes import hash160
from pool.hdkeys import ExtendedPrivateKey, KeyOrigin, parse_path
from pool.networks import MAINNET, REGTEST
from pool.script import multisig_script, p2wsh_script_pubkey, sort_pubkeys_bip67

ACCOUNT_PATH = parse_path("48h/1h/0h/2h")


def _master(seed_byte: int) -> ExtendedPrivateKey:
    return ExtendedPrivateKey.from_seed(bytes([seed_byte]) * 32)


def _account_key(master: ExtendedPrivateKey, path: tuple[int, ...] = ACCOUNT_PATH) -> DescriptorKey:
    return DescriptorKey(KeyOrigin(master.fingerprint, path), master.derive_path(path).public())


MASTERS = [_master(i) for i in (1, 2, 3)]
KEYS = tuple(_account_key(master) for master in MASTERS)
KEY_TEXTS = [key.to_string(REGTEST) for key in KEYS]


def _wsh(m: int, keys: list[str], suffix: str = "/0/*") -> str:
    return f"wsh(sortedmulti({m},{','.join(key + suffix for key in keys)}))"


def _no_key_material(message: str, secret: str) -> bool:
    return not any(secret[i : i + 8] in message for i in range(len(secret) - 8))


# --- BIP380 checksum ---------------------------------------------------------------------------


def test_checksum_of_bip380_vector() -> None:
    assert descriptor_checksum("raw(deadbeef)") == "89f8spxm"


def test_add_checksum_appends_hash_and_checksum() -> None:
    assert add_checksum("raw(deadbeef)") == "raw(deadbeef)#89f8spxm"


def test_strip_checksum_accepts_valid_checksum() -> None:
    assert strip_checksum("raw(deadbeef)#89f8spxm") == "raw(deadbeef)"


def test_strip_checksum_accepts_missing_checksum() -> None:
    assert strip_checksum("raw(deadbeef)") == "raw(deadbeef)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("raw(deadbeef)#", "checksum must be 8 characters, found 0"),
        ("raw(deadbeef)#89f8spxmx", "checksum must be 8 characters, found 9"),
        ("raw(deadbeef)#89f8spx", "checksum must be 8 characters, found 7"),
        ("raw(deedbeef)#89f8spxm", "bad descriptor checksum: expected \\w{8}, found 89f8spxm"),
        ("raw(deedbeef)##9f8spxm", "bad descriptor checksum: expected \\w{8}, found #9f8spxm"),
        ("raw(Ü)#00000000", "invalid character 'Ü' at position 4"),
    ],
)
def test_bip380_invalid_checksum_vectors_are_refused(text: str, message: str) -> None:
    with pytest.raises(DescriptorError, match=message):
        strip_checksum(text)


def test_checksum_agrees_with_bdk() -> None:
    printed = str(bdk.Descriptor(_wsh(2, KEY_TEXTS), bdk.NetworkKind.TEST))
    body, checksum = printed.split("#")
    assert descriptor_checksum(body) == checksum


# --- BIP67 -------------------------------------------------------------------------------------

BIP67_VECTORS = [
    (
        [
            "02ff12471208c14bd580709cb2358d98975247d8765f92bc25eab3b2763ed605f8",
            "02fe6f0a5a297eb38c391581c4413e084773ea23954d93f7753db7dc0adc188b2f",
        ],
        [
            "02fe6f0a5a297eb38c391581c4413e084773ea23954d93f7753db7dc0adc188b2f",
            "02ff12471208c14bd580709cb2358d98975247d8765f92bc25eab3b2763ed605f8",
        ],
        "522102fe6f0a5a297eb38c391581c4413e084773ea23954d93f7753db7dc0adc188b2f2102ff12471208c14bd5"
        "80709cb2358d98975247d8765f92bc25eab3b2763ed605f852ae",
        "39bgKC7RFbpoCRbtD5KEdkYKtNyhpsNa3Z",
    ),
    (
        [
            "02632b12f4ac5b1d1b72b2a3b508c19172de44f6f46bcee50ba33f3f9291e47ed0",
            "027735a29bae7780a9755fae7a1c4374c656ac6a69ea9f3697fda61bb99a4f3e77",
            "02e2cc6bd5f45edd43bebe7cb9b675f0ce9ed3efe613b177588290ad188d11b404",
        ],
        [
            "02632b12f4ac5b1d1b72b2a3b508c19172de44f6f46bcee50ba33f3f9291e47ed0",
            "027735a29bae7780a9755fae7a1c4374c656ac6a69ea9f3697fda61bb99a4f3e77",
            "02e2cc6bd5f45edd43bebe7cb9b675f0ce9ed3efe613b177588290ad188d11b404",
        ],
        "522102632b12f4ac5b1d1b72b2a3b508c19172de44f6f46bcee50ba33f3f9291e47ed021027735a29bae7780a9"
        "755fae7a1c4374c656ac6a69ea9f3697fda61bb99a4f3e772102e2cc6bd5f45edd43bebe7cb9b675f0ce9ed3ef"
        "e613b177588290ad188d11b40453ae",
        "3CKHTjBKxCARLzwABMu9yD85kvtm7WnMfH",
    ),
    (
        [
            "030000000000000000000000000000000000004141414141414141414141414141",
            "020000000000000000000000000000000000004141414141414141414141414141",
            "020000000000000000000000000000000000004141414141414141414141414140",
            "030000000000000000000000000000000000004141414141414141414141414140",
        ],
        [
            "020000000000000000000000000000000000004141414141414141414141414140",
            "020000000000000000000000000000000000004141414141414141414141414141",
            "030000000000000000000000000000000000004141414141414141414141414140",
            "030000000000000000000000000000000000004141414141414141414141414141",
        ],
        "522102000000000000000000000000000000000000414141414141414141414141414021020000000000000000"
        "000000000000000000004141414141414141414141414141210300000000000000000000000000000000000041"
        "414141414141414141414141402103000000000000000000000000000000000000414141414141414141414141"
        "414154ae",
        "32V85igBri9zcfBRVupVvwK18NFtS37FuD",
    ),
    (
        [
            "022df8750480ad5b26950b25c7ba79d3e37d75f640f8e5d9bcd5b150a0f85014da",
            "03e3818b65bcc73a7d64064106a859cc1a5a728c4345ff0b641209fba0d90de6e9",
            "021f2f6e1e50cb6a953935c3601284925decd3fd21bc445712576873fb8c6ebc18",
        ],
        [
            "021f2f6e1e50cb6a953935c3601284925decd3fd21bc445712576873fb8c6ebc18",
            "022df8750480ad5b26950b25c7ba79d3e37d75f640f8e5d9bcd5b150a0f85014da",
            "03e3818b65bcc73a7d64064106a859cc1a5a728c4345ff0b641209fba0d90de6e9",
        ],
        "5221021f2f6e1e50cb6a953935c3601284925decd3fd21bc445712576873fb8c6ebc1821022df8750480ad5b26"
        "950b25c7ba79d3e37d75f640f8e5d9bcd5b150a0f85014da2103e3818b65bcc73a7d64064106a859cc1a5a728c"
        "4345ff0b641209fba0d90de6e953ae",
        "3Q4sF6tv9wsdqu2NtARzNCpQgwifm2rAba",
    ),
]


@pytest.mark.parametrize(("given", "sorted_keys", "script", "address"), BIP67_VECTORS)
def test_bip67_vectors_sort_keys(
    given: list[str], sorted_keys: list[str], script: str, address: str
) -> None:
    assert sort_pubkeys_bip67([bytes.fromhex(k) for k in given]) == tuple(
        bytes.fromhex(k) for k in sorted_keys
    )


@pytest.mark.parametrize(("given", "sorted_keys", "script", "address"), BIP67_VECTORS)
def test_bip67_vectors_give_their_script_and_p2sh_address(
    given: list[str], sorted_keys: list[str], script: str, address: str
) -> None:
    witness_script = multisig_script(2, sort_pubkeys_bip67([bytes.fromhex(k) for k in given]))
    assert witness_script.hex() == script
    p2sh = b"\xa9\x14" + hash160(witness_script) + b"\x87"
    assert script_pubkey_to_address(p2sh, MAINNET) == address


# --- parsing and printing ----------------------------------------------------------------------


def test_to_string_prints_h_origins_and_checksum() -> None:
    text = MultisigDescriptor(2, KEYS, 0).to_string(REGTEST)
    body = _wsh(2, KEY_TEXTS)
    assert text == f"{body}#{descriptor_checksum(body)}"
    assert "/48h/1h/0h/2h]" in text


def test_to_string_keeps_the_stored_key_order() -> None:
    text = MultisigDescriptor(2, KEYS[::-1], 1).to_string(REGTEST)
    assert strip_checksum(text) == _wsh(2, KEY_TEXTS[::-1], "/1/*")


def test_parse_inverts_to_string() -> None:
    descriptor = MultisigDescriptor(2, KEYS, 1)
    assert MultisigDescriptor.parse(descriptor.to_string(REGTEST), REGTEST) == descriptor


def test_parse_accepts_apostrophes_and_no_checksum() -> None:
    text = _wsh(2, KEY_TEXTS).replace("h/", "'/").replace("h]", "']")
    assert "'" in text
    assert MultisigDescriptor.parse(text, REGTEST) == MultisigDescriptor(2, KEYS, 0)


def test_parse_accepts_bdk_output() -> None:
    printed = str(bdk.Descriptor(_wsh(2, KEY_TEXTS, "/1/*"), bdk.NetworkKind.TEST))
    assert MultisigDescriptor.parse(printed, REGTEST) == MultisigDescriptor(2, KEYS, 1)


def test_bad_checksum_names_expected_and_found() -> None:
    body = _wsh(2, KEY_TEXTS)
    good = descriptor_checksum(body)
    bad = ("q" if good[0] != "q" else "p") + good[1:]
    with pytest.raises(
        DescriptorError, match=rf"^bad descriptor checksum: expected {good}, found {bad}$"
    ):
        MultisigDescriptor.parse(f"{body}#{bad}", REGTEST)


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        (f"sh({_wsh(2, KEY_TEXTS)})", "sh\\(wsh\\(sortedmulti\\(...\\)\\)\\)"),
        (_wsh(2, KEY_TEXTS).replace("sortedmulti", "multi"), "wsh\\(multi\\(...\\)\\)"),
        (_wsh(2, KEY_TEXTS).replace("wsh(", "sh(", 1), "sh\\(sortedmulti\\(...\\)\\)"),
        (f"wpkh({KEY_TEXTS[0]}/0/*)", "wpkh\\(...\\)"),
        (f"{KEY_TEXTS[0]}/0/*", "expression"),
    ],
)
def test_other_script_types_are_unsupported(text: str, shape: str) -> None:
    with pytest.raises(
        DescriptorError, match=rf"^unsupported descriptor {shape}: only wsh"
    ) as info:
        MultisigDescriptor.parse(text, REGTEST)
    assert _no_key_material(str(info.value), KEYS[0].xpub.to_string(REGTEST))


def test_threshold_zero_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"^threshold m=0 must be at least 1$"):
        MultisigDescriptor.parse(_wsh(0, KEY_TEXTS), REGTEST)


def test_threshold_above_key_count_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"^threshold m=4 exceeds the number of keys n=3$"):
        MultisigDescriptor.parse(_wsh(4, KEY_TEXTS), REGTEST)


def test_non_numeric_threshold_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"threshold m must be a decimal number"):
        MultisigDescriptor.parse(_wsh(2, KEY_TEXTS).replace("(2,", "(-2,"), REGTEST)


def test_more_than_15_keys_are_refused() -> None:
    keys = [_account_key(_master(i)).to_string(REGTEST) for i in range(10, 26)]
    with pytest.raises(DescriptorError, match=r"^multisig has 16 keys, at most 15 are allowed$"):
        MultisigDescriptor.parse(_wsh(2, keys), REGTEST)


def test_duplicate_key_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"^key 3 duplicates key 1$"):
        MultisigDescriptor.parse(_wsh(2, [*KEY_TEXTS[:2], KEY_TEXTS[0]]), REGTEST)


def test_duplicate_key_with_other_origin_is_refused() -> None:
    relabelled = f"[00000000/48h/1h/0h/2h]{KEYS[0].xpub.to_string(REGTEST)}"
    with pytest.raises(DescriptorError, match=r"^key 3 duplicates key 1$"):
        MultisigDescriptor.parse(_wsh(2, [*KEY_TEXTS[:2], relabelled]), REGTEST)


def test_mainnet_xpub_is_refused_on_regtest() -> None:
    mainnet = f"[{KEYS[1].origin.to_string()}]{KEYS[1].xpub.to_string(MAINNET)}"
    with pytest.raises(DescriptorError, match=r"^key 2: extended key is for mainnet, not regtest$"):
        MultisigDescriptor.parse(_wsh(2, [KEY_TEXTS[0], mainnet, KEY_TEXTS[2]]), REGTEST)


def test_origin_with_mainnet_coin_type_is_refused_on_regtest() -> None:
    mainnet_origin = _account_key(MASTERS[0], parse_path("48h/0h/0h/2h")).to_string(REGTEST)
    with pytest.raises(
        DescriptorError,
        match=r"^key 1: origin path 48h/0h/0h/2h has coin type 0h, but regtest uses 1h$",
    ):
        MultisigDescriptor.parse(_wsh(2, [mainnet_origin, *KEY_TEXTS[1:]]), REGTEST)


@pytest.mark.parametrize("wildcard", ["*h", "*'", "*H"])
def test_hardened_wildcard_is_refused(wildcard: str) -> None:
    keys = [KEY_TEXTS[0], f"{KEY_TEXTS[1]}/0/{wildcard}"]
    text = f"wsh(sortedmulti(1,{keys[0]}/0/*,{keys[1]}))"
    with pytest.raises(DescriptorError, match=r"^key 2: hardened wildcard is not supported$"):
        MultisigDescriptor.parse(text, REGTEST)


def test_key_without_origin_is_refused() -> None:
    bare = KEYS[1].xpub.to_string(REGTEST)
    with pytest.raises(DescriptorError, match=r"^key 2 has no key origin"):
        MultisigDescriptor.parse(_wsh(2, [KEY_TEXTS[0], bare, KEY_TEXTS[2]]), REGTEST)


@pytest.mark.parametrize("suffix", ["", "/*", "/0", "/0/1/*", "/0/*/1", "/0/x"])
def test_suffix_other_than_branch_and_wildcard_is_refused(suffix: str) -> None:
    with pytest.raises(DescriptorError, match=r"^key 1: derivation suffix must be /<branch>/\*"):
        MultisigDescriptor.parse(_wsh(1, KEY_TEXTS[:1], suffix), REGTEST)


@pytest.mark.parametrize("branch", ["0h", "0'", "0H"])
def test_hardened_branch_is_refused(branch: str) -> None:
    with pytest.raises(DescriptorError, match=r"^key 1: the branch step must be unhardened$"):
        MultisigDescriptor.parse(_wsh(1, KEY_TEXTS[:1], f"/{branch}/*"), REGTEST)


@pytest.mark.parametrize("branch", ["2147483648", "<0;1>", "-1"])
def test_branch_that_is_not_a_31_bit_number_is_refused(branch: str) -> None:
    with pytest.raises(DescriptorError, match=r"^key 1: branch must be a number in 0..2\^31-1$"):
        MultisigDescriptor.parse(_wsh(1, KEY_TEXTS[:1], f"/{branch}/*"), REGTEST)


def test_keys_with_different_branches_are_refused() -> None:
    text = f"wsh(sortedmulti(2,{KEY_TEXTS[0]}/0/*,{KEY_TEXTS[1]}/1/*,{KEY_TEXTS[2]}/0/*))"
    with pytest.raises(
        DescriptorError,
        match=r"^keys have different branches: key 1 uses /0/\*, key 2 uses /1/\*$",
    ):
        MultisigDescriptor.parse(text, REGTEST)


def test_private_key_is_refused_without_echoing_it() -> None:
    tprv = MASTERS[2].derive_path(ACCOUNT_PATH).to_string(REGTEST)
    private = f"[{KEYS[2].origin.to_string()}]{tprv}"
    with pytest.raises(DescriptorError, match=r"^key 3: refusing an extended private key") as info:
        MultisigDescriptor.parse(_wsh(2, [*KEY_TEXTS[:2], private]), REGTEST)
    assert _no_key_material(str(info.value), tprv)


def test_uppercase_h_in_origin_is_refused() -> None:
    text = _wsh(2, KEY_TEXTS).replace("/48h/", "/48H/", 1)
    with pytest.raises(DescriptorError, match=r"^key 1: use h or ' as hardened marker, not H"):
        MultisigDescriptor.parse(text, REGTEST)


def test_malformed_origin_is_refused() -> None:
    text = _wsh(2, KEY_TEXTS).replace("/48h/", "/48x/", 1)
    with pytest.raises(DescriptorError, match=r"^key 1: bad path component '48x'"):
        MultisigDescriptor.parse(text, REGTEST)


def test_nested_parentheses_are_refused() -> None:
    text = _wsh(2, KEY_TEXTS).replace("))", "))()")[:-2] + "))"
    with pytest.raises(DescriptorError, match=r"unbalanced parentheses"):
        MultisigDescriptor.parse(text, REGTEST)


def test_sortedmulti_without_keys_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"^sortedmulti has no keys$"):
        MultisigDescriptor.parse("wsh(sortedmulti(1))", REGTEST)


# --- derivation --------------------------------------------------------------------------------


def test_derived_pubkeys_are_bip67_sorted_in_the_witness_script() -> None:
    derived = MultisigDescriptor(2, KEYS, 0).derive(3)
    assert list(derived.pubkeys) == sorted(derived.pubkeys)
    assert derived.witness_script == multisig_script(2, derived.pubkeys)
    assert derived.script_pubkey == p2wsh_script_pubkey(derived.witness_script)


def test_derived_origins_lead_to_their_pubkeys() -> None:
    derived = MultisigDescriptor(2, KEYS, 1).derive(4)
    masters = {master.fingerprint: master for master in MASTERS}
    for pubkey, origin in zip(derived.pubkeys, derived.origins, strict=True):
        assert origin.path == (*ACCOUNT_PATH, 1, 4)
        assert masters[origin.fingerprint].derive_path(origin.path).public_key == pubkey


def test_derived_script_does_not_depend_on_key_order() -> None:
    assert MultisigDescriptor(2, KEYS, 0).derive(2) == MultisigDescriptor(2, KEYS[::-1], 0).derive(
        2
    )


@pytest.mark.parametrize("index", [-1, 2**31])
def test_derive_refuses_index_outside_31_bits(index: int) -> None:
    with pytest.raises(DescriptorError, match=r"address index .* outside 0..2\^31-1"):
        MultisigDescriptor(2, KEYS, 0).derive(index)


def test_address_is_p2wsh_bech32_of_the_network() -> None:
    address = MultisigDescriptor(2, KEYS, 0).derive(0).address(REGTEST)
    assert address.startswith("bcrt1q")
    assert len(address) == 64


@pytest.fixture(scope="module")
def bdk_wallet() -> bdk.Wallet:
    receive = bdk.Descriptor(
        MultisigDescriptor(2, KEYS, 0).to_string(REGTEST), bdk.NetworkKind.TEST
    )
    change = bdk.Descriptor(MultisigDescriptor(2, KEYS, 1).to_string(REGTEST), bdk.NetworkKind.TEST)
    return bdk.Wallet(receive, change, bdk.Network.REGTEST, bdk.Persister.new_in_memory())


@pytest.mark.parametrize(
    ("branch", "keychain"), [(0, bdk.KeychainKind.EXTERNAL), (1, bdk.KeychainKind.INTERNAL)]
)
def test_addresses_match_bdk(
    bdk_wallet: bdk.Wallet, branch: int, keychain: bdk.KeychainKind
) -> None:
    descriptor = MultisigDescriptor(2, KEYS, branch)
    ours = [descriptor.derive(i).address(REGTEST) for i in range(6)]
    theirs = [str(bdk_wallet.peek_address(keychain, i).address) for i in range(6)]
    assert ours == theirs


@pytest.mark.parametrize("branch", [0, 1])
def test_addresses_and_witness_scripts_match_embit(branch: int) -> None:
    descriptor = MultisigDescriptor(2, KEYS, branch)
    oracle = EmbitDescriptor.from_string(descriptor.to_string(REGTEST))
    for i in range(6):
        ours, theirs = descriptor.derive(i), oracle.derive(i)
        assert ours.address(REGTEST) == theirs.address(EMBIT_NETWORKS["regtest"])
        assert ours.witness_script == theirs.witness_script().data


def test_descriptor_key_parses_what_it_prints() -> None:
    from tests.factories import make_series

    key = make_series(1, 2, (0, 1, 2)).keys[0]
    assert DescriptorKey.parse(key.to_string(REGTEST), REGTEST) == key


def test_descriptor_key_with_derivation_steps_is_refused() -> None:
    from tests.factories import make_series

    text = make_series(1, 2, (0, 1, 2)).keys[0].to_string(REGTEST) + "/0/*"
    with pytest.raises(DescriptorError, match="no derivation steps"):
        DescriptorKey.parse(text, REGTEST)
