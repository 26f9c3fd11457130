"""pool.psbt: BIP174 vectors, strict parsing, canonical bytes, and hwilib/embit cross-checks."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from embit.psbt import PSBT as EmbitPsbt
from hwilib.psbt import PSBT as HwiPsbt
from hypothesis import given, settings
from hypothesis import strategies as st

from pool import ecdsa
from pool.errors import PsbtError
from pool.hdkeys import KeyOrigin
from pool.psbt import MAGIC, Psbt, PsbtInput, PsbtOutput
from pool.serialize import Reader, compact_size, u32le, var_bytes
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from tests import bip174_vectors as bip174
from tests.p2wsh_samples import MASTERS, RECEIVE, key_path, private_key_at, two_of_three_psbt

# What each BIP174 invalid vector must be refused for.
INVALID_REASONS = {
    "network-transaction": "magic bytes",
    "missing-outputs": "output 0: truncated",
    "filled-scriptsig": "PSBT_GLOBAL_UNSIGNED_TX .*has a scriptSig",
    "no-unsigned-tx": "PSBT_GLOBAL_UNSIGNED_TX .* is missing",
    "duplicate-input-key": "input 0: PSBT_IN_NON_WITNESS_UTXO .*duplicate key",
    "global-tx-key-data": "global map: PSBT_GLOBAL_UNSIGNED_TX .*key data must be empty",
    "witness-utxo-key-data": "input 0: PSBT_IN_WITNESS_UTXO .*key data must be empty",
    "partial-sig-pubkey-length": "input 0: PSBT_IN_PARTIAL_SIG .*33 or 65 bytes",
    "redeem-script-key-data": "input 0: PSBT_IN_REDEEM_SCRIPT .*key data must be empty",
    "witness-script-key-data": "input 0: PSBT_IN_WITNESS_SCRIPT .*key data must be empty",
    "input-bip32-pubkey": "input 0: PSBT_IN_BIP32_DERIVATION .*33 or 65 bytes",
    "non-witness-utxo-key-data": "input 0: PSBT_IN_NON_WITNESS_UTXO .*key data must be empty",
    "final-scriptsig-key-data": "input 0: PSBT_IN_FINAL_SCRIPTSIG .*key data must be empty",
    "final-witness-key-data": "input 1: PSBT_IN_FINAL_SCRIPTWITNESS .*key data must be empty",
    "output-bip32-pubkey": "output 0: PSBT_OUT_BIP32_DERIVATION .*33 or 65 bytes",
    "sighash-type-key-data": "input 0: PSBT_IN_SIGHASH_TYPE .*key data must be empty",
    "output-redeem-script-key-data": "output 0: PSBT_OUT_REDEEM_SCRIPT .*key data must be empty",
    "output-witness-script-key-data": "output 1: PSBT_OUT_WITNESS_SCRIPT .*key data must be empty",
    "unsigned-tx-witness-format": "PSBT_GLOBAL_UNSIGNED_TX .*only empty witness stacks",
    "value-size-mismatch": "PSBT_GLOBAL_UNSIGNED_TX",
}


@pytest.mark.parametrize("name", bip174.INVALID)
def test_bip174_invalid_vector_is_refused(name: str) -> None:
    with pytest.raises(PsbtError, match=INVALID_REASONS[name]):
        Psbt.from_base64(bip174.INVALID[name])


@pytest.mark.parametrize(
    "name", [*bip174.VALID, *bip174.FAILS_SIGNER_CHECKS, "UPDATER", "FINALIZED"]
)
def test_bip174_valid_vector_round_trips_byte_for_byte(name: str) -> None:
    text = getattr(bip174, name, None) or {**bip174.VALID, **bip174.FAILS_SIGNER_CHECKS}[name]
    assert Psbt.from_base64(text).to_base64() == text


def test_non_canonical_bip174_vector_is_written_in_key_order() -> None:
    """BIP174's combined PSBT lists an 03... partial signature before an 02... one."""
    psbt = Psbt.from_base64(bip174.COMBINED)
    assert psbt.to_base64() != bip174.COMBINED
    assert Psbt.from_base64(psbt.to_base64()) == psbt
    assert all(keys == sorted(keys) for keys in _map_keys(psbt.serialize()))


