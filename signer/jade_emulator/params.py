"""Typed reads of RPC parameters, refusing ill-typed values as Jade does (BAD_PARAMETERS)."""

from __future__ import annotations

from signer.jade_emulator.protocol import BAD_PARAMETERS, JadeRpcError

MAX_PATH_LEN = 16
"""Jade's longest BIP32 path (main/utils/cbor_rpc.h)."""
_MAX_INDEX = 0xFFFFFFFF

Params = dict[str, object]


def bad(message: str) -> JadeRpcError:
    return JadeRpcError(BAD_PARAMETERS, message)


def params_map(params: object) -> Params:
    """The parameters of a method that needs them: they must be a map."""
    if not isinstance(params, dict):
        raise bad("Expecting parameters map")
    return params


def text(params: Params, field: str, message: str) -> str:
    """A non-empty text string field."""
    value = params.get(field)
    if not isinstance(value, str) or not value:
        raise bad(message)
    return value


def uint(value: object) -> int | None:
    """An unsigned integer (not a boolean), or None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def path(value: object) -> tuple[int, ...] | None:
    """A BIP32 path: an array of at most 16 integers in 0..2^32-1, or None."""
    if not isinstance(value, list) or len(value) > MAX_PATH_LEN:
        return None
    indices = [uint(index) for index in value]
    if any(index is None or index > _MAX_INDEX for index in indices):
        return None
    return tuple(index for index in indices if index is not None)
