"""An optional Prometheus endpoint: ``GET /metrics`` on ``server.metrics_listen`` (plain HTTP,
no authentication: bind it to loopback or a monitoring network).

    vpool_quorum_ok 1
    vpool_signer_healthy{signer="signer-1"} 1
    vpool_queue_length 3
    vpool_coordinator_active 1

``vpool_coordinator_active`` is 0 on a standby (coordinator.leadership): exactly one of the
coordinators on a store shows 1.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import Engine

from coordinator.health import HEALTHY, HealthBoard
from coordinator.store.liveness import QUORUM_OK
from coordinator.store.withdrawals import queue_length

log = logging.getLogger(__name__)


def render(board: HealthBoard, queue: int, active: bool = True) -> str:
    """The metrics in Prometheus' text format."""
    lines = [
        "# TYPE vpool_quorum_ok gauge",
        f"vpool_quorum_ok {int(board.quorum().state == QUORUM_OK)}",
        "# TYPE vpool_signer_healthy gauge",
    ]
    for state in board.snapshot():
        name = state.signer_id.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'vpool_signer_healthy{{signer="{name}"}} {int(state.state == HEALTHY)}')
    lines += ["# TYPE vpool_queue_length gauge", f"vpool_queue_length {queue}"]
    lines += ["# TYPE vpool_coordinator_active gauge", f"vpool_coordinator_active {int(active)}"]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves ``render`` on its own thread until ``stop``."""

    def __init__(
        self,
        listen: str,
        board: HealthBoard,
        engine: Engine,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        host, _, port = listen.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                with engine.connect() as conn:
                    queue = queue_length(conn)
                body = render(board, queue, active()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def address(self) -> str:
        host = self._server.server_address[0]
        assert isinstance(host, str)
        return f"{host}:{self._server.server_port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
