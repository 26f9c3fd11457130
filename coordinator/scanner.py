"""The chain follower: the node's best chain, block by block, into the pool's UTXO set.

``Scanner.sync`` processes blocks strictly in height order from the last processed one, never
skipping a block. Each block is applied in ONE database transaction: its row in ``blocks`` (the
cursor, with the header's time), the pool outputs it spends and creates, the deposits among them
(every output paying a receive address, classified at once: coordinator.deposits), the
receive/change indexes it uses (and the lookahead they extend), and the round transactions it
confirms. A crash therefore loses at most the block being applied, which the next ``sync``
applies again. After the blocks, ``sync`` marks the deposits that have their confirmations
``confirmed``; the signers' acknowledgements credit them (coordinator.credits, run by the daemon).

Reorganisations: before applying block ``h + 1`` its previous-block hash is compared with the
stored block ``h``; while they differ (or while the stored tip is not on the node's best chain)
the stored tip is undone, with its deposits, one block per transaction, and the scan goes on
from there.

On an empty database the scan starts at ``start_height`` (default 0, the genesis block: right for
regtest and for the tests; elsewhere pass the height at which the pool's first series was
created). Run one scanner per database: a second one fails on the ``blocks`` keys instead of
corrupting the cursor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Protocol

from sqlalchemy import Connection, Engine

from coordinator import deposits
from coordinator.config import DepositsConfig, PoolConfig
from coordinator.store import chain as store
from coordinator.store.chain import BlockRecord, PoolAddress
from coordinator.store.deposits import NewDeposit
from coordinator.store.schema import transaction
from pool.networks import Network
from pool.series import RECEIVE
from pool.tx import Transaction

log = logging.getLogger(__name__)


class ChainBlock(Protocol):
    """A block as the chain backend returns it (hashes in display hex)."""

    @property
    def hash(self) -> str: ...

    @property
    def prev_hash(self) -> str: ...

    @property
    def transactions(self) -> Sequence[Transaction]: ...

    @property
    def time(self) -> int: ...


class BlockSource(Protocol):
    """The part of the chain backend the scanner uses."""

    def tip(self) -> tuple[int, str]: ...

    def block_hash(self, height: int) -> str: ...

    def block(self, block_hash: str) -> ChainBlock: ...


class _Step(Enum):
    CAUGHT_UP = "caught up"
    APPLIED = "applied"
    UNDONE = "undone"


class Scanner:
    """Follows the node's best chain into the store; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        chain: BlockSource,
        network: Network,
        pool_config: PoolConfig,
        deposits_config: DepositsConfig,
        *,
        start_height: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._chain = chain
        self._network = network
        self._lookahead = pool_config.address_lookahead
        self._deposits = deposits_config
        self._start_height = start_height
        self._clock = clock
        self.node_tip: tuple[int, str] | None = None
        """The node's tip as last read (height, hash); None before the first read."""

    def sync(self, max_blocks: int | None = None) -> int:
        """Follow the chain up to the node's tip, applying at most ``max_blocks`` blocks (undone
        blocks do not count); return the height of the last processed block."""
        with transaction(self._engine) as conn:
            store.ensure_lookahead(conn, self._network, self._lookahead)
        applied = 0
        while max_blocks is None or applied < max_blocks:
            step = self._step()
            if step is _Step.CAUGHT_UP:
                break
            applied += step is _Step.APPLIED
        height = self.height()
        if applied:
            tip = self.node_tip[0] if self.node_tip else height
            log.info(
                "blocks scanned",
                extra={"blocks": applied, "height": height, "node_tip": tip},
            )
        with transaction(self._engine) as conn:
            deposits.confirm_ready(conn, self._deposits, self._network, height, self._clock())
        return height

    def height(self) -> int:
        """The last processed height (``start_height - 1`` before the first block)."""
        with self._engine.connect() as conn:
            cursor = store.last_block(conn)
        return self._start_height - 1 if cursor is None else cursor.height

    def _step(self) -> _Step:
        """Apply the next block, undo an orphaned tip, or report that the store is caught up."""
        tip_height, tip_hash = self._chain.tip()
        self.node_tip = (tip_height, tip_hash)
        with self._engine.connect() as conn:
            cursor = store.last_block(conn)
        if cursor is not None and cursor.hash == tip_hash:
            return _Step.CAUGHT_UP
        if cursor is not None and cursor.height >= tip_height:
            return self._undo(cursor)  # the node's best chain does not contain our tip
        height = self._start_height if cursor is None else cursor.height + 1
        if height > tip_height:
            return _Step.CAUGHT_UP
        block = self._chain.block(self._chain.block_hash(height))
        if cursor is not None and block.prev_hash != cursor.hash:
            return self._undo(cursor)
        with transaction(self._engine) as conn:
            self._apply(conn, block, height)
        return _Step.APPLIED

    def _undo(self, cursor: BlockRecord) -> _Step:
        log.warning("reorganisation: undoing block %d %s", cursor.height, cursor.hash)
        with transaction(self._engine) as conn:
            deposits.forget_block(conn, cursor, self._clock())
            store.undo_block(conn, cursor)
        return _Step.UNDONE

    def _apply(self, conn: Connection, block: ChainBlock, height: int) -> None:
        """Everything block ``height`` does to the pool, and the block row."""
        now = self._clock()
        store.stamp_retirements(conn, height)
        txids = [tx.txid_hex for tx in block.transactions]
        watched = self._watched_outputs(conn, block.transactions)
        pool_outpoints = store.unspent_outpoints(
            conn, {txin.prevout.txid_hex for tx in block.transactions for txin in tx.inputs}
        )
        for position, (tx, txid) in enumerate(zip(block.transactions, txids, strict=True)):
            for txin in tx.inputs:
                spent = (txin.prevout.txid_hex, txin.prevout.vout)
                if spent in pool_outpoints:
                    store.spend_utxo(conn, *spent, spent_txid=txid, spent_height=height)
            for vout, out in enumerate(tx.outputs):
                address = watched.get(out.script_pubkey)
                if address is not None:
                    store.add_utxo(
                        conn, txid, vout, out.value, out.script_pubkey, address, height,
                        coinbase=position == 0,
                    )  # fmt: skip
                    pool_outpoints.add((txid, vout))
                    if address.branch == RECEIVE:
                        found = NewDeposit(
                            txid, vout, out.script_pubkey, out.value, height, block.hash,
                            tx.serialize(),
                        )  # fmt: skip
                        mined_at = store.mined_time(block.time, now)
                        log.info(
                            "deposit seen",
                            extra={"txid": txid, "outpoint": f"{txid}:{vout}",
                                   "amount_sat": out.value, "series_id": address.series_id,
                                   "address_index": address.index, "height": height},
                        )  # fmt: skip
                        deposits.on_deposit(
                            conn, self._deposits, found, address.series_id, mined_at, now
                        )
        confirmed = store.unconfirmed_round_txids(conn).intersection(txids)
        store.confirm_round_transactions(conn, confirmed, height, block.hash)
        record = BlockRecord(height, block.hash, block.prev_hash)
        store.add_block(conn, record, now, header_time=block.time)
        log.debug(
            "block scanned",
            extra={"height": height, "block_hash": block.hash, "pool_outputs": len(watched)},
        )

    def _watched_outputs(
        self, conn: Connection, transactions: Sequence[Transaction]
    ) -> dict[bytes, PoolAddress]:
        """The block's output scripts that are pool scripts. Each use advances its branch's next
        index and extends the lookahead, until no newly watched script appears in the block."""
        scripts = {out.script_pubkey for tx in transactions for out in tx.outputs}
        watched: dict[bytes, PoolAddress] = {}
        while found := store.lookup_scripts(conn, scripts - watched.keys()):
            watched.update(found)
            for address in found.values():
                store.advance_index(conn, address.series_id, address.branch, address.index + 1)
            store.ensure_lookahead(conn, self._network, self._lookahead)
        return watched