@pytest.mark.parametrize("name", bip174.WITHOUT_INPUTS)
def test_psbt_whose_transaction_has_no_inputs_is_refused(name: str) -> None:
    with pytest.raises(PsbtError, match="zero inputs"):
        Psbt.from_base64(bip174.WITHOUT_INPUTS[name])


def test_creator_builds_the_bip174_creator_vector() -> None:
    tx = Transaction(
        version=2,
        inputs=(
            TxIn(
                OutPoint.from_hex(
                    "75ddabb27b8845f5247975c8a5ba7c6f336c4570708ebe230caf6db5217ae858", 0
                ),
                0xFFFFFFFF,
            ),
            TxIn(
                OutPoint.from_hex(
                    "1dea7cd05979072a3578cab271c02244ea8a090bbb46aa680a65ecd027048d83", 1
                ),
                0xFFFFFFFF,
            ),
        ),
        outputs=(
            TxOut(149_990_000, bytes.fromhex("0014d85c2b71d0060b09c9886aeb815e50991dda124d")),
            TxOut(100_000_000, bytes.fromhex("001400aea9a2e5f0f876a588df5546e8742d1d87008f")),
        ),
        locktime=0,
    )
    assert Psbt.from_unsigned_tx(tx).to_base64() == bip174.CREATOR


def test_from_unsigned_tx_has_one_empty_map_per_input_and_output() -> None:
    tx = two_of_three_psbt(3).tx
    psbt = Psbt.from_unsigned_tx(tx)
    assert psbt.inputs == (PsbtInput(),) * 3
    assert psbt.outputs == (PsbtOutput(),) * 2
    assert psbt.xpubs == {}
    assert psbt.unknown == {}


def _rich_psbt() -> Psbt:
    """Our 2-of-3 PSBT with every kind of field set somewhere."""
    psbt = two_of_three_psbt()
    first, second = psbt.inputs
    pubkey = MASTERS[0].derive_path(key_path(RECEIVE, 0)).public_key
    signature = ecdsa.sign(private_key_at(MASTERS[0], key_path(RECEIVE, 0)), bytes(32))
    assert second.witness_script is not None
    return replace(
        psbt,
        inputs=(
            replace(
                first,
                partial_sigs={pubkey: signature + b"\x01"},
                sighash_type=1,
                unknown={b"\xfc\x05vpool\x00": b"proprietary", b"\x0a" + bytes(32): b"preimage"},
            ),
            PsbtInput(
                witness_utxo=second.witness_utxo,
                final_script_witness=(b"", signature + b"\x01", second.witness_script),
            ),
        ),
        outputs=(replace(psbt.outputs[0], unknown={b"\x30\x01": b"x"}), psbt.outputs[1]),
        unknown={b"\xfc\x05vpool\x01": b"round 7"},
    )


def test_our_psbt_round_trips_byte_for_byte() -> None:
    raw = _rich_psbt().serialize()
    assert Psbt.parse(raw) == _rich_psbt()
    assert Psbt.parse(raw).serialize() == raw


def test_base64_round_trip() -> None:
    psbt = _rich_psbt()
    assert Psbt.from_base64(psbt.to_base64()) == psbt
    assert base64.b64decode(psbt.to_base64()) == psbt.serialize()


def _map_keys(raw: bytes) -> list[list[bytes]]:
    """The keys of every map of a serialized PSBT, in the order written."""
    reader = Reader(raw[len(MAGIC) :])
    maps: list[list[bytes]] = []
    while reader.remaining:
        keys: list[bytes] = []
        while key := reader.var_bytes():
            keys.append(key)
            reader.var_bytes()
        maps.append(keys)
    return maps


def test_every_map_is_written_in_ascending_key_order() -> None:
    maps = _map_keys(_rich_psbt().serialize())
    assert len(maps) == 1 + 2 + 2
    assert all(keys == sorted(keys) for keys in maps)
    assert sum(len(keys) for keys in maps) > 20


