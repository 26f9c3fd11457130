"""BIP32 keys: published vectors, a cross-check against the bip32 package, paths and refusals."""

from __future__ import annotations

import hashlib

import pytest
from bip32 import BIP32

from pool.address import base58check_decode, base58check_encode
from pool.errors import HDKeyError
from pool.hdkeys import (
    HARDENED,
    ExtendedPrivateKey,
    ExtendedPublicKey,
    KeyOrigin,
    _derive_public_child,
    format_path,
    parse_path,
)
from pool.networks import MAINNET, REGTEST, TESTNET

H = HARDENED

VECTOR_1_SEED = "000102030405060708090a0b0c0d0e0f"
VECTOR_1 = [
    (
        "m",
        "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8",
        "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi",
    ),
    (
        "m/0h",
        "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
        "xprv9uHRZZhk6KAJC1avXpDAp4MDc3sQKNxDiPvvkX8Br5ngLNv1TxvUxt4cV1rGL5hj6KCesnDYUhd7oWgT11eZG7XnxHrnYeSvkzY7d2bhkJ7",
    ),
    (
        "m/0h/1",
        "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ",
        "xprv9wTYmMFdV23N2TdNG573QoEsfRrWKQgWeibmLntzniatZvR9BmLnvSxqu53Kw1UmYPxLgboyZQaXwTCg8MSY3H2EU4pWcQDnRnrVA1xe8fs",
    ),
    (
        "m/0h/1/2h",
        "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
        "xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLTj34bhnZX7UiM",
    ),
    (
        "m/0h/1/2h/2",
        "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
        "xprvA2JDeKCSNNZky6uBCviVfJSKyQ1mDYahRjijr5idH2WwLsEd4Hsb2Tyh8RfQMuPh7f7RtyzTtdrbdqqsunu5Mm3wDvUAKRHSC34sJ7in334",
    ),
    (
        "m/0h/1/2h/2/1000000000",
        "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
        "xprvA41z7zogVVwxVSgdKUHDy1SKmdb533PjDz7J6N6mV6uS3ze1ai8FHa8kmHScGpWmj4WggLyQjgPie1rFSruoUihUZREPSL39UNdE3BBDu76",
    ),
]

VECTOR_2_SEED = (
    "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b"
    "7875726f6c696663605d5a5754514e4b484542"
)
VECTOR_2 = [
    (
        "m",
        "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
        "xprv9s21ZrQH143K31xYSDQpPDxsXRTUcvj2iNHm5NUtrGiGG5e2DtALGdso3pGz6ssrdK4PFmM8NSpSBHNqPqm55Qn3LqFtT2emdEXVYsCzC2U",
    ),
    (
        "m/0",
        "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH",
        "xprv9vHkqa6EV4sPZHYqZznhT2NPtPCjKuDKGY38FBWLvgaDx45zo9WQRUT3dKYnjwih2yJD9mkrocEZXo1ex8G81dwSM1fwqWpWkeS3v86pgKt",
    ),
    (
        "m/0/2147483647h",
        "xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
        "xprv9wSp6B7kry3Vj9m1zSnLvN3xH8RdsPP1Mh7fAaR7aRLcQMKTR2vidYEeEg2mUCTAwCd6vnxVrcjfy2kRgVsFawNzmjuHc2YmYRmagcEPdU9",
    ),
    (
        "m/0/2147483647h/1",
        "xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon",
        "xprv9zFnWC6h2cLgpmSA46vutJzBcfJ8yaJGg8cX1e5StJh45BBciYTRXSd25UEPVuesF9yog62tGAQtHjXajPPdbRCHuWS6T8XA2ECKADdw4Ef",
    ),
    (
        "m/0/2147483647h/1/2147483646h",
        "xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
        "xprvA1RpRA33e1JQ7ifknakTFpgNXPmW2YvmhqLQYMmrj4xJXXWYpDPS3xz7iAxn8L39njGVyuoseXzU6rcxFLJ8HFsTjSyQbLYnMpCqE2VbFWc",
    ),
    (
        "m/0/2147483647h/1/2147483646h/2",
        "xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt",
        "xprvA2nrNbFZABcdryreWet9Ea4LvTJcGsqrMzxHx98MMrotbir7yrKCEXw7nadnHM8Dq38EGfSh6dqA9QWTyefMLEcBYJUuekgW4BYPJcr9E7j",
    ),
]

