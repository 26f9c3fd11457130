"""Fee attestations on the whole regtest pool (bcoin node, three signer daemons, one behind the
Jade emulator through HWI, the coordinator daemon, 2 of 3): a client verifies that m signers,
by the attestation keys it pinned from their GetInfo, attested its share of the transaction
that confirmed (with a fee ladder: the rung that confirmed), and rebuilds the round itself from
GetRoundManifest; a forged or altered attestation, or a share the coordinator made up, is
detected; ``vpool fees --verify`` agrees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest

from pool import ecdsa
from pool.address import encode_segwit_address
from pool.attestation import attest, decode_statement, encode_statement
from pool.hashes import sha256
from pool.networks import REGTEST
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.fee_attestations import SignerList, check_notice
from vpool.v1 import common_pb2, signer_pb2
from vpool.v1 import coordinator_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
MALLORY = b"\x66" * 32


@dataclass(frozen=True)
class Paid:
    pool: DevPool
    round_id: str
    signers: SignerList
    fee: int
    """The confirmed transaction's fee as the chain shows it."""


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paid]:
    """Two clients' withdrawals paid in one round, confirmed."""
    pool = DevPool(tmp_path_factory.mktemp("attest"), round_deadline_seconds=30)
    with pool:
        pool.fund([BTC // 2] * 2)
        keys = {
            signer_id: bytes(
                daemon.stub(pool.pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
                .attestation_public_key
            )
            for signer_id, daemon in pool.daemons.items()
        }  # fmt: skip
        for client, amount in zip(CLIENTS, (30_000_000, 10_000_000), strict=True):
            pool.client(client).SubmitWithdrawal(
                pb.SubmitWithdrawalRequest(
                    request_id="w1", address=destination(client), amount_sat=amount
                ),
                timeout=CALL_TIMEOUT,
            )
        response = pool.run_round()
        assert response.round_id, response.detail
        txid = pool.wait_until(lambda: sent_txid(pool), "the round's transaction sent")
        pool.mine(1)
        pool.wait_until(lambda: confirmed(pool) or None, "the withdrawal confirmed")
        tx = pool.transaction(txid)
        spent = sum(
            pool.transaction(i.prevout.txid_hex).outputs[i.prevout.vout].value for i in tx.inputs
        )
        fee = spent - sum(o.value for o in tx.outputs)
        yield Paid(pool, response.round_id, SignerList(pool.m, keys), fee)


def withdrawal(pool: DevPool, client: str) -> pb.Withdrawal:
    found: pb.Withdrawal = pool.client(client).GetWithdrawal(
        pb.GetWithdrawalRequest(request_id="w1"), timeout=CALL_TIMEOUT
    )
    return found


def sent_txid(pool: DevPool) -> str | None:
    outputs = withdrawal(pool, CLIENTS[0]).outputs
    if outputs and pool.node.chain.mempool_entry(outputs[0].txid) is not None:
        return str(outputs[0].txid)
    return None


def confirmed(pool: DevPool) -> bool:
    return all(withdrawal(pool, c).confirmations > 0 for c in CLIENTS)


def notice_of(paid: Paid, client: str) -> pb.FeeNotice:
    statement = paid.pool.client(client).GetFeeStatement(
        pb.GetFeeStatementRequest(page_size=100), timeout=CALL_TIMEOUT
    )
    [notice] = [n for n in statement.notices if n.round_id == paid.round_id]
    found: pb.FeeNotice = notice
    return found


def manifest_of(paid: Paid, client: str) -> pb.RoundManifest:
    found: pb.RoundManifest = paid.pool.client(client).GetRoundManifest(
        pb.GetRoundManifestRequest(round_id=paid.round_id), timeout=CALL_TIMEOUT
    )
    return found


def test_every_signer_publishes_an_attestation_key_the_hwi_one_included(paid: Paid) -> None:
    assert len(paid.signers.keys) == 3
    assert all(ecdsa.is_valid_public_key(k) for k in paid.signers.keys.values())
    assert len(set(paid.signers.keys.values())) == 3


def test_a_client_verifies_m_attestations_of_its_share_of_the_confirmed_transaction(
    paid: Paid,
) -> None:
    shares = 0
    for client in CLIENTS:
        notice = notice_of(paid, client)
        assert notice.txid == withdrawal(paid.pool, client).outputs[0].txid  # the one confirmed
        check = check_notice(notice, client, paid.signers, manifest_of(paid, client))
        assert check.ok, check.problem
        assert len(check.signers) >= paid.signers.threshold and check.rebuilt
        shares += notice.fee_sat
    assert shares == paid.fee  # the attested shares add up to the fee the chain shows


def test_a_forged_attestation_is_detected(paid: Paid) -> None:
    """The coordinator gives the client a bigger share and signs it with a key of its own under
    each signer's name and public key."""
    client = CLIENTS[0]
    notice = notice_of(paid, client)
    honest = decode_statement(notice.attestations[0].statement)
    moved = 1
    shares = tuple((c, amount + (moved if c == client else -moved)) for c, amount in honest.shares)
    forged = encode_statement(replace(honest, shares=shares))
    del notice.attestations[:]
    for signer_id, key in paid.signers.keys.items():
        notice.attestations.append(
            common_pb2.FeeAttestation(
                signer_id=signer_id, public_key=key, statement=forged,
                signature=attest(MALLORY, forged),
            )
        )  # fmt: skip
    notice.fee_sat += moved
    check = check_notice(notice, client, paid.signers)
    assert not check.ok and "attested by 2" in check.problem


def test_an_honest_attestation_moved_onto_an_altered_share_is_detected(paid: Paid) -> None:
    client = CLIENTS[1]
    notice = notice_of(paid, client)
    for a in notice.attestations:
        statement = decode_statement(a.statement)
        altered = [(c, s + 1 if c == client else s - 1) for c, s in statement.shares]
        a.statement = encode_statement(replace(statement, shares=tuple(altered)))
    assert not check_notice(notice, client, paid.signers).ok


def test_a_share_the_coordinator_made_up_does_not_match_the_attested_one(paid: Paid) -> None:
    client = CLIENTS[0]
    notice = notice_of(paid, client)
    notice.fee_sat += 1
    check = check_notice(notice, client, paid.signers)
    assert not check.ok and "the signers attested" in check.problem


def test_the_round_manifest_is_readable_only_by_the_clients_it_charged(paid: Paid) -> None:
    """A round paying only the first client: the second may not read it (NOT_FOUND, as for a
    round that does not exist)."""
    pool, only, other = paid.pool, CLIENTS[0], CLIENTS[1]
    pool.client(only).SubmitWithdrawal(
        pb.SubmitWithdrawalRequest(request_id="w2", address=destination("w2"), amount_sat=50_000),
        timeout=CALL_TIMEOUT,
    )
    response = pool.run_round()
    assert response.round_id, response.detail
    mine = pool.client(only).GetRoundManifest(
        pb.GetRoundManifestRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
    )
    assert sha256(mine.manifest).hex() == response.round_id and mine.psbts
    for round_id in (response.round_id, "00" * 32):
        with pytest.raises(grpc.RpcError) as refused:
            pool.client(other).GetRoundManifest(
                pb.GetRoundManifestRequest(round_id=round_id), timeout=CALL_TIMEOUT
            )
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND


def test_vpool_fees_verify_checks_the_statement_and_rebuilds_the_round(
    paid: Paid, tmp_path: Path
) -> None:
    pool = paid.pool
    signer_list = tmp_path / "signers.toml"
    lines = [f"threshold = {paid.signers.threshold}", "[signers]"]
    lines += [f'{name} = "{key.hex()}"' for name, key in paid.signers.keys.items()]
    signer_list.write_text("\n".join(lines) + "\n")
    assert pool.coordinator is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPOOL_")}
    client = CLIENTS[1]
    done = subprocess.run(
        [
            sys.executable, "-m", "vpool.cli", "fees", "--verify", "--rebuild",
            "--signers", str(signer_list), "--coordinator", pool.coordinator.address,
            "--cert", str(pool.pki.directory / f"{client}.pem"),
            "--key", str(pool.pki.directory / f"{client}.key"), "--ca", str(pool.pki.ca_path),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT VERIFIED" not in done.stdout and " verified by signer-" in done.stdout


# --- the fee ladder: the rung that confirmed is the one attested -------------------------------


@pytest.fixture(scope="module")
def laddered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    """A pool paying 1 sat/vB with a ladder of 3 rungs 2 sat/vB apart, one every 2 blocks, in a
    market at 5 sat/vB (tests/test_fee_ladder_e2e.py): rung 2 confirms."""
    pool = DevPool(tmp_path_factory.mktemp("attest-ladder"), round_deadline_seconds=30)
    pool.pool_settings["maturation"] = 3
    pool.chain_settings.update(fee_floor=1_000, fee_ceiling=1_000)
    pool.ladder_settings.update(rungs=3, step=2_000, bump_after_blocks=2)
    with pool:
        pool.fund([BTC // 2] * 2)
        yield pool


def test_the_attested_share_is_the_one_of_the_rung_that_confirmed(laddered: DevPool) -> None:
    from tests.test_fee_ladder_e2e import market_block, sent_or_confirmed

    pool = laddered
    keys = {
        signer_id: bytes(
            daemon.stub(pool.pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
            .attestation_public_key
        )
        for signer_id, daemon in pool.daemons.items()
    }  # fmt: skip
    signers = SignerList(pool.m, keys)
    for client, amount in zip(CLIENTS, (30_000_000, 10_000_000), strict=True):
        pool.client(client).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(
                request_id="w1", address=destination(f"l-{client}"), amount_sat=amount
            ),
            timeout=CALL_TIMEOUT,
        )
    response = pool.run_round()
    assert response.round_id, response.detail
    pool.wait_until(lambda: sent_or_confirmed(pool, CLIENTS[0], "w1"), "sent")
    first = withdrawal(pool, CLIENTS[0]).outputs[0].txid
    for _ in range(10):
        if withdrawal(pool, CLIENTS[0]).confirmations:
            break
        market_block(pool)
        pool.wait_until(lambda: sent_or_confirmed(pool, CLIENTS[0], "w1"), "the watcher")
    confirmed_txid = withdrawal(pool, CLIENTS[0]).outputs[0].txid
    assert withdrawal(pool, CLIENTS[0]).confirmations and confirmed_txid != first
    paid = Paid(pool, response.round_id, signers, 0)
    for client in CLIENTS:
        notice = notice_of(paid, client)
        assert notice.txid == confirmed_txid and notice.rung > 0
        check = check_notice(notice, client, signers, manifest_of(paid, client))
        assert check.ok and check.rebuilt, check.problem
        rung = decode_statement(notice.attestations[0].statement).rung
        assert rung == notice.rung
