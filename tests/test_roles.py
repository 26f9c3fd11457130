"""pool.roles: sign, combine, finalize and extract a 2-of-3 P2WSH spend, checked independently.

The finished transaction is verified by embit (its own BIP143 sighash and ECDSA) and by
bdkpython (rust-miniscript's finalizer, which runs its script interpreter over the signatures).
python-bitcoinlib 0.12.2 cannot serve: its ``VerifyScript`` has no witness parameter and no
segwit support, so it cannot evaluate a P2WSH spend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import bdkpython as bdk
import pytest
from embit.ec import PublicKey as EmbitPublicKey
from embit.ec import Signature as EmbitSignature
from embit.script import Script as EmbitScript
from embit.transaction import SIGHASH
from embit.transaction import Transaction as EmbitTransaction

from pool import ecdsa
from pool.errors import PsbtError
from pool.hdkeys import ExtendedPrivateKey, KeyOrigin
from pool.psbt import Psbt, PsbtInput
from pool.roles import combine, extract, finalize, input_sighash, sign_psbt, verify_partial_sigs
from pool.script import multisig_script, p2wsh_script_pubkey, parse_multisig_script
from pool.sighash import SegwitV0Sighasher
from pool.tx import Transaction, TxOut
from tests import bip174_vectors as bip174
from tests.p2wsh_samples import MASTERS, RECEIVE, key_path, private_key_at, two_of_three_psbt


def _signer(master: ExtendedPrivateKey) -> Callable[[Psbt], Psbt]:
    return lambda psbt: sign_psbt(psbt, master.fingerprint, lambda p: private_key_at(master, p))


def _signed_by(psbt: Psbt, *masters: ExtendedPrivateKey) -> Psbt:
    """Each master signs its own copy; the copies are then combined."""
    return combine([_signer(master)(psbt) for master in masters])


def _spend(*masters: ExtendedPrivateKey) -> tuple[Psbt, Transaction]:
    psbt = two_of_three_psbt()
    return psbt, extract(finalize(_signed_by(psbt, *masters)))


def _checkmultisig(witness: tuple[bytes, ...], verify: Callable[[bytes, bytes], bool]) -> bool:
    """CHECKMULTISIG: m signatures, each by a key after the previous signature's key."""
    dummy, *signatures, witness_script = witness
    m, keys = parse_multisig_script(witness_script)
    remaining = iter(keys)
    matched = all(any(verify(key, sig) for key in remaining) for sig in signatures)
    return dummy == b"" and len(signatures) == m and matched


def _embit_accepts(tx: Transaction, amounts: list[int]) -> bool:
    """Every input's witness satisfies its multisig under embit's sighash and ECDSA."""
    theirs = EmbitTransaction.parse(tx.serialize())
    for index, witness in enumerate(tx.witnesses):
        digest = theirs.sighash_segwit(index, EmbitScript(witness[-1]), amounts[index], SIGHASH.ALL)

        def verify(pubkey: bytes, signature: bytes, digest: bytes = digest) -> bool:
            return signature[-1] == SIGHASH.ALL and EmbitPublicKey.parse(pubkey).verify(
                EmbitSignature.parse(signature[:-1]), digest
            )

        if not _checkmultisig(witness, verify):
            return False
    return True


def _amounts(psbt: Psbt) -> list[int]:
    return [i.witness_utxo.value for i in psbt.inputs if i.witness_utxo is not None]


@pytest.mark.parametrize("signers", [(0, 1), (0, 2), (1, 2)])
def test_two_of_three_spend_verifies_with_embit(signers: tuple[int, int]) -> None:
    psbt, tx = _spend(*(MASTERS[i] for i in signers))
    assert _embit_accepts(tx, _amounts(psbt))


def test_embit_check_refuses_a_spend_whose_outputs_were_changed() -> None:
    psbt, tx = _spend(MASTERS[0], MASTERS[1])
    changed = replace(tx, outputs=(replace(tx.outputs[0], value=1), *tx.outputs[1:]))
    assert not _embit_accepts(changed, _amounts(psbt))


