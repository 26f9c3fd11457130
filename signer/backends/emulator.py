"""The software cosigner: the master key of an encrypted keystore, signing through the core."""

from __future__ import annotations

import threading

from pool.hdkeys import ExtendedPrivateKey, KeyOrigin
from pool.networks import Network
from pool.psbt import Psbt
from pool.roles import sign_psbt
from pool.series import Series
from signer.device_monitor import DeviceCondition

_LAST_LEVELS = 1
"""Levels derived for each input: the index below its branch key."""


class EmulatorBackend:
    """Signs with libsecp256k1 through ``pool.roles``; has no screen and registers nothing.

    The branch keys (every level of a path but the last) are derived once and kept in this
    backend, beside the master key it already holds: an input's key then costs one derivation,
    not six. Nothing is kept outside the backend, and ``close`` forgets them.
    """

    kind = "emulator"
    model = "software"

    def __init__(self, master: ExtendedPrivateKey, network: Network) -> None:
        self._master = master
        self.network = network
        self._accounts: dict[tuple[int, ...], ExtendedPrivateKey] = {}
        self._accounts_lock = threading.Lock()

    def attestation_key(self) -> bytes:
        """The fee attestation key, at ``signer.attestation_key.PATH`` (never a pool path)."""
        from signer.attestation_key import key_at_path

        return key_at_path(self._master)

    def fingerprint(self) -> bytes:
        return self._master.fingerprint

    def xpub(self, path: tuple[int, ...]) -> tuple[str, KeyOrigin]:
        xpub = self._master.derive_path(path).public().to_string(self.network)
        return xpub, KeyOrigin(self._master.fingerprint, path)

    def register_series(self, series: Series) -> str:
        return ""

    def display_address(self, series: Series, branch: int, index: int) -> tuple[str, bool]:
        return series.address(branch, index, self.network), False

    def sign(self, psbt: Psbt) -> Psbt:
        return sign_psbt(psbt, self._master.fingerprint, self._private_key_at)

    def _private_key_at(self, path: tuple[int, ...]) -> bytes:
        """The private key at ``path`` from the master: the cached branch key, then the index."""
        split = max(0, len(path) - _LAST_LEVELS)
        return self._account(path[:split]).derive_path(path[split:]).private_key

    def _account(self, path: tuple[int, ...]) -> ExtendedPrivateKey:
        with self._accounts_lock:
            account = self._accounts.get(path)
            if account is None:
                account = self._master.derive_path(path)
                self._accounts[path] = account
            return account

    def probe(self, timeout: float) -> tuple[DeviceCondition, str]:
        return DeviceCondition.SOFTWARE, ""

    def close(self) -> None:
        """Forget the derived account keys."""
        with self._accounts_lock:
            self._accounts.clear()
