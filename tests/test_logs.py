"""Structured logs (vpool.logs): one JSON object per line with the facts as fields, the level
chosen, no secret; the daemons' own lines are parsed in tests/test_observability_e2e.py."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpool import logs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_time_level_logger_and_message(
    stream: io.StringIO,
) -> None:
    logs.configure("info", "json", stream)
    logging.getLogger("coordinator.rounds").info("round %s built", "ab12")
    [line] = lines(stream)
    assert (line["level"], line["logger"], line["message"]) == (
        "INFO",
        "coordinator.rounds",
        "round ab12 built",
    )
    assert str(line["time"]).endswith("Z")


def test_the_facts_given_as_extra_are_fields_of_their_own(stream: io.StringIO) -> None:
    logs.configure("info", "json", stream)
    logging.getLogger("x").info(
        "withdrawal completed",
        extra={"withdrawal_id": "alice/w1", "amount_sat": 5000, "destination": "bcrt1qxyz"},
    )
    [line] = lines(stream)
    assert (line["withdrawal_id"], line["amount_sat"], line["destination"]) == (
        "alice/w1",
        5000,
        "bcrt1qxyz",
    )


def test_lines_below_the_chosen_level_are_not_written(stream: io.StringIO) -> None:
    logs.configure("warning", "json", stream)
    logging.getLogger("x").info("quiet")
    logging.getLogger("x").warning("loud")
    assert [line["message"] for line in lines(stream)] == ["loud"]


def test_debug_level_writes_debug_lines(stream: io.StringIO) -> None:
    logs.configure("debug", "json", stream)
    logging.getLogger("x").debug("block scanned", extra={"height": 7})
    assert lines(stream)[0]["height"] == 7


def test_a_field_named_like_a_secret_is_redacted(stream: io.StringIO) -> None:
    logs.configure("info", "json", stream)
    logging.getLogger("x").info(
        "oops", extra={"rpc_password": "hunter2", "mnemonic": "abandon abandon", "height": 1}
    )
    text = stream.getvalue()
    assert "hunter2" not in text and "abandon" not in text
    [line] = lines(stream)
    assert line["rpc_password"] == logs.REDACTED and line["height"] == 1


def test_a_failure_carries_its_traceback_in_one_line(stream: io.StringIO) -> None:
    logs.configure("info", "json", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("step failed")
    [line] = lines(stream)
    assert "RuntimeError: boom" in str(line["exception"])


def test_text_format_is_for_a_person_with_the_fields_after_the_message(
    stream: io.StringIO,
) -> None:
    logs.configure("info", "text", stream)
    logging.getLogger("x").info("deposit credited", extra={"amount_sat": 7})
    assert stream.getvalue().rstrip().endswith("x: deposit credited amount_sat=7")


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        logs.configure("loud")


@pytest.mark.parametrize("command", ["coordinator.cli", "signer.cli"])
def test_both_daemons_take_log_level_and_log_format(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", command, "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--log-level {debug,info,warning,error}" in done.stdout
    assert "--log-format {json,text}" in done.stdout


def test_a_bad_log_level_is_bad_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "serve", "--config", "x", "--log-level", "loud"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--log-level" in done.stderr


def test_a_native_grpc_line_becomes_a_record_with_its_level_and_event() -> None:
    line = (
        "E1208 00:16:12.771365952   11158 ssl_transport_security.cc:1519]       Handshake "
        "failed with fatal error SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED."
    )
    level, message, fields = logs.native_record(line)
    assert level == logging.ERROR
    assert message.startswith("Handshake failed")
    assert fields == {"source": "ssl_transport_security.cc:1519", "event": "tls_handshake_failed"}


def test_any_other_stderr_line_is_kept_as_an_error() -> None:
    assert logs.native_record("Segmentation fault") == (
        logging.ERROR,
        "Segmentation fault",
        {"event": "stderr"},
    )
