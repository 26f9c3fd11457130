"""`make demo`: a real regtest pool, end to end, narrated step by step.

bcoin regtest, three signer daemons (two software keystores and one HWI backend driving the
Jade-protocol emulator), the coordinator on SQLite; two clients withdraw over mutual TLS; a round
is built, signed by the signers (each rebuilding it from the manifest), broadcast, mined and
followed to completion. Then an outage: two signers stop, the pool turns degraded and hands out
no deposit address, a deposit confirms anyway; the signers return and a refund round sends it
back to its user's refund address. Every figure in the summary is read back from the node.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc

from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 3
OUTAGE = ("signer-2", "signer-3")
LIVENESS: dict[str, int | float | str] = {"health_interval_seconds": 1.0, "down_after_missed": 2}
"""Health checks every second, a signer down after two missed: the outage shows at once."""


def _btc(sat: int) -> str:
    return f"{sat / BTC:.8f} BTC"


class Narrator:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.step = 0

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.start:5.1f}s] {text}", flush=True)

    def heading(self, text: str) -> None:
        self.step += 1
        print(f"\n{self.step}. {text}", flush=True)


def run(directory: Path) -> int:
    out = Narrator()
    out.heading("Start the pool: node, signers, coordinator")
    with DevPool(
        directory,
        say=out.say,
        pool_settings={"min_conf": 1, "maturation": MATURATION},
        liveness_settings=LIVENESS,
    ) as pool:
        out.heading("Fund the pool: deposits to fresh 2-of-3 P2WSH receive addresses")
        deposits = [3 * BTC, 2 * BTC, 2 * BTC, BTC, BTC // 2]
        txid = pool.fund(deposits)
        out.say(f"funding transaction {txid}: {len(deposits)} outputs, {_btc(sum(deposits))}")
        out.say(f"the coordinator's scanner sees {_btc(pool.confirmed_balance())} confirmed")

        out.heading("Two clients submit withdrawals over mutual TLS")
        start_height = pool.node.chain.tip()[0] + 1
        requests: dict[tuple[str, str], tuple[str, int]] = {}
        for k in range(12):
            client = CLIENTS[k % 2]
            request_id = f"demo-{k:02d}"
            address = encode_segwit_address(REGTEST, 0, sha256(f"demo {k}".encode())[:20])
            amount = 1_000_000 * (k + 1) + 123 * k
            pool.client(client).SubmitWithdrawal(
                pb.SubmitWithdrawalRequest(
                    request_id=request_id,
                    address=address,
                    amount_sat=amount,
                    extra_fee_sat=1_000 if k == 0 else 0,
                ),
                timeout=CALL_TIMEOUT,
            )
            requests[(client, request_id)] = (address, amount)
        out.say(
            f"{len(requests)} withdrawals queued ({_btc(sum(a for _, a in requests.values()))})"
        )
        try:
            pool.client(CLIENTS[0]).SubmitWithdrawal(
                pb.SubmitWithdrawalRequest(
                    request_id="bad",
                    address="bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                    amount_sat=1,
                ),
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as refused:
            reason = f"{refused.code().name}: {refused.details()}"
            out.say(f"a bad request is refused, nothing is stored: {reason}")

        out.heading("Run a round: manifest -> PSBTs -> every signer rebuilds, checks, signs")
        response = pool.run_round()
        found = pool.admin().GetRound(
            pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
        )
        out.say(f"round {response.round_id[:16]}... (the manifest hash): {response.detail}")
        for signer in found.signers:
            out.say(f"  {signer.signer_id}: {signer.outcome}, {signer.signatures} signature(s)")
        for tx in found.transactions:
            out.say(f"  transaction {tx.txid}: fee {tx.fee_sat} sat, {tx.status}")

        out.heading(f"Mine {MATURATION} blocks: broadcast -> confirmed -> completed")
        pool.mine(MATURATION)
        pool.wait_until(
            lambda: (
                all(
                    pool.client(c)
                    .GetWithdrawal(pb.GetWithdrawalRequest(request_id=r), timeout=CALL_TIMEOUT)
                    .status
                    == pb.WITHDRAWAL_STATUS_COMPLETED
                    for c, r in requests
                )
                or None
            ),
            "the withdrawals to complete",
        )
        out.say("every withdrawal is completed")

        refund = _outage_and_refund(pool, out)

        out.heading("Summary (read back from the node)")
        paid = 0
        for (_client, request_id), (address, amount) in sorted(requests.items()):
            received = pool.received_by(address_to_script_pubkey(address, REGTEST), start_height)
            if received != amount:
                raise SystemExit(f"{request_id}: received {received}, expected {amount}")
            paid += amount
        out.say(f"{len(requests)} destinations hold exactly their amounts: {_btc(paid)}")
        fees = sum(tx.fee_sat for tx in found.transactions)
        for client in CLIENTS:
            statement = pool.client(client).GetFeeStatement(
                pb.GetFeeStatementRequest(), timeout=CALL_TIMEOUT
            )
            out.say(f"{client} fee share: {statement.total_sat} sat")
        balance = pool.wait_until(
            lambda: ((b := pool.pool_balance()) == pool.funded - paid - fees and b) or None,
            "the pool balance",
        )
        tip = pool.node.chain.tip()[0]
        out.say(f"fees {fees} sat; pool balance {_btc(balance)} = funding - payments - fees")
        for tx in found.transactions:
            out.say(f"txid {tx.txid}")
        out.say(f"tip height {tip}; {MATURATION}+ confirmations on every round transaction")
        out.say(refund)
    print("\ndemo finished: exit 0", flush=True)
    return 0


def _outage_and_refund(pool: DevPool, out: Narrator) -> str:
    """Two signers down, a deposit during the outage, its refund; the summary's refund line."""
    out.heading("An outage: two of three signers stop")
    refund_to = encode_segwit_address(REGTEST, 0, sha256(b"demo user refund address")[:20])
    address = pool.deposit_address("demo-user", refund_to)
    out.say(f"deposit address {address} handed out to demo-user, refund address {refund_to}")
    for signer_id in OUTAGE:
        pool.stop_signer(signer_id)
    status = pool.wait_until(lambda: _with_quorum(pool, "degraded"), "the pool to degrade")
    states = ", ".join(f"{s.signer_id} {s.state}" for s in status.signers)
    out.say(f"GetPoolStatus: quorum {status.quorum} ({states})")
    try:
        pool.deposit_address("demo-user")
    except grpc.RpcError as refused:
        out.say(f"GetDepositAddress refused: {refused.code().name}: {refused.details()}")
    else:
        raise SystemExit("GetDepositAddress handed out an address while the pool was degraded")
    outpoint = pool.pay({address: BTC // 4})[address]
    pool.mine(3)
    pending = pool.wait_for_deposit("demo-user", outpoint, pb.DEPOSIT_STATUS_REFUND_PENDING)
    out.say(f"the deposit {outpoint} confirmed anyway: refund_pending ({pending.reason})")

    out.heading("The signers return: a refund round sends the deposit back")
    for signer_id in OUTAGE:
        pool.restart_signer(signer_id)
    pool.wait_until(lambda: _with_quorum(pool, "ok"), "the pool to be ok")
    out.say("GetPoolStatus: quorum ok")
    signed = pool.wait_for_deposit("demo-user", outpoint, pb.DEPOSIT_STATUS_REFUND_SIGNED)
    out.say(
        f"refund {signed.refund_txid} to the {signed.refund_source} address, signed by "
        f"{', '.join(signed.refund_signed_by)}; broadcast"
    )
    pool.mine(1)
    done = pool.wait_for_deposit("demo-user", outpoint, pb.DEPOSIT_STATUS_REFUNDED)
    [paid] = pool.transaction(done.refund_txid).outputs
    if paid.script_pubkey != address_to_script_pubkey(refund_to, REGTEST):
        raise SystemExit(f"the refund {done.refund_txid} does not pay {refund_to}")
    fee = done.amount_sat - paid.value
    out.say(f"the deposit is refunded: {refund_to} holds {paid.value} sat on the node")
    return (
        f"refund: {done.amount_sat} sat deposit - {fee} sat fee = {paid.value} sat to {refund_to}"
    )


def _with_quorum(pool: DevPool, quorum: str) -> pb.PoolStatus | None:
    """The pool's status if its quorum is ``quorum``."""
    status = pool.status()
    return status if status.quorum == quorum else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpool-demo", description=__doc__)
    parser.add_argument("--dir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.dir is not None:
        return run(args.dir)
    with tempfile.TemporaryDirectory(prefix="vpool-demo-") as directory:
        return run(Path(directory))


if __name__ == "__main__":
    sys.exit(main())
