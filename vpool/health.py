"""The standard gRPC health service, telling why it is NOT_SERVING.

``grpc.health.v1.HealthCheckResponse`` has a status and nothing else; a daemon that is not
serving says why in the trailing metadata ``vpool-health-reason`` of each Check (printable
ASCII, at most ``MAX_REASON`` characters), e.g. ``the pool is degraded: 1 of 3 signers of
series 1 healthy; ...`` or ``device absent: no Jade found``. The same reason is in the daemon's
log, in the coordinator's GetPoolStatus (``health_detail``) and in the signer's GetInfo
(``node``, ``device``).

    grpc_health_probe reads the status; a person or a script reads the reason:
    call = stub.Check.with_call(HealthCheckRequest(service=""))
    dict(call[1].trailing_metadata()).get("vpool-health-reason")
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

REASON_KEY = "vpool-health-reason"
MAX_REASON = 1000


def printable(reason: str) -> str:
    """The reason as a metadata value may carry it: printable ASCII, one line, bounded."""
    flat = " ".join(reason.split())
    text = flat.encode("ascii", "replace").decode("ascii")
    return text[:MAX_REASON]


class ReasonedHealthServicer(HealthServicer):  # type: ignore[misc]
    """The standard health service; ``set_reason`` sets the status of several services at once
    (None: SERVING), and Check sends the reason along. ``before_check`` (if given) runs before
    each Check (the signer probes its device there)."""

    def __init__(self, before_check: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._before_check = before_check
        self._reasons: dict[str, str] = {}
        self._reasons_lock = threading.Lock()

    def set_reason(self, services: Sequence[str], reason: str | None) -> None:
        Status = health_pb2.HealthCheckResponse
        with self._reasons_lock:
            for name in services:
                if reason is None:
                    self._reasons.pop(name, None)
                else:
                    self._reasons[name] = printable(reason)
        for name in services:
            self.set(name, Status.SERVING if reason is None else Status.NOT_SERVING)

    def reason(self, service: str) -> str | None:
        with self._reasons_lock:
            return self._reasons.get(service)

    def Check(self, request: Any, context: Any) -> Any:
        if self._before_check is not None:
            self._before_check()
        response = super().Check(request, context)
        reason = self.reason(request.service)
        if reason:
            context.set_trailing_metadata(((REASON_KEY, reason),))
        return response
