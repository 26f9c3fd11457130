"""The signer's watch on its device: a cheap probe, for ``GetInfo`` and gRPC health.

``DeviceMonitor.probe()`` asks the backend once (``Backend.probe``: for a hardware wallet the
master fingerprint with a short deadline when the device is idle, or only whether it is still
there when it is asking its user to approve a round) and keeps what it found; ``run()`` probes
every ``interval`` seconds until stopped and tells a listener each time, which the daemon
combines with its node's state into its health: SERVING only while the device is usable (ready,
busy with a person, or a software key). A device found absent while a call is in flight has that
call abandoned by its backend (``HwiBackend.probe``).

Device limits (``limits_of``) are what each device type accepts in one transaction, as read in
the firmware and HWI sources (``docs/devices.md``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

log = logging.getLogger(__name__)


class DeviceCondition(StrEnum):
    READY = "ready"
    BUSY = "busy"
    """Asking its user to approve a round; as far as a probe can tell, still there."""
    ABSENT = "absent"
    LOCKED = "locked"
    WRONG_DEVICE = "wrong_device"
    SOFTWARE = "software"
    """The emulator backend: no device."""

    @property
    def usable(self) -> bool:
        return self in (DeviceCondition.READY, DeviceCondition.BUSY, DeviceCondition.SOFTWARE)


@dataclass(frozen=True)
class DeviceStatus:
    condition: DeviceCondition
    error: str = ""
    checked_at: float = 0.0
    """Unix seconds of the probe; 0 before the first."""
    busy_since: float = 0.0

    @property
    def usable(self) -> bool:
        return self.condition.usable


@dataclass(frozen=True)
class DeviceLimits:
    """0: no limit known."""

    max_inputs: int = 0
    max_outputs: int = 0
    max_psbt_bytes: int = 0
    max_reviewed_payments: int = 0


_LIMITS = {
    "jade": DeviceLimits(max_psbt_bytes=401 * 1024),
    "ledger": DeviceLimits(max_inputs=512, max_outputs=512),
}
"""Per device type (hwilib's names): Jade's input buffer (``process.h``, 401 KiB); the Ledger
Bitcoin app's ``MAX_N_INPUTS_CAN_SIGN`` and ``MAX_N_OUTPUTS_CAN_SIGN`` (512)."""


@dataclass(frozen=True)
class TxShape:
    """What a device and its person see of one transaction."""

    psbt_bytes: int
    inputs: int
    outputs: int
    payments: int
    """Outputs other than the pool's change."""


def shape_problems(limits: DeviceLimits, shapes: Sequence[TxShape]) -> list[str]:
    """Why the device (or its person) cannot take these transactions, one line per limit that
    is set and passed. The round's manifest caps its shape (``max_tx_inputs``,
    ``max_tx_payments``); a coordinator that did not cap it low enough gets this answer instead
    of a device error, or a person facing a thousand screens."""
    problems = []
    for i, shape in enumerate(shapes):
        for count, limit, what in (
            (shape.psbt_bytes, limits.max_psbt_bytes, "bytes, the device takes at most"),
            (shape.inputs, limits.max_inputs, "inputs, the device signs at most"),
            (shape.outputs, limits.max_outputs, "outputs, the device signs at most"),
            (shape.payments, limits.max_reviewed_payments, "payments, its reviewer takes at most"),
        ):
            if limit and count > limit:
                problems.append(f"PSBT {i} has {count} {what} {limit}")
    return problems


def limits_of(model: str, max_reviewed_payments: int) -> DeviceLimits:
    """The limits of a device model (hwilib's name; ``software`` for none), with the
    operator's cap on payments per transaction."""
    known = next((v for k, v in _LIMITS.items() if model.startswith(k)), DeviceLimits())
    return replace(known, max_reviewed_payments=max_reviewed_payments)


class DeviceMonitor:
    """The last known state of the device; thread-safe."""

    def __init__(
        self,
        probe: Callable[[float], tuple[DeviceCondition, str]],
        clock: Callable[[], float],
        timeout: float,
        busy_since: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``probe(timeout)``: the backend's; ``busy_since``: since when a round is at the
        device (None when none is)."""
        self._probe = probe
        self._clock = clock
        self._timeout = timeout
        self._busy_since = busy_since
        self._lock = threading.Lock()
        self._probing = threading.Lock()
        self._status = DeviceStatus(DeviceCondition.ABSENT, "not probed yet")

    @property
    def status(self) -> DeviceStatus:
        with self._lock:
            return self._status

    def probe(self) -> DeviceStatus:
        """Probe the device now (one probe at a time: a caller arriving during another's
        probe gets its result); the new status."""
        if not self._probing.acquire(blocking=False):
            with self._probing:
                return self.status
        try:
            condition, error = self._probe(self._timeout)
            since = self._busy_since() if condition is DeviceCondition.BUSY else None
            status = DeviceStatus(condition, error, self._clock(), since or 0.0)
            with self._lock:
                before, self._status = self._status, status
        finally:
            self._probing.release()
        if before.condition != status.condition:
            if status.usable:
                log.info("device %s", status.condition)
            else:
                log.warning("device %s: %s", status.condition, status.error)
        return status
