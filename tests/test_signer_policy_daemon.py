"""Issue 9's downgrade, limit and signing-log attacks, against real signer daemons over mutual TLS
(emulator backend): the test plays a compromised coordinator, and with it two colluding signers.

The pool is a 3-of-5 series of test keys 0..4. Keys 0, 1 and 2 are honest signer daemons, each
configured by its operator with ``min_threshold = 3``, the pool's keys as cosigners and the
pool's series approved; keys 3 and 4 are the colluders, who need one honest signature for any
spend of the pool's coins. Every signer checks each round against the bcoin regtest node, where
the tests fund the coins their manifests spend and pin each manifest at the node's tip: so a
refusal below is the policy's, never the chain's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from pool.address import script_pubkey_to_address
from pool.manifest import Manifest, Utxo, WithdrawalRequest
from pool.networks import REGTEST
from pool.series import Series, SeriesState
from pool.withdrawal import build_round
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
)
from vpool.devnet.processes import Pki, SignerDaemon, emulator_backend, write_config, write_keystore
from vpool.v1 import common_pb2, signer_pb2, signer_pb2_grpc

POOL = make_series(1, 3, [0, 1, 2, 3, 4])
HONEST = ("signer-0", "signer-1", "signer-2")
COLLUDERS = make_series(9, 2, [3, 4])
"""The 2-of-2 of the two colluding operators' keys the attack moves the pool into."""
POLICY = {"max_destination_daily_amount": 10 * BTC}
"""Besides what ``write_config`` derives from the pool (min_threshold 3, cosigners, approval),
the defaults: 10 BTC per request and per destination in a round, 100 sat/vB."""

Stub = signer_pb2_grpc.SignerServiceStub


def _start(
    directory: Path, pki: Pki, regtest: Regtest, key: int, series: list[Series], **policy: int
) -> SignerDaemon:
    """Signer ``key``'s daemon, asking the regtest node."""
    keystore = write_keystore(directory / "keystore.json", master_key(key))
    backend = emulator_backend(keystore)
    chain = signer_chain(directory, regtest.node)
    return SignerDaemon(
        write_config(directory, pki, f"signer-{key}", backend, policy, series=series, chain=chain)
    )


@pytest.fixture(scope="module")
def honest(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[dict[str, Stub]]:
    daemons = []
    try:
        for key, name in enumerate(HONEST):
            directory = tmp_path_factory.mktemp(name)
            daemons.append(_start(directory, pki, regtest, key, [POOL], **POLICY))
        stubs = {name: daemon.stub(pki) for name, daemon in zip(HONEST, daemons, strict=True)}
        for stub in stubs.values():
            stub.RegisterSeries(register_request(POOL), timeout=CALL_TIMEOUT)
        yield stubs
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.log_text()


def _sign(stub: Stub, m: Manifest) -> signer_pb2.SignRoundResponse:
    return sign_until_answered(stub, round_request(m))


def _refused(response: signer_pb2.SignRoundResponse) -> list[str]:
    """The reason codes of a refused round (nothing signed)."""
    assert not response.signed_all and not response.signed_psbts
    return [refusal.reason_code for refusal in response.refusals]


def _coins(regtest: Regtest, count: int, value: int, series: Series = POOL) -> list[Utxo]:
    """``count`` new coins of ``value`` of ``series``, mined on the node."""
    return fund(regtest, series, [value] * count)


# --- the downgrade ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signer_id", "series", "why"),
    [
        ("signer-0", COLLUDERS, "the series does not hold this signer's key"),
        ("signer-0", make_series(9, 2, [1, 2]), "the series does not hold this signer's key"),
        ("signer-1", make_series(9, 2, [1, 2]), "threshold 2 is below this signer's minimum of 3"),
        ("signer-2", make_series(9, 2, [2, 3, 4]), "threshold 2 is below this signer's minimum"),
        ("signer-2", make_series(9, 3, [2, 3, 4]), "is not in this signer's approved_series"),
    ],
    ids=["colluders-2-of-2", "others-2-of-2", "below-minimum", "own-key-below-min", "unapproved"],
)
def test_honest_signers_refuse_to_register_a_series_their_operator_did_not_approve(
    honest: dict[str, Stub], signer_id: str, series: Series, why: str
) -> None:
    stub = honest[signer_id]
    with pytest.raises(grpc.RpcError) as failure:
        stub.RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert why in (failure.value.details() or "")
    shown = signer_pb2.DisplayAddressRequest(network=common_pb2.NETWORK_REGTEST, series_id=9)
    with pytest.raises(grpc.RpcError) as unknown:
        stub.DisplayAddress(shown, timeout=CALL_TIMEOUT)
    assert "series 9 is not registered" in (unknown.value.details() or "")


