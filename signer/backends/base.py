"""What the daemon needs from the thing that holds its key, and the errors a device can raise."""

from __future__ import annotations

from typing import Protocol

from pool.hdkeys import KeyOrigin
from pool.networks import Network
from pool.psbt import Psbt
from pool.series import Series
from signer.device_monitor import DeviceCondition


class BackendError(Exception):
    """The device failed; the message is safe to log and to send to the coordinator."""


class DeviceTimeout(BackendError):
    """The device did not answer within its deadline (it has been given up on, not hung on)."""


class DeviceRefused(BackendError):
    """The device (its user) declined the request."""


class Backend(Protocol):
    """One master key, on a device or in software, for one network."""

    kind: str
    """``emulator`` or ``hwi``."""
    model: str
    """The device model as hwilib names it, or ``software``."""
    network: Network

    def fingerprint(self) -> bytes: ...

    def xpub(self, path: tuple[int, ...]) -> tuple[str, KeyOrigin]:
        """The extended public key at ``path`` (in the network's encoding) and its origin."""
        ...

    def register_series(self, series: Series) -> str:
        """Make the device know the series' multisig; its name there (``""`` if none)."""
        ...

    def display_address(self, series: Series, branch: int, index: int) -> tuple[str, bool]:
        """The address as the device computes it, and whether its screen showed it."""
        ...

    def sign(self, psbt: Psbt) -> Psbt:
        """``psbt`` with this key's partial signatures added (nothing else changed)."""
        ...

    def probe(self, timeout: float) -> tuple[DeviceCondition, str]:
        """The device's condition now, and why it is not usable, within about ``timeout``
        seconds, without disturbing a call in flight (a device found gone has that call
        abandoned: it fails at once)."""
        ...

    def close(self) -> None: ...


def our_keys(psbt: Psbt, fingerprint: bytes) -> list[tuple[int, bytes]]:
    """``(input index, public key)`` of every key of ``fingerprint`` the PSBT asks to sign with."""
    return [
        (index, pubkey)
        for index, psbt_input in enumerate(psbt.inputs)
        for pubkey, origin in psbt_input.bip32_derivations.items()
        if origin.fingerprint == fingerprint
    ]


def new_signatures(before: Psbt, after: Psbt, fingerprint: bytes) -> dict[tuple[int, bytes], bytes]:
    """The signatures ``after`` holds, and ``before`` did not, for keys of ``fingerprint``."""
    found: dict[tuple[int, bytes], bytes] = {}
    for index, pubkey in our_keys(before, fingerprint):
        signature = after.inputs[index].partial_sigs.get(pubkey)
        if signature is not None and signature != before.inputs[index].partial_sigs.get(pubkey):
            found[index, pubkey] = signature
    return found