def test_serialization_does_not_depend_on_dict_insertion_order() -> None:
    psbt = _rich_psbt()
    reordered = replace(
        psbt,
        xpubs=dict(reversed(psbt.xpubs.items())),
        unknown=dict(reversed(psbt.unknown.items())),
        inputs=tuple(
            replace(
                i,
                bip32_derivations=dict(reversed(i.bip32_derivations.items())),
                unknown=dict(reversed(i.unknown.items())),
            )
            for i in psbt.inputs
        ),
    )
    assert list(reordered.xpubs) != list(psbt.xpubs)
    assert reordered.serialize() == psbt.serialize()


def test_hwilib_reads_our_psbt_field_by_field() -> None:
    psbt = _rich_psbt()
    theirs = HwiPsbt()
    theirs.deserialize(psbt.to_base64())
    assert theirs.tx.serialize_without_witness() == psbt.tx.serialize_without_witness()
    assert {k: (o.fingerprint, list(o.path)) for k, o in theirs.xpub.items()} == {
        k: (o.fingerprint, list(o.path)) for k, o in psbt.xpubs.items()
    }
    assert theirs.unknown == psbt.unknown
    for their_input, our_input in zip(theirs.inputs, psbt.inputs, strict=True):
        assert our_input.witness_utxo is not None
        assert their_input.witness_utxo.nValue == our_input.witness_utxo.value
        assert their_input.witness_utxo.scriptPubKey == our_input.witness_utxo.script_pubkey
        assert their_input.witness_script == (our_input.witness_script or b"")
        assert their_input.partial_sigs == our_input.partial_sigs
        assert their_input.sighash == our_input.sighash_type
        assert {k: (o.fingerprint, list(o.path)) for k, o in their_input.hd_keypaths.items()} == {
            k: (o.fingerprint, list(o.path)) for k, o in our_input.bip32_derivations.items()
        }
        assert their_input.final_script_witness.scriptWitness.stack == list(
            our_input.final_script_witness or []
        )
        assert their_input.unknown == our_input.unknown
    for their_output, our_output in zip(theirs.outputs, psbt.outputs, strict=True):
        assert their_output.witness_script == (our_output.witness_script or b"")
        assert set(their_output.hd_keypaths) == set(our_output.bip32_derivations)
        assert their_output.unknown == our_output.unknown


def test_hwilib_serialization_parses_back_to_the_same_psbt() -> None:
    psbt = _rich_psbt()
    theirs = HwiPsbt()
    theirs.deserialize(psbt.to_base64())
    assert Psbt.from_base64(theirs.serialize()) == psbt


def test_embit_reads_our_psbt_field_by_field() -> None:
    psbt = _rich_psbt()
    theirs = EmbitPsbt.parse(psbt.serialize())
    assert theirs.tx.serialize() == psbt.tx.serialize()
    assert {xpub.serialize(): d.fingerprint for xpub, d in theirs.xpubs.items()} == {
        xpub: o.fingerprint for xpub, o in psbt.xpubs.items()
    }
    for their_input, our_input in zip(theirs.inputs, psbt.inputs, strict=True):
        assert our_input.witness_utxo is not None
        assert their_input.witness_utxo.value == our_input.witness_utxo.value
        assert their_input.witness_utxo.script_pubkey.data == our_input.witness_utxo.script_pubkey
        assert {k.sec(): v for k, v in their_input.partial_sigs.items()} == our_input.partial_sigs
        assert {
            k.sec(): (d.fingerprint, list(d.derivation))
            for k, d in their_input.bip32_derivations.items()
        } == {k: (o.fingerprint, list(o.path)) for k, o in our_input.bip32_derivations.items()}
        if our_input.final_script_witness is not None:
            assert list(their_input.final_scriptwitness.items) == list(
                our_input.final_script_witness
            )


def test_embit_serialization_parses_back_to_the_same_psbt() -> None:
    psbt = _rich_psbt()
    assert Psbt.parse(EmbitPsbt.parse(psbt.serialize()).serialize()) == psbt


# --- strictness, on hand-made encodings ----------------------------------------------------------

_TX = two_of_three_psbt(1).tx
_TX_ENTRY = (b"\x00", _TX.serialize_without_witness())