def _sweep(regtest: Regtest, tag: str, active: Series) -> Manifest:
    """A new 40 BTC coin of the pool pays 20,000 sat; the rest is change to ``active``."""
    retiring = replace(POOL, state=SeriesState.RETIRING)
    return pinned(
        regtest,
        [retiring, active] if active.id != POOL.id else [POOL],
        _coins(regtest, 1, 40 * BTC),
        [request("mallory", tag, 20_000)],
        change_index=((active.id, 0),),
    )


def test_no_honest_signer_signs_change_into_a_series_of_the_colluders(
    honest: dict[str, Stub], regtest: Regtest
) -> None:
    attack = _sweep(regtest, "tiny 100", COLLUDERS)
    change = build_round(attack).transactions[0].change
    assert change is not None and change.value > 39 * BTC
    for stub in honest.values():
        response = _sign(stub, attack)
        assert _refused(response) == ["DESTINATION_LIMIT_EXCEEDED"]
        assert "change to a series this signer has not approved is a payment" in (
            response.refusals[0].message
        )


def test_the_same_round_with_change_back_into_the_pool_is_signed(
    honest: dict[str, Stub], regtest: Regtest
) -> None:
    honest_round = _sweep(regtest, "tiny 110", POOL)
    for stub in honest.values():
        assert _sign(stub, honest_round).signed_all


# --- limits that add up -----------------------------------------------------------------------

ONE_ADDRESS = p2wpkh("one address")


def _to_one_address(regtest: Regtest, tag: str, *amounts: int, extra_fee: int = 0) -> Manifest:
    """Requests of ``amounts`` to one address, from three new 6 BTC coins of the pool."""
    requests = [
        WithdrawalRequest(f"client-{i}", tag, ONE_ADDRESS, amount, extra_fee)
        for i, amount in enumerate(amounts)
    ]
    return pinned(regtest, [POOL], _coins(regtest, 3, 6 * BTC), requests)


def test_two_requests_of_5_5_btc_to_one_address_are_refused_against_a_10_btc_limit(
    honest: dict[str, Stub], regtest: Regtest
) -> None:
    split = _to_one_address(regtest, "r200", 550_000_000, 550_000_000)
    assert all(r.amount <= 10 * BTC for r in split.requests)  # each within the request limit
    response = _sign(honest["signer-0"], split)
    assert _refused(response) == ["DESTINATION_LIMIT_EXCEEDED"]
    [refusal] = response.refusals
    assert refusal.scope == signer_pb2.Refusal.SCOPE_REQUEST
    assert refusal.client_id == split.requests[1].client_id
    rebuilt = replace(split, requests=split.requests[:1])  # the coordinator drops that request
    assert _sign(honest["signer-0"], rebuilt).signed_all


def test_the_payments_to_one_address_add_up_over_the_rolling_window(
    honest: dict[str, Stub], regtest: Regtest
) -> None:
    stub = honest["signer-1"]
    assert _sign(stub, _to_one_address(regtest, "r300", 550_000_000)).signed_all
    response = _sign(stub, _to_one_address(regtest, "r310", 550_000_000))
    assert _refused(response) == ["DESTINATION_DAILY_LIMIT_EXCEEDED"]


