"""A signer asks its node for a round's outputs and previous transactions in JSON-RPC batches
(one request each, not one per input): the answers are those of the calls one by one, on the
bcoin regtest node."""

from __future__ import annotations

import pytest

from pool.hashes import sha256
from pool.tx import OutPoint
from signer.chain import NodeChain
from tests.chain_harness import fund
from tests.factories import BTC, make_series
from tests.regtest_fixtures import Regtest
from vpool.jsonrpc import ChainUnavailable

S1 = make_series(1, 2, (0, 1, 2))


def node_chain(regtest: Regtest) -> NodeChain:
    user, password = regtest.node.credentials
    return NodeChain(regtest.node.rpc_url, user, password)


def test_a_batch_of_outputs_answers_as_the_calls_one_by_one(regtest: Regtest) -> None:
    coins = fund(regtest, S1, [BTC, 2 * BTC, 3 * BTC])
    invented = OutPoint(sha256(b"no such transaction"), 0)
    outpoints = [c.outpoint for c in coins] + [invented]
    chain = node_chain(regtest)
    batch = chain.utxos(outpoints)
    assert batch == {o: chain.utxo(o) for o in outpoints}
    assert batch[invented] is None
    assert [batch[c.outpoint].value for c in coins] == [BTC, 2 * BTC, 3 * BTC]  # type: ignore[union-attr]


def test_a_batch_of_transactions_answers_as_the_calls_one_by_one(regtest: Regtest) -> None:
    coins = fund(regtest, S1, [BTC])
    known, unknown = coins[0].outpoint.txid_hex, sha256(b"no such transaction").hex()
    chain = node_chain(regtest)
    batch = chain.raw_transactions([known, unknown])
    assert batch == {known: chain.raw_transaction(known), unknown: None}
    assert batch[known] is not None


def test_a_batch_to_an_unreachable_node_is_unavailable() -> None:
    chain = NodeChain("http://127.0.0.1:9", "user", "password", timeout=2.0)
    with pytest.raises(ChainUnavailable):
        chain.utxos([OutPoint(sha256(b"x"), 0)])


def test_a_transactions_confirmations_are_its_depth_in_the_chain_and_0_otherwise(
    regtest: Regtest,
) -> None:
    """What releases an operator-cancelled request for a new payment (its replacement's depth,
    signer.chain_checks.ChainReleasedHistory): 0 in the mempool or unknown, then the depth."""
    chain = node_chain(regtest)
    txid = regtest.wallet.fund(regtest.node, [(S1.derive(0, 90).script_pubkey, BTC)])
    assert chain.confirmations(txid) == 0  # in the mempool only
    assert chain.confirmations(sha256(b"no such transaction").hex()) == 0
    regtest.wallet.mine(regtest.node, 2)
    assert chain.confirmations(txid) == 2
