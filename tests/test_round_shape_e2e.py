"""Rounds shaped for the people who sign them, end to end: the Jade signer's operator reviews at
most two payments per transaction (``[backend] max_reviewed_payments``); the signer reports it in
GetInfo, the coordinator writes the cap into the manifest, and a round of five withdrawals is
built as transactions of at most two payments that every signer rebuilds and signs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.manifest import decode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from tests.factories import BTC
from vpool.devnet.pool import CALL_TIMEOUT, CLIENTS, DevPool
from vpool.v1 import coordinator_pb2 as pb
from vpool.v1 import signer_pb2

REVIEWED = 2


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(
        tmp_path_factory.mktemp("shape"), jade_backend={"max_reviewed_payments": REVIEWED}
    )
    with pool:
        pool.fund([BTC, BTC, BTC])
        yield pool


def test_the_jade_signer_reports_what_its_person_reviews(devpool: DevPool) -> None:
    [jade_signer] = devpool.jades
    info = (
        devpool.daemons[jade_signer]
        .stub(devpool.pki)
        .GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    )
    assert info.device_limits.max_reviewed_payments == REVIEWED


def test_a_round_is_built_in_transactions_its_reviewer_takes_and_every_payment_is_made(
    devpool: DevPool,
) -> None:
    [jade] = devpool.jades.values()
    before = jade.prompts()
    start = devpool.node.chain.tip()[0] + 1
    addresses = [encode_segwit_address(REGTEST, 0, sha256(b"shape %d" % k)[:20]) for k in range(5)]
    for k, address in enumerate(addresses):
        devpool.client(CLIENTS[0]).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(request_id=f"shape-{k}", address=address, amount_sat=10**6),
            timeout=CALL_TIMEOUT,
        )
    response = devpool.run_round()
    assert response.round_id, response.detail

    def broadcast() -> pb.Round | None:
        found = devpool.admin().GetRound(
            pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
        )
        return found if found.status == pb.ROUND_STATUS_BROADCAST else None

    found = devpool.wait_until(broadcast, "the round to be signed and broadcast", 120.0)
    assert decode_manifest(found.manifest).max_tx_payments == REVIEWED
    payments = sorted(
        len(Psbt.parse(t.psbt).tx.outputs) - 1 for t in found.transactions
    )  # every transaction here has change
    assert payments == [1, 2, 2]
    assert jade.prompts() - before == len(found.transactions)
    devpool.mine(1)
    for address in addresses:
        spk = address_to_script_pubkey(address, REGTEST)
        devpool.wait_until(
            lambda spk=spk: devpool.received_by(spk, start) == 10**6 or None, "a payment on chain"
        )
