"""The PSBT fields of the pool's own scripts (withdrawal rule T2), shared by every builder.

An input spending a pool output carries its witness UTXO, its witness script and the BIP32
derivation of each of the series' keys; a change output carries the witness script and the
derivations; the global map carries the xpub of every key of every series involved. Nothing else:
no sighash type (SIGHASH_ALL is implied). Withdrawal rounds and refunds build their PSBTs with
these functions, so a signer checks one definition of the fields.
"""

from __future__ import annotations

from collections.abc import Iterable

from pool.descriptor import DerivedScript
from pool.hdkeys import KeyOrigin
from pool.networks import Network
from pool.psbt import PsbtInput, PsbtOutput
from pool.series import Series
from pool.tx import TxOut


def _derivations(derived: DerivedScript) -> dict[bytes, KeyOrigin]:
    """Public key → full key origin (account origin, branch, index) of each key of the script."""
    return dict(zip(derived.pubkeys, derived.origins, strict=True))


def pool_input(series: Series, branch: int, index: int, value: int) -> PsbtInput:
    """The input map of a pool UTXO of ``value`` satoshis at (series, branch, index)."""
    derived = series.derive(branch, index)
    return PsbtInput(
        witness_utxo=TxOut(value, derived.script_pubkey),
        witness_script=derived.witness_script,
        bip32_derivations=_derivations(derived),
    )


def pool_output(derived: DerivedScript) -> PsbtOutput:
    """The output map of an output paying the pool's ``derived`` script (change)."""
    return PsbtOutput(
        witness_script=derived.witness_script, bip32_derivations=_derivations(derived)
    )


def global_xpubs(series: Iterable[Series], network: Network) -> dict[bytes, KeyOrigin]:
    """Serialized account xpub → account origin, for every key of every series given."""
    return {
        key.xpub.serialize(network): key.origin
        for s in sorted(series, key=lambda s: s.id)
        for key in s.keys
    }