def test_an_extra_fee_above_the_fee_rate_is_refused(
    honest: dict[str, Stub], regtest: Regtest
) -> None:
    greedy = _to_one_address(regtest, "r400", BTC, extra_fee=500_000)
    planned = build_round(greedy).transactions[0]
    assert planned.fee <= 1_000_000  # within max_fee: only the rate catches it
    response = _sign(honest["signer-2"], greedy)
    assert _refused(response) == ["TX_FEE_RATE_ABOVE_LIMIT"]
    assert response.refusals[0].scope == signer_pb2.Refusal.SCOPE_REQUEST


# --- the signing log ----------------------------------------------------------------------------


def _no_change(regtest: Regtest, coin: Utxo, value: int, amount: int) -> Manifest:
    """A spend of ``coin``, claimed to hold ``value``, paying ``amount`` with no change."""
    claimed = replace(coin, value=value)
    return pinned(regtest, [POOL], [claimed], [request("alice", "all", amount)])


def test_a_second_manifest_of_the_same_transaction_is_refused(
    honest: dict[str, Stub], regtest: Regtest
) -> None:
    """The segwit v0 fee attack: the second manifest under-states the input, so the fee it shows
    is smaller, and it rebuilds to the very transaction the first one had signed."""
    [coin] = _coins(regtest, 1, BTC)
    probe = build_round(_no_change(regtest, coin, BTC, BTC // 2)).transactions[0].fee
    first = _no_change(regtest, coin, BTC, BTC - probe - 300)
    lie = _no_change(regtest, coin, BTC - 200, BTC - probe - 300)
    [tx], [same] = build_round(first).transactions, build_round(lie).transactions
    assert tx.change is None and tx.txid_hex == same.txid_hex and same.fee < tx.fee
    stub = honest["signer-0"]
    assert _sign(stub, first).signed_all
    assert _refused(_sign(stub, lie)) == ["SAME_TX_OTHER_MANIFEST"]
    assert _sign(stub, first).signed_all  # its own manifest may have it signed again


# --- refunds and moves in their windows, across a restart ----------------------------------------

S1 = make_series(1, 2, [0, 1, 2])
SUCCESSOR = make_series(2, 2, [0, 1, 3])


def _refund(stub: Stub, regtest: Regtest, tag: str) -> signer_pb2.SignRoundResponse:
    """A new 1 BTC deposit to S1, mined, whose refund address is registered: its refund round."""
    destination = p2wpkh(f"{tag}/refund")
    refund = real_deposit(regtest, S1, BTC, destination)
    address = script_pubkey_to_address(destination, REGTEST)
    assert address is not None
    register = deposit_address_request(S1, refund.index, address)
    stub.RegisterDepositAddress(register, timeout=CALL_TIMEOUT)
    m = pinned_refunds(regtest, [S1], [refund])
    return sign_until_answered(stub, refund_round_request(m))


def _move(regtest: Regtest, tag: str) -> Manifest:
    """A sweep of a new 1 BTC coin of S1 into its approved successor (20,000 sat paid on the
    way)."""
    return pinned(
        regtest,
        [replace(S1, state=SeriesState.RETIRING), SUCCESSOR],
        _coins(regtest, 1, BTC, S1),
        [request("alice", tag, 20_000)],
        change_index=((SUCCESSOR.id, 0),),
    )


def test_refunds_and_moves_count_in_their_windows_across_a_restart(
    tmp_path: Path, pki: Pki, regtest: Regtest
) -> None:
    limits = {"max_daily_refund_amount": 3 * BTC // 2, "max_daily_move_amount": 3 * BTC // 2}
    daemon = _start(tmp_path, pki, regtest, 0, [S1, SUCCESSOR], **limits)
    try:
        stub = daemon.stub(pki)
        for series in (S1, SUCCESSOR):
            stub.RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
        assert _refund(stub, regtest, "user 1").signed_all
        assert _sign(stub, _move(regtest, "r600")).signed_all
        daemon = daemon.restart()
        stub = daemon.stub(pki)
        assert _refused(_refund(stub, regtest, "user 2")) == ["REFUND_DAILY_LIMIT_EXCEEDED"]
        assert _refused(_sign(stub, _move(regtest, "r610"))) == ["MOVE_DAILY_LIMIT_EXCEEDED"]
    finally:
        assert daemon.stop() == 0, daemon.log_text()
