"""The chain backend: Bitcoin Core's JSON-RPC over HTTP, blocks and transactions parsed locally.

Any Core-compatible node works; what the coordinator needs is asked in raw hex and parsed here
(blocks with python-bitcoinlib, transactions with ``pool.tx``), so the node's JSON formats do not
matter. Confirmed transactions are found by ``raw_transaction`` only on a node with a transaction
index (Core ``-txindex``, bcoin ``--index-tx``).

bcoin (the regtest node of the tests) differs from Core in ways handled here: its
``sendrawtransaction`` answers with the txid even when its mempool refuses the transaction (the
reason only goes to its log), so acceptance is checked afterwards; its "not found" errors carry
code -1 instead of -5; ``estimatesmartfee`` answers ``{"fee": -1}`` instead of ``{"errors"}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from bitcoin.core import CBlock, b2lx

from coordinator.config import ChainConfig
from pool.tx import Transaction
from vpool.jsonrpc import ChainError, ChainUnavailable, JsonRpcClient, is_not_found

COIN = Decimal(100_000_000)

RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27

ACCEPT_WAIT_SECONDS = 2.0
"""How long a transaction the node took may take to appear (bcoin adds it to its mempool after
answering)."""

__all__ = [
    "BitcoinRPC",
    "Block",
    "BlockHeader",
    "ChainError",
    "ChainUnavailable",
    "TransactionRejected",
]


class TransactionRejected(ChainError):
    """The node refused a transaction; ``message`` is its reason when it gave one."""


@dataclass(frozen=True)
class Block:
    """A block of the node's chain; hashes in display hex (byte-reversed, as RPCs show them)."""

    hash: str
    prev_hash: str
    """All zeros for the genesis block."""
    transactions: tuple[Transaction, ...]
    time: int
    """The timestamp in its header (unix seconds, as the miner set it)."""


@dataclass(frozen=True)
class BlockHeader:
    hash: str
    height: int
    prev_hash: str
    """All zeros for the genesis block."""


_NULL_HASH = "00" * 32


def parse_block(raw: bytes) -> Block:
    """Decode a serialized block; its transactions are re-encoded and decoded strictly."""
    block = CBlock.deserialize(raw)
    transactions = tuple(Transaction.parse(bytes(tx.serialize())) for tx in block.vtx)
    return Block(
        str(b2lx(block.GetHash())), str(b2lx(block.hashPrevBlock)), transactions, int(block.nTime)
    )


class BitcoinRPC(JsonRpcClient):
    """What the coordinator asks its node, over the shared JSON-RPC transport
    (``vpool.jsonrpc``). Each call is one HTTP request with a timeout; thread-safe.

    Credentials are a user and password, or Core's cookie file (read at each call, since Core
    writes a new one when it restarts). They never appear in messages or ``repr``.
    """

    before_send: Callable[[], None] | None = None
    """Called before each broadcast; it raises to prevent it (a coordinator that is no longer
    the active one: coordinator.leadership)."""

    @classmethod
    def from_config(cls, config: ChainConfig) -> BitcoinRPC:
        return cls(
            config.rpc_url,
            config.rpc_user,
            config.rpc_password,
            config.cookie_file,
            config.timeout_seconds,
        )

    # --- chain -------------------------------------------------------------------------------

    def tip(self) -> tuple[int, str]:
        """Height and hash of the node's best block (read together, in one call)."""
        info = self.call("getblockchaininfo")
        return int(info["blocks"]), str(info["bestblockhash"])

    def block_hash(self, height: int) -> str:
        """The hash of the best chain's block at ``height``; ChainError when above the tip."""
        return str(self.call("getblockhash", height))

    def block(self, block_hash: str) -> Block:
        """The block, fetched raw and parsed; ChainError when the node does not know it."""
        raw = bytes.fromhex(self.call("getblock", block_hash, 0))  # bcoin reads 0 as false
        block = parse_block(raw)
        if block.hash != block_hash:
            raise ChainError(None, f"getblock {block_hash}: the node sent block {block.hash}")
        return block

    def header(self, block_hash: str) -> BlockHeader:
        info = self.call("getblockheader", block_hash, True)
        prev = info.get("previousblockhash") or _NULL_HASH
        return BlockHeader(str(info["hash"]), int(info["height"]), str(prev))

    # --- transactions ------------------------------------------------------------------------

    def raw_transaction(self, txid: str) -> bytes | None:
        """The transaction from the mempool or (with a transaction index) the chain, else None."""
        try:
            return bytes.fromhex(self.call("getrawtransaction", txid, 0))
        except ChainError as e:
            if is_not_found(e):
                return None
            raise

    def mempool_entry(self, txid: str) -> dict[str, Any] | None:
        """The node's mempool entry (its own JSON fields), or None when not in the mempool."""
        try:
            entry = self.call("getmempoolentry", txid)
        except ChainError as e:
            if is_not_found(e):
                return None
            raise
        return dict(entry)

    def send_raw_transaction(self, raw: bytes) -> str:
        """Broadcast; the txid. A transaction already in the chain or mempool is a success.

        ``TransactionRejected`` carries the node's reason; bcoin gives none, so a transaction it
        took but holds neither in its mempool nor in its chain is rejected "without a reason".
        """
        if self.before_send is not None:
            self.before_send()
        try:
            txid = str(self.call("sendrawtransaction", raw.hex()))
        except ChainError as e:
            if isinstance(e, ChainUnavailable):
                raise
            if e.code == RPC_VERIFY_ALREADY_IN_CHAIN:
                return Transaction.parse(raw).txid_hex
            raise TransactionRejected(e.code, e.message) from None
        deadline = time.monotonic() + ACCEPT_WAIT_SECONDS
        while not self._holds(txid):
            if time.monotonic() > deadline:
                raise TransactionRejected(
                    RPC_VERIFY_REJECTED,
                    f"sendrawtransaction: the node answered {txid} but holds it neither in its "
                    "mempool nor in its chain (it gave no reason; see its log)",
                )
            time.sleep(0.02)
        return txid

    def _holds(self, txid: str) -> bool:
        return self.mempool_entry(txid) is not None or self.raw_transaction(txid) is not None

    def estimate_fee_rate(self, target: int, floor: int, ceiling: int) -> int:
        """The node's fee estimate for confirmation within ``target`` blocks, in satoshis per
        1000 vB, clamped to ``floor..ceiling``; ``floor`` when the node has no estimate (as on
        regtest)."""
        if not 0 <= floor <= ceiling:
            raise ValueError(
                f"fee floor {floor} and ceiling {ceiling} must be 0 <= floor <= ceiling"
            )
        answer = self.call("estimatesmartfee", target)
        btc_per_kvb = answer.get("feerate", answer.get("fee"))  # Core: feerate; bcoin: fee
        if btc_per_kvb is None or btc_per_kvb <= 0:
            return floor
        rate = int((Decimal(btc_per_kvb) * COIN).to_integral_value(rounding=ROUND_CEILING))
        return max(floor, min(ceiling, rate))
