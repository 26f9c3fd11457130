"""The signer daemon as a process, over real gRPC with mutual TLS on loopback (emulator backend).

The signer holds test key 0 of a 2-of-3 series (test keys 0, 1, 2) and checks every round against
the bcoin regtest node, where the tests fund the coins they spend; the test plays the
coordinator, and test key 1 plays a second signer when a transaction must be completed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pool.address import script_pubkey_to_address
from pool.manifest import Manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.refunds import RefundManifest, RefundRequest, build_refunds
from pool.roles import combine, extract, finalize, sign_psbt, verify_partial_sigs
from pool.series import RECEIVE, Series
from pool.tx import TxOut
from pool.withdrawal import build_round
from signer.audit import audit_path
from signer.keystore import bip48_account_path
from signer.policy import PolicyConfig, series_checksum
from tests.chain_harness import fund, pinned, pinned_refunds, real_deposit, signer_chain
from tests.factories import BTC, make_series, master_key, p2wpkh, request
from tests.regtest_fixtures import Regtest
from tests.signer_harness import (
    CALL_TIMEOUT,
    deposit_address_request,
    refund_round_request,
    register_request,
    round_request,
    sign_until_answered,
    with_signatures,
)
from vpool.devnet.processes import (
    PASSPHRASE,
    PASSPHRASE_ENV,
    ROOT,
    Pki,
    SignerDaemon,
    emulator_backend,
    write_config,
    write_keystore,
)
from vpool.v1 import common_pb2, signer_pb2, signer_pb2_grpc

SERIES = make_series(1, 2, [0, 1, 2])
OTHER_SERIES = make_series(2, 2, [3, 4, 5])
SIGNER = master_key(0)
COSIGNER = master_key(1)
POLICY = {"max_request_amount": 2 * BTC, "max_daily_amount": 20 * BTC}


def _start(directory: Path, pki: Pki, policy: dict[str, int], regtest: Regtest) -> SignerDaemon:
    keystore = write_keystore(directory / "keystore.json", SIGNER)
    config = write_config(
        directory,
        pki,
        "signer-0",
        emulator_backend(keystore),
        policy,
        series=[SERIES],
        chain=signer_chain(directory, regtest.node),
    )
    return SignerDaemon(config)


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[SignerDaemon]:
    daemon = _start(tmp_path_factory.mktemp("signer"), pki, POLICY, regtest)
    daemon.stub(pki).RegisterSeries(register_request(SERIES), timeout=CALL_TIMEOUT)
    yield daemon
    assert daemon.stop() == 0, daemon.log_text()


@pytest.fixture(scope="module")
def stub(daemon: SignerDaemon, pki: Pki) -> signer_pb2_grpc.SignerServiceStub:
    return daemon.stub(pki)


def _round(regtest: Regtest, tag: str, amount: int, n_utxos: int = 2) -> Manifest:
    """A round paying ``amount`` from ``n_utxos`` new 1 BTC coins of the series."""
    utxos = fund(regtest, SERIES, [BTC] * n_utxos)
    return pinned(regtest, [SERIES], utxos, [request("alice", tag, amount)])


def _sign(stub: signer_pb2_grpc.SignerServiceStub, m: Manifest) -> signer_pb2.SignRoundResponse:
    return sign_until_answered(stub, round_request(m))


def _reasons(response: signer_pb2.SignRoundResponse) -> list[str]:
    return [refusal.reason_code for refusal in response.refusals]


# --- identity, health, reflection ------------------------------------------------------------


def test_get_info_reports_the_key_and_the_policy(stub: signer_pb2_grpc.SignerServiceStub) -> None:
    info = stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    path = bip48_account_path(REGTEST)
    assert info.signer_id == "signer-0"
    assert info.backend_kind == signer_pb2.BACKEND_KIND_EMULATOR
    assert info.device_model == "software"
    assert info.master_fingerprint == SIGNER.fingerprint.hex()
    [account] = info.account_xpubs
    assert account.network == common_pb2.NETWORK_REGTEST
    assert account.origin == f"{SIGNER.fingerprint.hex()}/48h/1h/0h/2h"
    assert account.xpub == SIGNER.derive_path(path).public().to_string(REGTEST)
    expected = PolicyConfig(
        max_request_amount=2 * BTC,
        max_daily_amount=20 * BTC,
        cosigners=frozenset(k.to_string(REGTEST) for k in SERIES.keys),
        min_threshold=2,
        approved_series=frozenset({series_checksum(SERIES, REGTEST)}),
    )
    assert info.policy_hash == expected.version_hash()


def test_get_info_reports_the_signers_node(
    stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    node = stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT).node
    assert node.configured and node.reachable and not node.error
    assert 0 < node.tip_height <= regtest.node.chain.tip()[0]
    assert len(node.tip_hash) == 64
    assert (node.min_conf, node.max_tip_lag) == (1, 6)


def test_health_check_is_serving(daemon: SignerDaemon, pki: Pki) -> None:
    health = health_pb2_grpc.HealthStub(daemon.channel(pki.credentials()))
    for service in ("", "vpool.v1.SignerService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(daemon: SignerDaemon, pki: Pki) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(daemon.channel(pki.credentials()))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    [answer] = list(reflection.ServerReflectionInfo(iter([request]), timeout=CALL_TIMEOUT))
    names = {service.name for service in answer.list_services_response.service}
    assert {"vpool.v1.SignerService", "grpc.health.v1.Health"} <= names


def test_get_xpub_at_a_path(stub: signer_pb2_grpc.SignerServiceStub) -> None:
    answer = stub.GetXpub(
        signer_pb2.GetXpubRequest(path="m/48h/1h/7h/2h", network=common_pb2.NETWORK_REGTEST),
        timeout=CALL_TIMEOUT,
    )
    path = (48 | 1 << 31, 1 | 1 << 31, 7 | 1 << 31, 2 | 1 << 31)
    assert answer.xpub == SIGNER.derive_path(path).public().to_string(REGTEST)
    assert answer.origin == f"{SIGNER.fingerprint.hex()}/48h/1h/7h/2h"


@pytest.mark.parametrize(
    ("call", "request_message", "field"),
    [
        ("GetXpub", signer_pb2.GetXpubRequest(path="m/48x", network=4), "path"),
        ("GetXpub", signer_pb2.GetXpubRequest(network=4), "path"),
        ("GetXpub", signer_pb2.GetXpubRequest(path="m/48h", network=1), "network"),
        ("GetXpub", signer_pb2.GetXpubRequest(path="m/48h"), "network"),
        ("DisplayAddress", signer_pb2.DisplayAddressRequest(network=4, series_id=9), "series_id"),
        (
            "DisplayAddress",
            signer_pb2.DisplayAddressRequest(network=4, series_id=1, branch=0),
            "branch",
        ),
        (
            "RegisterSeries",
            signer_pb2.RegisterSeriesRequest(network=4, series_id=3, receive_descriptor="x"),
            "receive_descriptor",
        ),
        ("SignRound", signer_pb2.SignRoundRequest(), "kind"),
        ("RegisterDepositAddress", deposit_address_request(SERIES, 2**31), "index"),
        ("RegisterDepositAddress", deposit_address_request(SERIES, 1, "bc1qxyz"), "refund_address"),
        (
            "RegisterDepositAddress",
            signer_pb2.RegisterDepositAddressRequest(
                network=common_pb2.NETWORK_MAINNET, series_id=1
            ),
            "network",
        ),
    ],
)
def test_bad_requests_are_invalid_arguments_naming_the_field(
    stub: signer_pb2_grpc.SignerServiceStub, call: str, request_message: object, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        getattr(stub, call)(request_message, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith(f"{field}: ")


# --- series ----------------------------------------------------------------------------------


def test_register_series_is_idempotent_and_display_address_gives_the_pool_address(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    again = stub.RegisterSeries(register_request(SERIES), timeout=CALL_TIMEOUT)
    assert again.registered and again.already_registered
    assert again.device_registration_name == ""
    shown = stub.DisplayAddress(
        signer_pb2.DisplayAddressRequest(
            network=common_pb2.NETWORK_REGTEST,
            series_id=1,
            branch=common_pb2.BRANCH_RECEIVE,
            index=5,
        ),
        timeout=CALL_TIMEOUT,
    )
    assert shown.address == SERIES.address(RECEIVE, 5, REGTEST)
    assert not shown.shown_on_device


def _registration_refusal(stub: signer_pb2_grpc.SignerServiceStub, series: Series) -> str:
    """The details of the FAILED_PRECONDITION a RegisterSeries of ``series`` gets."""
    with pytest.raises(grpc.RpcError) as failure:
        stub.RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details: str = failure.value.details() or ""
    assert details.startswith("receive_descriptor: ")
    return details


def test_a_series_without_this_signers_key_is_refused(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    details = _registration_refusal(stub, OTHER_SERIES)
    assert "the series does not hold this signer's key" in details


def test_a_series_of_keys_the_operator_did_not_configure_is_refused(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    details = _registration_refusal(stub, make_series(3, 2, [0, 1, 3]))
    assert "neither this signer's key nor one of its configured cosigners" in details


def test_a_series_the_operator_did_not_approve_is_refused(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    unapproved = make_series(3, 3, [0, 1, 2])
    details = _registration_refusal(stub, unapproved)
    assert f"series checksum {series_checksum(unapproved, REGTEST)}" in details


def test_a_series_below_the_minimum_threshold_is_refused(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        stub.RegisterSeries(register_request(make_series(3, 1, [0, 1, 2])), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "below this signer's minimum" in (failure.value.details() or "")


def test_another_series_under_a_registered_id_is_refused(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    impostor = make_series(1, 1, [0, 1, 2])
    with pytest.raises(grpc.RpcError) as failure:
        stub.RegisterSeries(register_request(impostor), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "series_id" in failure.value.details()


# --- rounds ----------------------------------------------------------------------------------


def _complete(unsigned: list[Psbt], response: signer_pb2.SignRoundResponse) -> list[Psbt]:
    """Each PSBT of the round with the daemon's signatures and a second cosigner's."""
    psbts = []
    for psbt, signed in zip(unsigned, response.signed_psbts, strict=True):
        ours = with_signatures(psbt, signed)
        theirs = sign_psbt(
            psbt, COSIGNER.fingerprint, lambda path: COSIGNER.derive_path(path).private_key
        )
        psbts.append(combine([ours, theirs]))
    return psbts


def test_an_honest_round_is_signed_and_its_signatures_verify(
    stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    m = _round(regtest, "w100", BTC + BTC // 2)
    response = _sign(stub, m)
    assert response.signed_all and not response.refusals
    assert len(response.signed_psbts) == 1
    [signed] = response.signed_psbts
    assert sorted(s.input_index for s in signed.signatures) == [0, 1]
    for psbt in _complete([t.psbt for t in build_round(m).transactions], response):
        assert all(valid for _, _, valid in verify_partial_sigs(psbt))
        tx = extract(finalize(psbt))
        assert all(len(witness) == 4 for witness in tx.witnesses)


def test_a_tampered_psbt_is_refused_with_amount_mismatch(
    stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    m = _round(regtest, "w200", BTC)
    request = round_request(m)
    psbt = Psbt.parse(request.psbts[0])
    paid = psbt.tx.outputs[0]
    outputs = (TxOut(paid.value + 1000, paid.script_pubkey), *psbt.tx.outputs[1:])
    tampered = replace(psbt, tx=replace(psbt.tx, outputs=outputs))
    request.psbts[0] = tampered.serialize()
    response = stub.SignRound(request, timeout=CALL_TIMEOUT)
    assert not response.signed_all and not response.signed_psbts
    assert "AMOUNT_MISMATCH" in _reasons(response)
    assert _sign(stub, m).signed_all  # the honest round is still signed


# --- deposit addresses and refund rounds ----------------------------------------------------


def _address(tag: str) -> str:
    text = script_pubkey_to_address(p2wpkh(tag), REGTEST)
    assert text is not None
    return text


def _registered_deposit(
    stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest, tag: str
) -> RefundRequest:
    """A mined deposit whose refund address is registered with the signer."""
    refund = real_deposit(regtest, SERIES, BTC, p2wpkh(f"{tag}/refund"))
    register = deposit_address_request(SERIES, refund.index, _address(f"{tag}/refund"))
    stub.RegisterDepositAddress(register, timeout=CALL_TIMEOUT)
    return refund


def _sign_refunds(
    stub: signer_pb2_grpc.SignerServiceStub, m: RefundManifest
) -> signer_pb2.SignRoundResponse:
    return sign_until_answered(stub, refund_round_request(m))


def test_register_deposit_address_returns_the_address_and_is_idempotent(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    request = deposit_address_request(SERIES, 1, _address("user 1").upper())
    first = stub.RegisterDepositAddress(request, timeout=CALL_TIMEOUT)
    assert first.address == SERIES.address(RECEIVE, 1, REGTEST)
    assert not first.already_registered
    again = stub.RegisterDepositAddress(
        deposit_address_request(SERIES, 1, _address("user 1")), timeout=CALL_TIMEOUT
    )
    assert (again.address, again.already_registered) == (first.address, True)


@pytest.mark.parametrize("second", [_address("mallory"), ""])
def test_the_first_refund_address_of_a_deposit_address_wins(
    stub: signer_pb2_grpc.SignerServiceStub, second: str
) -> None:
    stub.RegisterDepositAddress(
        deposit_address_request(SERIES, 2, _address("user 2")), timeout=CALL_TIMEOUT
    )
    conflicting = deposit_address_request(SERIES, 2, second)
    with pytest.raises(grpc.RpcError) as failure:
        stub.RegisterDepositAddress(conflicting, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details().startswith("refund_address: ")


def test_a_deposit_address_of_an_unregistered_series_is_refused(
    stub: signer_pb2_grpc.SignerServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        stub.RegisterDepositAddress(deposit_address_request(OTHER_SERIES, 0), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details().startswith("series_id: ")


def test_a_refund_round_is_signed_verifies_and_is_audited_as_a_refund(
    daemon: SignerDaemon, stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    m = pinned_refunds(regtest, [SERIES], [_registered_deposit(stub, regtest, "refund 20")])
    response = _sign_refunds(stub, m)
    assert response.signed_all and not response.refusals
    [psbt] = _complete([t.psbt for t in build_refunds(m).transactions], response)
    assert all(valid for _, _, valid in verify_partial_sigs(psbt))
    assert len(extract(finalize(psbt)).witnesses[0]) == 4
    last = audit_path(daemon.data_dir).read_bytes().splitlines()[-1]
    assert (json.loads(last)["kind"], json.loads(last)["decision"]) == ("refund", "signed")


def test_a_signer_refuses_a_refund_to_an_address_that_is_not_the_registered_one(
    stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    honest = _registered_deposit(stub, regtest, "refund 21")
    hostile = pinned_refunds(regtest, [SERIES], [replace(honest, destination=p2wpkh("mallory"))])
    response = _sign_refunds(stub, hostile)
    assert not response.signed_all and not response.signed_psbts
    [refusal] = response.refusals
    assert refusal.reason_code == "REFUND_DESTINATION_NOT_REGISTERED"
    assert refusal.scope == signer_pb2.Refusal.SCOPE_REQUEST
    assert refusal.request_id == f"{honest.outpoint.txid_hex}:{honest.outpoint.vout}"
    assert _sign_refunds(stub, pinned_refunds(regtest, [SERIES], [honest])).signed_all


def test_the_rolling_limit_survives_a_restart(tmp_path: Path, pki: Pki, regtest: Regtest) -> None:
    limits = {"max_request_amount": 2 * BTC, "max_daily_amount": 2 * BTC}
    daemon = _start(tmp_path, pki, limits, regtest)
    try:
        daemon.stub(pki).RegisterSeries(register_request(SERIES), timeout=CALL_TIMEOUT)
        assert _sign(daemon.stub(pki), _round(regtest, "w300", BTC + BTC // 2)).signed_all
        daemon = daemon.restart()
        response = _sign(daemon.stub(pki), _round(regtest, "w310", BTC))
        assert _reasons(response) == ["DAILY_LIMIT_EXCEEDED"]
    finally:
        assert daemon.stop() == 0, daemon.log_text()


def test_the_audit_log_verifies_after_several_rounds(
    daemon: SignerDaemon, stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    first = _round(regtest, "w400", BTC)
    assert _sign(stub, first).signed_all
    assert _sign(stub, first).signed_all  # the same round again: allowed
    other = _round(regtest, "w410", BTC)
    other_request = round_request(other)
    other_request.psbts.append(other_request.psbts[0])
    assert stub.SignRound(other_request, timeout=CALL_TIMEOUT).refusals
    result = subprocess.run(
        [sys.executable, "-m", "signer.cli", "audit", "verify", "--data-dir", str(daemon.data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("audit log OK")


def test_get_info_gives_the_audit_head_whose_entry_shows_what_was_signed(
    daemon: SignerDaemon, stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    m = _round(regtest, "w420", BTC // 4)
    assert _sign(stub, m).signed_all
    info = stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    last = json.loads(audit_path(daemon.data_dir).read_bytes().splitlines()[-1])
    assert (info.audit_seq, info.audit_head) == (last["seq"], last["hash"])
    (tx,) = last["transactions"]
    paid = script_pubkey_to_address(request("alice", "w420", 1).script_pubkey, REGTEST)
    assert {"address": paid, "amount": BTC // 4} in tx["outputs"]
    assert all(i["amount"] == BTC for i in tx["inputs"])
    assert tx["fee"] == sum(i["amount"] for i in tx["inputs"]) - sum(
        o["amount"] for o in tx["outputs"]
    )


def test_a_cut_tail_of_the_audit_log_fails_verification_against_the_head_get_info_gave(
    daemon: SignerDaemon, stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    assert _sign(stub, _round(regtest, "w430", BTC // 4)).signed_all
    info = stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    head = f"{info.audit_seq}:{info.audit_head}"
    log = audit_path(daemon.data_dir)
    kept = log.read_bytes().splitlines(keepends=True)[:-1]
    log.write_bytes(b"".join(kept))  # someone removes what the signer last signed

    def verify(*against: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "signer.cli", "audit", "verify", "--file", str(log)]
        return subprocess.run(
            [*command, *against], cwd=ROOT, capture_output=True, text=True, check=False
        )

    assert verify().returncode == 0  # the chain alone cannot tell
    cut = verify("--against", head)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "its tail was cut" in cut.stdout


def test_an_oversized_request_is_refused_by_grpc(stub: signer_pb2_grpc.SignerServiceStub) -> None:
    huge = signer_pb2.SignRoundRequest(
        kind=signer_pb2.ROUND_KIND_WITHDRAWAL, manifest=bytes(9 * 1024 * 1024)
    )
    with pytest.raises(grpc.RpcError) as failure:
        stub.SignRound(huge, timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_log_holds_no_psbt_and_no_secret(
    daemon: SignerDaemon, stub: signer_pb2_grpc.SignerServiceStub, regtest: Regtest
) -> None:
    request = round_request(_round(regtest, "w500", BTC))
    assert sign_until_answered(stub, request).signed_all
    log = daemon.log.read_text()
    psbt = Psbt.parse(request.psbts[0])
    for secret in (SIGNER.to_string(REGTEST), PASSPHRASE, psbt.to_base64()[:40]):
        assert secret not in log
    assert request.psbts[0].hex()[:40] not in log


def test_a_wrong_keystore_passphrase_stops_the_daemon_with_a_clear_error(
    tmp_path: Path, pki: Pki
) -> None:
    keystore = write_keystore(tmp_path / "keystore.json", SIGNER)
    config = write_config(tmp_path, pki, "signer-0", emulator_backend(keystore))
    result = subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, PASSPHRASE_ENV: "not the passphrase"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr
    assert result.stdout == ""
