"""Deposits and refunds, end to end: a bcoin regtest node, three signer daemons (two software
keystores, one HWI backend driving the Jade-protocol emulator) that allow operator-chosen refunds,
the coordinator daemon (health checks every second, a signer down after two missed), and its
clients and operators over mutual TLS. Every refund is read back from the node.

One pool for the module; the tests run in order (the first needs a pool with no other funds) and
each uses its own users, addresses and destinations. Deposits below the minimum deposit (10,000
sat) or mined while the pool is degraded are refunded; below 2,000 sat they are dust. Reorgs of
deposits are covered against a real node at the scanner (tests/test_deposits_scanner.py) and
their alerts in GetPoolStatus by tests/test_coordinator_deposits_api.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial

import grpc
import pytest
from bitcoin.core import CTransaction
from bitcoin.core.script import SIGHASH_ALL, CScript, SignatureHash

from coordinator.config import ChainConfig
from coordinator.refund_rounds import WAITING_NOTE
from pool import ecdsa
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from pool.refunds import RefundManifest, RefundRequest, RefundSource, refund_weight
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.weights import fee_for_weight
from tests.signer_harness import refund_round_request
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, SIGNER_POLICY, DevPool
from vpool.v1 import coordinator_pb2 as pb

CONFIRMATIONS = 2
CLIENT = CLIENTS[0]
OUTAGE = ("signer-2", "signer-3")
"""Two of the three signers: the 2-of-3 pool is degraded without them."""
FEE_RATE = ChainConfig.fee_floor
"""Satoshis per 1000 vB of every refund: bcoin's regtest has no estimate, the floor applies."""


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


@pytest.fixture(scope="module")
def devpool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(
        tmp_path_factory.mktemp("refunds"),
        deposit_settings={"confirmations": CONFIRMATIONS},
        liveness_settings={"health_interval_seconds": 1.0, "down_after_missed": 2},
        signer_policy={**SIGNER_POLICY, "allow_operator_refunds": True},
        sign_deadline_seconds=10.0,
        round_deadline_seconds=20.0,
    )
    with pool:
        yield pool


# --------------------------------------------------------------------------- helpers


def refunded(pool: DevPool, user: str, outpoint: OutPoint) -> pb.Deposit:
    """Wait for the refund round's broadcast, mine it, wait for the deposit to be refunded."""
    pool.wait_for_deposit(user, outpoint, pb.DEPOSIT_STATUS_REFUND_SIGNED)
    pool.mine(1)
    return pool.wait_for_deposit(user, outpoint, pb.DEPOSIT_STATUS_REFUNDED)


def assert_refund_on_chain(pool: DevPool, refunded: pb.Deposit, script_pubkey: bytes) -> None:
    """The node holds the refund: the deposit in, its value minus the fee out to the script."""
    tx = pool.transaction(refunded.refund_txid)
    assert [(i.prevout.txid_hex, i.prevout.vout) for i in tx.inputs] == [
        (refunded.txid, refunded.vout)
    ]
    fee = fee_for_weight(refund_weight(pool.series, script_pubkey), FEE_RATE)
    assert [(o.script_pubkey, o.value) for o in tx.outputs] == [
        (script_pubkey, refunded.amount_sat - fee)
    ]
    assert len(refunded.refund_signed_by) >= pool.m


def listed_refund(pool: DevPool, outpoint: OutPoint) -> pb.Deposit | None:
    """The deposit at ``outpoint`` as ListRefunds shows it (None: not listed)."""
    found = pool.admin().ListRefunds(pb.ListRefundsRequest(page_size=1000), timeout=CALL_TIMEOUT)
    key = (outpoint.txid_hex, outpoint.vout)
    return next((d for d in found.deposits if (d.txid, d.vout) == key), None)


def waiting_for_operator(pool: DevPool, outpoint: OutPoint) -> pb.Deposit | None:
    found = listed_refund(pool, outpoint)
    return found if found is not None and found.reason.endswith(WAITING_NOTE) else None


