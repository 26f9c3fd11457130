"""The signer's watch on its own node: a probe of its tip, for ``GetInfo`` and gRPC health.

``NodeMonitor.probe()`` asks the node once and keeps what it found (``NodeStatus``); ``run()``
probes every ``chain.probe_seconds`` until stopped and tells a listener each time the node's
reachability changes, which the daemon turns into its health (SERVING only while the node
answers: a signer that cannot check the chain signs nothing). Without a node
(``chain.dev_without_node``, development only) the status says so; the health stays SERVING.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from signer.chain import ChainUnavailable, NodeChain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeStatus:
    configured: bool
    reachable: bool = False
    tip_height: int = 0
    tip_hash: str = ""
    syncing: bool = False
    error: str = ""
    checked_at: float = 0.0
    """Unix seconds of the probe; 0 before the first."""


NOT_CONFIGURED = "no node configured (chain.dev_without_node): this signer signs nothing"


class NodeMonitor:
    """The last known state of the node; thread-safe."""

    def __init__(self, chain: NodeChain | None, clock: Callable[[], float]) -> None:
        self._chain = chain
        self._clock = clock
        self._lock = threading.Lock()
        self._status = (
            NodeStatus(False, error=NOT_CONFIGURED)
            if chain is None
            else NodeStatus(True, error="not probed yet")
        )

    @property
    def status(self) -> NodeStatus:
        with self._lock:
            return self._status

    def probe(self) -> NodeStatus:
        """Ask the node for its tip now; the new status."""
        if self._chain is None:
            return self.status
        now = self._clock()
        try:
            height, best, syncing = self._chain.sync_status()
            status = NodeStatus(True, True, height, best, syncing, "", now)
        except ChainUnavailable as e:
            status = NodeStatus(True, False, error=str(e), checked_at=now)
        with self._lock:
            before, self._status = self._status, status
        if before.reachable != status.reachable:
            if status.reachable:
                log.info("node reachable: tip %d %s", status.tip_height, status.tip_hash)
            else:
                log.warning("node unreachable: %s", status.error)
        return status
