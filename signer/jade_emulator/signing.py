"""Jade's ``sign_psbt``: the checks a Jade makes before it signs, then the core's signer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pool.errors import PsbtError
from pool.hdkeys import HARDENED, ExtendedPrivateKey
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
    an input to sign, outputs worth more than the inputs; and as the user refuses (``refuse``,
    or an output paying to this wallet that is no registered multisig's change). A previous
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
    if refuse:
        log.info("sign_psbt: the user rejects the transaction (fault injected)")
        raise JadeRpcError(USER_CANCELLED, DECLINED)
    unverified = _unverified_change(psbt, master, registered)
    if unverified is not None:
        log.info("sign_psbt refused: output %d is unverified change", unverified)
        raise JadeRpcError(
            USER_CANCELLED,
            f"{DECLINED}: output {unverified} pays to this wallet "
            "but matches no registered multisig",
        )
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


def _unverified_change(
    psbt: Psbt, master: ExtendedPrivateKey, registered: Sequence[Multisig]
) -> int | None:
    """The first output that pays to this wallet's key (by its BIP32 derivation) without being
    a registered multisig's script at that key's unhardened path tail, as Jade validates change.
    """
    for index, (output, txout) in enumerate(zip(psbt.outputs, psbt.tx.outputs, strict=True)):
        tails = [
            _unhardened_tail(origin.path)
            for pubkey, origin in output.bip32_derivations.items()
            if origin.fingerprint == master.fingerprint
            and master.derive_path(origin.path).public_key == pubkey
        ]
        if not tails:
            continue
        keys = set(output.bip32_derivations)
        if not any(m.matches_output(tails[0], keys, txout.script_pubkey) for m in registered):
            return index
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
