"""Jade's CBOR RPC framing: requests in, replies and errors out, as Jade firmware frames them.

A request is a CBOR map ``{"id": str, "method": str, "params": ...}``; a reply is
``{"id", "result"}`` (plus ``"seqnum"``/``"seqlen"`` for chunked results) and an error is
``{"id", "error": {"code", "message"[, "data"]}}``. Messages follow each other on the stream
with no other framing, so the reader decodes CBOR items as the bytes arrive.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cbor2

# Error codes of Jade's main/utils/cbor_rpc.h (mirrored by jadepy's JadeError); the emulator
# is never locked, so it never answers HW_LOCKED (-32002).
INVALID_REQUEST = -32600
UNKNOWN_METHOD = -32601
BAD_PARAMETERS = -32602
INTERNAL_ERROR = -32603
USER_CANCELLED = -32000
PROTOCOL_ERROR = -32001
HW_LOCKED = -32002
NETWORK_MISMATCH = -32003

MAX_INPUT_MSG_SIZE = 401 * 1024
"""Jade's input buffer (builds with SPIRAM): a message that does not fit is rejected."""
PSBT_OUT_CHUNK_SIZE = 3 * 1024 - 64
"""Jade's sign_psbt reply chunk: MAX_OUTPUT_MSG_SIZE - 64."""
MAXLEN_ID = 16
MAXLEN_METHOD = 32
NO_ID = "00"
"""The id of an error reply to a message whose own id cannot be read."""


class JadeRpcError(Exception):
    """An RPC error reply: Jade's code and message, and optional bytes of data."""

    def __init__(self, code: int, message: str, data: bytes | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True)
class Request:
    id: str
    method: str
    params: object
    """The ``params`` value as decoded (``None`` when absent); methods check its shape."""


@dataclass(frozen=True)
class Rejection:
    """A message that is not a valid RPC request, and the error to answer it with."""

    id: str
    error: JadeRpcError


class MessageReader:
    """Splits a byte stream into requests; keeps an incomplete message until more bytes come."""

    def __init__(self, max_size: int = MAX_INPUT_MSG_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[Request | Rejection]:
        """Add received bytes; return every message they complete, in order."""
        self._buffer += data
        messages: list[Request | Rejection] = []
        while self._buffer:
            stream = io.BytesIO(self._buffer)
            try:
                item = cbor2.CBORDecoder(stream).decode()
            except cbor2.CBORDecodeEOF:
                if len(self._buffer) >= self._max_size:
                    messages.append(_invalid(NO_ID, len(self._buffer)))
                    self._buffer.clear()
                return messages
            except (cbor2.CBORDecodeError, RecursionError):
                messages.append(_invalid(NO_ID, len(self._buffer)))
                self._buffer.clear()
                return messages
            used = stream.tell()
            del self._buffer[:used]
            messages.append(_request(item, used))
        return messages


def _invalid(message_id: str, length: int) -> Rejection:
    """Jade's answer to bytes that are not an RPC request: the rejected length as data."""
    error = JadeRpcError(INVALID_REQUEST, "Invalid RPC Request message", str(length).encode())
    return Rejection(message_id, error)


def _request(item: object, length: int) -> Request | Rejection:
    if not isinstance(item, dict):
        return _invalid(NO_ID, length)
    message_id = item.get("id")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAXLEN_ID:
        return _invalid(NO_ID, length)
    method = item.get("method")
    if not isinstance(method, str) or not 0 < len(method) <= MAXLEN_METHOD:
        return _invalid(message_id, length)
    return Request(message_id, method, item.get("params"))


def encode_result(message_id: str, result: object) -> bytes:
    return bytes(cbor2.dumps({"id": message_id, "result": result}))


def encode_chunk(message_id: str, seqnum: int, seqlen: int, chunk: bytes) -> bytes:
    """Part ``seqnum`` (from 1) of ``seqlen`` of a chunked bytes result."""
    reply = {"id": message_id, "seqnum": seqnum, "seqlen": seqlen, "result": chunk}
    return bytes(cbor2.dumps(reply))


def encode_error(message_id: str, error: JadeRpcError) -> bytes:
    body: dict[str, object] = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return bytes(cbor2.dumps({"id": message_id, "error": body}))


def split_chunks(data: bytes, size: int = PSBT_OUT_CHUNK_SIZE) -> list[bytes]:
    """``data`` in pieces of at most ``size`` bytes; at least one piece."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]
