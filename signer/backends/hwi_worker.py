"""The HWI worker process: the only process that loads hwilib and touches the device.

hwilib has no locks, no timeouts and no cancellation, so the daemon runs it here, in a process of
its own, one request at a time, and kills the process when a request overruns its deadline. A
request is ``(op, argument)``; the answer is ``("ok", result)`` or ``("error", kind, message)``
with ``kind`` ``refused`` (the user declined) or ``device`` (anything else).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from multiprocessing.connection import Connection

_MAX_MESSAGE = 300


@dataclass(frozen=True)
class DeviceSpec:
    """How to reach the device: by ``type`` and ``path``, or else by ``fingerprint`` (hex)."""

    network: str
    fingerprint: str | None
    device_type: str | None
    device_path: str | None
    patience_seconds: float = 0.0
    """How long the device's transport waits for one answer (a person reviewing a round): at
    least the daemon's own deadline for a call, so that hwilib never gives up first (its Jade
    client's default is 120 s, whatever vpool's setting). 0: hwilib's default."""


class Declined(Exception):
    """The device's user declined the request."""


def run(conn: Connection, spec: DeviceSpec) -> None:
    """Serve requests from ``conn`` until the parent closes it."""
    logging.basicConfig(level=logging.WARNING, format="hwi worker %(levelname)s: %(message)s")
    from signer.backends.hwi_device import Device  # hwilib is loaded in this process only

    device = Device(spec)
    while True:
        try:
            op, argument = conn.recv()
        except (EOFError, OSError):
            break
        try:
            conn.send(("ok", device.call(op, argument)))
        except Declined as e:
            conn.send(("error", "refused", _message(e)))
        except Exception as e:
            device.drop()
            prefix = "device not ready: " if type(e).__name__ == "DeviceNotReadyError" else ""
            conn.send(("error", "device", prefix + _message(e)))
    device.drop()


def _message(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."
