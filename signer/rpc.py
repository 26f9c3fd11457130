"""Who may call a signer: an allowed coordinator, over the shared gRPC plumbing (vpool.rpc).

``Gatekeeper`` wraps every method of every service the signer hosts (the signer service, health
and reflection alike) and requires the identity ``coordinator/<name>`` with ``name`` in the
allowed list; a ``RpcFailure`` raised by a method becomes its status code and message.
"""

from __future__ import annotations

from vpool import rpc
from vpool.rpc import Authorizer, Identity, RpcFailure, invalid

__all__ = ["Gatekeeper", "RpcFailure", "invalid"]


def coordinators_only(allowed: frozenset[str]) -> Authorizer:
    """Allow the coordinators named in ``allowed``, for every method."""

    def authorize(method: str, identity: Identity) -> str | None:
        role, name = identity
        if role != "coordinator":
            return f"the client {role}/{name} is not a coordinator"
        if name not in allowed:
            return f"the coordinator {name} is not allowed on this signer"
        return None

    return authorize


class Gatekeeper(rpc.Gatekeeper):
    """Authorizes every call; ``allowed`` is None only in insecure development mode."""

    def __init__(self, allowed: frozenset[str] | None) -> None:
        super().__init__(None if allowed is None else coordinators_only(allowed))