# Vector 3: retention of leading zeros in the master key (a bug of early implementations).
VECTOR_3_SEED = (
    "4b381541583be4423346c643850da4b320e46a87ae3d2a4e6da11eba819cd4acba45d239319ac14f863b8d5ab5a0d0"
    "c64d2e8a1e7d1457df2e5a3c51c73235be"
)
VECTOR_3 = [
    (
        "m",
        "xpub661MyMwAqRbcEZVB4dScxMAdx6d4nFc9nvyvH3v4gJL378CSRZiYmhRoP7mBy6gSPSCYk6SzXPTf3ND1cZAceL7SfJ1Z3GC8vBgp2epUt13",
        "xprv9s21ZrQH143K25QhxbucbDDuQ4naNntJRi4KUfWT7xo4EKsHt2QJDu7KXp1A3u7Bi1j8ph3EGsZ9Xvz9dGuVrtHHs7pXeTzjuxBrCmmhgC6",
    ),
    (
        "m/0h",
        "xpub68NZiKmJWnxxS6aaHmn81bvJeTESw724CRDs6HbuccFQN9Ku14VQrADWgqbhhTHBaohPX4CjNLf9fq9MYo6oDaPPLPxSb7gwQN3ih19Zm4Y",
        "xprv9uPDJpEQgRQfDcW7BkF7eTya6RPxXeJCqCJGHuCJ4GiRVLzkTXBAJMu2qaMWPrS7AANYqdq6vcBcBUdJCVVFceUvJFjaPdGZ2y9WACViL4L",
    ),
]

VECTORS = [
    (seed, path, xpub, xprv)
    for seed, steps in (
        (VECTOR_1_SEED, VECTOR_1),
        (VECTOR_2_SEED, VECTOR_2),
        (VECTOR_3_SEED, VECTOR_3),
    )
    for path, xpub, xprv in steps
]

# BIP32 test vector 5: invalid extended keys, with the reason each must be refused.
INVALID_XPUBS = [
    (
        "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6LBpB85b3D2yc8sfvZU521AAwdZafEz7mnzBBsz4wKY5fTtTQBm",
        "compressed public key",
    ),
    (
        "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6Txnt3siSujt9RCVYsx4qHZGc62TG4McvMGcAUjeuwZdduYEvFn",
        "compressed public key",
    ),
    (
        "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6N8ZMMXctdiCjxTNq964yKkwrkBJJwpzZS4HS2fxvyYUA4q2Xe4",
        "compressed public key",
    ),
    (
        "xpub661no6RGEX3uJkY4bNnPcw4URcQTrSibUZ4NqJEw5eBkv7ovTwgiT91XX27VbEXGENhYRCf7hyEbWrR3FewATdCEebj6znwMfQkhRYHRLpJ",
        "master key",
    ),
    (
        "xpub661MyMwAuDcm6CRQ5N4qiHKrJ39Xe1R1NyfouMKTTWcguwVcfrZJaNvhpebzGerh7gucBvzEQWRugZDuDXjNDRmXzSZe4c7mnTK97pTvGS8",
        "master key",
    ),
    (
        "DMwo58pR1QLEFihHiXPVykYB6fJmsTeHvyTp7hRThAtCX8CvYzgPcn8XnmdfHPmHJiEDXkTiJTVV9rHEBUem2mwVbbNfvT2MTcAqj3nesx8uBf9",
        "unknown extended key version",
    ),
    (
        "xpub661MyMwAqRbcEYS8w7XLSVeEsBXy79zSzH1J8vCdxAZningWLdN3zgtU6Q5JXayek4PRsn35jii4veMimro1xefsM58PgBMrvdYre8QyULY",
        "not a valid curve point",
    ),
]

