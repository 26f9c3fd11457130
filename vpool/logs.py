"""The daemons' logs: one JSON object per line on stderr (or plain text, for a person at a
terminal), at the level ``--log-level`` chooses.

Every line has ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and ``message``;
a line about a round, a withdrawal, a deposit or a signer carries the facts as fields of their
own, given as ``extra`` to the logging call::

    log.info("withdrawal completed", extra={"withdrawal_id": "alice/w1", "amount_sat": 5000,
                                            "destination": "bcrt1q...", "txid": "..."})
    {"time": "2026-12-08T00:10:00.123Z", "level": "INFO", "logger": "coordinator.rounds",
     "message": "withdrawal completed", "withdrawal_id": "alice/w1", "amount_sat": 5000, ...}

The field names in use: ``round_id``, ``kind``, ``withdrawal_id`` (client/request), ``client_id``,
``signer_id``, ``txid``, ``outpoint``, ``amount_sat``, ``fee_sat``, ``destination``, ``outputs``
(list of {address, amount}), ``height``, ``block_hash``, ``blocks``, ``peer``, ``method``,
``decision``, ``reasons``, ``audit_head``. A failure's traceback is in ``exception``.

What native code writes to stderr (gRPC's core library: a TLS handshake that failed, a peer
whose certificate the pool's CA did not sign) is turned into lines of the same format
(``capture_native_stderr``): logger ``grpc.core``, its level from the line's first letter, and
``event: tls_handshake_failed`` for a rejected TLS peer (gRPC does not say which address).

No secret is ever logged: a field whose name speaks of one (password, passphrase, mnemonic,
seed, secret, private key, token, cookie) is replaced by ``"[redacted]"`` whatever its value,
as a last guard; the code never passes one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "text")
REDACTED = "[redacted]"
_SECRET_WORDS = (
    "password",
    "passphrase",
    "mnemonic",
    "seed",
    "secret",
    "private",
    "xprv",
    "token",
    "cookie",
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def _iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields (those given as ``extra``), secrets redacted."""
    return {
        key: REDACTED if _secret_name(key) else value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = fields_of(record)
        if fields:
            text += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return text


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """The root logger writes ``fmt`` lines at ``level`` and above to ``stream`` (stderr)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


_NATIVE_LINE = re.compile(r"^([EWID])\d{4} [\d:.]+\s+\d+ ([^\]]+)\]\s*(.*)$")
_NATIVE_LEVELS = {"E": logging.ERROR, "W": logging.WARNING, "I": logging.INFO, "D": logging.DEBUG}
native_log = logging.getLogger("grpc.core")


def native_record(line: str) -> tuple[int, str, dict[str, Any]]:
    """(level, message, fields) of a line native code wrote to stderr."""
    match = _NATIVE_LINE.match(line)
    if match is None:
        return logging.ERROR, line, {"event": "stderr"}
    letter, source, message = match.groups()
    fields: dict[str, Any] = {"source": source.strip()}
    if "Handshake failed" in message:
        fields["event"] = "tls_handshake_failed"
    return _NATIVE_LEVELS[letter], message, fields


def capture_native_stderr() -> None:
    """Route file descriptor 2 through a pipe: the root logger's handlers keep the real stderr,
    and every line written to fd 2 by anything else (native code) is logged as a record of
    ``grpc.core`` (``native_record``). Call after ``configure``."""
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    sys.stderr = stream

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    if line.strip():
                        level, message, fields = native_record(line.rstrip("\n"))
                        native_log.log(level, "%s", message, extra=fields)
                except Exception:  # the pump must outlive any line, or fd 2 would block
                    continue

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


def add_arguments(parser: Any) -> None:
    """``--log-level`` and ``--log-format`` on a daemon's ``serve`` command."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="the least severe log lines written (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="json",
        help="json: one JSON object per line, for a log collector (default); text: for a person",
    )
