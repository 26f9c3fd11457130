"""The signer's view of the chain: its own operator's node, asked over Bitcoin Core's JSON-RPC.

A manifest is a claim of the coordinator's; what the signer checks it against is this view.
``ChainView`` is the little the policy asks (the tip, a block hash by height, a confirmed unspent
output, a raw transaction); ``NodeChain`` answers it from a Core-compatible node (bcoin in the
devnet; confirmed transactions need a transaction index: Core ``-txindex``, bcoin
``--index-tx``). Every failure to get an answer (unreachable, timed out, credentials refused,
still starting, an answer that does not parse) is ``ChainUnavailable``: the round is refused
for now, never signed on a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pool.tx import OutPoint
from vpool.jsonrpc import ChainError, ChainUnavailable, JsonRpcClient, is_not_found

__all__ = ["ChainUnavailable", "ChainUtxo", "ChainView", "NodeChain"]

COIN = Decimal(100_000_000)


@dataclass(frozen=True)
class ChainUtxo:
    """An output confirmed and unspent on the signer's best chain."""

    value: int
    """Satoshis."""
    script_pubkey: bytes
    height: int
    """Height of the block that confirmed it."""
    confirmations: int
    """1 when confirmed by the tip."""
    coinbase: bool = False
    """A coinbase output: spendable only once it is 100 blocks deep."""


class ChainView(Protocol):
    """What a signer asks its own node. Raises ``ChainUnavailable`` when it cannot answer."""

    def tip(self) -> tuple[int, str]:
        """Height and hash (display hex) of the best block."""
        ...

    def block_hash(self, height: int) -> str | None:
        """Hash (display hex) of the best chain's block at ``height``; None above the tip."""
        ...

    def utxo(self, outpoint: OutPoint) -> ChainUtxo | None:
        """The output if it is confirmed and unspent on the best chain (the mempool is not
        consulted), else None."""
        ...

    def raw_transaction(self, txid_hex: str) -> bytes | None:
        """The serialized transaction (mempool or chain), or None if the node does not know it."""
        ...