def test_two_of_three_spend_is_finalized_identically_by_bdk() -> None:
    psbt = two_of_three_psbt()
    combined = _signed_by(psbt, MASTERS[0], MASTERS[2])
    result = bdk.Psbt(combined.to_base64()).finalize()
    assert result.could_finalize, result.errors
    theirs = result.psbt.extract_tx().serialize()
    assert theirs == extract(finalize(combined)).serialize()


def test_bdk_refuses_to_finalize_with_a_signature_over_the_wrong_digest() -> None:
    psbt = _with_signature(_signer(MASTERS[0])(two_of_three_psbt()), MASTERS[1], bytes(32), 1)
    assert not bdk.Psbt(psbt.to_base64()).finalize().could_finalize


def test_extracted_transaction_spends_the_unsigned_txid() -> None:
    psbt, tx = _spend(MASTERS[0], MASTERS[1])
    assert tx.txid == psbt.tx.txid
    assert tx.serialize_without_witness() == psbt.tx.serialize()


def test_input_sighash_matches_embit() -> None:
    psbt = two_of_three_psbt()
    theirs = EmbitTransaction.parse(psbt.tx.serialize())
    for index, psbt_input in enumerate(psbt.inputs):
        assert psbt_input.witness_utxo is not None and psbt_input.witness_script is not None
        expected = theirs.sighash_segwit(
            index, EmbitScript(psbt_input.witness_script), psbt_input.witness_utxo.value
        )
        assert input_sighash(psbt, index) == expected


def test_input_sighash_with_a_shared_sighasher_is_the_same() -> None:
    psbt = two_of_three_psbt(3)
    sighasher = SegwitV0Sighasher(psbt.tx)
    assert [input_sighash(psbt, i, sighasher) for i in range(3)] == [
        input_sighash(psbt, i) for i in range(3)
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"witness_utxo": None}, "input 0 has no witness UTXO"),
        ({"witness_script": None}, "input 0 has no witness script"),
        ({"witness_utxo": TxOut(1, b"\x00\x20" + bytes(32))}, "does not hash to the output"),
    ],
    ids=["no witness utxo", "no witness script", "script mismatch"],
)
def test_input_sighash_refuses_an_input_it_cannot_check(
    change: dict[str, object], message: str
) -> None:
    psbt = two_of_three_psbt()
    broken = replace(psbt, inputs=(replace(psbt.inputs[0], **change), psbt.inputs[1]))
    with pytest.raises(PsbtError, match=message):
        input_sighash(broken, 0)


def test_sign_psbt_adds_one_all_signature_per_input() -> None:
    psbt = two_of_three_psbt()
    signed = _signer(MASTERS[1])(psbt)
    for index, psbt_input in enumerate(signed.inputs):
        pubkey = MASTERS[1].derive_path(key_path(RECEIVE, index)).public_key
        assert list(psbt_input.partial_sigs) == [pubkey]
        signature = psbt_input.partial_sigs[pubkey]
        assert signature[-1] == 0x01
        assert ecdsa.verify(pubkey, signature[:-1], input_sighash(psbt, index))


def test_sign_psbt_does_not_change_its_argument() -> None:
    psbt = two_of_three_psbt()
    before = psbt.serialize()
    _signer(MASTERS[0])(psbt)
    assert psbt.serialize() == before
    assert all(not i.partial_sigs for i in psbt.inputs)


def test_sign_psbt_is_deterministic() -> None:
    psbt = two_of_three_psbt()
    assert _signer(MASTERS[0])(psbt) == _signer(MASTERS[0])(psbt)


def test_sign_psbt_leaves_inputs_of_other_signers_alone() -> None:
    psbt = two_of_three_psbt()
    assert sign_psbt(psbt, b"\xde\xad\xbe\xef", lambda path: bytes(32)) == psbt


def test_sign_psbt_refuses_a_sighash_type_other_than_all() -> None:
    psbt = two_of_three_psbt()
    asks_none = replace(psbt, inputs=(replace(psbt.inputs[0], sighash_type=2), psbt.inputs[1]))
    with pytest.raises(PsbtError, match="input 0 asks for sighash type 0x02"):
        _signer(MASTERS[0])(asks_none)


