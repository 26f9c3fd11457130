"""Where the signer's key lives: ``emulator`` (an encrypted keystore) or ``hwi`` (a device)."""

from __future__ import annotations

from pool.networks import Network
from signer import keystore
from signer.backends.base import Backend, BackendError
from signer.backends.emulator import EmulatorBackend
from signer.config import EmulatorBackendConfig, HwiBackendConfig


def open_backend(config: EmulatorBackendConfig | HwiBackendConfig, network: Network) -> Backend:
    """The configured backend, ready (keystore decrypted, or device found and opened)."""
    if isinstance(config, HwiBackendConfig):
        from signer.backends.hwi import HwiBackend  # imports hwilib: only when a device is used

        return HwiBackend(config, network)
    if config.passphrase_env is not None:
        passphrase = keystore.passphrase_from_env(config.passphrase_env)
    else:
        assert config.passphrase_file is not None
        passphrase = keystore.passphrase_from_file(config.passphrase_file)
    unlocked = keystore.load_keystore(config.keystore, passphrase)
    if unlocked.network.name != network.name:
        raise BackendError(
            f"backend.keystore: the keystore is for {unlocked.network.name}, not {network.name}"
        )
    return EmulatorBackend(unlocked.master, network)
