"""A 2-of-3 P2WSH pool spend built by hand from three fixed BIP32 seeds, for PSBT tests."""

from __future__ import annotations

from pool.hdkeys import HARDENED, ExtendedPrivateKey, KeyOrigin
from pool.networks import TESTNET
from pool.psbt import Psbt, PsbtInput, PsbtOutput
from pool.script import multisig_script, p2wsh_script_pubkey
from pool.tx import OutPoint, Transaction, TxIn, TxOut

MASTERS = tuple(ExtendedPrivateKey.from_seed(bytes([seed]) * 32) for seed in (1, 2, 3))
ACCOUNT_PATH = (48 + HARDENED, 1 + HARDENED, 0 + HARDENED, 2 + HARDENED)
THRESHOLD = 2
RECEIVE, CHANGE = 0, 1
DESTINATION = b"\x00\x14" + bytes(range(20))
INPUT_VALUE = 100_000


def key_path(branch: int, index: int) -> tuple[int, ...]:
    return (*ACCOUNT_PATH, branch, index)


def private_key_at(master: ExtendedPrivateKey, path: tuple[int, ...]) -> bytes:
    return master.derive_path(path).private_key


def pool_script(branch: int, index: int) -> tuple[bytes, dict[bytes, KeyOrigin]]:
    """The witness script at ``branch/index`` and the origin of each of its keys."""
    path = key_path(branch, index)
    origins = {
        master.derive_path(path).public_key: KeyOrigin(master.fingerprint, path)
        for master in MASTERS
    }
    return multisig_script(THRESHOLD, sorted(origins)), origins


def account_xpubs() -> dict[bytes, KeyOrigin]:
    return {
        master.derive_path(ACCOUNT_PATH).public().serialize(TESTNET): KeyOrigin(
            master.fingerprint, ACCOUNT_PATH
        )
        for master in MASTERS
    }


def two_of_three_psbt(n_inputs: int = 2) -> Psbt:
    """Spend ``n_inputs`` pool outputs to one destination and one change output."""
    txins = []
    psbt_inputs = []
    for index in range(n_inputs):
        witness_script, origins = pool_script(RECEIVE, index)
        txins.append(TxIn(OutPoint(bytes([index + 1]) * 32, index), 0xFFFFFFFD))
        psbt_inputs.append(
            PsbtInput(
                witness_utxo=TxOut(INPUT_VALUE + index, p2wsh_script_pubkey(witness_script)),
                witness_script=witness_script,
                bip32_derivations=origins,
            )
        )
    change_script, change_origins = pool_script(CHANGE, 0)
    total = sum(INPUT_VALUE + index for index in range(n_inputs))
    tx = Transaction(
        version=2,
        inputs=tuple(txins),
        outputs=(
            TxOut(50_000, DESTINATION),
            TxOut(total - 50_000 - 1_000, p2wsh_script_pubkey(change_script)),
        ),
        locktime=800_000,
    )
    return Psbt(
        tx=tx,
        inputs=tuple(psbt_inputs),
        outputs=(
            PsbtOutput(),
            PsbtOutput(witness_script=change_script, bip32_derivations=change_origins),
        ),
        xpubs=account_xpubs(),
    )
