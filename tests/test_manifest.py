"""The round manifest: validation names the field, the encoding is canonical and strict."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pool.errors import EncodingError, ManifestError
from pool.manifest import (
    MAGIC,
    Manifest,
    WithdrawalRequest,
    decode_manifest,
    encode_manifest,
    manifest_from_json,
    manifest_hash,
    manifest_to_json,
    request_key,
)
from pool.series import SeriesState
from tests.factories import BTC, make_series, manifest, request, utxo

S1 = make_series(1, 2, (0, 1, 2))


def sample() -> Manifest:
    return manifest(
        [S1],
        [utxo(1, BTC, 500), utxo(2, 2 * BTC, 600, index=3)],
        [request("alice", "1", 1_000_000), request("bob", "x", 2_000_000, extra_fee=10)],
    )


def test_request_key_is_length_prefixed() -> None:
    assert request_key("a1", "23") != request_key("a12", "3")


def test_lists_are_kept_in_canonical_order() -> None:
    m = sample()
    reordered = replace(m, utxos=m.utxos[::-1], requests=m.requests[::-1])
    assert reordered == m
    assert encode_manifest(reordered) == encode_manifest(m)


def test_hash_is_sha256_of_the_encoding() -> None:
    import hashlib

    m = sample()
    assert manifest_hash(m) == hashlib.sha256(encode_manifest(m)).digest()


def test_hash_changes_with_any_field() -> None:
    m = sample()
    assert manifest_hash(replace(m, fee_rate=m.fee_rate + 1)) != manifest_hash(m)
    assert manifest_hash(replace(m, tip_hash=bytes(32))) != manifest_hash(m)


def test_decode_inverts_encode() -> None:
    m = sample()
    assert decode_manifest(encode_manifest(m)) == m


def test_json_form_round_trips() -> None:
    m = sample()
    assert manifest_from_json(manifest_to_json(m)) == m


def test_decode_refuses_trailing_bytes() -> None:
    with pytest.raises(EncodingError, match="trailing"):
        decode_manifest(encode_manifest(sample()) + b"\x00")


def test_decode_refuses_truncation() -> None:
    with pytest.raises(EncodingError, match="truncated"):
        decode_manifest(encode_manifest(sample())[:-1])


def test_decode_refuses_bad_magic() -> None:
    data = encode_manifest(sample())
    with pytest.raises(EncodingError, match="magic"):
        decode_manifest(b"XXXX" + data[len(MAGIC) :])


def test_decode_refuses_lists_out_of_canonical_order() -> None:
    m = manifest([S1], [], [request("alice", "1", 1_000_000), request("bob", "2", 2_000_000)])
    data = encode_manifest(m)
    encoded = [_encode_request(r) for r in m.requests]
    prefix = data[: len(data) - sum(len(e) for e in encoded)]
    swapped = prefix + encoded[1] + encoded[0]
    with pytest.raises(EncodingError, match="canonical"):
        decode_manifest(swapped)


def _encode_request(r: WithdrawalRequest) -> bytes:
    from pool.serialize import u64le, var_bytes

    return (
        var_bytes(r.client_id.encode())
        + var_bytes(r.request_id.encode())
        + var_bytes(r.script_pubkey)
        + u64le(r.amount)
        + u64le(r.extra_fee)
    )


@pytest.mark.parametrize("caps", [{"max_tx_inputs": 512}, {"max_tx_payments": 20}])
def test_the_shape_caps_are_encoded_and_round_trip(caps: dict[str, int]) -> None:
    m = replace(sample(), **caps)
    assert decode_manifest(encode_manifest(m)) == m
    assert manifest_from_json(manifest_to_json(m)) == m
    assert manifest_hash(m) != manifest_hash(sample())


def test_decode_refuses_an_unknown_algorithm_version() -> None:
    data = bytearray(encode_manifest(sample()))
    data[5] = 4  # u32 algorithm version follows magic and the encoding version byte
    with pytest.raises(ManifestError, match="version"):
        decode_manifest(bytes(data))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fee_rate": 0}, "fee_rate"),
        ({"dust_limit": 0}, "dust_limit"),
        ({"max_weight": 400_001}, "max_weight"),
        ({"max_weight": 100}, "max_weight"),
        ({"min_conf": 0}, "min_conf"),
        ({"tip_hash": b"\x00" * 31}, "tip_hash"),
        ({"network": "litecoin"}, "network"),
        ({"change_index": ()}, "change_index"),
        ({"change_index": ((9, 0),)}, "change_index[0]"),
        ({"series": ()}, "series"),
        ({"version": 1}, "version"),
        ({"max_tx_inputs": -1}, "max_tx_inputs"),
        ({"max_tx_payments": 2**32}, "max_tx_payments"),
    ],
)
def test_invalid_fields_are_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ManifestError) as err:
        replace(sample(), **changes)  # type: ignore[arg-type]
    assert err.value.field == field


def test_two_active_series_are_refused() -> None:
    with pytest.raises(ManifestError, match="exactly one series must be active"):
        manifest([S1, make_series(2, 2, (3, 4, 5))], [], [], change_index=((1, 0), (2, 0)))


def test_no_active_series_is_refused() -> None:
    retiring = make_series(1, 2, (0, 1, 2), SeriesState.RETIRING)
    with pytest.raises(ManifestError, match="exactly one series must be active"):
        manifest([retiring], [], [])


def test_duplicate_outpoint_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [utxo(1, BTC, 500), utxo(1, BTC, 500, index=2)], [])
    assert err.value.field == "utxos[1].outpoint"


def test_utxo_of_unknown_series_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [utxo(1, BTC, 500, series=4)], [])
    assert err.value.field == "utxos[0].series_id"


def test_utxo_above_the_tip_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [utxo(1, BTC, 5000)], [])
    assert err.value.field == "utxos[0].height"


def test_utxo_on_a_third_branch_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [utxo(1, BTC, 5, branch=2)], [])
    assert err.value.field == "utxos[0].branch"


def test_request_below_dust_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [], [request("alice", "1", 545)])
    assert err.value.field == "requests[0].amount"


def test_negative_extra_fee_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [], [request("alice", "1", 10_000, extra_fee=-1)])
    assert err.value.field == "requests[0].extra_fee"


def test_duplicate_request_is_refused() -> None:
    with pytest.raises(ManifestError, match="appears twice"):
        manifest([S1], [], [request("alice", "1", 10_000), request("alice", "1", 20_000)])


def test_empty_request_id_is_refused() -> None:
    with pytest.raises(ManifestError) as err:
        manifest([S1], [], [request("alice", "", 10_000)])
    assert err.value.field == "requests[0].request_id"


def test_nonstandard_destination_is_refused() -> None:
    bad = WithdrawalRequest("alice", "1", b"\x6a\x04abcd", 10_000)
    with pytest.raises(ManifestError) as err:
        manifest([S1], [], [bad])
    assert err.value.field == "requests[0].script_pubkey"
