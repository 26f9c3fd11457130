"""The signer daemon: opens its state, audit log and backend, and serves gRPC over mutual TLS.

Next to ``vpool.v1.SignerService`` it serves the standard ``grpc.health.v1`` health service and
server reflection. The health is SERVING only while the signer's own node answers (probed every
``chain.probe_seconds``, ``signer.node_monitor``). Every call to any of them, health checks
included, must come from an allowed coordinator (``signer.rpc.Gatekeeper``): a signer has no
other legitimate caller, and what it reveals (its keys, policy hash and liveness) is nobody
else's business. Plaintext is possible
only in insecure development mode, which the configuration and the command line must both ask for.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

from signer.audit import AuditLog, audit_path
from signer.backends import open_backend
from signer.chain import NodeChain
from signer.config import ChainConfig, ConfigError, ServerConfig, SignerConfig, load_config
from signer.device_monitor import DeviceCondition, DeviceMonitor, DeviceStatus
from signer.metrics import SignerCollector
from signer.node_monitor import NodeMonitor, NodeStatus
from signer.probing import probe_every
from signer.rpc import Gatekeeper
from signer.service import SignerService
from signer.serving import ServingLog
from signer.state import SignerState
from vpool.health import ReasonedHealthServicer
from vpool.metrics import REGISTRY, HttpEndpoint, Registry
from vpool.rpc import add_health_and_reflection, make_server, mutual_tls
from vpool.tls import TlsError, load_certificate, peer_identity
from vpool.v1 import signer_pb2, signer_pb2_grpc
from vpool.version import software_version

log = logging.getLogger(__name__)

SERVICE_NAME = signer_pb2.DESCRIPTOR.services_by_name["SignerService"].full_name
GRACE_SECONDS = 5.0
DEVICE_PROBE_TIMEOUT = 3.0
"""Seconds a device probe may take (a fingerprint, or a presence check while it is busy)."""
_WORKERS = 8


def serve(config_path: Path, insecure_dev: bool, metrics_listen: str | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit status."""
    config = load_config(config_path)
    if config.server.insecure_dev != insecure_dev:
        raise ConfigError(
            "server.insecure_dev: plaintext needs both insecure_dev = true in the configuration "
            "and --insecure-dev on the command line"
        )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with ExitStack() as stack:
        state = stack.enter_context(SignerState(config.data_dir))
        audit = stack.enter_context(AuditLog(audit_path(config.data_dir)))
        backend = open_backend(config.backend, config.network)
        stack.callback(backend.close)
        chain = _node(config.chain)
        monitor = NodeMonitor(chain, time.time)
        service_box: list[SignerService] = []
        device = DeviceMonitor(
            backend.probe,
            time.time,
            DEVICE_PROBE_TIMEOUT,
            lambda: service_box[0].round_at_device_since() if service_box else None,
        )
        serving = ServingLog(state, time.time)
        service = SignerService(
            config, backend, state, audit, time.time, chain, monitor, device, serving
        )
        service_box.append(service)
        stack.callback(service.close)
        gatekeeper = Gatekeeper(
            None if config.server.insecure_dev else config.server.allowed_coordinators
        )
        health = Health(serving.note)

        def device_heard(status: DeviceStatus) -> None:
            """A device is ready for the signer once it also gave its account xpub (GetInfo
            shows it to the coordinator): the health says SERVING only then."""
            if status.condition is DeviceCondition.READY and not service.load_account_xpub():
                return
            health.device(status)

        server, address, health_service = _start(
            config, service, gatekeeper, lambda: device_heard(device.probe())
        )
        health.attach(health_service)
        probing = threading.Event()
        stack.callback(probing.set)
        health.node(monitor.probe())  # the health is right from the ready line on

        device_heard(device.probe())
        threading.Thread(
            target=probe_every,
            args=(monitor.probe, probing, config.chain.probe_seconds, health.node),
            name="node-probe",
            daemon=True,
        ).start()
        threading.Thread(
            target=probe_every,
            args=(
                device.probe,
                probing,
                getattr(config.backend, "probe_seconds", 2.0),
                device_heard,
            ),
            name="device-probe",
            daemon=True,
        ).start()
        if metrics_listen:
            endpoint = _start_metrics(
                metrics_listen, config, backend.fingerprint().hex(), monitor, device, health,
                audit, service,
            )  # fmt: skip
            stack.callback(endpoint.stop)
        print(f"vpool-signer {config.signer_id} serving on {address}", flush=True)
        stop.wait()
        log.info("stopping: no new calls, up to %g s for the running ones", GRACE_SECONDS)
        health_service.enter_graceful_shutdown()
        server.stop(GRACE_SECONDS)
        if not gatekeeper.wait_idle(GRACE_SECONDS):
            log.warning("calls still running after %g s: closing the device", GRACE_SECONDS)
            backend.close()  # a device call still waiting fails now
            gatekeeper.wait_idle(GRACE_SECONDS)
        server.stop(None).wait()
    return 0


def _start_metrics(
    listen: str,
    config: SignerConfig,
    fingerprint: str,
    monitor: NodeMonitor,
    device: DeviceMonitor,
    health: Health,
    audit: AuditLog,
    service: SignerService,
) -> HttpEndpoint:
    """``/metrics`` on ``listen`` (signer.metrics); ConfigError when it cannot listen there."""
    registry = Registry()
    collector = SignerCollector(
        config.signer_id,
        fingerprint,
        software_version(),
        lambda: monitor.status,
        lambda: device.status,
        health.not_serving_reason,
        lambda: audit.position,
        service.rounds_at_device,
    )
    registry.add_collector(collector.collect)
    registry.add_collector(REGISTRY.families)
    try:
        endpoint = HttpEndpoint(listen, registry).start()
    except (OSError, ValueError) as e:
        raise ConfigError(f"--metrics-listen: cannot listen on {listen}: {e}") from None
    log.info(
        "metrics on http://%s/metrics",
        endpoint.address,
        extra={"event": "http_listening", "metrics_url": f"http://{endpoint.address}/metrics"},
    )
    return endpoint


