"""Exit codes of the `vpool` and `vpool-signer` commands, so that scripts can tell failures apart.

==  ==============================================================================================
0   done
1   another error (the coordinator's INTERNAL or UNKNOWN, a local file that cannot be read, ...)
2   bad usage: unknown or missing options, no connection settings, INVALID_ARGUMENT (the message
    names the field)
3   refused: FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED, ALREADY_EXISTS, ABORTED,
    RESOURCE_EXHAUSTED, OUT_OF_RANGE (the pool is paused or degraded, the certificate may not
    call it, the object is in a state that forbids it, ...)
4   unavailable: UNAVAILABLE, DEADLINE_EXCEEDED (the coordinator, its node or a device did not
    answer; retrying later may work)
5   not found: NOT_FOUND (no such withdrawal, round, deposit, series, ...)
==  ==============================================================================================
"""

from __future__ import annotations

from typing import Any

OK = 0
ERROR = 1
USAGE = 2
REFUSED = 3
UNAVAILABLE = 4
NOT_FOUND = 5

_BY_NAME = {
    # gRPC status code names (no import of grpc here: vpool-signer's local commands avoid it)
    "INVALID_ARGUMENT": USAGE,
    "FAILED_PRECONDITION": REFUSED,
    "PERMISSION_DENIED": REFUSED,
    "UNAUTHENTICATED": REFUSED,
    "ALREADY_EXISTS": REFUSED,
    "ABORTED": REFUSED,
    "RESOURCE_EXHAUSTED": REFUSED,
    "OUT_OF_RANGE": REFUSED,
    "UNAVAILABLE": UNAVAILABLE,
    "DEADLINE_EXCEEDED": UNAVAILABLE,
    "NOT_FOUND": NOT_FOUND,
}

HELP = """exit codes:
  0  done
  1  another error (INTERNAL, UNKNOWN, a local file that cannot be read)
  2  bad usage: unknown or missing options or connection settings, INVALID_ARGUMENT
  3  refused: FAILED_PRECONDITION, PERMISSION_DENIED, ALREADY_EXISTS, RESOURCE_EXHAUSTED, ...
  4  unavailable: UNAVAILABLE, DEADLINE_EXCEEDED (try again later)
  5  not found: NOT_FOUND"""


def of_status(code: Any) -> int:
    """The exit code of a call that ended with ``code`` (a grpc.StatusCode)."""
    return _BY_NAME.get(str(getattr(code, "name", code)), ERROR)
