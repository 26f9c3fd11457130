"""A single-key P2WPKH wallet the test harness controls: it mines coins and pays them out.

It knows only the coins it saw arrive: the coinbase outputs of the blocks it mined and the change
of its own payments. Before spending a coin it asks the node whether the coin is still unspent,
so coins a reorganisation took away are dropped rather than spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pool import ecdsa
from pool.hashes import hash160, sha256
from pool.sighash import SIGHASH_ALL, SegwitV0Sighasher
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from vpool.devnet.bcoin import BcoinNode

COINBASE_MATURITY = 100
DUST_LIMIT = 546
"""Change below this goes to the fee."""
DEFAULT_SEED = b"vpool devnet wallet"
_SEQUENCE_RBF = 0xFFFFFFFD
_MAX_SIGNATURE = 72
"""A low-S DER signature with its sighash byte is at most 72 bytes."""


class WalletError(RuntimeError):
    """Not enough mature coins for a payment."""


@dataclass(frozen=True)
class Coin:
    outpoint: OutPoint
    value: int
    height: int | None
    """The height of the block that created it; None for the wallet's own unconfirmed change."""
    coinbase: bool


class DevWallet:
    """One key from ``sha256(seed)``; pays P2WPKH (BIP143 scriptCode ``76a914{h}88ac``)."""

    def __init__(self, seed: bytes = DEFAULT_SEED) -> None:
        self._key = sha256(seed)
        self._public_key = ecdsa.public_key(self._key)
        key_hash = hash160(self._public_key)
        self.script_pubkey = b"\x00\x14" + key_hash
        self._script_code = b"\x76\xa9\x14" + key_hash + b"\x88\xac"
        self._coins: list[Coin] = []

    def mine(self, node: BcoinNode, blocks: int) -> list[str]:
        """Mine ``blocks`` blocks to this wallet and keep their coinbase outputs; their hashes."""
        start, _ = node.chain.tip()
        hashes = node.mine(blocks, self.script_pubkey)
        for height, block_hash in enumerate(hashes, start + 1):
            coinbase = node.chain.block(block_hash).transactions[0]
            self._keep(coinbase, height, coinbase=True)
        return hashes

    def keep_block(self, transactions: Sequence[Transaction], height: int) -> None:
        """Keep what the block at ``height`` paid this wallet (coins spent since are dropped
        when a payment asks the node about them)."""
        for position, tx in enumerate(transactions):
            self._keep(tx, height, coinbase=position == 0)

    def _keep(self, tx: Transaction, height: int | None, coinbase: bool) -> None:
        for vout, txout in enumerate(tx.outputs):
            if txout.script_pubkey == self.script_pubkey:
                self._coins.append(Coin(OutPoint(tx.txid, vout), txout.value, height, coinbase))

    def fund(
        self, node: BcoinNode, outputs: Sequence[tuple[bytes, int]], fee_rate: int = 2_000
    ) -> str:
        """Pay ``(script_pubkey, amount)`` outputs, change back here; broadcast; the txid.

        ``fee_rate`` is in satoshis per 1000 vB.
        """
        if not outputs:
            raise ValueError("nothing to pay")
        payments = tuple(TxOut(amount, script) for script, amount in outputs)
        tip, _ = node.chain.tip()
        chosen: list[Coin] = []
        for coin in self._spendable(tip):
            if not self._unspent(node, coin):
                self._coins.remove(coin)
                continue
            chosen.append(coin)
            tx = self._sign(chosen, payments, fee_rate)
            if tx is not None:
                txid = node.chain.send_raw_transaction(tx.serialize())
                for spent in chosen:
                    self._coins.remove(spent)
                self._keep(tx, None, coinbase=False)
                return txid
        raise WalletError(f"not enough mature coins to pay {sum(o.value for o in payments)} sat")

    def _spendable(self, tip: int) -> list[Coin]:
        """Coins that may be spent in the next block, in the order they arrived."""
        return [
            c
            for c in self._coins
            if not c.coinbase or (c.height is not None and tip + 1 - c.height >= COINBASE_MATURITY)
        ]

    @staticmethod
    def _unspent(node: BcoinNode, coin: Coin) -> bool:
        return node.rpc("gettxout", coin.outpoint.txid_hex, coin.outpoint.vout, True) is not None

    def _sign(
        self, coins: Sequence[Coin], payments: tuple[TxOut, ...], fee_rate: int
    ) -> Transaction | None:
        """The signed payment from ``coins``, or None when they are not enough."""
        inputs = tuple(TxIn(c.outpoint, _SEQUENCE_RBF) for c in coins)
        change = TxOut(0, self.script_pubkey)
        largest = ((b"\x00" * _MAX_SIGNATURE, self._public_key),) * len(coins)
        vsize = Transaction(2, inputs, (*payments, change), 0, largest).vsize
        fee = -(-vsize * fee_rate // 1000)
        left = sum(c.value for c in coins) - sum(p.value for p in payments) - fee
        if left < 0:
            return None
        outputs = (*payments, TxOut(left, self.script_pubkey)) if left >= DUST_LIMIT else payments
        unsigned = Transaction(2, inputs, outputs, 0)
        sighasher = SegwitV0Sighasher(unsigned)
        witnesses = tuple(
            (
                ecdsa.sign(self._key, sighasher.digest(i, self._script_code, c.value))
                + bytes([SIGHASH_ALL]),
                self._public_key,
            )
            for i, c in enumerate(coins)
        )
        return unsigned.with_witnesses(witnesses)
