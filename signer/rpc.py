"""gRPC plumbing around every call: who may call, and how failures become status codes.

``Gatekeeper`` wraps every method of every service the server hosts (the signer service, health
and reflection alike): it reads the client certificate that mutual TLS has already verified
against the pool's CA, requires the identity ``coordinator/<name>`` with ``name`` in the allowed
list, and turns a ``RpcFailure`` raised by a method into its status code and message. It also
counts the calls running, so that a shutdown can wait for them (and only for them: gRPC's own
grace period also waits for idle client connections).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from vpool.tls import TlsError, peer_identity

log = logging.getLogger(__name__)

_CERT_KEY = "x509_pem_cert"
_BEHAVIORS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class RpcFailure(Exception):
    """End the call with ``code``; ``message`` names the field or the reason."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}")


class Gatekeeper(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authorizes every call; ``allowed`` is None only in insecure development mode."""

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self._allowed = allowed
        self._running = 0
        self._idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is running; False if some still are after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        changes = {
            name: self._guard(method, getattr(handler, name))
            for name in _BEHAVIORS
            if getattr(handler, name) is not None
        }
        return handler._replace(**changes)

    def _guard(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behavior)
        def guarded(request: Any, context: Any, *rest: Any) -> Any:
            denial = self._deny(context)
            if denial is not None:
                log.warning("refused %s: %s", method, denial)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, denial)
            with self._idle:
                self._running += 1
            try:
                return behavior(request, context, *rest)
            except RpcFailure as e:
                log.info("%s failed: %s: %s", method, e.code.name, e.message)
                context.abort(e.code, e.message)
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        return guarded

    def _deny(self, context: Any) -> str | None:
        """Why the caller may not call, or None."""
        if self._allowed is None:
            return None
        certificates = context.auth_context().get(_CERT_KEY)
        if not certificates:
            return "no client certificate"
        try:
            role, name = peer_identity(certificates[0])
        except TlsError as e:
            return f"client certificate: {e}"
        if role != "coordinator":
            return f"the client {role}/{name} is not a coordinator"
        if name not in self._allowed:
            return f"the coordinator {name} is not allowed on this signer"
        return None