def _node(config: ChainConfig) -> NodeChain | None:
    if config.rpc_url is None:
        log.warning(
            "!!! DEVELOPMENT MODE WITHOUT A NODE (chain.dev_without_node): this signer cannot "
            "check any round against the chain, so it refuses every round. !!!"
        )
        return None
    return NodeChain(
        config.rpc_url,
        config.rpc_user,
        config.rpc_password,
        config.cookie_file,
        config.timeout_seconds,
    )


class Health:
    """The signer's health from its node's and its device's last probes: SERVING (overall and
    for the signer service) only while both are fine (``node_fine``, ``DeviceStatus.usable``);
    else NOT_SERVING with the reason (``not_serving_reason``, sent along each Check by
    vpool.health). The reasons are also in GetInfo's ``node`` and ``device`` and in the log."""

    def __init__(self, heard: Callable[[bool], None] = lambda _serving: None) -> None:
        self._heard = heard
        """Told the health (SERVING or not) at every probe (signer.serving)."""
        self._lock = threading.Lock()
        self._service: ReasonedHealthServicer | None = None
        self._node: NodeStatus | None = None
        self._device: DeviceStatus | None = None

    def attach(self, health_service: ReasonedHealthServicer) -> None:
        with self._lock:
            self._service = health_service
        self._update()

    def node(self, status: NodeStatus) -> None:
        with self._lock:
            self._node = status
        self._update()

    def device(self, status: DeviceStatus) -> None:
        with self._lock:
            self._device = status
        self._update()

    def not_serving_reason(self) -> str | None:
        """Why the signer cannot sign now, or None while it can."""
        with self._lock:
            return not_serving_reason(self._node, self._device)

    def _update(self) -> None:
        with self._lock:
            if self._service is None:
                return
            reason = not_serving_reason(self._node, self._device)
            self._service.set_reason(("", SERVICE_NAME), reason)
        self._heard(reason is None)


def not_serving_reason(node: NodeStatus | None, device: DeviceStatus | None) -> str | None:
    """Why a signer whose node and device were last found so cannot sign (None: it can, or
    nothing is known yet)."""
    reasons = []
    if node is not None and not node_fine(node):
        what = "is syncing" if node.reachable else f"is unreachable: {node.error}"
        reasons.append(f"the node {what}")
    if device is not None and not device.usable:
        reasons.append(f"the device is {device.condition}: {device.error}".rstrip(": "))
    return "; ".join(reasons) or None


def node_fine(status: NodeStatus) -> bool:
    """The node answers and is not syncing, or there is none (development only)."""
    return (status.reachable and not status.syncing) or not status.configured


def health_listener(health_service: HealthServicer) -> Callable[[NodeStatus], None]:
    """SERVING while the node answers and is not syncing; NOT_SERVING (overall and for the signer
    service) while it does not answer or says it is still syncing (it cannot vouch for the
    chain). The reason is in GetInfo's ``node`` and the log. Without a node (development only)
    the health stays SERVING: such a signer answers every round with CHAIN_NOT_CONFIGURED, and
    GetInfo's ``node.configured`` is false."""
    Status = health_pb2.HealthCheckResponse

    def listen(status: NodeStatus) -> None:
        up = node_fine(status)
        serving = Status.SERVING if up else Status.NOT_SERVING
        for name in ("", SERVICE_NAME):
            health_service.set(name, serving)

    return listen


def _start(
    config: SignerConfig,
    service: SignerService,
    gatekeeper: Gatekeeper,
    probe_device: Callable[[], None],
) -> tuple[grpc.Server, str, ReasonedHealthServicer]:
    """A started server, the address it listens on, and its health service (which calls
    ``probe_device`` before every Check)."""
    settings = config.server
    server = make_server(gatekeeper, settings.max_message_bytes, _WORKERS)
    signer_pb2_grpc.add_SignerServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health_service = ReasonedHealthServicer(probe_device)
    add_health_and_reflection(server, (SERVICE_NAME,), health_service)
    try:
        if settings.insecure_dev:
            log.warning(
                "!!! INSECURE DEVELOPMENT MODE: plaintext gRPC, NO client authentication: anyone "
                "who reaches %s can ask this signer to sign. Never use it with real funds. !!!",
                settings.listen,
            )
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, _credentials(config.signer_id, settings))
    except RuntimeError as e:
        raise ConfigError(f"server.listen: cannot listen on {settings.listen}: {e}") from None
    server.start()
    host = settings.listen.rsplit(":", 1)[0]
    return server, f"{host}:{port}", health_service


def _credentials(signer_id: str, settings: ServerConfig) -> grpc.ServerCredentials:
    """Mutual TLS: our certificate (which must name this signer), and the pool's CA for callers."""
    assert settings.cert is not None and settings.key is not None and settings.ca is not None
    cert = settings.cert.read_bytes()
    try:
        identity = peer_identity(load_certificate(cert))
    except TlsError as e:
        raise ConfigError(f"server.cert: {e}") from None
    if identity != ("signer", signer_id):
        raise ConfigError(
            f"server.cert: the certificate is for {identity[0]}/{identity[1]}, "
            f"not signer/{signer_id}"
        )
    return mutual_tls(cert, settings.key.read_bytes(), settings.ca.read_bytes())
