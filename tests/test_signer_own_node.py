"""The whole pool with every signer on a bcoin node of its own, peered with the coordinator's:
honest rounds are paid, and a coordinator whose node shows another chain gets no signature."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pool.address import address_to_script_pubkey
from pool.networks import REGTEST
from tests.chain_harness import fund, pinned
from tests.factories import BTC, request
from tests.regtest_fixtures import Regtest
from tests.signer_harness import CALL_TIMEOUT, round_request
from vpool.devnet.bcoin import BcoinNode
from vpool.devnet.pool import CLIENTS, DevPool, default_signers
from vpool.devnet.wallet import DevWallet
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 3


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(
        tmp_path_factory.mktemp("own-nodes"),
        signers=default_signers(3, jades=1),
        own_nodes=True,
        round_deadline_seconds=6,
    )
    pool.pool_settings["maturation"] = MATURATION
    with pool:
        pool.fund([2 * BTC] * 2)
        yield pool


def test_each_signer_asks_its_own_node(devpool: DevPool) -> None:
    urls = {n.rpc_url for n in devpool.signer_nodes.values()}
    assert len(urls) == 3 and devpool.node.rpc_url not in urls
    for node in devpool.signer_nodes.values():
        assert node.chain.tip() == devpool.node.chain.tip()


def test_signers_on_their_own_nodes_sign_a_withdrawal_that_is_paid(devpool: DevPool) -> None:
    start = devpool.node.chain.tip()[0] + 1
    address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    devpool.client().SubmitWithdrawal(
        pb.SubmitWithdrawalRequest(request_id="own-1", address=address, amount_sat=BTC // 2),
        timeout=CALL_TIMEOUT,
    )
    response = devpool.run_round()
    assert response.round_id, response.detail
    found = devpool.admin().GetRound(pb.GetRoundRequest(round_id=response.round_id))
    assert {s.outcome for s in found.signers} == {"signed"}
    devpool.mine(MATURATION)

    def completed() -> bool | None:
        answer = devpool.client(CLIENTS[0]).GetWithdrawal(
            pb.GetWithdrawalRequest(request_id="own-1"), timeout=CALL_TIMEOUT
        )
        return answer.status == pb.WITHDRAWAL_STATUS_COMPLETED or None

    devpool.wait_until(completed, "the withdrawal to complete")
    assert devpool.received_by(address_to_script_pubkey(address, REGTEST), start) == BTC // 2


def test_a_coordinator_whose_node_shows_another_chain_gets_no_signature(
    devpool: DevPool,
) -> None:
    """The attacker holds the coordinator's certificate and a node of its own (not peered): a
    chain of its own, with coins paying the pool's scripts. Every signer refuses."""
    with BcoinNode() as other:
        wallet = DevWallet(seed=b"another chain")
        wallet.mine(other, 540)  # past segwit, with mature coinbases to pay from
        forged = Regtest(other, wallet)
        coins = fund(forged, devpool.series, [BTC, BTC])
        devpool.mine(max(0, other.chain.tip()[0] - devpool.node.chain.tip()[0] + 5))
        m = pinned(forged, [devpool.series], coins, [request("mallory", "other chain", BTC)])
        sign = round_request(m)
        for daemon in devpool.daemons.values():
            answer = daemon.stub(devpool.pki).SignRound(sign, timeout=CALL_TIMEOUT)
            assert not answer.signed_all and not answer.signed_psbts
            assert [r.reason_code for r in answer.refusals] == ["TIP_NOT_ON_CHAIN"]
