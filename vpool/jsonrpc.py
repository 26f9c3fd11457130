"""Bitcoin Core's JSON-RPC over HTTP: the transport both daemons speak to their own node.

One ``JsonRpcClient`` is one node: each call is one HTTP request with a timeout (thread-safe).
Credentials are a user and password, or Core's cookie file (read at each call, since Core writes
a new one when it restarts); they never appear in messages or ``repr``. What the daemons ask the
node is built on top of it (``coordinator.chain.BitcoinRPC``, ``signer.chain.NodeChain``).

bcoin answers some errors differently from Core: its "not found" errors carry code -1 instead of
-5 (``is_not_found`` knows both).
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from decimal import Decimal
from http.client import HTTPException
from pathlib import Path
from typing import Any

RPC_MISC_ERROR = -1
RPC_INVALID_ADDRESS_OR_KEY = -5
"""Core's code for an unknown block, transaction or mempool entry."""
RPC_IN_WARMUP = -28


class ChainError(Exception):
    """The node answered with an error (``code`` is its JSON-RPC code), or could not be asked."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.code = code
        self.message = message


class ChainUnavailable(ChainError):
    """The node cannot be reached, timed out, refused the credentials, or is still starting."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


def is_not_found(err: ChainError) -> bool:
    """Core's -5, or bcoin's -1 with a "not found" / "not in mempool" message."""
    if err.code == RPC_INVALID_ADDRESS_OR_KEY:
        return True
    text = err.message.lower()
    return err.code == RPC_MISC_ERROR and ("not found" in text or "not in mempool" in text)


class JsonRpcClient:
    """The JSON-RPC transport to one node."""

    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        cookie_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        if cookie_file is not None and (user or password):
            raise ValueError("give either a user and password or a cookie file, not both")
        self.url = url
        self._user = user
        self._password = password
        self._cookie_file = cookie_file
        self._timeout = timeout
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _authorization(self) -> str | None:
        if self._cookie_file is not None:
            try:
                secret = self._cookie_file.read_text().strip()
            except OSError as e:
                raise ChainUnavailable(f"cannot read the cookie file: {e.strerror}") from None
        elif self._user or self._password:
            secret = f"{self._user}:{self._password}"
        else:
            return None
        return "Basic " + base64.b64encode(secret.encode()).decode()

    def call(self, method: str, *params: Any) -> Any:
        """The result of one JSON-RPC call (JSON numbers with a fraction as ``Decimal``)."""
        body = json.dumps(
            {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)}
        ).encode()
        return _result(method, self._post(method, body))

    def call_batch(self, method: str, params: Sequence[Sequence[Any]]) -> list[Any]:
        """The results of ``method`` called with each of ``params``, in one HTTP request (a
        JSON-RPC batch, which Core and bcoin both answer): each result, or the ``ChainError``
        the node answered that call with. ``ChainUnavailable`` when the batch got no answer."""
        if not params:
            return []
        ids = [next(self._ids) for _ in params]
        body = json.dumps(
            [
                {"jsonrpc": "1.0", "id": i, "method": method, "params": list(p)}
                for i, p in zip(ids, params, strict=True)
            ]
        ).encode()
        answer = self._post(method, body)
        try:
            replies = json.loads(answer, parse_float=Decimal)
        except ValueError:
            raise ChainUnavailable(f"{method}: the node's answer is not JSON") from None
        if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
            raise ChainUnavailable(f"{method}: the node's answer is not a JSON-RPC batch reply")
        by_id = {r.get("id"): r for r in replies}
        if set(by_id) != set(ids):
            raise ChainUnavailable(f"{method}: the node's batch reply does not answer every call")
        results: list[Any] = []
        for i in ids:
            try:
                results.append(_reply_result(method, by_id[i]))
            except ChainUnavailable:
                raise
            except ChainError as e:
                results.append(e)
        return results

    def _post(self, method: str, body: bytes) -> bytes:
        """The body of the node's answer to one HTTP request (an error's body too)."""
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        auth = self._authorization()
        if auth is not None:
            request.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: bytes = response.read()
        except urllib.error.HTTPError as e:  # Core answers errors with HTTP 404/500 and a body
            answer = e.read()
            if e.code in (401, 403):
                raise ChainUnavailable(f"{method}: HTTP {e.code}, check the credentials") from None
            if not answer:
                raise ChainUnavailable(f"{method}: HTTP {e.code}") from None
        except (urllib.error.URLError, HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ChainUnavailable(f"{method}: node unreachable at {self.url}: {reason}") from None
        return answer


def _result(method: str, answer: bytes) -> Any:
    try:
        reply = json.loads(answer, parse_float=Decimal)
    except ValueError:
        raise ChainUnavailable(f"{method}: the node's answer is not JSON") from None
    if not isinstance(reply, dict):
        raise ChainUnavailable(f"{method}: the node's answer is not a JSON-RPC reply")
    return _reply_result(method, reply)


def _reply_result(method: str, reply: dict[str, Any]) -> Any:
    error = reply.get("error")
    if error:
        code, message = int(error.get("code", 0)), str(error.get("message", ""))
        if code == RPC_IN_WARMUP:
            raise ChainUnavailable(f"{method}: the node is starting: {message}")
        raise ChainError(code, f"{method}: {message}")
    return reply.get("result")
