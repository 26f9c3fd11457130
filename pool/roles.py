"""Bitcoin Core's PSBT roles (signer, combiner, finalizer, extractor) for P2WSH m-of-n inputs.

Every function returns a new ``Psbt`` and never changes its argument. Inputs are native P2WSH
bare multisig spends: each carries its witness UTXO and its witness script, and is signed with
SIGHASH_ALL over the BIP143 digest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any, NamedTuple, TypeVar

from pool import ecdsa
from pool.errors import PsbtError, VpoolError
from pool.psbt import Psbt, PsbtInput, PsbtOutput
from pool.script import p2wsh_script_pubkey, parse_multisig_script
from pool.sighash import SIGHASH_ALL, SegwitV0Sighasher
from pool.tx import Transaction, TxIn

_Map = TypeVar("_Map", PsbtInput, PsbtOutput)
_V = TypeVar("_V")


def input_sighash(psbt: Psbt, index: int, sighasher: SegwitV0Sighasher | None = None) -> bytes:
    """The SIGHASH_ALL BIP143 digest of P2WSH input ``index``.

    Pass the same ``sighasher`` for every input of a PSBT so that its transaction-wide hashes are
    computed once.
    """
    witness_script, amount = _p2wsh_spend(psbt, index)
    sighasher = sighasher or SegwitV0Sighasher(psbt.tx)
    return sighasher.digest(index, witness_script, amount, SIGHASH_ALL)


def _p2wsh_spend(psbt: Psbt, index: int) -> tuple[bytes, int]:
    """``(witness script, amount)`` of a P2WSH input, checked against the output it spends."""
    if not 0 <= index < len(psbt.inputs):
        raise PsbtError(f"input {index} does not exist")
    psbt_input = psbt.inputs[index]
    if psbt_input.witness_utxo is None:
        raise PsbtError(f"input {index} has no witness UTXO")
    if psbt_input.witness_script is None:
        raise PsbtError(f"input {index} has no witness script")
    if p2wsh_script_pubkey(psbt_input.witness_script) != psbt_input.witness_utxo.script_pubkey:
        raise PsbtError(f"input {index}: the witness script does not hash to the output spent")
    return psbt_input.witness_script, psbt_input.witness_utxo.value


class _MultisigSpend(NamedTuple):
    m: int
    keys: tuple[bytes, ...]
    witness_script: bytes
    digest: bytes
    """The SIGHASH_ALL BIP143 digest."""


def _multisig_spend(psbt: Psbt, index: int, sighasher: SegwitV0Sighasher) -> _MultisigSpend:
    """What signing, checking and finalizing input ``index`` need, all checked."""
    witness_script, amount = _p2wsh_spend(psbt, index)
    try:
        m, keys = parse_multisig_script(witness_script)
    except VpoolError as exc:
        raise PsbtError(f"input {index}: witness script: {exc}") from None
    digest = sighasher.digest(index, witness_script, amount, SIGHASH_ALL)
    return _MultisigSpend(m, keys, witness_script, digest)


def sign_psbt(
    psbt: Psbt, fingerprint: bytes, private_key_at: Callable[[tuple[int, ...]], bytes]
) -> Psbt:
    """Add this signer's SIGHASH_ALL signatures to every input one of its keys belongs to.

    ``private_key_at`` maps a derivation path from the master key whose fingerprint is
    ``fingerprint`` to the 32-byte private key. Each derived key must match the public key the
    PSBT names for that path and appear in the input's witness script.
    """
    sighasher = SegwitV0Sighasher(psbt.tx)
    inputs = list(psbt.inputs)
    for index, psbt_input in enumerate(psbt.inputs):
        ours = {
            pubkey: origin
            for pubkey, origin in psbt_input.bip32_derivations.items()
            if origin.fingerprint == fingerprint
        }
        if not ours:
            continue
        if psbt_input.sighash_type not in (None, SIGHASH_ALL):
            raise PsbtError(
                f"input {index} asks for sighash type 0x{psbt_input.sighash_type:02x};"
                " only SIGHASH_ALL is signed"
            )
        spend = _multisig_spend(psbt, index, sighasher)
        partial_sigs = dict(psbt_input.partial_sigs)
        for pubkey, origin in ours.items():
            private_key = private_key_at(origin.path)
            if ecdsa.public_key(private_key) != pubkey:
                raise PsbtError(
                    f"input {index}: the key derived at {origin.to_string()} is not {pubkey.hex()}"
                )
            if pubkey not in spend.keys:
                raise PsbtError(f"input {index}: key {pubkey.hex()} is not in the witness script")
            partial_sigs[pubkey] = ecdsa.sign(private_key, spend.digest) + bytes([SIGHASH_ALL])
        inputs[index] = replace(psbt_input, partial_sigs=partial_sigs)
    return replace(psbt, inputs=tuple(inputs))


def combine(psbts: Sequence[Psbt]) -> Psbt:
    """Merge PSBTs of the same unsigned transaction (the BIP174 Combiner).

    Every map becomes the union of the corresponding maps. When two PSBTs hold different values
    for the same key (or the same single field), the value of the earliest PSBT in ``psbts`` is
    kept.
    """
    if not psbts:
        raise PsbtError("nothing to combine")
    first = psbts[0]
    for position, other in enumerate(psbts[1:], start=1):
        if other.tx != first.tx:
            raise PsbtError(f"PSBT {position} has another unsigned transaction than PSBT 0")
    return replace(
        first,
        xpubs=_union([p.xpubs for p in psbts]),
        unknown=_union([p.unknown for p in psbts]),
        inputs=tuple(_merge([p.inputs[i] for p in psbts]) for i in range(len(first.inputs))),
        outputs=tuple(_merge([p.outputs[i] for p in psbts]) for i in range(len(first.outputs))),
    )


def _union(maps: Sequence[dict[bytes, _V]]) -> dict[bytes, _V]:
    """All keys of all maps; the first map holding a key gives its value."""
    merged: dict[bytes, _V] = {}
    for mapping in maps:
        for key, value in mapping.items():
            merged.setdefault(key, value)
    return merged


def _merge(maps: Sequence[_Map]) -> _Map:
    """Union of dict fields; for single fields, the first value that is set."""
    changes: dict[str, Any] = {}
    for field in fields(maps[0]):
        values = [getattr(m, field.name) for m in maps]
        if isinstance(values[0], dict):
            changes[field.name] = _union(values)
        else:
            changes[field.name] = next((v for v in values if v is not None), None)
    return replace(maps[0], **changes)


def verify_partial_sigs(
    psbt: Psbt, added: Mapping[tuple[int, bytes], bytes] | None = None
) -> list[tuple[int, bytes, bool]]:
    """``(input index, public key, valid)`` for every partial signature, in input order.

    A signature is valid when its public key is in the witness script, its sighash byte is
    SIGHASH_ALL and it is a strict low-S signature of the input's BIP143 digest. ``added``
    (``(input index, public key)`` → signature) are checked as if added to the PSBT's partial
    signatures first (a signer's new signatures, without building the signed PSBT).
    """
    extra: dict[int, dict[bytes, bytes]] = {}
    for (index, pubkey), signature in (added or {}).items():
        if not 0 <= index < len(psbt.inputs):
            raise PsbtError(f"input {index} does not exist")
        extra.setdefault(index, {})[pubkey] = signature
    sighasher = SegwitV0Sighasher(psbt.tx)
    results: list[tuple[int, bytes, bool]] = []
    for index, psbt_input in enumerate(psbt.inputs):
        partial_sigs = psbt_input.partial_sigs
        if index in extra:
            partial_sigs = {**partial_sigs, **extra[index]}
        if not partial_sigs:
            continue
        spend = _multisig_spend(psbt, index, sighasher)
        for pubkey, signature in partial_sigs.items():
            valid = pubkey in spend.keys and _is_valid_signature(pubkey, signature, spend.digest)
            results.append((index, pubkey, valid))
    return results


def _is_valid_signature(pubkey: bytes, signature: bytes, digest: bytes) -> bool:
    """A DER signature followed by the SIGHASH_ALL byte, valid for ``digest``."""
    return signature[-1:] == bytes([SIGHASH_ALL]) and ecdsa.verify(pubkey, signature[:-1], digest)


def finalize(psbt: Psbt) -> Psbt:
    """Build each input's final witness from m valid signatures (the BIP174 Finalizer).

    The witness is ``[b"", signatures in witness-script key order, witness script]``. As BIP174
    requires, everything but the UTXOs and unknown entries is then cleared from the input.
    Inputs already finalized are left as they are.
    """
    sighasher = SegwitV0Sighasher(psbt.tx)
    inputs = tuple(
        psbt_input if psbt_input.is_finalized else _finalize_input(psbt, index, sighasher)
        for index, psbt_input in enumerate(psbt.inputs)
    )
    return replace(psbt, inputs=inputs)


def _finalize_input(psbt: Psbt, index: int, sighasher: SegwitV0Sighasher) -> PsbtInput:
    psbt_input = psbt.inputs[index]
    spend = _multisig_spend(psbt, index, sighasher)
    valid: list[bytes] = []
    for pubkey in spend.keys:  # the first m valid signatures in key order; no more verified
        if len(valid) == spend.m:
            break
        signature = psbt_input.partial_sigs.get(pubkey)
        if signature is not None and _is_valid_signature(pubkey, signature, spend.digest):
            valid.append(signature)
    if len(valid) < spend.m:
        raise PsbtError(f"input {index} has {len(valid)} valid signatures, {spend.m} needed")
    return PsbtInput(
        witness_utxo=psbt_input.witness_utxo,
        non_witness_utxo=psbt_input.non_witness_utxo,
        final_script_witness=(b"", *valid[: spend.m], spend.witness_script),
        unknown=psbt_input.unknown,
    )


def extract(psbt: Psbt) -> Transaction:
    """The network transaction of a fully finalized PSBT (the BIP174 Transaction Extractor)."""
    not_final = [index for index, inp in enumerate(psbt.inputs) if not inp.is_finalized]
    if not_final:
        raise PsbtError(f"inputs {not_final} are not finalized")
    inputs = tuple(
        TxIn(txin.prevout, txin.sequence, psbt_input.final_script_sig or b"")
        for txin, psbt_input in zip(psbt.tx.inputs, psbt.inputs, strict=True)
    )
    witnesses = tuple(psbt_input.final_script_witness or () for psbt_input in psbt.inputs)
    return Transaction(psbt.tx.version, inputs, psbt.tx.outputs, psbt.tx.locktime, witnesses)