def test_sign_psbt_accepts_an_explicit_sighash_all() -> None:
    psbt = two_of_three_psbt()
    asks_all = replace(psbt, inputs=(replace(psbt.inputs[0], sighash_type=1), psbt.inputs[1]))
    assert _signer(MASTERS[0])(asks_all).inputs[0].partial_sigs


def test_sign_psbt_refuses_a_key_that_is_not_the_one_named() -> None:
    psbt = two_of_three_psbt()
    with pytest.raises(PsbtError, match=r"the key derived at .* is not"):
        sign_psbt(psbt, MASTERS[0].fingerprint, lambda path: private_key_at(MASTERS[1], path))


def test_sign_psbt_refuses_a_key_outside_the_witness_script() -> None:
    psbt = two_of_three_psbt()
    stranger = ExtendedPrivateKey.from_seed(bytes([9]) * 32)
    path = key_path(RECEIVE, 0)
    derivations = {
        **psbt.inputs[0].bip32_derivations,
        stranger.derive_path(path).public_key: KeyOrigin(stranger.fingerprint, path),
    }
    broken = replace(
        psbt, inputs=(replace(psbt.inputs[0], bip32_derivations=derivations), psbt.inputs[1])
    )
    with pytest.raises(PsbtError, match="is not in the witness script"):
        sign_psbt(broken, stranger.fingerprint, lambda p: private_key_at(stranger, p))


def test_combine_is_the_union_of_partial_signatures() -> None:
    psbt = two_of_three_psbt()
    combined = _signed_by(psbt, MASTERS[0], MASTERS[1], MASTERS[2])
    assert all(len(i.partial_sigs) == 3 for i in combined.inputs)


def test_combine_refuses_psbts_of_different_transactions() -> None:
    with pytest.raises(PsbtError, match="PSBT 1 has another unsigned transaction"):
        combine([two_of_three_psbt(2), two_of_three_psbt(3)])


def test_combine_refuses_nothing() -> None:
    with pytest.raises(PsbtError, match="nothing to combine"):
        combine([])


def test_combine_keeps_the_first_value_of_a_conflicting_key() -> None:
    psbt = two_of_three_psbt()
    pubkey = next(iter(psbt.inputs[0].bip32_derivations))

    def with_signature(signature: bytes) -> Psbt:
        first = replace(psbt.inputs[0], partial_sigs={pubkey: signature}, redeem_script=signature)
        return replace(psbt, inputs=(first, psbt.inputs[1]))

    combined = combine([with_signature(b"\x30\x01"), with_signature(b"\x30\x02")])
    assert combined.inputs[0].partial_sigs == {pubkey: b"\x30\x01"}
    assert combined.inputs[0].redeem_script == b"\x30\x01"


def test_combine_fills_single_fields_from_later_psbts() -> None:
    psbt = two_of_three_psbt()
    bare = Psbt.from_unsigned_tx(psbt.tx)
    assert combine([bare, psbt]) == psbt


def test_combine_reproduces_the_bip174_combiner_vector() -> None:
    combined = combine([Psbt.from_base64(bip174.SIGNER_1), Psbt.from_base64(bip174.SIGNER_2)])
    assert combined == Psbt.from_base64(bip174.COMBINED)


def test_combine_orders_unknown_keys_as_the_bip174_vector() -> None:
    combined = combine([Psbt.from_base64(bip174.UNKNOWN_A), Psbt.from_base64(bip174.UNKNOWN_B)])
    assert combined.to_base64() == bip174.UNKNOWN_COMBINED


def test_bip174_p2sh_p2wsh_signatures_verify_with_our_sighash() -> None:
    psbt = Psbt.from_base64(bip174.COMBINED)
    segwit_input = psbt.inputs[1]
    assert segwit_input.witness_utxo is not None and segwit_input.witness_script is not None
    digest = SegwitV0Sighasher(psbt.tx).digest(
        1, segwit_input.witness_script, segwit_input.witness_utxo.value
    )
    assert len(segwit_input.partial_sigs) == 2
    for pubkey, signature in segwit_input.partial_sigs.items():
        assert ecdsa.verify(pubkey, signature[:-1], digest)


