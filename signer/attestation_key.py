"""The signer's fee attestation key (docs/fee-attestations.md): a secp256k1 key of its own,
never a key of the pool, with which it signs the fee statements of the rounds it signs.

Where it comes from:

- **emulator backend**: derived from the signer's keystore at ``m/7431h/0h`` (``PATH``), a
  hardened path no pool series uses (pool keys are ``m/48h/...``): nothing new to back up, and
  the same key after a restore from the mnemonic.
- **hwi backend**: a device cannot sign an arbitrary message without a person at it (and most
  sign only transactions or BIP137 messages at one of their own paths), so the signer keeps a
  software key in its data dir, ``attestation-key.json``: a keystore file (ChaCha20-Poly1305
  under scrypt, ``signer.keystore``) of a random master made at first start, the key derived at
  the same ``PATH``. Its passphrase comes from ``[backend] attestation_passphrase_env`` or
  ``attestation_passphrase_file``; without one the signer attests nothing (GetInfo then shows
  no attestation key). Losing the file changes the key: the operator publishes the new one.

An attestation key moves no coins: a stolen one can sign a false fee statement, which clients
detect unless m signers' keys are stolen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pool import ecdsa
from pool.hdkeys import HARDENED, ExtendedPrivateKey
from pool.networks import Network
from signer import keystore
from signer.backends.base import Backend
from signer.backends.emulator import EmulatorBackend
from signer.config import HwiBackendConfig, SignerConfig

log = logging.getLogger(__name__)

PATH = (7431 + HARDENED, 0 + HARDENED)
"""``m/7431h/0h``: hardened, outside BIP44/45/48/49/84/86, never a pool path."""
FILE_NAME = "attestation-key.json"


def key_at_path(master: ExtendedPrivateKey) -> bytes:
    return master.derive_path(PATH).private_key


def open_attestation_key(config: SignerConfig, backend: Backend) -> bytes | None:
    """The signer's attestation private key; None for an hwi signer without a passphrase
    source for its key file (it then attests nothing)."""
    if isinstance(backend, EmulatorBackend):
        return backend.attestation_key()
    if not isinstance(config.backend, HwiBackendConfig):
        return None
    passphrase = hwi_attestation_passphrase(config.backend)
    if passphrase is None:
        log.warning(
            "no backend.attestation_passphrase_env or _file: this signer attests no fee statement"
        )
        return None
    return load_or_create(config.data_dir / FILE_NAME, passphrase, config.network)


def hwi_attestation_passphrase(config: HwiBackendConfig) -> str | None:
    if config.attestation_passphrase_env is not None:
        return keystore.passphrase_from_env(config.attestation_passphrase_env)
    if config.attestation_passphrase_file is not None:
        return keystore.passphrase_from_file(config.attestation_passphrase_file)
    return None


def load_or_create(path: Path, passphrase: str, network: Network) -> bytes:
    """The key of the attestation keystore at ``path``, made (random master) if missing."""
    if path.exists():
        unlocked = keystore.load_keystore(path, passphrase)
    else:
        master = ExtendedPrivateKey.from_seed(os.urandom(32))
        unlocked = keystore.create_keystore(
            path, master.to_string(network), "xprv", passphrase, network.name
        )
        log.info("made a new fee attestation key in %s: publish its public key", path)
    return key_at_path(unlocked.master)


def public_key(private_key: bytes | None) -> bytes:
    return b"" if private_key is None else ecdsa.public_key(private_key)
