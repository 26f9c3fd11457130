"""Refund rounds: the refund manifest (validation, canonical encoding) and build_refunds.

The rules cited (V1, F1, S1, T1, ...) are those of docs/refund-algorithm.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pool.errors import EncodingError, ManifestError
from pool.psbt import Psbt, PsbtOutput
from pool.refunds import (
    MAGIC,
    RefundManifest,
    RefundRequest,
    RefundSource,
    build_refunds,
    decode_refund_manifest,
    encode_refund_manifest,
    refund_manifest_hash,
    refund_weight,
    sender_script,
)
from pool.script import multisig_script, p2wsh_script_pubkey
from pool.series import RECEIVE, SeriesState
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.weights import fee_for_weight
from pool.withdrawal import SEQUENCE_RBF
from tests.factories import BTC, make_series, p2pkh, p2sh, p2tr, p2wpkh, sign_first_m
from tests.refund_factories import deposit, deposit_tx, funding_tx, refund_manifest

S1 = make_series(1, 2, (0, 1, 2))
S2 = make_series(2, 3, (3, 4, 5, 6, 7), SeriesState.RETIRING)
BARE_MULTISIG = multisig_script(1, [b"\x02" + bytes(31) + b"\x01"])


def p2wsh(tag: str) -> bytes:
    return p2wsh_script_pubkey(tag.encode())


def sample() -> RefundManifest:
    return refund_manifest(
        [S1, S2],
        [
            deposit("a", S1, 3, BTC),
            deposit("b", S2, 0, 2_000_000, source=RefundSource.SENDER, vout=1),
            deposit("c", S1, 7, 50_000, source=RefundSource.OPERATOR, destination=p2tr("op")),
        ],
    )


def one(refund: RefundRequest, **changes: object) -> RefundManifest:
    """A manifest of S1 and S2 with this one refund, its fields changed as given."""
    return refund_manifest([S1, S2], [replace(refund, **changes)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- encoding


def test_decode_inverts_encode() -> None:
    m = sample()
    assert decode_refund_manifest(encode_refund_manifest(m)) == m


def test_lists_are_kept_in_canonical_order() -> None:
    m = sample()
    reordered = replace(m, refunds=m.refunds[::-1], series=m.series[::-1])
    assert reordered == m
    assert encode_refund_manifest(reordered) == encode_refund_manifest(m)


def test_refunds_are_sorted_by_displayed_txid_then_vout() -> None:
    m = sample()
    keys = [(r.outpoint.txid_hex, r.outpoint.vout) for r in m.refunds]
    assert keys == sorted(keys)


def test_hash_is_sha256_of_the_encoding() -> None:
    m = sample()
    assert refund_manifest_hash(m) == hashlib.sha256(encode_refund_manifest(m)).digest()


def test_encoding_starts_with_its_own_magic() -> None:
    assert encode_refund_manifest(sample()).startswith(MAGIC + b"\x01")


def test_hash_changes_with_the_fee_rate() -> None:
    m = sample()
    assert refund_manifest_hash(replace(m, fee_rate=m.fee_rate + 1)) != refund_manifest_hash(m)


def test_decode_refuses_trailing_bytes() -> None:
    with pytest.raises(EncodingError, match="trailing"):
        decode_refund_manifest(encode_refund_manifest(sample()) + b"\x00")


def test_decode_refuses_truncation() -> None:
    with pytest.raises(EncodingError, match="truncated"):
        decode_refund_manifest(encode_refund_manifest(sample())[:-1])


def test_decode_refuses_a_round_manifest() -> None:
    data = b"VPRM" + encode_refund_manifest(sample())[4:]
    with pytest.raises(EncodingError, match="magic"):
        decode_refund_manifest(data)


def test_decode_refuses_refunds_out_of_order() -> None:
    m = sample()
    empty = encode_refund_manifest(replace(m, refunds=()))
    header = empty[:-1]  # up to the refund count
    records = [
        encode_refund_manifest(replace(m, refunds=(r,)))[len(header) + 1 :] for r in m.refunds
    ]
    data = header + bytes([len(records)]) + b"".join(reversed(records))
    with pytest.raises(EncodingError, match="canonical order"):
        decode_refund_manifest(data)


def test_decode_refuses_an_unknown_source_code() -> None:
    m = refund_manifest([S1], [deposit("a", S1, 0, BTC)])
    data = bytearray(encode_refund_manifest(m))
    source_at = len(encode_refund_manifest(replace(m, refunds=()))) + 32 + 4 + 8 + 4 + 4
    assert data[source_at] == 0
    data[source_at] = 3
    with pytest.raises(EncodingError, match="source code 3"):
        decode_refund_manifest(bytes(data))


# --------------------------------------------------------------------------- validation

A = deposit("a", S1, 3, BTC)
SENDER = deposit("s", S1, 4, BTC, source=RefundSource.SENDER)
OTHER = deposit("o", S1, 5, BTC)

INVALID: dict[str, tuple[Callable[[], RefundManifest], str]] = {
    "deposit tx not a transaction": (lambda: one(A, deposit_tx=b"\x02\x00"), "deposit_tx"),
    "deposit tx of another txid": (lambda: one(A, deposit_tx=OTHER.deposit_tx), "deposit_tx"),
    "no such output": (lambda: one(A, outpoint=replace(A.outpoint, vout=1)), "outpoint"),
    "wrong value": (lambda: one(A, value=A.value - 1), "value"),
    "not the claimed pool address": (lambda: one(A, index=4), "deposit_tx"),
    "not a pool series": (lambda: one(A, series_id=2), "deposit_tx"),
    "unknown series": (lambda: one(A, series_id=9), "series_id"),
    "non-standard destination": (lambda: one(A, destination=b"\x6a\x01\x00"), "destination"),
    "empty destination": (lambda: one(A, destination=b""), "destination"),
    "sender mismatch": (lambda: one(SENDER, destination=p2tr("someone")), "destination"),
    "prev tx of another txid": (lambda: one(SENDER, prev_tx=OTHER.deposit_tx), "prev_tx"),
    "prev tx not a transaction": (lambda: one(SENDER, prev_tx=b"\xff"), "prev_tx"),
    "prev tx missing for a sender refund": (lambda: one(SENDER, prev_tx=b""), "prev_tx"),
    "prev tx given for a registered refund": (
        lambda: one(SENDER, source=RefundSource.REGISTERED),
        "prev_tx",
    ),
    "prev tx given for an operator refund": (
        lambda: one(SENDER, source=RefundSource.OPERATOR),
        "prev_tx",
    ),
    "source not a RefundSource": (lambda: one(A, source="registered"), "source"),
}


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_invalid_refund_is_refused_naming_its_field(case: str) -> None:
    build, field = INVALID[case]
    with pytest.raises(ManifestError) as info:
        build()
    assert info.value.field == f"refunds[0].{field}"


def test_sender_refund_of_a_non_standard_sender_names_prev_tx() -> None:
    funding = funding_tx("x", BARE_MULTISIG, BTC + 10_000)
    tx = deposit_tx(funding, 0, S1.derive(RECEIVE, 0).script_pubkey, BTC)
    refund = replace(
        SENDER,
        outpoint=OutPoint(tx.txid, 0),
        index=0,
        deposit_tx=tx.serialize(),
        prev_tx=funding.serialize(),
        destination=p2wpkh("anyone"),
    )
    with pytest.raises(ManifestError) as info:
        one(refund)
    assert info.value.field == "refunds[0].prev_tx"
    assert "no sender" in info.value.reason


def test_field_names_the_refund_by_its_canonical_position() -> None:
    ok, bad = sorted([A, OTHER], key=lambda r: r.outpoint.txid_hex)
    with pytest.raises(ManifestError) as info:
        refund_manifest([S1], [replace(bad, value=bad.value + 1), ok])
    assert info.value.field == "refunds[1].value"


def test_duplicate_outpoints_are_refused() -> None:
    with pytest.raises(ManifestError) as info:
        refund_manifest([S1], [A, A])
    assert info.value.field == "refunds[1].outpoint"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fee_rate": 0}, "fee_rate"),
        ({"dust_limit": 0}, "dust_limit"),
        ({"network": "litecoin"}, "network"),
        ({"version": 2}, "version"),
        ({"tip_hash": b"\x00" * 31}, "tip_hash"),
        ({"series": (S1, make_series(1, 1, (9,)))}, "series[0].id"),
    ],
    ids=["fee_rate", "dust_limit", "network", "version", "tip_hash", "series"],
)
def test_invalid_manifest_field_is_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ManifestError) as info:
        replace(refund_manifest([S1], [A]), **changes)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_deposit_may_carry_witnesses() -> None:
    assert Transaction.parse(A.deposit_tx).has_witness
    assert refund_manifest([S1], [A]).refunds == (A,)


def test_a_manifest_without_refunds_is_valid() -> None:
    assert build_refunds(refund_manifest([S1], [])).transactions == ()


# --------------------------------------------------------------------------- sender_script


def spend(prev: Transaction, vout: int = 0) -> Transaction:
    """A transaction whose first input spends ``prev:vout``."""
    return Transaction(2, (TxIn(OutPoint(prev.txid, vout), 0xFFFFFFFD),), (TxOut(1, p2tr("x")),), 0)


@pytest.mark.parametrize("script", [p2pkh, p2wpkh, p2sh, p2wsh, p2tr], ids=lambda f: f.__name__)
def test_sender_script_of_each_standard_type(script: Callable[[str], bytes]) -> None:
    prev = funding_tx("t", script("sender"), 10_000)
    assert sender_script(spend(prev), prev) == script("sender")


@pytest.mark.parametrize(
    "script",
    [
        b"\x21" + b"\x02" + bytes(32) + b"\xac",  # P2PK
        BARE_MULTISIG,
        b"\x6a\x04abcd",  # OP_RETURN
        b"\x52\x20" + bytes(32),  # witness version 2
        b"\x00\x14" + bytes(19),  # a 19-byte witness v0 program
    ],
    ids=["p2pk", "bare-multisig", "op-return", "witness-v2", "short-p2wpkh"],
)
def test_sender_script_is_none_for_non_standard_scripts(script: bytes) -> None:
    prev = funding_tx("t", script, 10_000)
    assert sender_script(spend(prev), prev) is None


def test_sender_script_is_none_for_the_wrong_previous_transaction() -> None:
    prev, other = funding_tx("t", p2wpkh("a"), 10_000), funding_tx("u", p2wpkh("a"), 10_000)
    assert sender_script(spend(prev), other) is None


def test_sender_script_reads_the_output_the_first_input_spends() -> None:
    prev = funding_tx("t", p2tr("second"), 10_000, vout=1)
    assert sender_script(spend(prev, 1), prev) == p2tr("second")


def test_sender_script_is_none_when_the_output_does_not_exist() -> None:
    prev = funding_tx("t", p2wpkh("a"), 10_000)
    assert sender_script(spend(prev, 1), prev) is None


def test_sender_script_ignores_later_inputs() -> None:
    prev, other = funding_tx("t", p2wpkh("a"), 10_000), funding_tx("u", p2pkh("b"), 10_000)
    tx = Transaction(
        2,
        (TxIn(OutPoint(prev.txid, 0), 0), TxIn(OutPoint(other.txid, 0), 0)),
        (TxOut(1, p2tr("x")),),
        0,
    )
    assert sender_script(tx, other) is None


# --------------------------------------------------------------------------- build_refunds


def test_amount_is_value_minus_the_fee_of_the_worst_case_weight() -> None:
    m = refund_manifest([S1], [A], fee_rate=3_000)
    (t,) = build_refunds(m).transactions
    assert t.max_weight == refund_weight(S1, A.destination)
    assert t.fee == fee_for_weight(t.max_weight, 3_000)
    assert t.amount == A.value - t.fee
    assert t.psbt.tx.outputs == (TxOut(t.amount, A.destination),)


def test_transaction_form() -> None:
    m = refund_manifest([S1], [A], tip_height=123_456)
    tx = build_refunds(m).transactions[0].psbt.tx
    assert (tx.version, tx.locktime) == (2, 123_456)
    assert tx.inputs == (TxIn(A.outpoint, SEQUENCE_RBF),)


def test_psbt_fields_are_those_of_a_pool_input() -> None:
    m = refund_manifest([S1, S2], [A])
    psbt = build_refunds(m).transactions[0].psbt
    derived = S1.derive(RECEIVE, A.index)
    (inp,) = psbt.inputs
    assert inp.witness_utxo == TxOut(A.value, derived.script_pubkey)
    assert inp.witness_script == derived.witness_script
    assert inp.bip32_derivations == dict(zip(derived.pubkeys, derived.origins, strict=True))
    assert inp.sighash_type is None
    assert psbt.outputs == (PsbtOutput(),)


def test_global_xpubs_are_those_of_the_deposit_series_only() -> None:
    m = refund_manifest([S1, S2], [A])
    psbt = build_refunds(m).transactions[0].psbt
    assert psbt.xpubs == {k.xpub.serialize(m.net): k.origin for k in S1.keys}


def test_psbt_serialization_is_canonical() -> None:
    psbt = build_refunds(sample()).transactions[0].psbt
    assert Psbt.parse(psbt.serialize()).serialize() == psbt.serialize()


@pytest.mark.parametrize("fee_rate", [1_000, 2_345, 50_000])
def test_fee_covers_the_signed_transaction(fee_rate: int) -> None:
    m = replace(sample(), fee_rate=fee_rate)
    for t in build_refunds(m).transactions:
        signed = sign_first_m(t.psbt, m)
        assert signed.txid_hex == t.txid_hex
        assert signed.weight <= t.max_weight
        assert t.fee * 1000 >= fee_rate * signed.vsize


def test_dust_refunds_are_skipped_with_a_reason() -> None:
    fee = fee_for_weight(refund_weight(S1, p2wpkh("small/refund")), 2_000)
    small = deposit("small", S1, 1, fee + 545)
    m = refund_manifest([S1], [A, small], fee_rate=2_000, dust_limit=546)
    plan = build_refunds(m)
    assert [t.refund for t in plan.transactions] == [A]
    ((outpoint, reason),) = plan.skipped
    assert outpoint == small.outpoint
    assert "below the dust limit of 546 sat" in reason


def test_a_refund_of_exactly_the_dust_limit_is_built() -> None:
    fee = fee_for_weight(refund_weight(S1, p2wpkh("x/refund")), 2_000)
    m = refund_manifest([S1], [deposit("x", S1, 0, fee + 546)], dust_limit=546)
    assert [t.amount for t in build_refunds(m).transactions] == [546]


def test_transactions_follow_the_manifest_order() -> None:
    m = sample()
    plan = build_refunds(m)
    assert [t.refund for t in plan.transactions] == list(m.refunds)


def test_plan_carries_the_manifest_hash() -> None:
    m = sample()
    assert build_refunds(m).manifest_hash == refund_manifest_hash(m)


def test_same_manifest_gives_the_same_psbts() -> None:
    m = sample()
    again = decode_refund_manifest(encode_refund_manifest(replace(m, refunds=m.refunds[::-1])))
    first, second = build_refunds(m), build_refunds(again)
    assert [t.psbt.serialize() for t in first.transactions] == [
        t.psbt.serialize() for t in second.transactions
    ]


# --------------------------------------------------------------------------- properties

SCRIPTS = [p2pkh, p2wpkh, p2sh, p2wsh, p2tr]


@st.composite
def manifests(draw: st.DrawFn) -> RefundManifest:
    refunds = []
    for k in range(draw(st.integers(0, 6))):
        series = draw(st.sampled_from([S1, S2]))
        source = draw(st.sampled_from(list(RefundSource)))
        refunds.append(
            deposit(
                f"p{k}",
                series,
                draw(st.integers(0, 20)),
                draw(st.one_of(st.integers(1, 20_000), st.integers(20_000, 5 * BTC))),
                source=source,
                sender=draw(st.sampled_from(SCRIPTS))(f"sender {k}"),
                vout=draw(st.integers(0, 2)),
            )
        )
    return refund_manifest(
        [S1, S2],
        refunds,
        fee_rate=draw(st.integers(1, 100_000)),
        dust_limit=draw(st.integers(1, 5_000)),
        tip_height=draw(st.integers(0, 900_000)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_every_refund_is_built_or_skipped_and_value_is_conserved(m: RefundManifest) -> None:
    plan = build_refunds(m)
    built = {t.refund.outpoint for t in plan.transactions}
    skipped = {outpoint for outpoint, _ in plan.skipped}
    assert built | skipped == {r.outpoint for r in m.refunds}
    assert not built & skipped
    for t in plan.transactions:
        (inp,) = t.psbt.inputs
        assert inp.witness_utxo is not None
        assert inp.witness_utxo.value == t.refund.value == t.amount + t.fee
        assert t.psbt.tx.total_output_value == t.amount >= m.dust_limit
    assert decode_refund_manifest(encode_refund_manifest(m)) == m
