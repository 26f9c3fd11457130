"""A bcoin regtest full node in a child process, for the tests and the demo.

bcoin comes from ``node_modules`` (``make node_modules``: ``npm ci --ignore-scripts``, so nothing
is compiled). It runs from memory with its pure JavaScript backends (``NODE_BACKEND=js``: its
murmur3 module has no fallback for a missing native build), serves JSON-RPC on a free loopback
port with a random API key, and keeps nothing when it stops.

Its regtest addresses have their own prefixes (bech32 "rb", base58 0x3c and 0x26): only
``generatetoaddress`` needs one, made here from a scriptPubKey; everything else is raw hex.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from coordinator.chain import BitcoinRPC, ChainUnavailable
from pool.address import script_pubkey_to_address
from pool.networks import REGTEST

REPO_ROOT = Path(__file__).resolve().parents[2]

BCOIN_REGTEST = dataclasses.replace(
    REGTEST, name="bcoin-regtest", bech32_hrp="rb", p2pkh_prefix=0x3C, p2sh_prefix=0x26
)
"""bcoin's own regtest address prefixes."""

SEGWIT_HEIGHT = 432
"""Segwit is active on bcoin regtest from this height on (three 144-block BIP9 periods)."""

RPC_USER = "vpool"
"""bcoin checks only the password (its API key); any user name is accepted."""


class BcoinError(RuntimeError):
    """The node did not start, or died; the message ends with the tail of its log."""


def bcoin_address(script_pubkey: bytes) -> str:
    """The bcoin-regtest address of a p2pkh, p2sh or witness v0 scriptPubKey."""
    address = script_pubkey_to_address(script_pubkey, BCOIN_REGTEST)
    if address is None or (address.startswith("rb1") and script_pubkey[0] != 0):
        raise ValueError("bcoin 1.0.2 has addresses only for p2pkh, p2sh and witness v0 outputs")
    return address


def bcoin_script(root: Path = REPO_ROOT) -> Path:
    """bcoin's node entry point under ``root/node_modules`` (its ``bin/bcoin`` is a shell
    script that execs this file)."""
    return root / "node_modules" / "bcoin" / "bin" / "node"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BcoinNode:
    """A bcoin regtest node; ``start()`` (or ``with``) runs it, ``stop()`` ends it."""

    def __init__(
        self,
        root: Path = REPO_ROOT,
        log_level: str = "info",
        start_timeout: float = 30.0,
        *,
        listen: bool = False,
        peers: Sequence[str] = (),
    ) -> None:
        """``listen``: accept peers on a loopback port (``p2p_address``); ``peers``: the only
        nodes to connect to (``host:port``), e.g. another node's ``p2p_address``. By default a
        node neither listens nor connects: it is a chain of its own."""
        self._listen = listen
        self._peers = tuple(peers)
        self._p2p_port = _free_port()
        self.p2p_address = f"127.0.0.1:{self._p2p_port}"
        self._root = root
        self._log_level = log_level
        self._start_timeout = start_timeout
        self._password = secrets.token_hex(16)
        self._port = _free_port()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.rpc_url = f"http://127.0.0.1:{self._port}/"
        self.chain = BitcoinRPC(self.rpc_url, RPC_USER, self._password, timeout=60.0)

    @classmethod
    def attach(cls, rpc_url: str, password: str) -> BcoinNode:
        """A node another process runs (``python -m vpool.devnet.regtest node``), for calls
        only: ``start`` and ``stop`` are not for it."""
        node = cls()
        node.rpc_url = rpc_url
        node._password = password
        node.chain = BitcoinRPC(rpc_url, RPC_USER, password, timeout=60.0)
        return node

    @property
    def credentials(self) -> tuple[str, str]:
        """``(user, password)`` of the JSON-RPC interface."""
        return RPC_USER, self._password

    def __repr__(self) -> str:
        return f"BcoinNode({self.rpc_url!r})"

    def _command(self, prefix: Path) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise BcoinError("node (Node.js) is not on PATH")
        script = bcoin_script(self._root)
        if not script.is_file():
            raise BcoinError(f"{script} is missing: run `make node_modules`")
        return [
            node,
            str(script),
            "--network=regtest",
            "--memory=true",
            "--workers=false",
            f"--listen={'true' if self._listen else 'false'}",
            f"--port={self._p2p_port}",
            # Outbound peers: only the given ones, else only a closed loopback port, so that no
            # regtest node that happens to listen on the default port joins in.
            f"--only={','.join(self._peers) or f'127.0.0.1:{_free_port()}'}",
            "--no-wallet",
            "--index-tx",
            "--http-host=127.0.0.1",
            f"--http-port={self._port}",
            f"--prefix={prefix}",
            f"--log-level={self._log_level}",
        ]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BCOIN_")}
        env["NODE_BACKEND"] = "js"
        env["BCOIN_API_KEY"] = self._password  # not on the command line, where ps shows it
        return env

    def start(self) -> BcoinNode:
        """Start the node and wait until its RPC answers."""
        if self._process is not None:
            raise BcoinError("the node is already started")
        self._dir = Path(tempfile.mkdtemp(prefix="vpool-bcoin-"))
        command = self._command(self._dir)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise BcoinError("the node is not started")
        return self._dir / "bcoin.log"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._process.poll() is not None:
                raise BcoinError(
                    f"bcoin exited with status {self._process.returncode}:\n{self._log_tail()}"
                )
            try:
                self.chain.call("getblockcount")
                return
            except ChainUnavailable:
                if time.monotonic() > deadline:
                    raise BcoinError(
                        f"bcoin did not answer within {self._start_timeout} s:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.05)

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call (``ChainError`` when the node answers with an error)."""
        return self.chain.call(method, *params)

    def mine(self, blocks: int, script_pubkey: bytes) -> list[str]:
        """Mine ``blocks`` blocks paying their coinbase to ``script_pubkey``; their hashes."""
        hashes = self.rpc("generatetoaddress", blocks, bcoin_address(script_pubkey))
        return [str(h) for h in hashes]

    def invalidate(self, block_hash: str) -> None:
        """Mark a block invalid: the chain goes back to its parent (a reorganisation, once
        other blocks are mined on top)."""
        self.rpc("invalidateblock", block_hash)

    def drop_mempool(self) -> None:
        """Empty the node's mempool, as a node that restarted or evicted the transactions
        would: bcoin's HTTP ``POST /reset`` to the current tip keeps every block and clears
        the mempool (its chain "reset" event)."""
        height = self.chain.tip()[0]
        user, password = self.credentials
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.rpc_url}reset",
            data=json.dumps({"height": height}).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            if json.loads(answer.read()) != {"success": True}:
                raise BcoinError(f"POST /reset did not succeed:\n{self._log_tail()}")

    def segwit_active(self) -> bool:
        """Whether the next block may hold witness transactions (mine past ``SEGWIT_HEIGHT``)."""
        info = self.rpc("getblockchaininfo")
        return bool(info["bip9_softforks"]["segwit"]["status"] == "active")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the node (kill it after ``timeout``) and delete its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> BcoinNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