def test_verify_partial_sigs_reports_each_signature() -> None:
    psbt = _signed_by(two_of_three_psbt(), MASTERS[0], MASTERS[2])
    results = verify_partial_sigs(psbt)
    assert [(index, valid) for index, _, valid in results] == [(0, True)] * 2 + [(1, True)] * 2
    assert {pubkey for _, pubkey, _ in results} == {
        MASTERS[m].derive_path(key_path(RECEIVE, i)).public_key for m in (0, 2) for i in (0, 1)
    }


def _with_signature(psbt: Psbt, master: ExtendedPrivateKey, digest: bytes, byte: int) -> Psbt:
    """Input 0 gets a signature by ``master`` over ``digest`` with sighash byte ``byte``."""
    key = private_key_at(master, key_path(RECEIVE, 0))
    signature = ecdsa.sign(key, digest) + bytes([byte])
    first = psbt.inputs[0]
    partial_sigs = {**first.partial_sigs, ecdsa.public_key(key): signature}
    return replace(psbt, inputs=(replace(first, partial_sigs=partial_sigs), *psbt.inputs[1:]))


def test_verify_partial_sigs_flags_a_signature_over_the_wrong_digest() -> None:
    psbt = _with_signature(two_of_three_psbt(), MASTERS[0], bytes(32), 0x01)
    assert verify_partial_sigs(psbt) == [
        (0, MASTERS[0].derive_path(key_path(RECEIVE, 0)).public_key, False)
    ]


def test_verify_partial_sigs_flags_a_sighash_byte_other_than_all() -> None:
    psbt = two_of_three_psbt()
    psbt = _with_signature(psbt, MASTERS[0], input_sighash(psbt, 0), 0x81)
    assert [valid for _, _, valid in verify_partial_sigs(psbt)] == [False]


def test_verify_partial_sigs_flags_a_key_outside_the_witness_script() -> None:
    psbt = two_of_three_psbt()
    stranger = ExtendedPrivateKey.from_seed(bytes([9]) * 32)
    psbt = _with_signature(psbt, stranger, input_sighash(psbt, 0), 0x01)
    assert [valid for _, _, valid in verify_partial_sigs(psbt)] == [False]


def test_signatures_verified_as_added_give_what_the_signed_psbt_gives() -> None:
    unsigned = two_of_three_psbt()
    signed = _signed_by(unsigned, MASTERS[0], MASTERS[2])
    added = {
        (index, pubkey): signature
        for index, psbt_input in enumerate(signed.inputs)
        for pubkey, signature in psbt_input.partial_sigs.items()
    }
    assert verify_partial_sigs(unsigned, added=added) == verify_partial_sigs(signed)


def test_a_bad_signature_verified_as_added_is_flagged() -> None:
    psbt = two_of_three_psbt()
    key = private_key_at(MASTERS[0], key_path(RECEIVE, 0))
    added = {(0, ecdsa.public_key(key)): ecdsa.sign(key, bytes(32)) + bytes([0x01])}
    assert verify_partial_sigs(psbt, added=added) == [(0, ecdsa.public_key(key), False)]


def test_a_signature_added_to_an_input_that_does_not_exist_is_refused() -> None:
    psbt = two_of_three_psbt()
    with pytest.raises(PsbtError, match="input 7 does not exist"):
        verify_partial_sigs(psbt, added={(7, bytes(33)): b"\x01"})


def test_finalize_refuses_fewer_than_m_signatures() -> None:
    psbt = _signer(MASTERS[0])(two_of_three_psbt())
    with pytest.raises(PsbtError, match="input 0 has 1 valid signatures, 2 needed"):
        finalize(psbt)


def test_finalize_does_not_count_a_signature_over_the_wrong_digest() -> None:
    psbt = _signer(MASTERS[0])(two_of_three_psbt())
    psbt = _with_signature(psbt, MASTERS[1], bytes(32), 0x01)
    assert len(psbt.inputs[0].partial_sigs) == 2
    with pytest.raises(PsbtError, match="input 0 has 1 valid signatures, 2 needed"):
        finalize(psbt)


