"""The software cosigner: the master key of an encrypted keystore, signing through the core."""

from __future__ import annotations

from pool.hdkeys import ExtendedPrivateKey, KeyOrigin
from pool.networks import Network
from pool.psbt import Psbt
from pool.roles import sign_psbt
from pool.series import Series
from signer.device_monitor import DeviceCondition


class EmulatorBackend:
    """Signs with libsecp256k1 through ``pool.roles``; has no screen and registers nothing."""

    kind = "emulator"
    model = "software"

    def __init__(self, master: ExtendedPrivateKey, network: Network) -> None:
        self._master = master
        self.network = network

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
        master = self._master
        return sign_psbt(psbt, master.fingerprint, lambda p: master.derive_path(p).private_key)

    def probe(self, timeout: float) -> tuple[DeviceCondition, str]:
        return DeviceCondition.SOFTWARE, ""

    def close(self) -> None:
        """Nothing to release."""
