"""Jade's ``sign_psbt``: the checks a Jade makes before it signs, then the core's signer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pool.errors import PsbtError
from pool.hdkeys import HARDENED, ExtendedPrivateKey, KeyOrigin
from pool.psbt import Psbt
from pool.roles import sign_psbt
from pool.sighash import SIGHASH_ALL
from pool.tx import Transaction
from signer.jade_emulator.params import bad
from signer.jade_emulator.protocol import USER_CANCELLED, JadeRpcError
from signer.jade_emulator.registry import Multisig

log = logging.getLogger(__name__)

DECLINED = "User declined to sign psbt"


PREVIOUS_TX_MISSING = "Previous transaction missing for input"
PREVIOUS_TX_MISMATCH = "Previous transaction output does not match the witness utxo"


def sign_request(
    raw: bytes,
    master: ExtendedPrivateKey,
    registered: Sequence[Multisig],
    *,
    refuse: bool,
    require_previous_tx: bool = False,
) -> bytes:
    """The PSBT ``raw`` with this wallet's signatures added, in the core's canonical encoding.

    Refused as Jade refuses: unparsable, an input without its UTXO, a sighash other than ALL on
    an input to sign, outputs worth more than the inputs; and as the user refuses (``refuse``).
    What the user is shown is logged (``review_outputs``: change hidden only when it is the
    change of the one registered multisig all signed inputs match). A previous
    transaction whose output is not the input's witness UTXO is refused; with
    ``require_previous_tx`` (as Trezor and BitBox02) so is an input to sign without one.
    """
    try:
        psbt = Psbt.parse(raw)
    except PsbtError:
        raise bad("Failed to extract psbt from passed bytes") from None
    input_amount = sum(_utxo_value(psbt, index) for index in range(len(psbt.inputs)))
    for psbt_input, txin in zip(psbt.inputs, psbt.tx.inputs, strict=True):
        origins = psbt_input.bip32_derivations.values()
        ours = any(origin.fingerprint == master.fingerprint for origin in origins)
        if ours and psbt_input.sighash_type not in (None, SIGHASH_ALL):
            raise bad("Unsupported sighash")
        previous = psbt_input.non_witness_utxo
        if ours and previous is None and require_previous_tx:
            raise bad(PREVIOUS_TX_MISSING)
        witness_utxo = psbt_input.witness_utxo
        if (
            previous is not None
            and witness_utxo is not None
            and Transaction.parse(previous).outputs[txin.prevout.vout] != witness_utxo
        ):
            raise bad(PREVIOUS_TX_MISMATCH)
    if psbt.tx.total_output_value > input_amount:
        raise bad("Invalid input/output amounts")
    review = review_outputs(psbt, master, registered)
    log.info(
        "sign_psbt: outputs shown %s, change %s%s",
        list(review.shown),
        list(review.change),
        "" if review.record is not None else " (change detection abandoned: no one record)",
    )
    if refuse:
        log.info("sign_psbt: the user rejects the transaction (fault injected)")
        raise JadeRpcError(USER_CANCELLED, DECLINED)
    try:
        signed = sign_psbt(
            psbt, master.fingerprint, lambda path: master.derive_path(path).private_key
        )
    except PsbtError as e:
        raise bad(str(e)) from None
    added = sum(
        len(after.partial_sigs) - len(before.partial_sigs)
        for before, after in zip(psbt.inputs, signed.inputs, strict=True)
    )
    log.info("sign_psbt: %d signatures on %d inputs", added, len(psbt.inputs))
    return signed.serialize()


@dataclass(frozen=True)
class Review:
    """What the user is shown of a transaction, as the firmware decides it
    (``main/process/sign_psbt.c``): the one registered multisig that every input to sign
    matches (None: change detection abandoned), the outputs hidden as its change, and the
    outputs shown one screen each for the user to approve. Nothing here is refused: an output
    that pays to this wallet but cannot be verified as change is simply shown."""

    record: Multisig | None
    change: tuple[int, ...]
    shown: tuple[int, ...]


UNUSUAL_CHANGE_INDEX = 10_000
"""A change index from here on is shown with a warning (``MAX_PATH_PTR``), never hidden."""


def review_outputs(
    psbt: Psbt, master: ExtendedPrivateKey, registered: Sequence[Multisig]
) -> Review:
    record = _record_of_inputs(psbt, master, registered)
    change: list[int] = []
    shown: list[int] = []
    for index, (output, txout) in enumerate(zip(psbt.outputs, psbt.tx.outputs, strict=True)):
        tail = _our_tail(output.bip32_derivations, master)
        is_change = (
            record is not None
            and tail is not None
            and (not tail or tail[-1] < UNUSUAL_CHANGE_INDEX)
            and record.matches_output(tail, set(output.bip32_derivations), txout.script_pubkey)
        )
        (change if is_change else shown).append(index)
    return Review(record, tuple(change), tuple(shown))


def _record_of_inputs(
    psbt: Psbt, master: ExtendedPrivateKey, registered: Sequence[Multisig]
) -> Multisig | None:
    """The single registered multisig that every input this wallet signs matches; None when an
    input matches none, or the inputs match different records."""
    found: Multisig | None = None
    for psbt_input in psbt.inputs:
        tail = _our_tail(psbt_input.bip32_derivations, master)
        if tail is None:
            continue
        utxo = psbt_input.witness_utxo
        keys = set(psbt_input.bip32_derivations)
        matching = [
            m
            for m in registered
            if utxo is not None and m.matches_output(tail, keys, utxo.script_pubkey)
        ]
        if not matching or (found is not None and found not in matching):
            return None
        found = found or matching[0]
    return found


def _our_tail(
    derivations: Mapping[bytes, KeyOrigin], master: ExtendedPrivateKey
) -> tuple[int, ...] | None:
    """The unhardened tail of this wallet's key among ``derivations`` (None: not ours)."""
    for pubkey, origin in derivations.items():
        if (
            origin.fingerprint == master.fingerprint
            and master.derive_path(origin.path).public_key == pubkey
        ):
            return _unhardened_tail(origin.path)
    return None


def _unhardened_tail(path: tuple[int, ...]) -> tuple[int, ...]:
    """The steps after the last hardened one."""
    for position in range(len(path), 0, -1):
        if path[position - 1] >= HARDENED:
            return path[position:]
    return path


def _utxo_value(psbt: Psbt, index: int) -> int:
    """The value of the output input ``index`` spends (Jade's "best utxo")."""
    psbt_input = psbt.inputs[index]
    if psbt_input.witness_utxo is not None:
        return psbt_input.witness_utxo.value
    if psbt_input.non_witness_utxo is not None:
        vout = psbt.tx.inputs[index].prevout.vout
        return Transaction.parse(psbt_input.non_witness_utxo).outputs[vout].value
    raise bad("Input utxo missing")