def quorum_is(pool: DevPool, state: str) -> Callable[[], bool | None]:
    return lambda: pool.status().quorum == state or None


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def outpoint_args(outpoint: OutPoint) -> tuple[str, int]:
    return outpoint.txid_hex, outpoint.vout


def propose(pool: DevPool, txid: str, vout: int, address: str) -> pb.Deposit:
    request = pb.ProposeRefundRequest(txid=txid, vout=vout, address=address)
    answer: pb.Deposit = pool.admin().ProposeRefund(request, timeout=CALL_TIMEOUT)
    return answer


# --------------------------------------------------------------------------- tests


def test_a_deposit_is_credited_after_its_confirmations_and_spent_by_a_later_round(
    devpool: DevPool,
) -> None:
    address = devpool.deposit_address("alice")
    outpoint = devpool.pay({address: BTC // 2})[address]
    devpool.mine(1)
    devpool.wait_for_deposit("alice", outpoint, pb.DEPOSIT_STATUS_CONFIRMING)
    devpool.mine(CONFIRMATIONS - 1)
    credited = devpool.wait_for_deposit("alice", outpoint, pb.DEPOSIT_STATUS_CREDITED)
    assert credited.confirmations == CONFIRMATIONS and not credited.reason
    assert len(credited.acknowledged_by) >= len(devpool.signers) - devpool.m + 1
    request = pb.SubmitWithdrawalRequest(
        request_id="spend-alice", address=destination("alice's payee"), amount_sat=BTC // 4
    )
    devpool.client(CLIENT).SubmitWithdrawal(request, timeout=CALL_TIMEOUT)
    response = devpool.run_round()
    found = devpool.admin().GetRound(
        pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
    )
    [tx] = [Transaction.parse(t.raw_tx) for t in found.transactions]
    assert outpoint in [i.prevout for i in tx.inputs]


def test_a_deposit_during_an_outage_is_refunded_to_its_refund_address(devpool: DevPool) -> None:
    refund_to = destination("bob's refund address")
    address = devpool.deposit_address("bob", refund_to)
    for signer_id in OUTAGE:
        devpool.stop_signer(signer_id)
    try:
        devpool.wait_until(quorum_is(devpool, "degraded"), "the pool to turn degraded")
        refused = refusal(lambda: devpool.deposit_address("bob"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "degraded" in (refused.details() or "")
        outpoint = devpool.pay({address: 3_000_000})[address]
        devpool.mine(CONFIRMATIONS)
        pending = devpool.wait_for_deposit("bob", outpoint, pb.DEPOSIT_STATUS_REFUND_PENDING)
        assert pending.reason == "mined while the pool was degraded"
    finally:
        for signer_id in OUTAGE:
            devpool.restart_signer(signer_id)
    devpool.wait_until(quorum_is(devpool, "ok"), "the pool to be ok again")
    done = refunded(devpool, "bob", outpoint)
    assert (done.refund_address, done.refund_source) == (refund_to, "registered")
    assert_refund_on_chain(devpool, done, address_to_script_pubkey(refund_to, REGTEST))
    assert listed_refund(devpool, outpoint) == done


def test_a_deposit_without_a_refund_address_goes_back_to_its_single_key_sender(
    devpool: DevPool,
) -> None:
    address = devpool.deposit_address("carol")
    devpool.admin().PauseRounds(pb.PauseRoundsRequest(), timeout=CALL_TIMEOUT)
    try:
        outpoint = devpool.pay({address: 6_000})[address]
        devpool.mine(1)
        pending = devpool.wait_for_deposit("carol", outpoint, pb.DEPOSIT_STATUS_REFUND_PENDING)
        assert pending.reason == "6000 sat is below the minimum deposit of 10000"
        refused = refusal(partial(propose, devpool, *outpoint_args(outpoint), destination("x")))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "is refunded to its sender" in (refused.details() or "")
    finally:
        devpool.admin().ResumeRounds(pb.ResumeRoundsRequest(), timeout=CALL_TIMEOUT)
    done = refunded(devpool, "carol", outpoint)
    assert done.refund_source == "sender"
    assert_refund_on_chain(devpool, done, devpool.wallet.script_pubkey)


def test_a_deposit_whose_sender_cannot_be_derived_waits_for_an_operator(
    devpool: DevPool,
) -> None:
    address = devpool.deposit_address("dave")
    outpoint = _deposit_from_bare_multisig(devpool, address, 8_000)
    devpool.mine(1)
    waiting = devpool.wait_until(
        lambda: waiting_for_operator(devpool, outpoint), "the deposit to wait for an operator"
    )
    assert waiting.status == pb.DEPOSIT_STATUS_REFUND_PENDING and not waiting.refund_address
    txid, vout = outpoint_args(outpoint)
    operator = destination("dave's refund, chosen by an operator")
    mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    for bad_txid, address, field in ((txid, mainnet, "address"), ("zz", operator, "txid")):
        bad = refusal(partial(propose, devpool, bad_txid, vout, address))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (bad.details() or "").startswith(field)
    unknown = refusal(partial(propose, devpool, "00" * 32, 0, operator))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    proposed = propose(devpool, txid, vout, operator)
    assert (proposed.refund_address, proposed.refund_source) == (operator, "operator")
    assert proposed.reason == "8000 sat is below the minimum deposit of 10000"
    done = refunded(devpool, "dave", outpoint)
    assert_refund_on_chain(devpool, done, address_to_script_pubkey(operator, REGTEST))
    again = refusal(partial(propose, devpool, txid, vout, operator))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is refunded" in (again.details() or "")


def _deposit_from_bare_multisig(pool: DevPool, address: str, amount: int) -> OutPoint:
    """Pay ``address`` from a bare 1-of-1 multisig output (not a sender type); its outpoint."""
    key = sha256(b"bare multisig key")
    bare = b"\x51\x21" + ecdsa.public_key(key) + b"\x51\xae"  # 1 <key> 1 CHECKMULTISIG
    # bcoin's miner judges fees by a size that counts the output's 20 sigops: pay well above
    # the floor, or the funding waits in the mempool
    funding = pool.wallet.fund(pool.node, [(bare, amount + 1_000)], fee_rate=10_000)
    pool.mine(1)
    vout = next(
        i for i, o in enumerate(pool.transaction(funding).outputs) if o.script_pubkey == bare
    )
    spent = OutPoint.from_hex(funding, vout)
    payment = (TxOut(amount, address_to_script_pubkey(address, REGTEST)),)
    unsigned = Transaction(2, (TxIn(spent, 0xFFFFFFFD),), payment, 0)
    digest = SignatureHash(
        CScript(bare), CTransaction.deserialize(unsigned.serialize()), 0, SIGHASH_ALL
    )
    signature = ecdsa.sign(key, digest) + bytes([SIGHASH_ALL])
    script_sig = b"\x00" + bytes([len(signature)]) + signature  # the CHECKMULTISIG dummy, then it
    signed = Transaction(2, (TxIn(spent, 0xFFFFFFFD, script_sig),), payment, 0)
    txid = pool.node.chain.send_raw_transaction(signed.serialize())
    return OutPoint.from_hex(txid, 0)


def test_a_dust_deposit_is_recorded_and_never_in_a_refund(devpool: DevPool) -> None:
    dust_address, refund_address = (
        devpool.deposit_address("erin"),
        devpool.deposit_address("erin"),
    )
    outpoints = devpool.pay({dust_address: 1_500, refund_address: 7_000})
    devpool.mine(1)
    dust = devpool.wait_for_deposit("erin", outpoints[dust_address], pb.DEPOSIT_STATUS_DUST)
    assert dust.reason == "1500 sat is below the refund threshold of 2000"
    done = refunded(devpool, "erin", outpoints[refund_address])
    spent = [i.prevout for i in devpool.transaction(done.refund_txid).inputs]
    assert spent == [outpoints[refund_address]]
    txid, vout = outpoint_args(outpoints[dust_address])
    assert devpool.node.rpc("gettxout", txid, vout, True) is not None  # never spent
    listed = listed_refund(devpool, outpoints[dust_address])
    assert listed is not None and (listed.status, listed.reason) == (dust.status, dust.reason)


def test_a_coordinator_stopped_during_an_outage_misses_nothing(devpool: DevPool) -> None:
    refund_to = destination("frank's refund address")
    address = devpool.deposit_address("frank", refund_to)
    for signer_id in OUTAGE:
        devpool.stop_signer(signer_id)
    try:
        devpool.wait_until(quorum_is(devpool, "degraded"), "the pool to turn degraded")
        assert devpool.coordinator is not None
        devpool.coordinator.stop()
        outpoint = devpool.pay({address: 2_500_000})[address]
        devpool.mine(CONFIRMATIONS + 1)
        _wait_for_the_chain_clock(devpool)
    finally:
        for signer_id in OUTAGE:
            devpool.restart_signer(signer_id)
    devpool.start_coordinator()
    devpool.wait_for_signers(OUTAGE)
    done = refunded(devpool, "frank", outpoint)
    assert done.reason == "mined while the pool was degraded"
    assert_refund_on_chain(devpool, done, address_to_script_pubkey(refund_to, REGTEST))


def _wait_for_the_chain_clock(pool: DevPool) -> None:
    """Until the tip's time is in the past: the blocks were mined before the signers return."""
    chain = pool.node.chain
    pool.wait_until(
        lambda: chain.block(chain.tip()[1]).time < time.time() - 1 or None,
        "the chain's clock to fall behind the real one",
    )


def test_a_hostile_coordinator_gets_no_m_signatures_for_a_refund_of_a_credited_deposit(
    devpool: DevPool,
) -> None:
    """Issue 9, attack 4. A deposit is credited while signer-1 is down: exactly n - m + 1 = 2
    signers acknowledged it. Then someone holding the coordinator's certificate sends every
    signer a refund round of it (to a destination of their own, as an operator refund, which
    these signers allow): the two that acknowledged it refuse (DEPOSIT_CREDITED), and the one
    signature left is fewer than m. Before, all three signed and the refund was mined while the
    coordinator still showed the deposit as credited."""
    answer = devpool.client(CLIENT).GetDepositAddress(
        pb.GetDepositAddressRequest(user_id="grace"), timeout=CALL_TIMEOUT
    )
    outpoint = devpool.pay({answer.address: BTC // 5})[answer.address]
    devpool.stop_signer("signer-1")
    try:
        devpool.mine(CONFIRMATIONS)
        credited = devpool.wait_for_deposit("grace", outpoint, pb.DEPOSIT_STATUS_CREDITED)
    finally:
        devpool.restart_signer("signer-1")
    assert sorted(credited.acknowledged_by) == ["signer-2", "signer-3"]
    tip_height, tip_hash = devpool.node.chain.tip()
    raw = devpool.node.chain.raw_transaction(outpoint.txid_hex)
    assert raw is not None
    theft = RefundManifest(
        network=REGTEST.name,
        series=(devpool.series,),
        tip_height=tip_height,
        tip_hash=bytes.fromhex(tip_hash),
        fee_rate=FEE_RATE,
        dust_limit=546,
        refunds=(
            RefundRequest(
                outpoint=outpoint,
                value=BTC // 5,
                series_id=answer.series_id,
                index=answer.index,
                deposit_tx=raw,
                prev_tx=b"",
                destination=address_to_script_pubkey(destination("the thief"), REGTEST),
                source=RefundSource.OPERATOR,
            ),
        ),
    )
    request = refund_round_request(theft)
    answers = {
        signer_id: daemon.stub(devpool.pki).SignRound(request, timeout=CALL_TIMEOUT)
        for signer_id, daemon in devpool.daemons.items()
    }
    signed = sorted(i for i, a in answers.items() if a.signed_psbts)
    assert signed == ["signer-1"], {
        i: [r.reason_code for r in a.refusals] for i, a in answers.items()
    }
    assert len(signed) < devpool.m
    for signer_id in ("signer-2", "signer-3"):
        assert [r.reason_code for r in answers[signer_id].refusals] == ["DEPOSIT_CREDITED"]
    assert devpool.deposit("grace", outpoint) is not None
    assert devpool.node.rpc("gettxout", outpoint.txid_hex, outpoint.vout, False) is not None