INVALID_XPRVS = [
    (
        "xprv9s21ZrQH143K24Mfq5zL5MhWK9hUhhGbd45hLXo2Pq2oqzMMo63oStZzFGTQQD3dC4H2D5GBj7vWvSQaaBv5cxi9gafk7NF3pnBju6dwKvH",
        "must start with a zero byte",
    ),
    (
        "xprv9s21ZrQH143K24Mfq5zL5MhWK9hUhhGbd45hLXo2Pq2oqzMMo63oStZzFGpWnsj83BHtEy5Zt8CcDr1UiRXuWCmTQLxEK9vbz5gPstX92JQ",
        "must start with a zero byte",
    ),
    (
        "xprv9s21ZrQH143K24Mfq5zL5MhWK9hUhhGbd45hLXo2Pq2oqzMMo63oStZzFAzHGBP2UuGCqWLTAPLcMtD9y5gkZ6Eq3Rjuahrv17fEQ3Qen6J",
        "must start with a zero byte",
    ),
    (
        "xprv9s2SPatNQ9Vc6GTbVMFPFo7jsaZySyzk7L8n2uqKXJen3KUmvQNTuLh3fhZMBoG3G4ZW1N2kZuHEPY53qmbZzCHshoQnNf4GvELZfqTUrcv",
        "master key",
    ),
    (
        "xprv9s21ZrQH4r4TsiLvyLXqM9P7k1K3EYhA1kkD6xuquB5i39AU8KF42acDyL3qsDbU9NmZn6MsGSUYZEsuoePmjzsB3eFKSUEh3Gu1N3cqVUN",
        "master key",
    ),
    (
        "DMwo58pR1QLEFihHiXPVykYB6fJmsTeHvyTp7hRThAtCX8CvYzgPcn8XnmdfHGMQzT7ayAmfo4z3gY5KfbrZWZ6St24UVf2Qgo6oujFktLHdHY4",
        "unknown extended key version",
    ),
    (
        "xprv9s21ZrQH143K24Mfq5zL5MhWK9hUhhGbd45hLXo2Pq2oqzMMo63oStZzF93Y5wvzdUayhgkkFoicQZcP3y52uPPxFnfoLZB21Teqt1VvEHx",
        "secret is out of range",
    ),
    (
        "xprv9s21ZrQH143K24Mfq5zL5MhWK9hUhhGbd45hLXo2Pq2oqzMMo63oStZzFAzHGBP2UuGCqWLTAPLcMtD5SDKr24z3aiUvKr9bJpdrcLg1y3G",
        "secret is out of range",
    ),
    (
        "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHL",
        "bad base58check checksum",
    ),
]

CROSS_CHECK_SEEDS = [
    hashlib.sha256(f"vpool cross-check seed {i}".encode()).digest() for i in range(3)
]
CROSS_CHECK_PATHS = ["m", "m/48h/1h/0h/2h", "m/48h/1h/0h/2h/0/7", "m/0/1/2147483647/5h"]

TPUB = ExtendedPrivateKey.from_seed(bytes(range(32))).derive_path(parse_path("48h/1h/0h/2h"))


def _master(seed_hex: str) -> ExtendedPrivateKey:
    return ExtendedPrivateKey.from_seed(bytes.fromhex(seed_hex))


@pytest.mark.parametrize(("seed", "path", "xpub", "xprv"), VECTORS)
def test_private_derivation_matches_bip32_vectors(
    seed: str, path: str, xpub: str, xprv: str
) -> None:
    assert _master(seed).derive_path(parse_path(path)).to_string(MAINNET) == xprv


@pytest.mark.parametrize(("seed", "path", "xpub", "xprv"), VECTORS)
def test_public_key_of_each_vector_step_matches(seed: str, path: str, xpub: str, xprv: str) -> None:
    assert _master(seed).derive_path(parse_path(path)).public().to_string(MAINNET) == xpub


@pytest.mark.parametrize(("seed", "path", "xpub", "xprv"), VECTORS)
def test_public_derivation_of_unhardened_tail_matches_vectors(
    seed: str, path: str, xpub: str, xprv: str
) -> None:
    steps = parse_path(path)
    split = max((i + 1 for i, step in enumerate(steps) if step >= HARDENED), default=0)
    parent = _master(seed).derive_path(steps[:split]).public()
    assert parent.derive_path(steps[split:]).to_string(MAINNET) == xpub


@pytest.mark.parametrize(("seed", "path", "xpub", "xprv"), VECTORS)
def test_vector_strings_round_trip(seed: str, path: str, xpub: str, xprv: str) -> None:
    assert ExtendedPublicKey.from_string(xpub, MAINNET).to_string(MAINNET) == xpub
    assert ExtendedPrivateKey.from_string(xprv, MAINNET).to_string(MAINNET) == xprv


@pytest.mark.parametrize(("text", "message"), INVALID_XPUBS)
def test_invalid_xpubs_of_vector_5_are_refused(text: str, message: str) -> None:
    with pytest.raises(HDKeyError, match=message):
        ExtendedPublicKey.from_string(text, MAINNET)