def _raw(
    globals_: list[tuple[bytes, bytes]],
    inputs: list[list[tuple[bytes, bytes]]] | None = None,
    outputs: list[list[tuple[bytes, bytes]]] | None = None,
) -> bytes:
    """A PSBT written exactly as given, in the given order, without any check."""

    def write(entries: list[tuple[bytes, bytes]]) -> bytes:
        return b"".join(var_bytes(k) + var_bytes(v) for k, v in entries) + b"\x00"

    maps = [globals_, *(inputs or [[]]), *(outputs or [[], []])]
    return MAGIC + b"".join(write(entries) for entries in maps)


def test_hand_made_encoding_parses() -> None:
    assert Psbt.parse(_raw([_TX_ENTRY])) == Psbt.from_unsigned_tx(_TX)


def test_duplicate_global_key_is_refused() -> None:
    xpub, origin = next(iter(two_of_three_psbt().xpubs.items()))
    entry = (b"\x01" + xpub, origin.fingerprint + u32le(1))
    with pytest.raises(PsbtError, match=r"global map: PSBT_GLOBAL_XPUB \(0x01\): duplicate key"):
        Psbt.parse(_raw([_TX_ENTRY, entry, entry]))


def test_version_other_than_zero_is_refused() -> None:
    with pytest.raises(PsbtError, match="only PSBT version 0 is supported, got version 2"):
        Psbt.parse(_raw([_TX_ENTRY, (b"\xfb", u32le(2))]))


# BIP370's "1 input, 2 output PSBTv2, required fields only".
PSBT_V2 = (
    "cHNidP8BAgQCAAAAAQQBAQEFAQIB+wQCAAAAAAEOIAsK2SFBnByHGXNdctxzn56p4GONH+TB7vD5lECEgV/IAQ8EAAAA"
    "AAABAwgACK8vAAAAAAEEFgAUxDD2TEdW2jENvRoIVXLvKZkmJywAAQMIi73rCwAAAAABBBYAFE3Rk6yWSlasG54cyoRU"
    "/i9HT4UTAA=="
)


def test_psbt_version_2_is_refused_for_its_version() -> None:
    with pytest.raises(PsbtError, match="only PSBT version 0 is supported, got version 2"):
        Psbt.from_base64(PSBT_V2)


def test_explicit_version_zero_is_accepted_and_not_written() -> None:
    raw = _raw([_TX_ENTRY, (b"\xfb", u32le(0))])
    assert Psbt.parse(raw).serialize() == _raw([_TX_ENTRY])


def test_psbt_object_with_another_version_is_refused() -> None:
    with pytest.raises(PsbtError, match="only PSBT version 0"):
        replace(Psbt.from_unsigned_tx(_TX), version=2)


@pytest.mark.parametrize(
    ("where", "key", "name"),
    [
        ("global", b"\x02", "PSBT_GLOBAL_TX_VERSION"),
        ("global", b"\x06", "PSBT_GLOBAL_TX_MODIFIABLE"),
        ("input", b"\x0e", "PSBT_IN_PREVIOUS_TXID"),
        ("input", b"\x12", "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME"),
        ("output", b"\x03", "PSBT_OUT_AMOUNT"),
        ("output", b"\x04", "PSBT_OUT_SCRIPT"),
    ],
)
def test_version_2_fields_are_refused(where: str, key: bytes, name: str) -> None:
    entry = (key, b"\x01")
    raw = _raw(
        [_TX_ENTRY, *([entry] if where == "global" else [])],
        [[entry] if where == "input" else []],
        [[entry] if where == "output" else [], []],
    )
    with pytest.raises(PsbtError, match=f"{name} .*not allowed in PSBT version 0"):
        Psbt.parse(raw)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(PsbtError, match="1 trailing bytes after the last output map"):
        Psbt.parse(_raw([_TX_ENTRY]) + b"\x00")


def test_non_minimal_key_length_is_refused() -> None:
    raw = _raw([_TX_ENTRY]).replace(MAGIC + b"\x01\x00", MAGIC + b"\xfd\x01\x00\x00", 1)
    with pytest.raises(PsbtError, match="non-minimal CompactSize"):
        Psbt.parse(raw)


