"""pool.tx: the transaction codec, against real mainnet transactions and python-bitcoinlib."""

from __future__ import annotations

import pytest
from bitcoin.core import CTransaction
from embit.transaction import Transaction as EmbitTransaction
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.errors import EncodingError
from pool.tx import MAX_MONEY, OutPoint, Transaction, TxIn, TxOut

GENESIS_COINBASE = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff"
    "001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e"
    "6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104"
    "678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51e"
    "c112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
GENESIS_COINBASE_TXID = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"

# Real mainnet transactions with their weights, from rust-bitcoin's weight tests (also shipped in
# python-bitcoinlib's test suite).
P2WPKH_TX = (
    "020000000001018a763b78d3e17acea0625bf9e52b0dc1beb2241b2502185348ba8ff4a253176e0100000000ff"
    "ffffff0280d725000000000017a914c07ed639bd46bf7087f2ae1dfde63b815a5f8b488767fda2030000000016"
    "0014869ec8520fa2801c8a01bfdd2e82b19833cd0daf02473044022016243edad96b18c78b545325aaff801316"
    "89f681079fb107a67018cb7fb7830e02205520dae761d89728f73f1a7182157f6b5aecf653525855adb7ccb998"
    "c8e6143b012103b9489bde92afbcfa85129a82ffa512897105d1a27ad9806bded27e0532fc84e700000000"
)
P2WSH_MULTISIG_TX = (
    "01000000000101a3ccad197118a2d4975fadc47b90eacfdeaf8268adfdf10ed3b4c3b7e1ad14530300000000ff"
    "ffffff0200cc5501000000001976a91428ec6f21f4727bff84bb844e9697366feeb69f4d88aca2a5100d000000"
    "00220020701a8d401c84fb13e6baf169d59684e17abd9fa216c8cc5b9fc63d622ff8c58d04004730440220548f"
    "11130353b3a8f943d2f14260345fc7c20bde91704c9f1cbb5456355078cd0220383ed4ed39b079b618bcb279bb"
    "c1f2ca18cb028c4641cb522c9c5868c52a0dc20147304402203c332ecccb3181ca82c0600520ee51fee80d3b4a"
    "6ab110945e59475ec71e44ac0220679a11f3ca9993b04ccebda3c834876f353b065bb08f50076b25f5bb93c72a"
    "e1016952210375e00eb72e29da82b89367947f29ef34afb75e8654f6ea368e0acdfd92976b7c2103a1b26313f4"
    "30c4b15bb1fdce663207659d8cac749a0e53d70eff01874496feff2103c96d495bfdd5ba4145e3e046fee45e84"
    "a8a48ad05bd8dbb395c011a32cf9f88053ae00000000"
)
MIXED_SEGWIT_AND_LEGACY_TX = (
    "010000000001036b6b6ac7e34e97c53c1cc74c99c7948af2e6aac75d8778004ae458d813456764000000006a47"
    "3044022001deec7d9075109306320b3754188f81a8236d0d232b44bc69f8309115638b8f02204e17a5194a519c"
    "f994d0afeea1268740bdc10616b031a521113681cc415e815c012103488d3272a9fad78ee887f0684cb8ebcfc0"
    "6d0945e1401d002e590c7338b163feffffffffc75bd7aa6424aee972789ec28ba181254ee6d8311b058d165bd0"
    "45154d7660b0000000006b483045022100c8641bcbee3e4c47a00417875015d8c5d5ea918fb7e96f18c6ffe51b"
    "c555b401022074e2c46f5b1109cd79e39a9aa203eadd1d75356415e51d80928a5fb5feb0efee0121033504b4c6"
    "dfc3a5daaf7c425aead4c2dbbe4e7387ce8e6be2648805939ecf7054ffffffff494df3b205cd9430a26f8e8c0d"
    "c0bb80496fbc555a524d6ea307724bc7e60eee0100000000ffffffff026d861500000000001976a9145c54ed13"
    "60072ebaf56e87693b88482d2c6a101588ace407000000000000160014761e31e2629c6e11936f2f9888179d60"
    "a5d4c1f900000247304402201fa38a67a63e58b67b6cfffd02f59121ca1c8a1b22e1efe2573ae7e4b4f06c2b02"
    "2002b9b431b58f6e36b3334fb14eaecee7d2f06967a77ef50d8d5f90dda1057f0c01210257dc6ce3b1100903306"
    "f518ee8fa113d778e403f118c080b50ce079fba40e09a00000000"
)
THREE_P2PKH_INPUTS_TX = (
    "0100000003e4d7be4314204a239d8e00691128dca7927e19a7339c7948bde56f669d27d797010000006b483045"
    "022100b988a858e2982e2daaf0755b37ad46775d6132057934877a5badc91dee2f66ff022020b967c1a2f09160"
    "07662ec609987e951baafa6d4fda23faaad70715611d6a2501210254a2dccd8c8832d4677dc6f0e562eaaa5d11"
    "feb9f1de2c50a33832e7c6190796ffffffff9e22eb1b3f24c260187d716a8a6c2a7efb5af14a30a4792a6eeac3"
    "643172379c000000006a47304402207df07f0cd30dca2cf7bed7686fa78d8a37fe9c2254dfdca2befed54e06b7"
    "79790220684417b8ff9f0f6b480546a9e90ecee86a625b3ea1e4ca29b080da6bd6c5f67e01210254a2dccd8c88"
    "32d4677dc6f0e562eaaa5d11feb9f1de2c50a33832e7c6190796ffffffff1123df3bfb503b59769731da103d43"
    "71bc029f57979ebce68067768b958091a1000000006a47304402207a016023c2b0c4db9a7d4f9232fcec2193c2"
    "f119a69125ad5bcedcba56dd525e02206a734b3a321286c896759ac98ebfd9d808df47f1ce1fbfbe949891cc31"
    "34294701210254a2dccd8c8832d4677dc6f0e562eaaa5d11feb9f1de2c50a33832e7c6190796ffffffff0200c2"
    "eb0b000000001976a914e5eb3e05efad136b1405f5c2f9adb14e15a35bb488ac88cfff1b000000001976a91448"
    "46db516db3130b7a3c92253599edec6bc9630b88ac00000000"
)
P2PKH_WITH_OP_RETURN_TX = (
    "0100000001c336895d9fa674f8b1e294fd006b1ac8266939161600e04788c515089991b50a030000006a473044"
    "02204213769e823984b31dcb7104f2c99279e74249eacd4246dabcf2575f85b365aa02200c3ee89c84344ae326"
    "b637101a92448664a8d39a009c8ad5d147c752cbe112970121028b1b44b4903c9103c07d5a23e3c7cf7aeb0ba4"
    "5ddbd2cfdce469ab197381f195fdffffff040000000000000000536a4c5058325bb7b7251cf9e36cac35d691bd"
    "37431eeea426d42cbdecca4db20794f9a4030e6cb5211fabf887642bcad98c9994430facb712da8ae5e12c9ae5"
    "ff314127d33665000bb26c0067000bb0bf00322a50c300000000000017a9145ca04fdc0a6d2f4e3f67cfeb97e4"
    "38bb6287725f8750c30000000000001976a91423086a767de0143523e818d4273ddfe6d9e4bbcc88acc8465003"
    "000000001976a914c95cbacc416f757c65c942f9b6b8a20038b9b12988ac00000000"
)
MAINNET_TXS_WITH_WEIGHT = [
    (P2WPKH_TX, 565),
    (P2WSH_MULTISIG_TX, 766),
    (MIXED_SEGWIT_AND_LEGACY_TX, 1755),
    (THREE_P2PKH_INPUTS_TX, 2080),
    (P2PKH_WITH_OP_RETURN_TX, 1396),
    (GENESIS_COINBASE, 4 * len(GENESIS_COINBASE) // 2),
]
MAINNET_TXS = [hex_ for hex_, _ in MAINNET_TXS_WITH_WEIGHT]


def _simple_tx(witnesses: tuple[tuple[bytes, ...], ...] = ()) -> Transaction:
    return Transaction(
        version=2,
        inputs=(TxIn(OutPoint(bytes(range(32)), 1), 0xFFFFFFFD),),
        outputs=(TxOut(50_000, b"\x00\x14" + bytes(20)),),
        locktime=800_000,
        witnesses=witnesses,
    )


@pytest.mark.parametrize("tx_hex", MAINNET_TXS)
def test_parse_then_serialize_gives_the_same_bytes(tx_hex: str) -> None:
    raw = bytes.fromhex(tx_hex)
    assert Transaction.parse(raw).serialize() == raw


@pytest.mark.parametrize("tx_hex", MAINNET_TXS)
def test_txid_matches_python_bitcoinlib(tx_hex: str) -> None:
    raw = bytes.fromhex(tx_hex)
    assert Transaction.parse(raw).txid == CTransaction.deserialize(raw).GetTxid()


@pytest.mark.parametrize("tx_hex", MAINNET_TXS)
def test_wtxid_matches_python_bitcoinlib(tx_hex: str) -> None:
    raw = bytes.fromhex(tx_hex)
    assert Transaction.parse(raw).wtxid == CTransaction.deserialize(raw).GetHash()


@pytest.mark.parametrize("tx_hex", MAINNET_TXS)
def test_txid_hex_matches_embit(tx_hex: str) -> None:
    raw = bytes.fromhex(tx_hex)
    assert Transaction.parse(raw).txid_hex == EmbitTransaction.parse(raw).txid().hex()


@pytest.mark.parametrize(("tx_hex", "weight"), MAINNET_TXS_WITH_WEIGHT)
def test_weight_matches_known_value_and_python_bitcoinlib(tx_hex: str, weight: int) -> None:
    raw = bytes.fromhex(tx_hex)
    assert Transaction.parse(raw).weight == weight == CTransaction.deserialize(raw).calc_weight()


def test_vsize_rounds_the_weight_up() -> None:
    tx = Transaction.parse(bytes.fromhex(P2WPKH_TX))
    assert tx.weight == 565
    assert tx.vsize == 142


def test_genesis_coinbase_has_its_well_known_txid() -> None:
    assert Transaction.parse(bytes.fromhex(GENESIS_COINBASE)).txid_hex == GENESIS_COINBASE_TXID


def test_serialize_without_witness_is_what_the_txid_commits_to() -> None:
    tx = Transaction.parse(bytes.fromhex(P2WSH_MULTISIG_TX))
    legacy = tx.serialize_without_witness()
    assert Transaction.parse(legacy) == tx.with_witnesses(())
    assert tx.wtxid != tx.txid


def test_transaction_without_witness_serializes_in_legacy_format() -> None:
    tx = _simple_tx()
    assert tx.serialize() == tx.serialize_without_witness()
    assert tx.wtxid == tx.txid


def test_with_witnesses_adds_marker_and_flag() -> None:
    tx = _simple_tx().with_witnesses(((b"\x01", b""),))
    raw = tx.serialize()
    assert raw[4:6] == b"\x00\x01"
    assert Transaction.parse(raw) == tx


def test_witness_stacks_that_are_all_empty_mean_no_witness() -> None:
    assert _simple_tx(((),)) == _simple_tx()
    assert _simple_tx(((),)).witnesses == ()


def test_witness_stack_count_must_match_inputs() -> None:
    with pytest.raises(EncodingError, match="2 witness stacks for 1 inputs"):
        _simple_tx(((b"\x01",), (b"\x02",)))


def test_total_output_value_sums_the_outputs() -> None:
    tx = Transaction.parse(bytes.fromhex(P2PKH_WITH_OP_RETURN_TX))
    assert tx.total_output_value == 0 + 50_000 + 50_000 + 55_592_648


@pytest.mark.parametrize("tx_hex", [P2WPKH_TX, THREE_P2PKH_INPUTS_TX])
def test_parse_refuses_every_truncation(tx_hex: str) -> None:
    raw = bytes.fromhex(tx_hex)
    for end in range(len(raw)):
        with pytest.raises(EncodingError):
            Transaction.parse(raw[:end])


@pytest.mark.parametrize("tx_hex", [P2WPKH_TX, THREE_P2PKH_INPUTS_TX])
def test_parse_refuses_trailing_bytes(tx_hex: str) -> None:
    with pytest.raises(EncodingError, match="trailing"):
        Transaction.parse(bytes.fromhex(tx_hex) + b"\x00")


def test_parse_refuses_a_segwit_marker_with_a_zero_flag() -> None:
    raw = bytearray(bytes.fromhex(P2WPKH_TX))
    raw[5] = 0x00
    with pytest.raises(EncodingError, match="flag 0x00"):
        Transaction.parse(bytes(raw))


def test_parse_refuses_an_unknown_segwit_flag() -> None:
    raw = bytearray(bytes.fromhex(P2WPKH_TX))
    raw[5] = 0x03
    with pytest.raises(EncodingError, match="flag 0x03"):
        Transaction.parse(bytes(raw))


def test_parse_refuses_a_segwit_serialization_with_only_empty_witnesses() -> None:
    tx = _simple_tx()
    legacy = tx.serialize_without_witness()
    superfluous = legacy[:4] + b"\x00\x01" + legacy[4:-4] + b"\x00" + legacy[-4:]
    with pytest.raises(EncodingError, match="only empty witness stacks"):
        Transaction.parse(superfluous)


def test_parse_refuses_a_non_minimal_input_count() -> None:
    legacy = _simple_tx().serialize_without_witness()
    non_minimal = legacy[:4] + b"\xfd\x01\x00" + legacy[5:]
    with pytest.raises(EncodingError, match="non-minimal"):
        Transaction.parse(non_minimal)


def test_parse_refuses_a_count_larger_than_the_data() -> None:
    legacy = _simple_tx().serialize_without_witness()
    with pytest.raises(EncodingError, match="cannot fit"):
        Transaction.parse(legacy[:4] + b"\xfe\xff\xff\xff\x7f" + legacy[5:])


def test_output_value_above_max_money_is_refused() -> None:
    with pytest.raises(EncodingError, match="outside"):
        TxOut(MAX_MONEY + 1, b"")


def test_transaction_without_inputs_is_refused() -> None:
    with pytest.raises(EncodingError, match="at least one input"):
        Transaction(2, (), (TxOut(1, b""),), 0)


def test_outpoint_txid_hex_is_the_reversed_internal_order() -> None:
    outpoint = OutPoint.from_hex(GENESIS_COINBASE_TXID, 7)
    assert outpoint.txid == bytes.fromhex(GENESIS_COINBASE_TXID)[::-1]
    assert outpoint.txid_hex == GENESIS_COINBASE_TXID
    assert str(outpoint) == f"{GENESIS_COINBASE_TXID}:7"


def test_outpoint_serializes_txid_then_little_endian_vout() -> None:
    outpoint = OutPoint(bytes(range(32)), 0x01020304)
    assert outpoint.serialize() == bytes(range(32)) + b"\x04\x03\x02\x01"


def test_outpoint_from_str_is_the_inverse_of_str() -> None:
    outpoint = OutPoint.from_hex(GENESIS_COINBASE_TXID, 7)
    assert OutPoint.from_str(str(outpoint)) == outpoint


@pytest.mark.parametrize("text", [GENESIS_COINBASE_TXID, f"{GENESIS_COINBASE_TXID}:x", "zz:1"])
def test_outpoint_from_str_refuses_what_is_not_txid_colon_vout(text: str) -> None:
    with pytest.raises(EncodingError):
        OutPoint.from_str(text)


def test_outpoint_refuses_a_short_txid() -> None:
    with pytest.raises(EncodingError, match="32 bytes"):
        OutPoint(bytes(31), 0)


_txins = st.builds(
    TxIn,
    st.builds(OutPoint, st.binary(min_size=32, max_size=32), st.integers(0, 0xFFFFFFFF)),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=300),
)
_txouts = st.builds(TxOut, st.integers(0, MAX_MONEY), st.binary(max_size=300))


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    inputs = tuple(draw(st.lists(_txins, min_size=1, max_size=4)))
    stacks = st.lists(st.binary(max_size=80), max_size=3).map(tuple)
    witnesses = draw(st.one_of(st.just(()), st.tuples(*[stacks for _ in inputs])))
    return Transaction(
        version=draw(st.integers(0, 0xFFFFFFFF)),
        inputs=inputs,
        outputs=tuple(draw(st.lists(_txouts, min_size=1, max_size=4))),
        locktime=draw(st.integers(0, 0xFFFFFFFF)),
        witnesses=witnesses,
    )


@settings(max_examples=60, deadline=None)
@given(transactions())
def test_random_transactions_round_trip_and_agree_with_python_bitcoinlib(tx: Transaction) -> None:
    raw = tx.serialize()
    assert Transaction.parse(raw) == tx
    theirs = CTransaction.deserialize(raw)
    assert theirs.serialize() == raw
    assert theirs.GetTxid() == tx.txid
    assert theirs.calc_weight() == tx.weight