@pytest.mark.parametrize(("text", "message"), INVALID_XPRVS)
def test_invalid_xprvs_of_vector_5_are_refused(text: str, message: str) -> None:
    with pytest.raises(HDKeyError, match=message):
        ExtendedPrivateKey.from_string(text, MAINNET)


@pytest.mark.parametrize("seed", CROSS_CHECK_SEEDS)
@pytest.mark.parametrize("path", CROSS_CHECK_PATHS)
def test_derivation_matches_the_bip32_package(seed: bytes, path: str) -> None:
    oracle = BIP32.from_seed(seed)
    key = ExtendedPrivateKey.from_seed(seed).derive_path(parse_path(path))
    assert key.to_string(MAINNET) == oracle.get_xpriv_from_path(path)
    assert key.public().to_string(MAINNET) == oracle.get_xpub_from_path(path)


def test_serialize_is_78_bytes_with_the_network_version() -> None:
    data = TPUB.public().serialize(REGTEST)
    assert len(data) == 78
    assert data[:4] == REGTEST.xpub_version


def test_deserialize_inverts_serialize() -> None:
    xpub = TPUB.public()
    assert ExtendedPublicKey.deserialize(xpub.serialize(REGTEST), REGTEST) == xpub
    assert ExtendedPrivateKey.deserialize(TPUB.serialize(REGTEST), REGTEST) == TPUB


def test_master_fingerprint_is_hash160_prefix_of_its_public_key() -> None:
    assert _master(VECTOR_1_SEED).fingerprint == bytes.fromhex("3442193e")


def test_child_records_its_parent_fingerprint() -> None:
    master = _master(VECTOR_1_SEED)
    assert master.derive_child(H).parent_fingerprint == master.fingerprint


def test_private_and_public_fingerprints_agree() -> None:
    assert TPUB.fingerprint == TPUB.public().fingerprint


def test_xprv_is_refused_as_xpub_without_echoing_it() -> None:
    text = TPUB.to_string(TESTNET)
    with pytest.raises(HDKeyError, match=r"private key") as info:
        ExtendedPublicKey.from_string(text, TESTNET)
    message = str(info.value)
    assert not any(text[i : i + 8] in message for i in range(len(text) - 8))


def test_xpub_is_refused_as_xprv() -> None:
    with pytest.raises(HDKeyError, match=r"extended public key was given"):
        ExtendedPrivateKey.from_string(TPUB.public().to_string(TESTNET), TESTNET)


def test_mainnet_xpub_is_refused_on_regtest() -> None:
    with pytest.raises(HDKeyError, match=r"^extended key is for mainnet, not regtest$"):
        ExtendedPublicKey.from_string(TPUB.public().to_string(MAINNET), REGTEST)


def test_tpub_is_refused_on_mainnet() -> None:
    with pytest.raises(
        HDKeyError, match=r"^extended key is for testnet/signet/regtest, not mainnet$"
    ):
        ExtendedPublicKey.from_string(TPUB.public().to_string(TESTNET), MAINNET)


def test_extended_key_of_wrong_length_is_refused() -> None:
    text = base58check_encode(base58check_decode(TPUB.public().to_string(TESTNET)) + b"\x00")
    with pytest.raises(HDKeyError, match=r"must be 78 bytes, got 79"):
        ExtendedPublicKey.from_string(text, TESTNET)


def test_public_key_cannot_derive_hardened_child() -> None:
    with pytest.raises(HDKeyError, match=r"cannot derive hardened child 0h"):
        TPUB.public().derive_child(H)


def test_child_index_beyond_32_bits_is_refused() -> None:
    with pytest.raises(HDKeyError, match=r"outside 0..2\^32-1"):
        TPUB.derive_child(1 << 32)


def test_public_derivation_is_cached() -> None:
    xpub = TPUB.public()
    xpub.derive_child(12345)
    hits = _derive_public_child.cache_info().hits
    xpub.derive_child(12345)
    assert _derive_public_child.cache_info().hits == hits + 1


def test_repr_of_private_key_hides_secret_and_chain_code() -> None:
    text = repr(TPUB) + str(TPUB)
    assert TPUB.private_key.hex() not in text
    assert TPUB.chain_code.hex() not in text
    assert "ExtendedPrivateKey(depth=4" in text


