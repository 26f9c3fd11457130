"""What the coordinator last saw of each signer, and whether the pool can sign (its quorum).

The daemon loop calls ``HealthBoard.check`` on an interval; GetPoolStatus reads ``snapshot``
without calling any signer. A signer is ``healthy`` when its health service answered SERVING at
the last check and ``down`` otherwise (never checked yet included).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from coordinator.signers import SignerCallError
from pool.series import Series
from vpool.v1 import signer_pb2

HEALTHY = "healthy"
DOWN = "down"
QUORUM_OK = "ok"
QUORUM_DEGRADED = "degraded"


@dataclass(frozen=True)
class SignerState:
    signer_id: str
    state: str
    """``healthy`` or ``down``."""
    fingerprint: str
    """Master key fingerprint (hex) from the signer's GetInfo, once known."""
    last_seen: float
    """When it last answered (0: never)."""
    detail: str
    """The last error, if any."""


class HealthSource(Protocol):
    """The part of ``coordinator.signers.SignerPool`` the checks use."""

    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def health(self, signer_id: str, timeout: float) -> bool: ...

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo: ...


class HealthBoard:
    """The last known state of every configured signer; safe to read from any thread."""

    def __init__(self, signer_ids: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._states = {
            signer_id: SignerState(signer_id, DOWN, "", 0.0, "not checked yet")
            for signer_id in signer_ids
        }

    def snapshot(self) -> list[SignerState]:
        """Every signer, in configuration order."""
        with self._lock:
            return list(self._states.values())

    def record(
        self, signer_id: str, healthy: bool, now: float, *, fingerprint: str = "", detail: str = ""
    ) -> None:
        """The result of one check (an empty fingerprint keeps the one known)."""
        with self._lock:
            old = self._states[signer_id]
            self._states[signer_id] = replace(
                old,
                state=HEALTHY if healthy else DOWN,
                fingerprint=fingerprint or old.fingerprint,
                last_seen=now if healthy else old.last_seen,
                detail=detail,
            )

    def check(self, signers: HealthSource, timeout: float, now: float) -> None:
        """Ask every signer at once; learn the fingerprint of each the first time it answers."""
        ids = signers.signer_ids
        if not ids:
            return
        with ThreadPoolExecutor(max_workers=len(ids), thread_name_prefix="health") as pool:
            for signer_id, (healthy, fingerprint, detail) in zip(
                ids, pool.map(lambda i: self._check_one(signers, i, timeout), ids), strict=True
            ):
                self.record(signer_id, healthy, now, fingerprint=fingerprint, detail=detail)

    def _check_one(
        self, signers: HealthSource, signer_id: str, timeout: float
    ) -> tuple[bool, str, str]:
        try:
            if not signers.health(signer_id, timeout):
                return False, "", "not serving"
            with self._lock:
                known = self._states[signer_id].fingerprint
            fingerprint = known or signers.get_info(signer_id, timeout).master_fingerprint
        except SignerCallError as e:
            return False, "", str(e.error)
        return True, fingerprint, ""


def quorum(active: Series | None, states: Sequence[SignerState]) -> str:
    """``ok`` when at least m of the active series' key holders are healthy."""
    if active is None:
        return QUORUM_DEGRADED
    holders = {key.origin.fingerprint.hex() for key in active.keys}
    healthy = sum(1 for s in states if s.state == HEALTHY and s.fingerprint in holders)
    return QUORUM_OK if healthy >= active.m else QUORUM_DEGRADED
