"""A person at a hardware wallet, end to end: the coordinator asks a 3-of-3 pool whose Jade signer
(HWI driving the Jade-protocol emulator) approves only after several of the coordinator's call
deadlines. The signer answers ``pending``, the coordinator asks again with the same request, and
the round completes with exactly one prompt on the device."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from tests.factories import BTC
from vpool.devnet.pool import CALL_TIMEOUT, CLIENTS, DevPool
from vpool.v1 import coordinator_pb2 as pb

APPROVE_AFTER = 8.0
"""Seconds the device's user takes: longer than two of the coordinator's call deadlines."""
SIGN_DEADLINE = 3.0


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(
        tmp_path_factory.mktemp("person"),
        m=3,
        jade_approve_after=APPROVE_AFTER,
        sign_deadline_seconds=SIGN_DEADLINE,
        round_deadline_seconds=300.0,
    )
    with pool:
        pool.fund([BTC])
        yield pool


def test_a_round_waits_for_a_person_and_completes_with_one_prompt(devpool: DevPool) -> None:
    [jade] = devpool.jades.values()
    before = jade.prompts()
    start = devpool.node.chain.tip()[0] + 1
    address = encode_segwit_address(REGTEST, 0, sha256(b"person at device")[:20])
    devpool.client(CLIENTS[0]).SubmitWithdrawal(
        pb.SubmitWithdrawalRequest(request_id="late", address=address, amount_sat=BTC // 10),
        timeout=CALL_TIMEOUT,
    )
    response = devpool.run_round()
    assert response.round_id, response.detail

    def broadcast() -> bool | None:
        found = devpool.admin().GetRound(
            pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
        )
        return found.status == pb.ROUND_STATUS_BROADCAST or None

    devpool.wait_until(broadcast, "the round to be signed by all three and broadcast", 120.0)
    assert jade.prompts() - before == 1
    devpool.mine(1)
    spk = address_to_script_pubkey(address, REGTEST)
    devpool.wait_until(
        lambda: devpool.received_by(spk, start) == BTC // 10 or None, "the payment on chain"
    )
