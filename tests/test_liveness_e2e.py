"""Liveness end to end: a bcoin regtest node, three signer daemons, the coordinator daemon.

- A deposit address with one of three signers down is handed out once n - m + 1 = 2 signers
  recorded its refund address, the deposit is credited on their acknowledgements, and the signer
  that was down gets the registration replayed when it returns (read back from its own store).
- Signers that go down while the coordinator itself is stopped: the coordinator, started again,
  judges the deposits mined meanwhile by the signers' own serving intervals (refunded, not
  credited).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest

from pool.address import encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.pool import BTC, CALL_TIMEOUT, SERIES_ID, DevPool, default_signers
from vpool.v1 import coordinator_pb2 as pb

CONFIRMATIONS = 2
DOWN = "signer-3"


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(
        tmp_path_factory.mktemp("registration"),
        signers=default_signers(3, jades=0),
        deposit_settings={"confirmations": CONFIRMATIONS},
        liveness_settings={"health_interval_seconds": 1.0, "down_after_missed": 1},
    )
    with pool:
        yield pool


def refund_registered_on(pool: DevPool, signer_id: str, index: int) -> str | None:
    """The refund address the signer's own store holds for receive address ``index`` (None:
    never registered there)."""
    path = pool.daemons[signer_id].data_dir / "signer.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT refund_address FROM deposit_addresses WHERE series_id = ? AND idx = ?",
            (SERIES_ID, index),
        ).fetchone()
    return None if row is None else str(row[0])


def signer_state(pool: DevPool, signer_id: str) -> str:
    return str(next(s.state for s in pool.status().signers if s.signer_id == signer_id))


def test_with_one_of_three_signers_down_an_address_is_handed_out_credited_and_replayed(
    devpool: DevPool,
) -> None:
    refund_to = encode_segwit_address(REGTEST, 0, sha256(b"carol's refund")[:20])
    devpool.stop_signer(DOWN)
    try:
        devpool.wait_until(
            lambda: signer_state(devpool, DOWN) == "down" or None, f"{DOWN} to be seen down"
        )
        assert devpool.status().quorum == "ok"
        given = devpool.client().GetDepositAddress(
            pb.GetDepositAddressRequest(user_id="carol", refund_address=refund_to),
            timeout=CALL_TIMEOUT,
        )
        outpoint = devpool.pay({given.address: BTC // 10})[given.address]
        devpool.mine(CONFIRMATIONS)
        credited = devpool.wait_for_deposit("carol", outpoint, pb.DEPOSIT_STATUS_CREDITED)
        assert sorted(credited.acknowledged_by) == ["signer-1", "signer-2"]
        assert refund_registered_on(devpool, DOWN, given.index) is None
    finally:
        devpool.restart_signer(DOWN)
    devpool.wait_until(
        lambda: refund_registered_on(devpool, DOWN, given.index) == refund_to or None,
        f"the registration to be replayed to {DOWN}",
    )
    for signer_id in ("signer-1", "signer-2"):
        assert refund_registered_on(devpool, signer_id, given.index) == refund_to


def test_a_deposit_mined_while_the_coordinator_was_stopped_and_two_signers_down_is_refunded(
    devpool: DevPool,
) -> None:
    refund_to = encode_segwit_address(REGTEST, 0, sha256(b"dave's refund")[:20])
    given = devpool.client().GetDepositAddress(
        pb.GetDepositAddressRequest(user_id="dave", refund_address=refund_to),
        timeout=CALL_TIMEOUT,
    )
    assert devpool.coordinator is not None
    devpool.coordinator.stop()
    down = ("signer-2", "signer-3")
    for signer_id in down:
        devpool.stop_signer(signer_id)
    stopped = time.time()
    try:
        devpool.wait_until(  # block times have whole seconds: mine after the outage began
            lambda: time.time() >= stopped + 2 or None, "the next whole second"
        )
        outpoint = devpool.pay({given.address: BTC // 20})[given.address]
        devpool.mine(CONFIRMATIONS + 1)
        chain = devpool.node.chain
        assert chain.block(chain.tip()[1]).time > stopped
    finally:
        for signer_id in down:
            devpool.restart_signer(signer_id)  # the coordinator is stopped: nobody watches
    devpool.start_coordinator()
    judged = devpool.wait_until(
        lambda: (
            found
            if (found := devpool.deposit("dave", outpoint)) is not None
            and found.status not in (pb.DEPOSIT_STATUS_SEEN, pb.DEPOSIT_STATUS_CONFIRMING)
            else None
        ),
        "the restarted coordinator to judge the deposit",
    )
    assert judged.status != pb.DEPOSIT_STATUS_CREDITED
    assert judged.reason == "mined while the pool was degraded"
    history = devpool.status()
    assert history.quorum == "ok"