@pytest.mark.parametrize("length", [15, 65])
def test_seed_of_bad_length_is_refused(length: int) -> None:
    with pytest.raises(HDKeyError, match=rf"seed must be 16 to 64 bytes, got {length}"):
        ExtendedPrivateKey.from_seed(bytes(length))


def test_depth_zero_key_with_parent_fingerprint_is_refused() -> None:
    xpub = TPUB.public()
    with pytest.raises(HDKeyError, match=r"master key"):
        ExtendedPublicKey(0, b"\x01\x02\x03\x04", 0, xpub.chain_code, xpub.public_key)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("m/48h/1'/0H/2h", (48 + H, 1 + H, 0 + H, 2 + H)),
        ("48h/1h", (48 + H, 1 + H)),
        ("m/0/2147483647h", (0, 2147483647 + H)),
        ("", ()),
        ("m", ()),
    ],
)
def test_parse_path_accepts_all_hardened_markers(text: str, path: tuple[int, ...]) -> None:
    assert parse_path(text) == path


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("m/48h//1h", "''"),
        ("m/", "''"),
        ("48x/1h", "'48x'"),
        ("m/-1", "'-1'"),
        ("m/1/ 2", "' 2'"),
        ("h/1", "'h'"),
        ("m/48h/*", "'\\*'"),
    ],
)
def test_parse_path_names_the_bad_component(text: str, bad: str) -> None:
    with pytest.raises(HDKeyError, match=rf"bad path component {bad}"):
        parse_path(text)


def test_parse_path_refuses_index_of_2_to_the_31() -> None:
    with pytest.raises(HDKeyError, match=r"^path component '2147483648h' is not below 2\^31$"):
        parse_path("m/2147483648h")


def test_parse_path_does_not_echo_a_long_component() -> None:
    key = TPUB.to_string(TESTNET)
    with pytest.raises(HDKeyError, match=f"^bad path component of {len(key)} characters$"):
        parse_path(f"m/48h/{key}")


def test_format_path_uses_h_without_m_prefix() -> None:
    assert format_path((48 + H, 1 + H, 0 + H, 2 + H, 0, 5)) == "48h/1h/0h/2h/0/5"


@pytest.mark.parametrize("text", ["48h/1h/0h/2h", "0/1/2", "2147483647h/0", ""])
def test_format_path_inverts_parse_path(text: str) -> None:
    assert format_path(parse_path(text)) == text


def test_key_origin_to_string_is_lowercase_hex_and_h_path() -> None:
    origin = KeyOrigin(bytes.fromhex("D34DB33F"), (48 + H, 1 + H, 0 + H, 2 + H))
    assert origin.to_string() == "d34db33f/48h/1h/0h/2h"


def test_key_origin_without_path_is_just_the_fingerprint() -> None:
    assert KeyOrigin(bytes.fromhex("d34db33f"), ()).to_string() == "d34db33f"


@pytest.mark.parametrize("text", ["d34db33f/48h/1h/0h/2h", "d34db33f", "00000000/0/1h"])
def test_key_origin_parse_inverts_to_string(text: str) -> None:
    assert KeyOrigin.parse(text).to_string() == text


def test_key_origin_parse_accepts_apostrophes() -> None:
    assert KeyOrigin.parse("d34db33f/48'/1'") == KeyOrigin(
        bytes.fromhex("d34db33f"), (48 + H, 1 + H)
    )


def test_key_origin_child_appends_indices() -> None:
    origin = KeyOrigin.parse("d34db33f/48h/1h/0h/2h").child(1, 7)
    assert origin.to_string() == "d34db33f/48h/1h/0h/2h/1/7"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deadbef/0h", "8 hex digit fingerprint"),
        ("deadbeeef/0h", "8 hex digit fingerprint"),
        ("gaaaaaaa", "8 hex digit fingerprint"),
        ("deadbeef/0h/", "bad path component ''"),
        ("deadbeef/0h/*", "bad path component '\\*'"),
        ("deadbeef/0f", "bad path component '0f'"),
        ("deadbeef/m/0h", "bad path component 'm'"),
    ],
)
def test_key_origin_parse_refuses_malformed_origins(text: str, message: str) -> None:
    with pytest.raises(HDKeyError, match=message):
        KeyOrigin.parse(text)


def test_key_origin_fingerprint_must_be_4_bytes() -> None:
    with pytest.raises(HDKeyError, match=r"fingerprint must be 4 bytes, got 3"):
        KeyOrigin(b"\x01\x02\x03", ())
