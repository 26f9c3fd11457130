"""gRPC plumbing shared by the daemons: who may call, and how failures become status codes.

``Gatekeeper`` wraps every method of every service a server hosts (its own services, health and
reflection alike). It reads the client certificate that mutual TLS has already verified against
the pool's CA, takes its vpool identity ``(role, name)``, and asks the daemon's ``Authorizer``
whether that identity may call the method; a refusal ends the call with PERMISSION_DENIED. A
``RpcFailure`` raised by a method becomes its status code and message.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pool.descriptor import MultisigDescriptor
from pool.errors import VpoolError
from pool.networks import Network
from pool.series import Series, SeriesState
from vpool.tls import TlsError, peer_identity

log = logging.getLogger(__name__)

Identity = tuple[str, str]
"""``(role, name)`` of a caller, from its certificate."""
Authorizer = Callable[[str, Identity], str | None]
"""``(full method name, identity)`` → why the call is refused, or None to allow it."""

_CERT_KEY = "x509_pem_cert"
_BEHAVIORS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class RpcFailure(Exception):
    """End the call with ``code``; ``message`` names the field or the reason."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, message: str) -> RpcFailure:
    """INVALID_ARGUMENT whose message starts with the field's name."""
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}")


def series_from_descriptors(series_id: int, receive: str, change: str, network: Network) -> Series:
    """A series from the two descriptors of a request; INVALID_ARGUMENT names the bad one."""
    for field, text in (("receive_descriptor", receive), ("change_descriptor", change)):
        if not text:
            raise invalid(field, "missing")
        try:
            MultisigDescriptor.parse(text, network)
        except VpoolError as e:
            raise invalid(field, str(e)) from None
    try:
        return Series.from_descriptors(series_id, receive, change, SeriesState.ACTIVE, network)
    except VpoolError as e:
        raise invalid("change_descriptor", str(e)) from None


def service_of(method: str) -> str:
    """``vpool.v1.AdminService`` of ``/vpool.v1.AdminService/GetRound``."""
    return method.lstrip("/").partition("/")[0]


def caller_identity(context: Any) -> Identity:
    """The verified ``(role, name)`` of the caller; raises TlsError when there is none."""
    certificates = context.auth_context().get(_CERT_KEY)
    if not certificates:
        raise TlsError("no client certificate")
    return _identity_of(certificates[0])


@functools.lru_cache(maxsize=1024)
def _identity_of(certificate: bytes) -> Identity:
    """``peer_identity`` of a PEM certificate TLS verified, parsed once per certificate (a
    client's calls all present the same one)."""
    return peer_identity(certificate)


class Gatekeeper(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authorizes every call; ``authorize`` is None only in insecure development mode.

    It also counts the calls running (a stream until it ends), so that a shutdown can wait for
    them, and only for them: gRPC's own grace period also waits for idle client connections.
    """

    def __init__(
        self, authorize: Authorizer | None, admit: Callable[[str], None] | None = None
    ) -> None:
        self._authorize = authorize
        self._admit = admit
        """Called with the method after authorization; raises RpcFailure to refuse the call
        (the coordinator's standby refuses writes)."""
        self._running = 0
        self._idle = threading.Condition()
        self._guarded: dict[str, tuple[Any, Any]] = {}
        """Method → (its handler, the guarded handler): wrapped once, not at every call."""

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is running; False if some still are after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        changes = {
            name: self._guard(method, getattr(handler, name), name.endswith("_stream"))
            for name in _BEHAVIORS
            if getattr(handler, name) is not None
        }
        guarded = handler._replace(**changes)
        self._guarded[method] = (handler, guarded)
        return guarded

    def _guard(
        self, method: str, behavior: Callable[..., Any], streams: bool
    ) -> Callable[..., Any]:
        @functools.wraps(behavior)
        def guarded(request: Any, context: Any) -> Any:
            denial = self._deny(method, context)
            if denial is not None:
                log.warning(
                    "refused %s: %s",
                    method,
                    denial,
                    extra={"event": "peer_refused", "peer": context.peer(), "method": method},
                )
                context.abort(grpc.StatusCode.PERMISSION_DENIED, denial)
            if self._admit is not None:
                try:
                    self._admit(method)
                except RpcFailure as e:
                    _fail(method, context, e)
            if streams:
                return self._stream(method, context, behavior, request)
            with self._counted():
                try:
                    return behavior(request, context)
                except RpcFailure as e:
                    _fail(method, context, e)

        return guarded

    def _stream(
        self, method: str, context: Any, behavior: Callable[..., Any], request: Any
    ) -> Iterator[Any]:
        """The responses of a server stream, counted while it runs."""
        with self._counted():
            try:
                yield from behavior(request, context)
            except RpcFailure as e:
                _fail(method, context, e)

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _deny(self, method: str, context: Any) -> str | None:
        """Why the caller may not call ``method``, or None."""
        if self._authorize is None:
            return None
        try:
            identity = caller_identity(context)
        except TlsError as e:
            return f"client certificate: {e}"
        return self._authorize(method, identity)


def _fail(method: str, context: Any, failure: RpcFailure) -> None:
    log.info("%s failed: %s: %s", method, failure.code.name, failure.message)
    context.abort(failure.code, failure.message)


def make_server(
    gatekeeper: Gatekeeper,
    max_message_bytes: int,
    workers: int,
    max_concurrent: int | None = None,
) -> grpc.Server:
    """A server whose every call passes ``gatekeeper``, on ``workers`` threads. With
    ``max_concurrent``, calls beyond it are refused (RESOURCE_EXHAUSTED) instead of queued.

    SO_REUSEPORT is off: gRPC turns it on by default, and two daemons on one port would then
    share its calls between them (two signers on one key would each keep half of the signing log
    and of the limits). Binding a port another process holds fails instead."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=[gatekeeper],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_concurrent,
    )


def add_health_and_reflection(
    server: grpc.Server,
    services: Sequence[str],
    health_service: health.HealthServicer | None = None,
) -> health.HealthServicer:
    """The standard health service (SERVING for "" and each of ``services``; ``health_service``
    if given, e.g. a subclass) and reflection."""
    health_service = health_service or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    for name in ("", *services):
        health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    return health_service


def mutual_tls(cert: bytes, key: bytes, ca: bytes) -> grpc.ServerCredentials:
    """Our certificate and key; callers must present a certificate from the pool's CA."""
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )
