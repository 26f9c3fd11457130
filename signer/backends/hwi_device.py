"""hwilib 3.2.0 behind the worker's requests: open the device, and get xpubs, show addresses
(registering the multisig where the device does that) and sign PSBTs.

Runs in the worker process only (``hwi_worker``). A machine without libusb can still reach
emulated devices: when hwilib's USB scan fails, each device module is scanned on its own.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from hwilib import commands
from hwilib.common import Chain
from hwilib.descriptor import MultisigDescriptor, WSHDescriptor, parse_descriptor
from hwilib.devices import __all__ as DEVICE_MODULES
from hwilib.devices.jade import JadeClient
from hwilib.errors import ActionCanceledError
from hwilib.hwwclient import HardwareWalletClient

from signer.backends.hwi_worker import Declined, DeviceSpec

log = logging.getLogger(__name__)

CHAINS = {
    "mainnet": Chain.MAIN,
    "testnet": Chain.TEST,
    "signet": Chain.SIGNET,
    "regtest": Chain.REGTEST,
}
_NO_LIBUSB = (
    "USB devices cannot be scanned (libusb-1.0 is missing: install the libusb-1.0-0 package); "
    "only emulators and serial or TCP devices were searched"
)


class DeviceError(Exception):
    """The device cannot be found or opened."""


class Device:
    """The hwilib client, opened on first use and reopened after a failure."""

    def __init__(self, spec: DeviceSpec) -> None:
        self._spec = spec
        self._chain = CHAINS[spec.network]
        self._client: HardwareWalletClient | None = None
        self._model = ""
        self._ops: dict[str, Callable[[HardwareWalletClient, Any], Any]] = {
            "connect": lambda client, _: (client.get_master_fingerprint().hex(), self._model),
            "xpub": lambda client, path: commands.getxpub(client, path)["xpub"],
            "display": _display,
            "sign": lambda client, psbt: commands.signtx(client, psbt)["psbt"],
        }

    def call(self, op: str, argument: Any) -> Any:
        if self._client is None:
            self._client = self._open()
        try:
            return self._ops[op](self._client, argument)
        except ActionCanceledError as e:
            raise Declined(str(e)) from None

    def drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as e:
                log.debug("closing the client failed: %s", e)
            self._client = None

    def _open(self) -> HardwareWalletClient:
        spec = self._spec
        if spec.device_type is not None and spec.device_path is not None:
            client = commands.get_client(spec.device_type, spec.device_path, chain=self._chain)
            self._model = spec.device_type
            where = f"{spec.device_type} at {spec.device_path}"
        else:
            client, self._model = self._find()
            where = f"{self._model} with fingerprint {spec.fingerprint}"
        if client is None:
            raise DeviceError(f"no client for {where}")
        _wait_as_long_as(client, spec.patience_seconds)
        found = client.get_master_fingerprint().hex()
        if spec.fingerprint is not None and found != spec.fingerprint:
            client.close()
            raise DeviceError(f"the {where} has fingerprint {found}, not {spec.fingerprint}")
        return client

    def _find(self) -> tuple[HardwareWalletClient | None, str]:
        """Enumerate every device (emulators too) and open the one with our fingerprint."""
        devices, problems = _enumerate(self._chain)
        for entry in devices:
            if entry.get("fingerprint") == self._spec.fingerprint:
                client = commands.get_client(entry["type"], entry["path"], chain=self._chain)
                return client, str(entry["model"])
        problems += [f"{d['model']} at {d['path']}: {d['error']}" for d in devices if "error" in d]
        seen = len(devices)
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise DeviceError(
            f"no device with fingerprint {self._spec.fingerprint} among {seen} found{detail}"
        )


def _wait_as_long_as(client: HardwareWalletClient, seconds: float) -> None:
    """Make the client's transport wait ``seconds`` for an answer before it gives up.

    hwilib's Jade client reads with a fixed 120 s timeout (``DEFAULT_SERIAL_TIMEOUT``), so a
    person taking longer than that to review a round would see the request fail on the host
    while the device still shows it. The daemon's own deadline (the worker is killed when it
    passes) is the one that counts; the transport must not expire first. Other hwilib clients
    wait on the device without a read timeout of their own.
    """
    if seconds <= 0 or not isinstance(client, JadeClient):
        return
    transport = client.jade.jade.impl
    transport.timeout = seconds
    for handle in ("tcp_sock", "ser"):  # TCP (emulator) or serial (USB)
        connection = getattr(transport, handle, None)
        if connection is None:
            continue
        if handle == "tcp_sock":
            connection.settimeout(seconds)
        else:
            connection.timeout = seconds
            connection.write_timeout = seconds


def _enumerate(chain: Chain) -> tuple[list[dict[str, Any]], list[str]]:
    """hwilib's enumerate; if a USB scan fails (no libusb), every device module on its own."""
    try:
        return commands.enumerate(chain=chain, allow_emulators=True), []
    except Exception as e:
        log.warning("%s (%s)", _NO_LIBUSB, e)
    devices: list[dict[str, Any]] = []
    for module in DEVICE_MODULES:
        try:
            found = importlib.import_module(f"hwilib.devices.{module}").enumerate(
                None, False, chain, True
            )
        except Exception as e:
            log.debug("%s scan failed: %s", module, e)
            continue
        devices.extend(found)
    return devices, [_NO_LIBUSB]


def _display(client: HardwareWalletClient, descriptor: str) -> tuple[str, str]:
    """The address of a one-index multisig descriptor, and the device's name for the multisig
    (Jade registers it under a deterministic name; other devices have none)."""
    address = str(commands.displayaddress(client, desc=descriptor)["address"])
    return address, _registration_name(client, descriptor)


def _registration_name(client: HardwareWalletClient, descriptor: str) -> str:
    if not isinstance(client, JadeClient):
        return ""
    parsed = parse_descriptor(descriptor)
    assert isinstance(parsed, WSHDescriptor)
    multisig = parsed.subdescriptors[0]
    assert isinstance(multisig, MultisigDescriptor)
    origins = [key.origin for key in multisig.pubkeys]
    signers = [(origin.fingerprint, origin.path) for origin in origins if origin is not None]
    name: str = JadeClient._get_multisig_name("wsh(multi(k))", multisig.thresh, signers)
    return name
