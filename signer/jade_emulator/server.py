"""The TCP side: one thread per connection, each a session of Jade's RPC over its socket.

Like the Jade QEMU simulator's serial-over-TCP port, the server never closes a connection that
the client holds open (hwilib's TCP transport spins forever once its peer has closed): a session
ends when the client closes its side, or when the whole server is closed. Unlike QEMU's
single-client socket it serves several connections at once by default; with ``single_client``
it serves one at a time like QEMU (a second client connects but is not read until the first
closes). The device runs one method at a time either way, and an injected stall holds only the
connection it delays.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass
from types import TracebackType

from signer.jade_emulator.device import CHUNKED_METHODS, JadeDevice
from signer.jade_emulator.errors import EmulatorError
from signer.jade_emulator.protocol import (
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    JadeRpcError,
    MessageReader,
    Rejection,
    Request,
    encode_chunk,
    encode_error,
    encode_result,
    split_chunks,
)

log = logging.getLogger(__name__)

HWI_SIMULATOR_PORT = 30121
"""The port hwilib probes for the Jade simulator (``tcp:127.0.0.1:30121``)."""
_RECV_SIZE = 64 * 1024


class JadeEmulatorServer:
    """Serves a ``JadeDevice`` on ``host:port`` (port 0 picks a free one) once ``start``-ed."""

    def __init__(
        self,
        device: JadeDevice,
        host: str = "127.0.0.1",
        port: int = HWI_SIMULATOR_PORT,
        single_client: bool = False,
    ) -> None:
        self.device = device
        self._one_client = threading.Lock() if single_client else None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        try:
            self._server = _TCPServer((host, port), self)
        except OSError as e:
            raise EmulatorError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()
        log.info("listening on port %d", self.port)

    def close(self) -> None:
        """Stop accepting, end every session (interrupting stalls) and free the port."""
        self._stopping.set()
        self.device.close()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> JadeEmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def serve_connection(self, connection: socket.socket) -> None:
        with self._connections_lock:
            if self._stopping.is_set():
                return
            self._connections.add(connection)
        try:
            if self._one_client is None:
                _Session(connection, self.device, self._stopping).run()
                return
            while not self._one_client.acquire(timeout=0.1):
                if self._stopping.is_set():
                    return
            try:
                _Session(connection, self.device, self._stopping).run()
            finally:
                self._one_client.release()
        finally:
            with self._connections_lock:
                self._connections.discard(connection)


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: JadeEmulatorServer) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer
    request: socket.socket

    def handle(self) -> None:
        self.server.emulator.serve_connection(self.request)


@dataclass
class _Sequence:
    """A chunked result being sent: the original request and the chunks sent so far."""

    request: Request
    chunks: list[bytes]
    sent: int = 0


class _Session:
    def __init__(
        self, connection: socket.socket, device: JadeDevice, stopping: threading.Event
    ) -> None:
        self._connection = connection
        self._device = device
        self._stopping = stopping
        self._sequence: _Sequence | None = None

    def run(self) -> None:
        host, port = self._connection.getpeername()[:2]
        peer = f"{host}:{port}"
        log.info("connection from %s", peer)
        reader = MessageReader()
        try:
            while data := self._connection.recv(_RECV_SIZE):
                for message in reader.feed(data):
                    self._handle(message)
        except OSError as e:
            log.info("connection from %s lost: %s", peer, e)
        else:
            log.info("connection from %s closed by the client", peer)

    def _send(self, data: bytes) -> None:
        self._connection.sendall(data)

    def _handle(self, message: Request | Rejection) -> None:
        if isinstance(message, Rejection):
            log.info("rejected an invalid message: %s", message.error.message)
            self._send(encode_error(message.id, message.error))
            return
        delay = self._device.faults.stall_for(message.method)
        if delay:
            log.info("%s: stalling %.1f s (fault injected)", message.method, delay)
            if self._stopping.wait(delay):
                return
        if self._sequence is not None:
            self._continue_sequence(self._sequence, message)
            return
        try:
            result = self._device.call(message.method, message.params)
        except JadeRpcError as e:
            log.info("%s refused: %s", message.method, e.message)
            self._send(encode_error(message.id, e))
            return
        except Exception:
            log.exception("%s failed", message.method)
            self._send(encode_error(message.id, JadeRpcError(INTERNAL_ERROR, "Internal error")))
            return
        if message.method in CHUNKED_METHODS and isinstance(result, bytes):
            self._sequence = _Sequence(message, split_chunks(result))
            self._send_chunk(self._sequence, message.id)
        else:
            self._send(encode_result(message.id, result))

    def _send_chunk(self, sequence: _Sequence, reply_id: str) -> None:
        chunk = sequence.chunks[sequence.sent]
        sequence.sent += 1
        if sequence.sent == len(sequence.chunks):
            self._sequence = None
        self._send(encode_chunk(reply_id, sequence.sent, len(sequence.chunks), chunk))

    def _continue_sequence(self, sequence: _Sequence, message: Request) -> None:
        """Only the next ``get_extended_data`` may follow a chunk; anything else aborts."""
        expected = {
            "origid": sequence.request.id,
            "orig": sequence.request.method,
            "seqnum": sequence.sent + 1,
            "seqlen": len(sequence.chunks),
        }
        if message.method != "get_extended_data":
            error = "Unexpected message, expecting 'get_extended_data'"
        elif not isinstance(message.params, dict) or any(
            message.params.get(k) != v for k, v in expected.items()
        ):
            error = "Mismatched fields in 'get_extended_data' message"
        else:
            self._send_chunk(sequence, message.id)
            return
        self._sequence = None
        self._send(encode_error(message.id, JadeRpcError(PROTOCOL_ERROR, error)))
