"""The chain backend and the devnet harness against a real bcoin regtest node (one per session)."""

from __future__ import annotations

import socket

import pytest

from coordinator.chain import BitcoinRPC, ChainError, ChainUnavailable, TransactionRejected
from pool.hashes import sha256
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from tests.factories import make_series, p2pkh, p2sh, p2wpkh
from vpool.devnet.bcoin import SEGWIT_HEIGHT, BcoinNode, bcoin_address
from vpool.devnet.wallet import COINBASE_MATURITY, DevWallet, WalletError

POOL_SCRIPT = make_series(1, 2, [0, 1, 2]).derive(0, 0).script_pubkey


def test_node_runs_regtest_with_segwit_active(bcoin_node: BcoinNode) -> None:
    info = bcoin_node.rpc("getblockchaininfo")
    assert info["chain"] == "regtest"
    assert bcoin_node.chain.tip()[0] > SEGWIT_HEIGHT
    assert bcoin_node.segwit_active()


@pytest.mark.parametrize("script", [p2pkh("a"), p2sh("b"), p2wpkh("c"), POOL_SCRIPT])
def test_bcoin_address_is_the_nodes_own(bcoin_node: BcoinNode, script: bytes) -> None:
    answer = bcoin_node.rpc("validateaddress", bcoin_address(script))
    assert answer["isvalid"] and answer["scriptPubKey"] == script.hex()


def test_bcoin_address_refuses_what_bcoin_cannot_encode() -> None:
    with pytest.raises(ValueError, match="witness v0"):
        bcoin_address(b"\x51\x20" + bytes(32))  # taproot: bech32m came after bcoin 1.0.2


def test_tip_block_hash_and_block_agree_with_the_node(bcoin_node: BcoinNode) -> None:
    chain = bcoin_node.chain
    height, tip_hash = chain.tip()
    assert chain.block_hash(height) == tip_hash
    block = chain.block(tip_hash)
    assert block.hash == tip_hash
    assert block.prev_hash == chain.block_hash(height - 1)
    verbose = bcoin_node.rpc("getblock", tip_hash, True)
    assert [tx.txid_hex for tx in block.transactions] == verbose["tx"]
    header = chain.header(tip_hash)
    assert (header.hash, header.height, header.prev_hash) == (tip_hash, height, block.prev_hash)
    assert chain.header(chain.block_hash(0)).prev_hash == "00" * 32


def test_block_hash_above_the_tip_is_an_error(bcoin_node: BcoinNode) -> None:
    with pytest.raises(ChainError) as info:
        bcoin_node.chain.block_hash(bcoin_node.chain.tip()[0] + 1000)
    assert info.value.code == -8


def test_wallet_funds_a_pool_address_through_mempool_and_block(
    bcoin_node: BcoinNode, dev_wallet: DevWallet
) -> None:
    chain = bcoin_node.chain
    txid = dev_wallet.fund(bcoin_node, [(POOL_SCRIPT, 150_000_000)], fee_rate=3_000)
    entry = chain.mempool_entry(txid)
    assert entry is not None
    raw = chain.raw_transaction(txid)
    assert raw is not None
    tx = Transaction.parse(raw)
    assert tx.txid_hex == txid and tx.outputs[0] == TxOut(150_000_000, POOL_SCRIPT)
    assert tx.outputs[1].script_pubkey == dev_wallet.script_pubkey  # the change
    assert entry["fee"] * 100_000_000 * 1000 >= 3_000 * tx.vsize  # bcoin: fee in BTC

    (block_hash,) = bcoin_node.mine(1, p2wpkh("miner"))
    block = chain.block(block_hash)
    assert txid in [t.txid_hex for t in block.transactions]
    assert (
        TxOut(150_000_000, POOL_SCRIPT)
        in next(t for t in block.transactions if t.txid_hex == txid).outputs
    )
    assert chain.mempool_entry(txid) is None
    assert chain.raw_transaction(txid) == raw  # found in the chain (bcoin --index-tx)