def test_non_minimal_key_type_is_refused() -> None:
    with pytest.raises(PsbtError, match="non-minimal CompactSize"):
        Psbt.parse(_raw([_TX_ENTRY, (b"\xfd\x01\x00", b"")]))


def test_unsigned_transaction_with_witnesses_is_refused() -> None:
    signed = _TX.with_witnesses(((b"\x01",),))
    with pytest.raises(PsbtError, match="the unsigned transaction has witnesses"):
        Psbt.parse(_raw([(b"\x00", signed.serialize())]))


def test_input_map_count_must_match_the_transaction() -> None:
    with pytest.raises(PsbtError, match="2 input maps for 1 inputs"):
        Psbt(_TX, (PsbtInput(), PsbtInput()), (PsbtOutput(), PsbtOutput()))


def test_extra_map_is_refused_as_trailing_bytes() -> None:
    with pytest.raises(PsbtError, match="trailing bytes"):
        Psbt.parse(_raw([_TX_ENTRY], outputs=[[], [], []]))


def test_psbt_above_the_size_limit_is_refused_before_parsing() -> None:
    raw = _raw([_TX_ENTRY])
    with pytest.raises(PsbtError, match="exceeds the limit of 100 bytes"):
        Psbt.parse(raw + bytes(1000), max_size=100)
    with pytest.raises(PsbtError, match="exceeds the limit of 100 bytes"):
        Psbt.from_base64(base64.b64encode(raw + bytes(1000)).decode(), max_size=100)


def test_psbt_at_the_size_limit_is_accepted() -> None:
    raw = _raw([_TX_ENTRY])
    assert Psbt.parse(raw, max_size=len(raw)) == Psbt.from_unsigned_tx(_TX)


@pytest.mark.parametrize(
    "text",
    ["cHNidP8B!", "cHNidP8", " " + Psbt.from_unsigned_tx(_TX).to_base64()],
    ids=["bad character", "bad padding", "whitespace"],
)
def test_invalid_base64_is_refused(text: str) -> None:
    with pytest.raises(PsbtError, match="base64"):
        Psbt.from_base64(text)


def test_non_canonical_base64_is_refused() -> None:
    canonical = Psbt.from_unsigned_tx(_TX).to_base64()
    assert canonical.endswith("A=")
    with pytest.raises(PsbtError, match="not canonical"):
        Psbt.from_base64(canonical[:-2] + "B=")


def test_witness_utxo_with_trailing_bytes_is_refused() -> None:
    value = TxOut(1, b"\x51").serialize() + b"\x00"
    with pytest.raises(PsbtError, match=r"input 0: PSBT_IN_WITNESS_UTXO \(0x01\): .*trailing"):
        Psbt.parse(_raw([_TX_ENTRY], [[(b"\x01", value)]]))


def test_sighash_type_must_be_four_bytes() -> None:
    with pytest.raises(PsbtError, match=r"PSBT_IN_SIGHASH_TYPE .*4-byte integer"):
        Psbt.parse(_raw([_TX_ENTRY], [[(b"\x03", b"\x01")]]))


def test_final_script_witness_with_trailing_bytes_is_refused() -> None:
    value = compact_size(1) + var_bytes(b"\x01") + b"\x00"
    with pytest.raises(PsbtError, match=r"PSBT_IN_FINAL_SCRIPTWITNESS .*trailing"):
        Psbt.parse(_raw([_TX_ENTRY], [[(b"\x08", value)]]))


@pytest.mark.parametrize("value", [b"", b"\x01\x02\x03", bytes(4) + b"\x01"])
def test_bip32_derivation_value_must_be_fingerprint_and_whole_steps(value: bytes) -> None:
    pubkey = MASTERS[0].public_key
    with pytest.raises(PsbtError, match=r"PSBT_IN_BIP32_DERIVATION .*4 bytes per step"):
        Psbt.parse(_raw([_TX_ENTRY], [[(b"\x06" + pubkey, value)]]))


def test_global_xpub_key_must_be_78_bytes() -> None:
    with pytest.raises(PsbtError, match=r"PSBT_GLOBAL_XPUB .*78-byte"):
        Psbt.parse(_raw([_TX_ENTRY, (b"\x01" + bytes(77), bytes(4))]))


