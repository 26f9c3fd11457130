"""The JSON-RPC client against a scripted HTTP server answering as Bitcoin Core does.

bcoin (tests/test_chain_bcoin.py) does not exercise Core's ways: errors with HTTP 500/404, code
-27 for a transaction already in the chain, -5 for "not found", ``feerate`` in estimatesmartfee.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coordinator.chain import BitcoinRPC, ChainError, ChainUnavailable, TransactionRejected
from pool.hashes import sha256
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from tests.factories import p2wpkh

Reply = tuple[int, bytes]


class FakeCore(ThreadingHTTPServer):
    """Answers each method with a scripted ``(HTTP status, body)``; records Authorization."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: dict[str, Reply] = {}
        self.authorizations: list[str | None] = []
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the timeout test's client hangs up before its answer."""

    def answer(self, method: str, result: Any = None, error: dict[str, Any] | None = None) -> None:
        status = 200 if error is None else 404 if error["code"] == -32601 else 500
        body = json.dumps({"result": result, "error": error, "id": 1}).encode()
        self.replies[method] = (status, body)


class _Handler(BaseHTTPRequestHandler):
    server: FakeCore

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.authorizations.append(self.headers.get("Authorization"))
        time.sleep(self.server.delay)
        status, body = self.server.replies[request["method"]]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def core() -> Iterator[FakeCore]:
    server = FakeCore()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(secret.encode()).decode()


def test_errors_in_http_500_bodies_carry_code_and_message(core: FakeCore) -> None:
    core.answer("getblockhash", error={"code": -8, "message": "Block height out of range"})
    with pytest.raises(ChainError) as info:
        BitcoinRPC(core.url).block_hash(10**6)
    assert (info.value.code, info.value.message) == (-8, "getblockhash: Block height out of range")
    assert not isinstance(info.value, ChainUnavailable)


def test_unknown_method_is_a_chain_error(core: FakeCore) -> None:
    core.answer("getblockchaininfo", error={"code": -32601, "message": "Method not found"})
    with pytest.raises(ChainError, match="Method not found"):
        BitcoinRPC(core.url).tip()


def test_warming_up_bad_credentials_and_garbage_are_unavailable(core: FakeCore) -> None:
    rpc = BitcoinRPC(core.url, "user", "secret")
    core.answer("getblockchaininfo", error={"code": -28, "message": "Loading block index..."})
    with pytest.raises(ChainUnavailable, match="starting"):
        rpc.tip()
    core.replies["getblockchaininfo"] = (401, b"")
    with pytest.raises(ChainUnavailable, match="credentials") as info:
        rpc.tip()
    assert "secret" not in str(info.value) and "secret" not in repr(rpc)
    core.replies["getblockchaininfo"] = (200, b"<html>proxy error</html>")
    with pytest.raises(ChainUnavailable, match="not JSON"):
        rpc.tip()


def test_timeout_is_unavailable(core: FakeCore) -> None:
    core.answer("getblockchaininfo", {"blocks": 1, "bestblockhash": "00" * 32})
    core.delay = 0.5
    with pytest.raises(ChainUnavailable):
        BitcoinRPC(core.url, timeout=0.1).tip()


def test_user_password_and_cookie_file_authenticate(core: FakeCore, tmp_path: Path) -> None:
    core.answer("getblockchaininfo", {"blocks": 7, "bestblockhash": "ab" * 32})
    assert BitcoinRPC(core.url, "alice", "pw").tip() == (7, "ab" * 32)
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:first\n")
    rpc = BitcoinRPC(core.url, cookie_file=cookie)
    rpc.tip()
    cookie.write_text("__cookie__:second")  # Core restarted
    rpc.tip()
    assert core.authorizations == [
        _basic("alice:pw"),
        _basic("__cookie__:first"),
        _basic("__cookie__:second"),
    ]
    with pytest.raises(ValueError, match="not both"):
        BitcoinRPC(core.url, "alice", "pw", cookie_file=cookie)


def test_missing_cookie_file_is_unavailable(core: FakeCore, tmp_path: Path) -> None:
    with pytest.raises(ChainUnavailable, match="cookie"):
        BitcoinRPC(core.url, cookie_file=tmp_path / "absent").tip()


def _tx() -> Transaction:
    prevout = OutPoint(sha256(b"prev"), 0)
    return Transaction(2, (TxIn(prevout, 0xFFFFFFFD),), (TxOut(5_000, p2wpkh("d")),), 0)


def test_transaction_already_in_the_chain_is_a_success(core: FakeCore) -> None:
    core.answer("sendrawtransaction", error={"code": -27, "message": "Transaction already in"})
    assert BitcoinRPC(core.url).send_raw_transaction(_tx().serialize()) == _tx().txid_hex


def test_rejection_carries_the_nodes_reason(core: FakeCore) -> None:
    reason = "mandatory-script-verify-flag-failed"
    core.answer("sendrawtransaction", error={"code": -26, "message": reason})
    with pytest.raises(TransactionRejected, match=reason) as info:
        BitcoinRPC(core.url).send_raw_transaction(_tx().serialize())
    assert info.value.code == -26


def test_accepted_transaction_is_checked_in_the_mempool(core: FakeCore) -> None:
    txid = _tx().txid_hex
    core.answer("sendrawtransaction", txid)
    core.answer("getmempoolentry", {"vsize": 100})
    assert BitcoinRPC(core.url).send_raw_transaction(_tx().serialize()) == txid


def test_not_found_is_none(core: FakeCore) -> None:
    not_found = {"code": -5, "message": "No such mempool or blockchain transaction"}
    core.answer("getrawtransaction", error=not_found)
    core.answer("getmempoolentry", error={"code": -5, "message": "Transaction not in mempool"})
    rpc = BitcoinRPC(core.url)
    assert rpc.raw_transaction("cd" * 32) is None
    assert rpc.mempool_entry("cd" * 32) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"feerate": 0.00012345, "blocks": 6}', 12_345),
        ('{"feerate": 0.000012341, "blocks": 6}', 1_235),  # rounded up
        ('{"feerate": 0.00000500, "blocks": 6}', 1_000),  # the floor
        ('{"feerate": 0.01, "blocks": 6}', 50_000),  # the ceiling
        ('{"errors": ["Insufficient data or no feerate found"], "blocks": 0}', 1_000),
        ('{"fee": -1, "blocks": 6}', 1_000),  # bcoin without an estimate
    ],
)
def test_fee_estimate_is_clamped(core: FakeCore, answer: str, expected: int) -> None:
    core.replies["estimatesmartfee"] = (
        200,
        b'{"error": null, "id": 1, "result": %s}' % answer.encode(),
    )
    assert BitcoinRPC(core.url).estimate_fee_rate(6, 1_000, 50_000) == expected