def test_finalize_skips_an_invalid_signature_when_enough_valid_ones_remain() -> None:
    psbt = _signed_by(two_of_three_psbt(), MASTERS[1], MASTERS[2])
    psbt = _with_signature(psbt, MASTERS[0], bytes(32), 0x01)
    witness = finalize(psbt).inputs[0].final_script_witness
    assert witness is not None
    valid = {
        psbt.inputs[0].partial_sigs[MASTERS[m].derive_path(key_path(RECEIVE, 0)).public_key]
        for m in (1, 2)
    }
    assert set(witness[1:3]) == valid


def test_finalize_takes_the_first_m_signatures_in_witness_script_order() -> None:
    psbt = _signed_by(two_of_three_psbt(), *MASTERS)
    first = psbt.inputs[0]
    assert first.witness_script is not None
    _, keys = parse_multisig_script(first.witness_script)
    witness = finalize(psbt).inputs[0].final_script_witness
    assert witness == (
        b"",
        first.partial_sigs[keys[0]],
        first.partial_sigs[keys[1]],
        first.witness_script,
    )


def test_finalize_clears_all_but_the_utxos_and_unknown_entries() -> None:
    psbt = _signed_by(two_of_three_psbt(), MASTERS[0], MASTERS[1])
    unknown = {b"\xfc\x05vpool\x00": b"kept"}
    psbt = replace(
        psbt,
        inputs=(replace(psbt.inputs[0], sighash_type=1, unknown=unknown), psbt.inputs[1]),
    )
    final = finalize(psbt).inputs[0]
    assert final.witness_utxo == psbt.inputs[0].witness_utxo
    assert final.unknown == unknown
    assert final.partial_sigs == {}
    assert final.bip32_derivations == {}
    assert final.sighash_type is None
    assert final.witness_script is None
    assert final.final_script_sig is None


def test_finalize_does_not_change_its_argument() -> None:
    psbt = _signed_by(two_of_three_psbt(), MASTERS[0], MASTERS[1])
    before = psbt.serialize()
    finalize(psbt)
    assert psbt.serialize() == before


def test_finalize_leaves_finalized_inputs_alone() -> None:
    finalized = finalize(_signed_by(two_of_three_psbt(), MASTERS[0], MASTERS[1]))
    assert finalize(finalized) == finalized


def test_finalize_refuses_a_witness_script_that_is_not_multisig() -> None:
    psbt = two_of_three_psbt(1)
    script = b"\x51"
    broken_input = PsbtInput(
        witness_utxo=TxOut(1, p2wsh_script_pubkey(script)), witness_script=script
    )
    with pytest.raises(PsbtError, match="input 0: witness script: not a multisig script"):
        finalize(replace(psbt, inputs=(broken_input,)))


def test_extract_refuses_a_psbt_that_is_not_finalized() -> None:
    psbt = _signed_by(two_of_three_psbt(), MASTERS[0], MASTERS[1])
    with pytest.raises(PsbtError, match=r"inputs \[0, 1\] are not finalized"):
        extract(psbt)


def test_extract_reproduces_the_bip174_extractor_vector() -> None:
    tx = extract(Psbt.from_base64(bip174.FINALIZED))
    assert tx.serialize().hex() == bip174.EXTRACTED_TX_HEX


def test_one_of_one_multisig_spend_verifies() -> None:
    """The smallest policy goes through the same roles."""
    key = private_key_at(MASTERS[0], key_path(RECEIVE, 0))
    pubkey = ecdsa.public_key(key)
    script = multisig_script(1, [pubkey])
    psbt = two_of_three_psbt(1)
    origin = KeyOrigin(MASTERS[0].fingerprint, key_path(RECEIVE, 0))
    psbt = replace(
        psbt,
        inputs=(
            PsbtInput(
                witness_utxo=TxOut(100_000, p2wsh_script_pubkey(script)),
                witness_script=script,
                bip32_derivations={pubkey: origin},
            ),
        ),
    )
    tx = extract(finalize(_signer(MASTERS[0])(psbt)))
    assert tx.witnesses[0][0] == b"" and tx.witnesses[0][-1] == script
    assert len(tx.witnesses[0]) == 3
