"""The coordinator's gRPC server: both services on one port, over mutual TLS only.

Who may call what is decided by the caller's certificate (vpool.tls identity), before any method
runs: role ``client`` with a name in ``server.clients`` → CoordinatorService; role ``admin`` with
a name in ``server.admins`` → AdminService; either of them → health and reflection. Anything
else is PERMISSION_DENIED, and a caller without a certificate from the pool's CA never gets past
the TLS handshake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2

from coordinator.api import AdminApi, CoordinatorApi
from coordinator.config import ConfigError, ServerConfig
from coordinator.store.schema import POOL_CONNECTIONS
from vpool.health import ReasonedHealthServicer
from vpool.rpc import (
    Authorizer,
    Gatekeeper,
    Identity,
    add_health_and_reflection,
    make_server,
    mutual_tls,
    service_of,
)
from vpool.tls import TlsError, load_certificate, peer_identity
from vpool.v1 import coordinator_pb2, coordinator_pb2_grpc

log = logging.getLogger(__name__)

COORDINATOR_SERVICE = coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"].full_name
ADMIN_SERVICE = coordinator_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
WRITES = frozenset(
    f"/{service}/{method}"
    for service, methods in (
        (
            COORDINATOR_SERVICE,
            ("SubmitWithdrawal", "CancelWithdrawal", "GetDepositAddress"),
        ),
        (
            ADMIN_SERVICE,
            (
                "RunRoundNow",
                "PauseRounds",
                "ResumeRounds",
                "AddSeries",
                "SetSignerMaintenance",
                "ProposeRefund",
                "CancelRound",
            ),
        ),
    )
    for method in methods
)
"""The methods that change the store: a standby refuses them (coordinator.leadership)."""
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WORKERS = POOL_CONNECTIONS
"""Calls served at once, WatchWithdrawals streams included (api.MAX_WATCHES of them at most);
more are refused with RESOURCE_EXHAUSTED rather than queued behind long streams."""


def authorizer(settings: ServerConfig) -> Authorizer:
    """The rule of the module docstring, for the configured clients and admins."""
    allowed = {"client": settings.clients, "admin": settings.admins}
    services = {COORDINATOR_SERVICE: "client", ADMIN_SERVICE: "admin"}

    def authorize(method: str, identity: Identity) -> str | None:
        role, name = identity
        if role not in allowed:
            return f"the caller {role}/{name} is neither a client nor an admin"
        if name not in allowed[role]:
            return f"the {role} {name} is not in server.{role}s"
        needed = services.get(service_of(method))
        if needed is not None and needed != role:
            return f"the {role} {name} may not call {service_of(method)}"
        return None

    return authorize


@dataclass(frozen=True)
class RunningServer:
    server: grpc.Server
    address: str
    """host:port it listens on (the port chosen when the configuration says 0)."""
    health: ReasonedHealthServicer
    gatekeeper: Gatekeeper

    def set_serving(self, reason: str | None) -> None:
        """The gRPC health of CoordinatorService and of the server ("") (coordinator.health):
        SERVING when ``reason`` is None, else NOT_SERVING with the reason (vpool.health);
        AdminService stays SERVING."""
        self.health.set_reason(("", COORDINATOR_SERVICE), reason)

    def stop(self, grace: float) -> None:
        """No new calls; up to ``grace`` seconds for the running ones, then cancel the rest."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace)
        if not self.gatekeeper.wait_idle(grace):
            log.warning("calls still running after %g s: cancelling them", grace)
        self.server.stop(None).wait()


def start_server(
    settings: ServerConfig,
    coordinator: CoordinatorApi,
    admin: AdminApi,
    refuse_writes: Callable[[], None] | None = None,
) -> RunningServer:
    """Both services, started, on ``settings.listen``. ``refuse_writes`` is asked before each
    call of a method in ``WRITES`` and raises RpcFailure to refuse it."""
    credentials = _credentials(settings)

    def admit(method: str) -> None:
        if refuse_writes is not None and method in WRITES:
            refuse_writes()

    gatekeeper = Gatekeeper(authorizer(settings), admit)
    server = make_server(gatekeeper, settings.max_message_bytes, WORKERS, WORKERS)
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(coordinator, server)  # type: ignore[no-untyped-call]
    coordinator_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)  # type: ignore[no-untyped-call]
    health = ReasonedHealthServicer()
    add_health_and_reflection(server, (COORDINATOR_SERVICE, ADMIN_SERVICE), health)
    try:
        port = server.add_secure_port(settings.listen, credentials)
    except RuntimeError as e:
        raise ConfigError(f"server.listen: cannot listen on {settings.listen}: {e}") from None
    server.start()
    host = settings.listen.rsplit(":", 1)[0]
    return RunningServer(server, f"{host}:{port}", health, gatekeeper)


def _credentials(settings: ServerConfig) -> grpc.ServerCredentials:
    """Our certificate must be a coordinator's; callers need one from the pool's CA."""
    tls = settings.tls
    cert = tls.cert.read_bytes()
    try:
        role, name = peer_identity(load_certificate(cert))
    except TlsError as e:
        raise ConfigError(f"server.tls.cert: {e}") from None
    if role != "coordinator":
        raise ConfigError(
            f"server.tls.cert: the certificate is for {role}/{name}, not a coordinator"
        )
    return mutual_tls(cert, tls.key.read_bytes(), tls.ca.read_bytes())
