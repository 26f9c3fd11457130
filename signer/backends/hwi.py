"""The hardware wallet backend: hwilib 3.2.0 in a killable worker process, with deadlines.

Every device call goes, one at a time, to one long-lived worker process (``hwi_worker``) that
owns the hwilib client. A call that overruns its deadline kills the worker and raises
``DeviceTimeout``; the next call starts a fresh worker, which finds the device again (by
fingerprint, or by type and path) and must see the same master fingerprint. Results are never
taken on trust: xpubs and addresses are checked against the core, only PSBT version 0 is handed
over, and the signatures that come back are counted per key.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from pool.address import base58check_decode, shown_address_script_pubkey
from pool.descriptor import strip_checksum
from pool.errors import AddressError, VpoolError
from pool.hdkeys import ExtendedPublicKey, KeyOrigin, format_path
from pool.networks import Network
from pool.psbt import Psbt
from pool.series import RECEIVE, Series
from signer.backends import hwi_worker
from signer.backends.base import (
    BackendError,
    DeviceRefused,
    DeviceTimeout,
    new_signatures,
    our_keys,
)
from signer.config import HwiBackendConfig
from signer.device_monitor import DeviceCondition

log = logging.getLogger(__name__)

_STOP_SECONDS = 5.0


class HwiBackend:
    """A device driven through hwilib. ``kind`` is ``hwi``; ``model`` is hwilib's name for it."""

    kind = "hwi"

    def __init__(self, config: HwiBackendConfig, network: Network) -> None:
        self.network = network
        self._config = config
        self._spec = hwi_worker.DeviceSpec(
            network=network.name,
            fingerprint=config.fingerprint.hex() if config.fingerprint else None,
            device_type=config.device_type,
            device_path=config.device_path,
            patience_seconds=max(config.sign_timeout_seconds, config.call_timeout_seconds),
        )
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._closed = False
        with self._lock:
            try:
                fingerprint, self.model = self._start(None)
            except BackendError as e:
                if config.fingerprint is None:
                    raise
                # the device is absent or locked: wait for it (the probe and every call look
                # for it again), as the configured fingerprint
                log.warning("device not available at start, waiting for it: %s", e)
                fingerprint, self.model = config.fingerprint.hex(), config.device_type or "hwi"
        self._fingerprint = bytes.fromhex(fingerprint)

    def fingerprint(self) -> bytes:
        return self._fingerprint

    def xpub(self, path: tuple[int, ...]) -> tuple[str, KeyOrigin]:
        text = self._call("xpub", f"m/{format_path(path)}", "getxpub")
        try:
            raw = base58check_decode(text)
            if len(raw) != 78:
                raise VpoolError(f"{len(raw)} bytes, not 78")
            key = ExtendedPublicKey.deserialize(self.network.xpub_version + raw[4:], self.network)
        except VpoolError as e:
            raise BackendError(f"the device returned a malformed xpub: {e}") from None
        if key.depth != len(path):
            raise BackendError(f"the device returned an xpub of depth {key.depth}, not {len(path)}")
        return key.to_string(self.network), KeyOrigin(self._fingerprint, path)

    def register_series(self, series: Series) -> str:
        _, name = self._display(series, RECEIVE, 0)
        return name

    def display_address(self, series: Series, branch: int, index: int) -> tuple[str, bool]:
        address, _ = self._display(series, branch, index)
        return address, True

    def sign(self, psbt: Psbt) -> Psbt:
        if psbt.version != 0:
            raise BackendError(f"only PSBT version 0 goes to HWI, not version {psbt.version}")
        expected = our_keys(psbt, self._fingerprint)
        text = self._call("sign", psbt.to_base64(), "signtx", self._config.sign_timeout_seconds)
        try:
            returned = Psbt.from_base64(text)
        except VpoolError as e:
            raise BackendError(f"the device returned a malformed PSBT: {e}") from None
        if returned.tx != psbt.tx:
            raise BackendError("the device returned a PSBT of another transaction")
        signatures = new_signatures(psbt, returned, self._fingerprint)
        if len(signatures) != len(expected):
            raise BackendError(
                f"the device returned {len(signatures)} of the {len(expected)} signatures asked"
            )
        inputs = list(psbt.inputs)
        for (index, pubkey), signature in signatures.items():
            sigs = {**inputs[index].partial_sigs, pubkey: signature}
            inputs[index] = replace(inputs[index], partial_sigs=sigs)
        return replace(psbt, inputs=tuple(inputs))

    def probe(self, timeout: float) -> tuple[DeviceCondition, str]:
        """Idle: whether the device is there (as below), then the master fingerprint, asked with
        a ``timeout`` deadline (a new worker finds the device first). Busy with a call (a person
        reviewing a transaction): only whether the
        device is still there (its TCP port answers, its serial path exists, the worker lives);
        if it is gone, the call in flight is abandoned (the worker is killed: the call fails at
        once instead of waiting out its deadline)."""
        if self._closed:
            return DeviceCondition.ABSENT, "the backend is closed"
        if not self._lock.acquire(blocking=False):
            problem = self._presence_problem(timeout)
            if problem is None:
                return DeviceCondition.BUSY, ""
            process = self._process
            if process is not None:
                process.kill()  # abandon the call in flight
            return DeviceCondition.ABSENT, f"{problem}; the call in flight was abandoned"
        try:
            problem = self._presence_problem(timeout)
            if problem is not None:  # gone: no need to wait for the worker to find out
                self._stop()
                return DeviceCondition.ABSENT, problem
            try:
                if self._conn is None:
                    self._start(self._fingerprint.hex(), timeout)
                else:
                    fingerprint, _ = self._request("connect", None, "the probe", timeout)
                    if fingerprint != self._fingerprint.hex():
                        self._stop()
                        raise BackendError(
                            f"found a device with fingerprint {fingerprint}, "
                            f"not {self._fingerprint.hex()}"
                        )
            except BackendError as e:
                self._stop()
                return condition_of_failure(str(e)), str(e)
            return DeviceCondition.READY, ""
        finally:
            self._lock.release()

    def _presence_problem(self, timeout: float) -> str | None:
        process = self._process
        if process is not None and not process.is_alive():
            return "the device worker exited"
        path = self._config.device_path or ""
        if path.startswith("tcp:"):
            host, _, port = path[4:].rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=timeout).close()
            except (OSError, ValueError) as e:
                return f"nothing answers at {path}: {e}"
        elif path.startswith("/") and not os.path.exists(path):
            return f"{path} is gone"
        return None

    def close(self) -> None:
        """Stop the worker; a call waiting on it (from another thread) fails at once, and no
        call starts a new one."""
        self._closed = True
        process = self._process
        if process is not None:
            process.kill()
        with self._lock:
            self._stop()

    def _display(self, series: Series, branch: int, index: int) -> tuple[str, str]:
        """Ask the device for the address at (branch, index); it must be the core's address."""
        text = strip_checksum(series.descriptor(branch).to_string(self.network))
        descriptor = text.replace(f"/{branch}/*", f"/{branch}/{index}")
        shown, name = self._call("display", descriptor, "displayaddress")
        derived = series.derive(branch, index)
        expected = derived.address(self.network)
        try:
            same = shown_address_script_pubkey(str(shown), self.network) == derived.script_pubkey
        except AddressError:
            same = False
        if not same:
            raise BackendError(f"the device computed the address {shown}, not {expected}")
        return expected, str(name)

    def _call(self, op: str, argument: Any, what: str, timeout: float | None = None) -> Any:
        """One request to the worker (started first if there is none), within its deadline."""
        with self._lock:
            if self._closed:
                raise BackendError(f"{what}: the signer is stopping")
            if self._conn is None:
                self._start(self._fingerprint.hex())
            return self._request(op, argument, what, timeout or self._config.call_timeout_seconds)

    def _start(self, expected: str | None, timeout: float | None = None) -> tuple[str, str]:
        """Start a worker and open the device, which must have the ``expected`` fingerprint
        (hex) when given: its fingerprint and model. On failure no worker is left."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=hwi_worker.run, args=(child, self._spec), name="vpool-hwi-worker", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        try:
            fingerprint, model = self._request(
                "connect", None, "opening the device", timeout or self._config.call_timeout_seconds
            )
            if expected is not None and fingerprint != expected:
                raise BackendError(f"found a device with fingerprint {fingerprint}, not {expected}")
        except BaseException:
            self._stop()
            raise
        return str(fingerprint), str(model)

    def _request(self, op: str, argument: Any, what: str, timeout: float) -> Any:
        conn = self._conn
        assert conn is not None
        conn.send((op, argument))
        if not conn.poll(timeout):
            self._stop()
            raise DeviceTimeout(f"the device did not answer {what} within {timeout:g} s")
        try:
            status, *payload = conn.recv()
        except (EOFError, OSError):
            self._stop()
            raise BackendError(f"the device worker exited during {what}") from None
        if status == "ok":
            return payload[0]
        kind, message = payload
        if kind == "refused":
            raise DeviceRefused(f"{what}: {message}")
        raise BackendError(f"{what}: {message}")

    def _stop(self) -> None:
        """Kill the worker (a device call may be stuck in it) and forget it."""
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.kill()
            self._process.join(_STOP_SECONDS)
        self._process, self._conn = None, None


def condition_of_failure(message: str) -> DeviceCondition:
    """What a failure to reach the device says about it."""
    lowered = message.lower()
    if "not ready" in lowered or "locked" in lowered or "pin" in lowered.split():
        return DeviceCondition.LOCKED
    if "found a device with fingerprint" in lowered or ("has fingerprint" in lowered):
        return DeviceCondition.WRONG_DEVICE
    return DeviceCondition.ABSENT