def test_partial_sig_key_must_be_a_point_on_the_curve() -> None:
    not_a_point = b"\x02" + bytes(31) + b"\x05"
    with pytest.raises(PsbtError, match=r"PSBT_IN_PARTIAL_SIG .*not a valid public key"):
        Psbt.parse(_raw([_TX_ENTRY], [[(b"\x02" + not_a_point, b"\x30")]]))


def test_non_witness_utxo_must_be_the_transaction_spent() -> None:
    other = Transaction(1, (TxIn(OutPoint(bytes(32), 0), 0),), (TxOut(1, b""),), 0)
    with pytest.raises(PsbtError, match=r"input 0: PSBT_IN_NON_WITNESS_UTXO .* the one spent"):
        Psbt.parse(_raw([_TX_ENTRY], [[(b"\x00", other.serialize())]]))


def test_non_witness_utxo_must_have_the_output_spent() -> None:
    previous = Transaction(1, (TxIn(OutPoint(bytes(32), 0), 0),), (TxOut(1, b""),), 0)
    spending = Transaction(2, (TxIn(OutPoint(previous.txid, 1), 0),), (TxOut(1, b""),), 0)
    raw = _raw([(b"\x00", spending.serialize())], [[(b"\x00", previous.serialize())]], [[]])
    with pytest.raises(PsbtError, match="has no output 1"):
        Psbt.parse(raw)


def test_matching_non_witness_utxo_is_accepted() -> None:
    previous = Transaction(1, (TxIn(OutPoint(bytes(32), 0), 0),), (TxOut(1, b""),), 0)
    spending = Transaction(2, (TxIn(OutPoint(previous.txid, 0), 0),), (TxOut(1, b""),), 0)
    raw = _raw([(b"\x00", spending.serialize())], [[(b"\x00", previous.serialize())]], [[]])
    assert Psbt.parse(raw).inputs[0].non_witness_utxo == previous.serialize()


def test_unknown_entries_cannot_hold_a_known_key_type() -> None:
    with pytest.raises(PsbtError, match=r"unknown entries hold key type PSBT_IN_WITNESS_SCRIPT"):
        PsbtInput(unknown={b"\x05": b"\x51"})


def test_input_dicts_are_copied_on_construction() -> None:
    unknown = {b"\xfc\x00": b"a"}
    psbt_input = PsbtInput(unknown=unknown)
    unknown[b"\xfc\x01"] = b"b"
    assert psbt_input.unknown == {b"\xfc\x00": b"a"}


@st.composite
def _unknown_maps(draw: st.DrawFn, known: int) -> dict[bytes, bytes]:
    keys = st.tuples(st.integers(known, 0xFFFF), st.binary(max_size=8)).map(
        lambda t: compact_size(t[0]) + t[1]
    )
    return draw(st.dictionaries(keys, st.binary(max_size=16), max_size=4))


@settings(max_examples=40, deadline=None)
@given(
    _unknown_maps(0x13),
    _unknown_maps(0x13),
    _unknown_maps(0x05),
    st.sampled_from(range(3)),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=6),
)
def test_random_psbts_round_trip_canonically(
    global_unknown: dict[bytes, bytes],
    input_unknown: dict[bytes, bytes],
    output_unknown: dict[bytes, bytes],
    signer: int,
    path: list[int],
) -> None:
    base = two_of_three_psbt(1)
    pubkey = MASTERS[signer].public_key
    global_unknown = {k: v for k, v in global_unknown.items() if k[:1] != b"\xfb"}
    psbt = replace(
        base,
        unknown=global_unknown,
        inputs=(
            replace(
                base.inputs[0],
                unknown=input_unknown,
                bip32_derivations={pubkey: KeyOrigin(MASTERS[signer].fingerprint, tuple(path))},
            ),
        ),
        outputs=(base.outputs[0], replace(base.outputs[1], unknown=output_unknown)),
    )
    raw = psbt.serialize()
    assert Psbt.parse(raw) == psbt
    assert all(keys == sorted(keys) for keys in _map_keys(raw))