class NodeChain:
    """``ChainView`` over a node's JSON-RPC: ``getblockchaininfo`` (tip height and hash in one
    answer), ``getblockhash``, ``gettxout`` with ``include_mempool=false``, ``getrawtransaction``.
    Thread-safe."""

    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        cookie_file: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._rpc = JsonRpcClient(url, user, password, cookie_file, timeout)
        self._heights: dict[str, int] = {}
        """Heights of best blocks ``gettxout`` named, to date its outputs (bounded below)."""

    @property
    def url(self) -> str:
        return self._rpc.url

    def __repr__(self) -> str:
        return f"NodeChain({self._rpc.url!r})"

    def _call(self, method: str, *params: Any) -> Any:
        """One call; an error the node answers with becomes ``ChainUnavailable`` too (the
        signer cannot check, so it cannot sign)."""
        try:
            return self._rpc.call(method, *params)
        except ChainUnavailable:
            raise
        except ChainError as e:
            raise ChainUnavailable(f"the node answered an error: {e}") from None

    def tip(self) -> tuple[int, str]:
        info = self._call("getblockchaininfo")
        try:
            return int(info["blocks"]), _hash(info["bestblockhash"])
        except (KeyError, TypeError, ValueError):
            raise ChainUnavailable("getblockchaininfo: unexpected answer") from None

    def sync_status(self) -> tuple[int, str, bool]:
        """The tip (height, hash) and whether the node says it is still syncing (Core's
        initial block download, or headers ahead of blocks)."""
        info = self._call("getblockchaininfo")
        try:
            height, best = int(info["blocks"]), _hash(info["bestblockhash"])
            headers = int(info.get("headers", height))
            syncing = bool(info.get("initialblockdownload", False)) or headers > height
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ChainUnavailable("getblockchaininfo: unexpected answer") from None
        return height, best, syncing

    def block_hash(self, height: int) -> str | None:
        if height < 0:
            return None
        try:
            answer = self._rpc.call("getblockhash", height)
        except ChainUnavailable:
            raise
        except ChainError as e:
            if self.tip()[0] < height:
                return None
            raise ChainUnavailable(f"the node answered an error: {e}") from None
        try:
            return _hash(answer)
        except (TypeError, ValueError):
            raise ChainUnavailable("getblockhash: unexpected answer") from None

    def utxos(self, outpoints: Sequence[OutPoint]) -> dict[OutPoint, ChainUtxo | None]:
        """``utxo`` of each outpoint, asked in one JSON-RPC batch (a round's hundreds of inputs
        in one request, not one request each)."""
        answers = self._rpc.call_batch("gettxout", [(o.txid_hex, o.vout, False) for o in outpoints])
        found: dict[OutPoint, ChainUtxo | None] = {}
        for outpoint, answer in zip(outpoints, answers, strict=True):
            if isinstance(answer, ChainError):
                raise ChainUnavailable(f"the node answered an error: {answer}")
            found[outpoint] = self._utxo_of(outpoint, answer)
        return found

    def utxo(self, outpoint: OutPoint) -> ChainUtxo | None:
        return self._utxo_of(
            outpoint, self._call("gettxout", outpoint.txid_hex, outpoint.vout, False)
        )

    def _utxo_of(self, outpoint: OutPoint, answer: Any) -> ChainUtxo | None:
        if answer is None:
            return None
        try:
            confirmations = int(answer["confirmations"])
            value = int(Decimal(answer["value"]) * COIN)
            script = bytes.fromhex(answer["scriptPubKey"]["hex"])
            coinbase = bool(answer.get("coinbase", False))
            best = _hash(answer["bestblock"])
        except (KeyError, TypeError, ValueError, ArithmeticError):
            raise ChainUnavailable(f"gettxout {outpoint}: unexpected answer") from None
        if confirmations < 1:
            return None  # not confirmed: not in the chain's UTXO set
        height = self._height_of(best) - confirmations + 1
        return ChainUtxo(value, script, height, confirmations, coinbase)

    def raw_transactions(self, txids_hex: Sequence[str]) -> dict[str, bytes | None]:
        """``raw_transaction`` of each txid, asked in one JSON-RPC batch."""
        answers = self._rpc.call_batch("getrawtransaction", [(t, 0) for t in txids_hex])
        return {t: self._raw_of(t, a) for t, a in zip(txids_hex, answers, strict=True)}

    def _raw_of(self, txid_hex: str, answer: Any) -> bytes | None:
        if isinstance(answer, ChainError):
            if is_not_found(answer):
                return None
            raise ChainUnavailable(f"the node answered an error: {answer}")
        try:
            return bytes.fromhex(answer)
        except (TypeError, ValueError):
            raise ChainUnavailable(f"getrawtransaction {txid_hex}: unexpected answer") from None

    def _height_of(self, block_hash: str) -> int:
        height = self._heights.get(block_hash)
        if height is None:
            header = self._call("getblockheader", block_hash, True)
            try:
                height = int(header["height"])
            except (KeyError, TypeError, ValueError):
                raise ChainUnavailable("getblockheader: unexpected answer") from None
            if len(self._heights) > 64:
                self._heights.clear()
            self._heights[block_hash] = height
        return height

    def confirmations(self, txid_hex: str) -> int:
        """Confirmations of a transaction on the node's best chain (0: in the mempool, unknown,
        or not in the best chain); ``getrawtransaction`` verbose (the node's transaction
        index, which previous transactions need too)."""
        try:
            answer = self._rpc.call("getrawtransaction", txid_hex, 1)
        except ChainUnavailable:
            raise
        except ChainError as e:
            if is_not_found(e):
                return 0
            raise ChainUnavailable(f"the node answered an error: {e}") from None
        try:
            return max(int(answer.get("confirmations") or 0), 0)
        except (AttributeError, TypeError, ValueError):
            raise ChainUnavailable(f"getrawtransaction {txid_hex}: unexpected answer") from None

    def raw_transaction(self, txid_hex: str) -> bytes | None:
        try:
            answer = self._rpc.call("getrawtransaction", txid_hex, 0)
        except ChainUnavailable:
            raise
        except ChainError as e:
            if is_not_found(e):
                return None
            raise ChainUnavailable(f"the node answered an error: {e}") from None
        try:
            return bytes.fromhex(answer)
        except (TypeError, ValueError):
            raise ChainUnavailable(f"getrawtransaction {txid_hex}: unexpected answer") from None


def _hash(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError("not a block hash")
    bytes.fromhex(value)
    return value.lower()
