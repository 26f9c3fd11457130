"""An operator cancels a broadcast round (AdminService.CancelRound) on the whole regtest pool
(bcoin node, three signer daemons, one behind the Jade emulator, the coordinator daemon): the
signers sign a replacement of its stuck transaction without its payments (an operator's cancel,
pool.cancel version 2), and whichever version confirms decides: the replacement, and the
withdrawals go back to the queue and a later round pays them exactly once; the original, and
they complete, paid once, never again.

The market is tests/test_fee_ladder_e2e.py's: bcoin has no replace-by-fee, so the original is
evicted from the mempool (as a full mempool evicts its cheapest transactions) before the
replacement is sent; for the original to win, it is left in the mempool and mined.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import select

from coordinator.config import load_config
from coordinator.store import schema
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from tests.test_fee_ladder_e2e import MARKET, diagnosis, market_block, sent_or_confirmed
from vpool import exitcodes
from vpool.devnet.pool import ADMIN, BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.devnet.processes import ROOT
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 3
BLOCKS = 10


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(f"operator-cancel/{tag}".encode())[:20])


def spk(tag: str) -> bytes:
    return address_to_script_pubkey(destination(tag), REGTEST)


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(tmp_path_factory.mktemp("opcancel"), round_deadline_seconds=30)
    pool.pool_settings["maturation"] = MATURATION
    pool.chain_settings.update(fee_floor=1_000, fee_ceiling=1_000)
    # no ladder: a cancel's replacement pays the original's rate plus one step, 6 sat/vB
    pool.ladder_settings.update(rungs=0, step=MARKET, bump_after_blocks=2)
    with pool:
        pool.fund([BTC // 2] * 4)
        yield pool


def withdrawal(pool: DevPool, client: str, request_id: str) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client(client).GetWithdrawal(
        pb.GetWithdrawalRequest(request_id=request_id), timeout=CALL_TIMEOUT
    )
    return found


def status_is(pool: DevPool, request_id: str, status: int) -> bool | None:
    return all(withdrawal(pool, c, request_id).status == status for c in CLIENTS) or None


def submit_and_broadcast(pool: DevPool, request_id: str) -> tuple[str, dict[str, int]]:
    """Both clients withdraw; a round pays them in one stuck transaction, sent."""
    payments = {CLIENTS[0]: 20_000_000, CLIENTS[1]: 5_000_000}
    for client, amount in payments.items():
        pool.client(client).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(
                request_id=request_id,
                address=destination(f"{request_id}/{client}"),
                amount_sat=amount,
            ),
            timeout=CALL_TIMEOUT,
        )
    response = pool.run_round()
    assert response.round_id, response.detail
    pool.wait_until(lambda: sent_or_confirmed(pool, CLIENTS[0], request_id), "the round sent")
    return response.round_id, payments


def cancel_round(pool: DevPool, round_id: str) -> pb.Round:
    answer: pb.Round = pool.admin().CancelRound(
        pb.CancelRoundRequest(round_id=round_id), timeout=CALL_TIMEOUT
    )
    return answer


def cli_cancel_round(pool: DevPool, round_id: str) -> subprocess.CompletedProcess[str]:
    """``vpool admin cancel-round --round-id`` as the pool's operator."""
    assert pool.coordinator is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPOOL_")}
    env |= {
        "VPOOL_COORDINATOR": pool.coordinator.address,
        "VPOOL_CERT": str(pool.pki.directory / f"{ADMIN}.pem"),
        "VPOOL_KEY": str(pool.pki.directory / f"{ADMIN}.key"),
        "VPOOL_CA": str(pool.pki.ca_path),
        "XDG_CONFIG_HOME": "/nonexistent",
    }
    args = ["admin", "cancel-round", "--round-id", round_id]
    return subprocess.run(
        [sys.executable, "-m", "vpool.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def cancel_round_sent(pool: DevPool, original: str, created: int) -> bool | None:
    """A round other than ``original``, created since, is signed: the cancel round."""
    rounds = pool.admin().ListRounds(pb.ListRoundsRequest(), timeout=CALL_TIMEOUT).rounds
    return (
        any(
            r.round_id != original
            and r.status in (pb.ROUND_STATUS_SIGNED, pb.ROUND_STATUS_BROADCAST)
            and r.created_unix >= created
            for r in rounds
        )
        or None
    )


def cancels_left(pool: DevPool, request_id: str) -> list[int]:
    """The withdrawals of ``request_id`` with a cancel recorded in the coordinator's store."""
    config = load_config(pool.directory / "coordinator" / "coordinator.toml")
    engine = schema.make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(schema.withdrawal_cancels.c.withdrawal_id)
                .join(
                    schema.withdrawals,
                    schema.withdrawals.c.id == schema.withdrawal_cancels.c.withdrawal_id,
                )
                .where(schema.withdrawals.c.request_id == request_id)
            ).scalars()
            return [int(r) for r in rows]
    finally:
        engine.dispose()


def paid_since(pool: DevPool, request_id: str, payments: dict[str, int], start: int) -> list[int]:
    return [pool.received_by(spk(f"{request_id}/{c}"), start) for c in payments]


@pytest.mark.parametrize("crash", [False, True], ids=["running", "killed-after-recording"])
def test_an_operator_cancelled_round_whose_replacement_confirms_is_paid_once_by_a_later_round(
    devpool: DevPool, crash: bool
) -> None:
    request_id = f"requeue-{crash}"
    start = devpool.node.chain.tip()[0] + 1
    round_id, payments = submit_and_broadcast(devpool, request_id)
    original = withdrawal(devpool, CLIENTS[0], request_id).outputs[0].txid
    created = int(time.time()) - 1
    market_block(devpool)  # stuck below the market: evicted, sent again
    devpool.node.drop_mempool()  # evicted before the replacement is sent (bcoin: no RBF)
    if crash:
        assert devpool.coordinator is not None
        devpool.coordinator.stop()
        crashing = devpool.start_coordinator(env={"VPOOL_CRASH_AT": "after_cancel_recorded"})
        with pytest.raises(grpc.RpcError):
            cancel_round(devpool, round_id)
        assert crashing.proc.wait(timeout=30) != 0  # killed once the cancels were committed
        devpool.start_coordinator()
    else:
        done = cli_cancel_round(devpool, round_id)
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith(
            f"cancel-round {round_id}: broadcast: replacement requested: an operator cancelled 2 "
            "withdrawals"
        ), done.stderr
    devpool.wait_until(
        lambda: cancel_round_sent(devpool, round_id, created), "the cancel round sent"
    )
    blocks = 0
    while not status_is(devpool, request_id, pb.WITHDRAWAL_STATUS_PENDING) and blocks < BLOCKS:
        market_block(devpool)
        blocks += 1
    assert status_is(devpool, request_id, pb.WITHDRAWAL_STATUS_PENDING), diagnosis(devpool)
    assert paid_since(devpool, request_id, payments, start) == [0, 0]  # the original never
    assert devpool.node.chain.mempool_entry(original) is None
    assert (
        cancels_left(devpool, request_id) == []
    )  # settled: the new round's payment may be cancelled anew
    print(f"operator cancel: queued again {blocks} blocks after the cancel")
    again = devpool.run_round()  # the signers' nodes show the replacement confirmed
    assert again.round_id and again.round_id != round_id, again.detail
    devpool.wait_until(lambda: sent_or_confirmed(devpool, CLIENTS[0], request_id), "paid again")
    devpool.mine(MATURATION)
    devpool.wait_until(
        lambda: status_is(devpool, request_id, pb.WITHDRAWAL_STATUS_COMPLETED),
        "the re-queued withdrawals completed",
    )
    devpool.mine(2)
    assert paid_since(devpool, request_id, payments, start) == list(payments.values())


def test_an_operator_cancelled_round_whose_original_confirms_pays_nothing_twice(
    devpool: DevPool,
) -> None:
    request_id = "original-wins"
    start = devpool.node.chain.tip()[0] + 1
    round_id, payments = submit_and_broadcast(devpool, request_id)
    original = withdrawal(devpool, CLIENTS[0], request_id).outputs[0].txid
    created = int(time.time()) - 1
    answer = cancel_round(devpool, round_id)
    assert answer.detail.startswith("replacement requested")
    devpool.wait_until(
        lambda: cancel_round_sent(devpool, round_id, created), "the cancel round signed"
    )
    assert devpool.node.chain.mempool_entry(original) is not None  # bcoin refused the other
    devpool.mine(1)  # the original wins
    devpool.mine(MATURATION)
    devpool.wait_until(
        lambda: status_is(devpool, request_id, pb.WITHDRAWAL_STATUS_COMPLETED),
        "the withdrawals completed by the original",
    )
    assert withdrawal(devpool, CLIENTS[0], request_id).outputs[0].txid == original
    assert len(cancels_left(devpool, request_id)) == 2  # the guard: the query finds them
    later = devpool.run_round()
    assert not later.round_id, later.detail  # nothing waits: nothing paid again
    devpool.mine(2)
    assert paid_since(devpool, request_id, payments, start) == list(payments.values())


def test_an_operator_cancel_of_a_completed_round_is_refused_saying_why(devpool: DevPool) -> None:
    request_id = "too-late"
    round_id, _ = submit_and_broadcast(devpool, request_id)
    devpool.mine(MATURATION + 1)
    devpool.wait_until(
        lambda: status_is(devpool, request_id, pb.WITHDRAWAL_STATUS_COMPLETED), "completed"
    )
    with pytest.raises(grpc.RpcError) as refused:
        cancel_round(devpool, round_id)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "completed" in (refused.value.details() or "")
    done = cli_cancel_round(devpool, round_id)
    assert done.returncode == exitcodes.of_status(grpc.StatusCode.FAILED_PRECONDITION)
    assert f"FAILED_PRECONDITION: round_id: round {round_id} is completed" in done.stderr