def test_wallet_spends_its_unconfirmed_change(bcoin_node: BcoinNode) -> None:
    wallet = DevWallet(b"change test")
    wallet.mine(bcoin_node, COINBASE_MATURITY)  # exactly one mature coinbase
    first = wallet.fund(bcoin_node, [(p2wpkh("first"), 10_000)])
    second = wallet.fund(bcoin_node, [(p2wpkh("second"), 20_000), (POOL_SCRIPT, 30_000)])
    raw = bcoin_node.chain.raw_transaction(second)
    assert raw is not None
    assert [i.prevout for i in Transaction.parse(raw).inputs] == [OutPoint.from_hex(first, 1)]
    with pytest.raises(WalletError, match="not enough mature coins"):
        wallet.fund(bcoin_node, [(POOL_SCRIPT, 100 * 100_000_000)])


def test_unknown_transaction_is_none(bcoin_node: BcoinNode) -> None:
    assert bcoin_node.chain.raw_transaction("ab" * 32) is None
    assert bcoin_node.chain.mempool_entry("ab" * 32) is None


def test_undecodable_transaction_is_rejected_with_the_nodes_reason(
    bcoin_node: BcoinNode,
) -> None:
    with pytest.raises(TransactionRejected) as info:
        bcoin_node.chain.send_raw_transaction(b"\x02\x00\x00\x00\x01")
    assert info.value.code == -22 and "read" in info.value.message  # bcoin: "Out of bounds read"


def test_transaction_the_node_drops_is_rejected(bcoin_node: BcoinNode) -> None:
    """bcoin answers the txid of a transaction spending a coin that does not exist (it keeps
    it as an orphan); the client sees it in neither mempool nor chain and says so."""
    missing = OutPoint(sha256(b"no such transaction"), 0)
    tx = Transaction(2, (TxIn(missing, 0xFFFFFFFF),), (TxOut(1_000, p2wpkh("x")),), 0)
    with pytest.raises(TransactionRejected, match="neither in its mempool nor in its chain"):
        bcoin_node.chain.send_raw_transaction(tx.serialize())


def test_sending_again_a_mempool_or_confirmed_transaction_succeeds(
    bcoin_node: BcoinNode, dev_wallet: DevWallet
) -> None:
    chain = bcoin_node.chain
    txid = dev_wallet.fund(bcoin_node, [(POOL_SCRIPT, 40_000)])
    raw = chain.raw_transaction(txid)
    assert raw is not None
    assert chain.send_raw_transaction(raw) == txid  # in the mempool
    bcoin_node.mine(1, p2wpkh("miner"))
    assert chain.send_raw_transaction(raw) == txid  # in the chain


def test_fee_estimate_on_regtest_is_the_floor(bcoin_node: BcoinNode) -> None:
    assert bcoin_node.chain.estimate_fee_rate(6, 1_500, 9_000) == 1_500
    with pytest.raises(ValueError, match="floor"):
        bcoin_node.chain.estimate_fee_rate(6, 2_000, 1_000)


def test_invalidated_block_leaves_the_chain(bcoin_node: BcoinNode) -> None:
    chain = bcoin_node.chain
    height, _ = chain.tip()
    orphaned = bcoin_node.mine(2, p2wpkh("first branch"))
    assert chain.tip() == (height + 2, orphaned[1])
    bcoin_node.invalidate(orphaned[0])
    assert chain.tip()[0] == height
    replacement = bcoin_node.mine(3, p2wpkh("second branch"))
    assert chain.tip() == (height + 3, replacement[2])
    assert chain.block_hash(height + 1) == replacement[0] != orphaned[0]
    assert chain.block(replacement[0]).prev_hash == chain.block_hash(height)


def test_wrong_password_and_closed_port_are_unavailable(bcoin_node: BcoinNode) -> None:
    user, _ = bcoin_node.credentials
    with pytest.raises(ChainUnavailable, match="HTTP 401"):
        BitcoinRPC(bcoin_node.rpc_url, user, "wrong").tip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(ChainUnavailable, match="unreachable"):
        BitcoinRPC(f"http://127.0.0.1:{closed}/", timeout=2).tip()
