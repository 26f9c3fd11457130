"""The coordinator's API over real gRPC with mutual TLS on loopback, on SQLite and PostgreSQL.

Withdrawal transitions are driven with coordinator.store.withdrawals.set_status (what the round
engine does); rounds and fee shares are written with coordinator.store.rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import Engine

from coordinator.api import MAX_WATCHES
from coordinator.config import SignerEndpoint
from coordinator.store import chain as cstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.liveness import QUORUM_DEGRADED, QUORUM_OK
from coordinator.store.schema import make_engine, transaction
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.errors import AddressError
from pool.hashes import sha256
from pool.networks import MAINNET, REGTEST
from pool.series import CHANGE, RECEIVE, SeriesState
from signer.state import read_registered_series
from tests.coordinator_harness import (
    BTC,
    CALL_TIMEOUT,
    MAX_WITHDRAWAL,
    ApiServer,
    address,
    fund_pool,
    make_config,
    row_counts,
)
from tests.factories import make_series, master_key
from vpool.devnet.processes import Pki, SignerDaemon, emulator_backend, write_config, write_keystore
from vpool.v1 import common_pb2
from vpool.v1 import coordinator_pb2 as pb

S = pb.WithdrawalStatus
POOL_FUNDS = 100 * BTC
"""What the pool holds in these tests (admission refuses withdrawals above what it can pay)."""
SERIES = make_series(1, 2, [0, 1, 2])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def api(pki: Pki, tmp_path: Path, store_url: str, engine: Engine) -> Iterator[ApiServer]:
    fund_pool(engine, POOL_FUNDS)
    server = ApiServer(pki, make_config(pki, tmp_path, store_url), engine)
    yield server
    server.stop()


def _request(**changes: Any) -> pb.SubmitWithdrawalRequest:
    fields: dict[str, Any] = {
        "request_id": "w-1",
        "address": address("dest"),
        "amount_sat": BTC,
        "extra_fee_sat": 0,
    }
    return pb.SubmitWithdrawalRequest(**{**fields, **changes})


def _error(call: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=CALL_TIMEOUT)
    return info.value.code(), info.value.details()


def _move(api: ApiServer, request_id: str, status: wstore.Status, client: str = "alice") -> None:
    """Change a withdrawal's status as the round engine would, and wake the watchers."""
    with transaction(api.engine) as conn:
        found = wstore.get_by_request(conn, client, request_id)
        assert found is not None
        wstore.set_status(conn, [found.id], status, time.time())
    api.changes.notify()


def _address_error(text: str) -> str:
    with pytest.raises(AddressError) as info:
        address_to_script_pubkey(text, REGTEST)
    return str(info.value)


MAINNET_ADDRESS = encode_segwit_address(MAINNET, 0, bytes(20))
BAD_INPUT = [
    ({"request_id": ""}, "request_id: missing"),
    ({"request_id": "x" * 129}, "request_id: is 129 bytes long (UTF-8); at most 128"),
    ({"request_id": "é" * 65}, "request_id: is 130 bytes long (UTF-8); at most 128"),
    ({"request_id": "line\nbreak"}, "request_id: must contain printable characters only"),
    ({"address": ""}, "address: missing"),
    ({"address": MAINNET_ADDRESS}, f"address: {_address_error(MAINNET_ADDRESS)}"),
    ({"address": "bcrt1qqqqq"}, f"address: {_address_error('bcrt1qqqqq')}"),
    ({"amount_sat": 0}, "amount_sat: must be positive"),
    ({"amount_sat": 545}, "amount_sat: 545 is below the pool's dust limit of 546"),
    ({"amount_sat": 2**64 - 1}, f"amount_sat: {2**64 - 1} is above 21,000,000 BTC"),
    ({"extra_fee_sat": 21_000_000 * BTC + 1}, "extra_fee_sat: 2100000000000001 is above 21,000"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    api: ApiServer, changes: dict[str, Any], message: str
) -> None:
    before = row_counts(api.engine)
    code, details = _error(api.client().SubmitWithdrawal, _request(**changes))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message)
    assert row_counts(api.engine) == before


UNPAYABLE = [
    (
        {"amount_sat": MAX_WITHDRAWAL + 1},
        f"amount_sat: {MAX_WITHDRAWAL + 1} is above the pool's maximum withdrawal "
        f"(pool.max_withdrawal) of {MAX_WITHDRAWAL} sat",
    ),
    (
        {"amount_sat": 21_000_000 * BTC},
        "amount_sat: 2100000000000000 is above the pool's maximum withdrawal",
    ),
]


@pytest.mark.parametrize(("changes", "message"), UNPAYABLE, ids=[m for _, m in UNPAYABLE])
def test_a_withdrawal_above_the_pool_maximum_is_refused_naming_the_limit(
    api: ApiServer, changes: dict[str, Any], message: str
) -> None:
    before = row_counts(api.engine)
    code, details = _error(api.client().SubmitWithdrawal, _request(**changes))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith(message)
    assert row_counts(api.engine) == before


def test_a_withdrawal_above_the_spendable_balance_is_refused_naming_it(api: ApiServer) -> None:
    stub = api.client()
    for i in range(POOL_FUNDS // MAX_WITHDRAWAL):
        stub.SubmitWithdrawal(
            _request(request_id=f"w-{i}", amount_sat=MAX_WITHDRAWAL), timeout=CALL_TIMEOUT
        )
    before = row_counts(api.engine)
    code, details = _error(stub.SubmitWithdrawal, _request(request_id="one-too-many"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == (
        f"amount_sat: {BTC} (plus extra fee 0) is above the pool's spendable balance of 0 sat "
        f"(confirmed {POOL_FUNDS} sat minus {POOL_FUNDS} sat claimed by withdrawals not yet sent)"
    )
    assert row_counts(api.engine) == before


def test_a_cancelled_withdrawal_gives_its_claim_back(api: ApiServer) -> None:
    stub = api.client()
    for i in range(POOL_FUNDS // MAX_WITHDRAWAL):
        stub.SubmitWithdrawal(
            _request(request_id=f"w-{i}", amount_sat=MAX_WITHDRAWAL), timeout=CALL_TIMEOUT
        )
    stub.CancelWithdrawal(pb.CancelWithdrawalRequest(request_id="w-0"), timeout=CALL_TIMEOUT)
    got = stub.SubmitWithdrawal(_request(request_id="after"), timeout=CALL_TIMEOUT)
    assert got.status == S.WITHDRAWAL_STATUS_PENDING


def test_a_resubmission_is_answered_even_when_the_pool_is_fully_claimed(api: ApiServer) -> None:
    stub = api.client()
    for i in range(POOL_FUNDS // MAX_WITHDRAWAL):
        stub.SubmitWithdrawal(
            _request(request_id=f"w-{i}", amount_sat=MAX_WITHDRAWAL), timeout=CALL_TIMEOUT
        )
    again = stub.SubmitWithdrawal(
        _request(request_id="w-0", amount_sat=MAX_WITHDRAWAL), timeout=CALL_TIMEOUT
    )
    assert again.request_id == "w-0"


def test_a_valid_request_is_queued(api: ApiServer) -> None:
    got = api.client().SubmitWithdrawal(_request(extra_fee_sat=700), timeout=CALL_TIMEOUT)
    assert (got.client_id, got.request_id, got.address) == ("alice", "w-1", address("dest"))
    assert (got.amount_sat, got.extra_fee_sat, got.status) == (
        BTC,
        700,
        S.WITHDRAWAL_STATUS_PENDING,
    )
    assert got.created_unix > 0 and not got.round_id and not got.outputs


@pytest.mark.parametrize(
    ("role", "name", "service"),
    [
        ("client", "mallory", "client"),
        ("admin", "ops", "client"),
        ("coordinator", "coordinator", "client"),
        ("client", "alice", "admin"),
        ("admin", "intruder", "admin"),
    ],
)
def test_callers_without_the_right_role_and_name_are_refused(
    api: ApiServer, role: str, name: str, service: str
) -> None:
    before = row_counts(api.engine)
    if service == "client":
        code, details = _error(api.client(name, role).SubmitWithdrawal, _request())
    else:
        code, details = _error(api.admin(name, role).PauseRounds, pb.PauseRoundsRequest())
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert name in details
    assert row_counts(api.engine) == before


def test_a_certificate_without_client_auth_fails_the_handshake(api: ApiServer) -> None:
    # A signer's certificate is for servers only (no clientAuth usage).
    code, _ = _error(api.client("signer-0", "signer").SubmitWithdrawal, _request())
    assert code == grpc.StatusCode.UNAVAILABLE


def test_health_answers_clients_and_admins_only(api: ApiServer) -> None:
    request = health_pb2.HealthCheckRequest(service="vpool.v1.CoordinatorService")
    for role, name in (("client", "bob"), ("admin", "ops")):
        health = health_pb2_grpc.HealthStub(api.channel(role, name))
        answer = health.Check(request, timeout=CALL_TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stranger = health_pb2_grpc.HealthStub(api.channel("client", "mallory"))
    assert _error(stranger.Check, request)[0] == grpc.StatusCode.PERMISSION_DENIED


def test_reflection_lists_the_services(api: ApiServer) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel("admin", "ops"))
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = stub.ServerReflectionInfo(iter([ask]), timeout=CALL_TIMEOUT)
    names = {s.name for s in answer.list_services_response.service}
    assert {"vpool.v1.CoordinatorService", "vpool.v1.AdminService"} <= names


def test_resubmitting_the_same_body_returns_the_same_withdrawal(api: ApiServer) -> None:
    stub = api.client()
    first = stub.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    before = row_counts(api.engine)
    again = stub.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    assert again == first
    # The address in another (equivalent) spelling is the same body.
    upper = stub.SubmitWithdrawal(_request(address=address("dest").upper()), timeout=CALL_TIMEOUT)
    assert upper == first
    assert row_counts(api.engine) == before


def test_simultaneous_resubmissions_store_one_withdrawal(api: ApiServer) -> None:
    stub = api.client()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda _: stub.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT), range(8))
        )
    assert all(a == answers[0] for a in answers)
    listed = stub.ListWithdrawals(pb.ListWithdrawalsRequest(), timeout=CALL_TIMEOUT)
    assert len(listed.withdrawals) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount_sat": 2 * BTC}, "amount_sat"),
        ({"address": address("elsewhere")}, "address"),
        ({"extra_fee_sat": 1}, "extra_fee_sat"),
    ],
)
def test_resubmitting_another_body_is_already_exists(
    api: ApiServer, changes: dict[str, Any], field: str
) -> None:
    stub = api.client()
    stub.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    before = row_counts(api.engine)
    code, details = _error(stub.SubmitWithdrawal, _request(**changes))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert details.startswith("request_id: 'w-1' was submitted before with another")
    assert details.endswith(field)
    assert row_counts(api.engine) == before


def test_request_ids_belong_to_each_client(api: ApiServer) -> None:
    api.client("alice").SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    bobs = api.client("bob").SubmitWithdrawal(_request(amount_sat=2 * BTC), timeout=CALL_TIMEOUT)
    assert (bobs.client_id, bobs.amount_sat) == ("bob", 2 * BTC)
    code, _ = _error(api.client("bob").GetWithdrawal, pb.GetWithdrawalRequest(request_id="x"))
    assert code == grpc.StatusCode.NOT_FOUND
    alices = api.client("alice").GetWithdrawal(pb.GetWithdrawalRequest(request_id="w-1"))
    assert alices.amount_sat == BTC


def test_cancel_while_queued(api: ApiServer) -> None:
    stub = api.client()
    for request_id in ("w-1", "w-2"):
        stub.SubmitWithdrawal(_request(request_id=request_id), timeout=CALL_TIMEOUT)
    _move(api, "w-2", wstore.Status.DEFERRED)
    for request_id in ("w-1", "w-2"):
        cancel = pb.CancelWithdrawalRequest(request_id=request_id)
        got = stub.CancelWithdrawal(cancel, timeout=CALL_TIMEOUT)
        assert (got.status, got.reason) == (S.WITHDRAWAL_STATUS_CANCELLED, "by the client")
        before = row_counts(api.engine)
        assert stub.CancelWithdrawal(cancel, timeout=CALL_TIMEOUT) == got  # a retry is harmless
        assert row_counts(api.engine) == before


@pytest.mark.parametrize(
    "status",
    [
        wstore.Status.IN_ROUND,
        wstore.Status.SIGNED,
        wstore.Status.BROADCAST,
        wstore.Status.COMPLETED,
        wstore.Status.REJECTED,
    ],
)
def test_cancel_after_the_queue_is_failed_precondition(
    api: ApiServer, status: wstore.Status
) -> None:
    stub = api.client()
    stub.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    _move(api, "w-1", status)
    before = row_counts(api.engine)
    code, details = _error(stub.CancelWithdrawal, pb.CancelWithdrawalRequest(request_id="w-1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith(f"request_id: withdrawal 'w-1' is {status.value}")
    assert row_counts(api.engine) == before


def test_cancel_of_an_unknown_or_foreign_request_is_not_found(api: ApiServer) -> None:
    api.client("alice").SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    for name in ("alice", "bob"):
        request = pb.CancelWithdrawalRequest(request_id="w-1" if name == "bob" else "nope")
        assert _error(api.client(name).CancelWithdrawal, request)[0] == grpc.StatusCode.NOT_FOUND
    code, details = _error(api.client().CancelWithdrawal, pb.CancelWithdrawalRequest())
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "request_id: missing")


def test_list_withdrawals_pages_newest_first_and_filters(api: ApiServer) -> None:
    stub = api.client()
    for i in range(7):
        stub.SubmitWithdrawal(_request(request_id=f"w-{i}"), timeout=CALL_TIMEOUT)
    api.client("bob").SubmitWithdrawal(_request(request_id="bobs"), timeout=CALL_TIMEOUT)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListWithdrawals(
            pb.ListWithdrawalsRequest(page_size=3, page_token=token), timeout=CALL_TIMEOUT
        )
        seen += [w.request_id for w in page.withdrawals]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [f"w-{i}" for i in reversed(range(7))]
    everything = stub.ListWithdrawals(pb.ListWithdrawalsRequest(), timeout=CALL_TIMEOUT)
    assert len(everything.withdrawals) == 7 and not everything.next_page_token

    for request_id in ("w-2", "w-5"):
        stub.CancelWithdrawal(pb.CancelWithdrawalRequest(request_id=request_id))
    cancelled = stub.ListWithdrawals(
        pb.ListWithdrawalsRequest(statuses=[S.WITHDRAWAL_STATUS_CANCELLED]), timeout=CALL_TIMEOUT
    )
    assert [w.request_id for w in cancelled.withdrawals] == ["w-5", "w-2"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            pb.ListWithdrawalsRequest(page_token="bm9wZQ=="),
            "page_token: not a token returned by this service",
        ),
        (
            pb.ListWithdrawalsRequest(page_token="%%%"),
            "page_token: not a token returned by this service",
        ),
        (pb.ListWithdrawalsRequest(statuses=[42]), "statuses[0]: unknown withdrawal status 42"),
    ],
)
def test_list_withdrawals_refuses_bad_arguments(
    api: ApiServer, bad: pb.ListWithdrawalsRequest, message: str
) -> None:
    code, details = _error(api.client().ListWithdrawals, bad)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def _next_events(stream: Any, count: int) -> list[pb.WithdrawalEvent]:
    return [next(stream) for _ in range(count)]


def test_watch_delivers_every_transition_in_order_across_a_reconnect(api: ApiServer) -> None:
    alice = api.client()
    watch = pb.WatchWithdrawalsRequest(after_cursor=0)
    stream = alice.WatchWithdrawals(watch, timeout=CALL_TIMEOUT)
    alice.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    api.client("bob").SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)  # not alice's business
    received = _next_events(stream, 1)
    for status in (wstore.Status.IN_ROUND, wstore.Status.SIGNED):
        _move(api, "w-1", status)
        received += _next_events(stream, 1)
    stream.cancel()

    later = (wstore.Status.BROADCAST, wstore.Status.CONFIRMED, wstore.Status.COMPLETED)
    for status in later:
        _move(api, "w-1", status)
    watch = pb.WatchWithdrawalsRequest(after_cursor=received[-1].cursor)
    stream = alice.WatchWithdrawals(watch, timeout=CALL_TIMEOUT)
    received += _next_events(stream, len(later))
    _move(api, "w-1", wstore.Status.COMPLETED)  # no change: no event
    alice.SubmitWithdrawal(_request(request_id="w-2"), timeout=CALL_TIMEOUT)
    received += _next_events(stream, 1)
    stream.cancel()

    assert [e.status for e in received] == [
        S.WITHDRAWAL_STATUS_PENDING,
        S.WITHDRAWAL_STATUS_IN_ROUND,
        S.WITHDRAWAL_STATUS_SIGNED,
        S.WITHDRAWAL_STATUS_BROADCAST,
        S.WITHDRAWAL_STATUS_CONFIRMED,
        S.WITHDRAWAL_STATUS_COMPLETED,
        S.WITHDRAWAL_STATUS_PENDING,
    ]
    cursors = [e.cursor for e in received]
    assert cursors == sorted(set(cursors))
    assert [e.withdrawal.request_id for e in received] == ["w-1"] * 6 + ["w-2"]
    # Each event's withdrawal carries the event's status, even when replayed after later changes.
    assert [e.withdrawal.status for e in received] == [e.status for e in received]
    assert all(e.withdrawal.client_id == "alice" and e.at_unix > 0 for e in received)


def test_a_replayed_event_carries_its_own_status_not_the_withdrawals_current_one(
    api: ApiServer,
) -> None:
    alice = api.client()
    alice.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    for status in (wstore.Status.IN_ROUND, wstore.Status.SIGNED, wstore.Status.BROADCAST):
        _move(api, "w-1", status)
    stream = alice.WatchWithdrawals(pb.WatchWithdrawalsRequest(), timeout=CALL_TIMEOUT)
    first = next(stream)
    stream.cancel()
    assert (first.status, first.withdrawal.status) == (
        S.WITHDRAWAL_STATUS_PENDING, S.WITHDRAWAL_STATUS_PENDING,
    )  # fmt: skip


def test_a_replayed_event_carries_the_reason_and_time_it_recorded(api: ApiServer) -> None:
    alice = api.client()
    alice.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    with transaction(api.engine) as conn:
        found = wstore.get_by_request(conn, "alice", "w-1")
        assert found is not None
        later = time.time() + 3_600
        wstore.set_status(conn, [found.id], wstore.Status.DEFERRED, later, detail="no funds")
    stream = alice.WatchWithdrawals(pb.WatchWithdrawalsRequest(), timeout=CALL_TIMEOUT)
    pending, deferred = next(stream), next(stream)
    stream.cancel()
    assert (pending.withdrawal.reason, pending.withdrawal.updated_unix) == ("", pending.at_unix)
    assert pending.at_unix < int(later)
    assert (deferred.withdrawal.reason, deferred.withdrawal.updated_unix) == (
        "no funds", int(later),
    )  # fmt: skip
    assert (pending.withdrawal.round_id, pending.withdrawal.confirmations) == ("", 0)


def test_an_uppercase_bech32_withdrawal_address_is_stored_in_lower_case(api: ApiServer) -> None:
    lower = address("upper")
    got = api.client().SubmitWithdrawal(_request(address=lower.upper()), timeout=CALL_TIMEOUT)
    assert got.address == lower
    with api.engine.connect() as conn:
        stored = wstore.get_by_request(conn, "alice", "w-1")
    assert stored is not None and stored.address == lower


def test_watch_streams_are_limited_and_their_slots_come_back(api: ApiServer) -> None:
    alice = api.client()
    alice.SubmitWithdrawal(_request(), timeout=CALL_TIMEOUT)
    watch = pb.WatchWithdrawalsRequest()
    streams = [alice.WatchWithdrawals(watch, timeout=CALL_TIMEOUT) for _ in range(MAX_WATCHES)]
    for stream in streams:
        next(stream)  # each is open on the server
    extra = alice.WatchWithdrawals(watch, timeout=CALL_TIMEOUT)
    with pytest.raises(grpc.RpcError) as info:
        next(extra)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    streams.pop().cancel()
    deadline = time.monotonic() + CALL_TIMEOUT
    while True:  # the slot is free once the server has seen the cancellation
        again = alice.WatchWithdrawals(watch, timeout=CALL_TIMEOUT)
        try:
            assert next(again).withdrawal.request_id == "w-1"
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline
            time.sleep(0.05)
    for stream in [*streams, again]:
        stream.cancel()


def test_pause_persists_across_a_restart(
    api: ApiServer, pki: Pki, tmp_path: Path, store_url: str
) -> None:
    admin = api.admin()
    assert admin.PauseRounds(pb.PauseRoundsRequest(), timeout=CALL_TIMEOUT).paused
    code, details = _error(admin.RunRoundNow, pb.RunRoundNowRequest())
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "paused" in details
    assert api.rounds.runs == 0
    api.stop()

    engine = make_engine(store_url)
    restarted = ApiServer(pki, make_config(pki, tmp_path, store_url), engine)
    try:
        status = restarted.client().GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
        assert status.rounds_paused
        admin = restarted.admin()
        assert _error(admin.RunRoundNow, pb.RunRoundNowRequest())[0] == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
        assert not admin.ResumeRounds(pb.ResumeRoundsRequest(), timeout=CALL_TIMEOUT).paused
        ran = admin.RunRoundNow(pb.RunRoundNowRequest(), timeout=CALL_TIMEOUT)
        assert (ran.round_id, ran.detail) == ("", "stand-in: nothing to do")
        assert restarted.rounds.runs == 1
    finally:
        restarted.stop()
        engine.dispose()


def _round(
    engine: Engine, tag: str, shares: list[tuple[str, tuple[tuple[str, int], ...]]], signed: bool
) -> str:
    """A round with one transaction per (txid tag, fee shares); its id."""
    round_id = _hex(tag)
    txs = tuple(
        rstore.NewTransaction(
            txid=_hex(txid),
            psbt=b"psbt",
            fee=sum(a for _, a in fee),
            inputs=(),
            outputs=(),
            fee_shares=fee,
        )
        for txid, fee in shares
    )
    with transaction(engine) as conn:
        seq = rstore.create_round(conn, rstore.NewRound(round_id, b"manifest", txs), time.time())
        if signed:
            for idx in range(len(txs)):
                rstore.set_final_tx(conn, seq, idx, b"raw", time.time())
    return round_id


def _hex(tag: str) -> str:
    return sha256(tag.encode()).hex()


def test_fee_statement_pages_newest_first_and_sums(api: ApiServer) -> None:
    _round(api.engine, "r1", [("a", (("alice", 100),)), ("b", (("alice", 250),))], True)
    _round(api.engine, "r2", [("c", (("alice", 75), ("bob", 10)))], True)
    _round(api.engine, "r3", [("d", (("alice", 999),))], False)  # unsigned: not (yet) a fee
    alice = api.client()
    notices: list[pb.FeeNotice] = []
    token = ""
    while True:
        page = alice.GetFeeStatement(
            pb.GetFeeStatementRequest(page_size=2, page_token=token), timeout=CALL_TIMEOUT
        )
        assert page.total_sat == sum(n.fee_sat for n in page.notices)
        notices += page.notices
        token = page.next_page_token
        if not token:
            break
    assert [n.round_id for n in notices] == [_hex("r2"), _hex("r1"), _hex("r1")]
    assert sorted(n.txid for n in notices) == sorted(_hex(t) for t in "abc")
    assert sum(n.fee_sat for n in notices) == 425
    bobs = api.client("bob").GetFeeStatement(pb.GetFeeStatementRequest(), timeout=CALL_TIMEOUT)
    assert [(n.txid, n.fee_sat) for n in bobs.notices] == [(_hex("c"), 10)]
    assert bobs.total_sat == 10


def test_rounds_are_listed_and_shown(api: ApiServer) -> None:
    ids = [_round(api.engine, f"r{i}", [(f"t{i}", (("alice", i + 1),))], i == 0) for i in range(3)]
    admin = api.admin()
    first = admin.ListRounds(pb.ListRoundsRequest(page_size=2), timeout=CALL_TIMEOUT)
    rest = admin.ListRounds(
        pb.ListRoundsRequest(page_size=2, page_token=first.next_page_token), timeout=CALL_TIMEOUT
    )
    assert [r.round_id for r in [*first.rounds, *rest.rounds]] == ids[::-1]
    assert not rest.next_page_token
    shown = admin.GetRound(pb.GetRoundRequest(round_id=ids[0]), timeout=CALL_TIMEOUT)
    assert (shown.round_id, shown.status, shown.manifest) == (
        ids[0],
        pb.ROUND_STATUS_SIGNING,
        b"manifest",
    )
    assert [(t.txid, t.status, t.raw_tx) for t in shown.transactions] == [
        (_hex("t0"), "signed", b"raw")
    ]
    code, _ = _error(admin.GetRound, pb.GetRoundRequest(round_id=_hex("unknown")))
    assert code == grpc.StatusCode.NOT_FOUND
    assert _error(admin.GetRound, pb.GetRoundRequest())[1] == "round_id: missing"


def test_cancel_round_needs_a_known_round_id(api: ApiServer) -> None:
    """What CancelRound does to a round is the round engine's (tests/test_round_engine.py)."""
    admin = api.admin()
    assert _error(admin.CancelRound, pb.CancelRoundRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "round_id: missing",
    )
    code, details = _error(admin.CancelRound, pb.CancelRoundRequest(round_id=_hex("unknown")))
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("round_id: no round")


def test_pool_status(api: ApiServer) -> None:
    with transaction(api.engine) as conn:
        cstore.add_series(
            conn,
            1,
            SERIES.descriptor(RECEIVE).to_string(REGTEST),
            SERIES.descriptor(CHANGE).to_string(REGTEST),
            SeriesState.ACTIVE,
            REGTEST,
            time.time(),
        )
    alice = api.client()
    for i in range(3):
        alice.SubmitWithdrawal(_request(request_id=f"w-{i}"), timeout=CALL_TIMEOUT)
    _move(api, "w-1", wstore.Status.DEFERRED)
    _move(api, "w-2", wstore.Status.IN_ROUND)
    status = alice.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert status.network == common_pb2.NETWORK_REGTEST
    assert status.queue_length == 2
    assert [(s.series_id, s.state, s.m, s.n, s.confirmed_sat) for s in status.series] == [
        (1, "active", 2, 3, 0)
    ]
    assert status.quorum == QUORUM_OK  # nothing recorded yet
    api.board.check(api.signers, CALL_TIMEOUT)
    status = alice.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert status.quorum == QUORUM_DEGRADED  # no signer is configured
    assert not status.HasField("last_round") and not status.rounds_paused
    round_id = _round(api.engine, "r", [("t", (("alice", 5),))], False)
    status = alice.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert status.last_round.round_id == round_id


def _add_series_request(series_id: int = 1, **changes: str) -> pb.AddSeriesRequest:
    fields = {
        "receive_descriptor": SERIES.descriptor(RECEIVE).to_string(REGTEST),
        "change_descriptor": SERIES.descriptor(CHANGE).to_string(REGTEST),
    }
    return pb.AddSeriesRequest(series_id=series_id, **{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"receive_descriptor": ""}, "receive_descriptor: missing"),
        ({"receive_descriptor": "pkh(x)"}, "receive_descriptor: unsupported descriptor"),
        (
            {"change_descriptor": SERIES.descriptor(RECEIVE).to_string(REGTEST)},
            "change_descriptor: change descriptor must use branch 1",
        ),
        (
            {
                "change_descriptor": make_series(1, 2, [0, 1, 3])
                .descriptor(CHANGE)
                .to_string(REGTEST)
            },
            "change_descriptor: receive and change descriptors have different keys",
        ),
    ],
)
def test_add_series_refuses_bad_descriptors(
    api: ApiServer, changes: dict[str, str], message: str
) -> None:
    before = row_counts(api.engine)
    code, details = _error(api.admin().AddSeries, _add_series_request(**changes))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message)
    assert row_counts(api.engine) == before


def test_add_series_needs_a_signer_for_every_key(api: ApiServer) -> None:
    before = row_counts(api.engine)
    code, details = _error(api.admin().AddSeries, _add_series_request())
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no configured signer holds" in details and "the series was not added" in details
    assert row_counts(api.engine) == before


# --- AddSeries with real signer daemons --------------------------------------------------------

PAIR = make_series(2, 2, [0, 1])
"""A 2-of-2 series of the two signers below."""


def _start_signers(make_dir: Callable[[str], Path], pki: Pki) -> list[SignerDaemon]:
    daemons = []
    for i in (0, 1):
        directory = make_dir(f"signer-{i}")
        directory.mkdir(parents=True, exist_ok=True)
        keystore = write_keystore(directory / "keystore.json", master_key(i))
        backend = emulator_backend(keystore)
        config = write_config(directory, pki, f"signer-{i}", backend, series=[SERIES, PAIR])
        daemons.append(SignerDaemon(config))
    return daemons


def _endpoints(daemons: list[SignerDaemon]) -> list[SignerEndpoint]:
    # The test certificates name hosts (localhost), not signers.
    return [SignerEndpoint(f"signer-{i}", d.address, "localhost") for i, d in enumerate(daemons)]


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[list[SignerEndpoint]]:
    daemons = _start_signers(tmp_path_factory.mktemp, pki)
    yield _endpoints(daemons)
    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log_text()


@pytest.fixture
def api_with_signers(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine, signers: list[SignerEndpoint]
) -> Iterator[ApiServer]:
    fund_pool(engine, POOL_FUNDS)
    server = ApiServer(pki, make_config(pki, tmp_path, store_url, signers), engine)
    yield server
    server.stop()


def test_add_series_registers_on_the_signers_first(api_with_signers: ApiServer) -> None:
    admin = api_with_signers.admin()
    network = api_with_signers.config.network
    # Key 2 has no signer here: refused, nothing stored.
    before = row_counts(api_with_signers.engine)
    code, details = _error(admin.AddSeries, _add_series_request())
    missing = master_key(2).fingerprint.hex()
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"fingerprint {missing}" in details
    assert row_counts(api_with_signers.engine) == before

    request = _add_series_request(
        2,
        receive_descriptor=PAIR.descriptor(RECEIVE).to_string(network),
        change_descriptor=PAIR.descriptor(CHANGE).to_string(network),
    )
    info = admin.AddSeries(request, timeout=CALL_TIMEOUT)
    assert (info.series_id, info.state) == (2, "active")
    assert info.receive_descriptor == PAIR.descriptor(RECEIVE).to_string(network)
    with api_with_signers.engine.connect() as conn:
        assert cstore.all_series(conn, network) == [PAIR]
        assert cstore.next_index(conn, 2, RECEIVE) == 0
    again = admin.AddSeries(request, timeout=CALL_TIMEOUT)  # registered again, nothing stored
    assert again == info
    with api_with_signers.engine.connect() as conn:
        assert cstore.all_series(conn, network) == [PAIR]
    older = _add_series_request(
        1,
        receive_descriptor=PAIR.descriptor(RECEIVE).to_string(network),
        change_descriptor=PAIR.descriptor(CHANGE).to_string(network),
    )
    code, details = _error(admin.AddSeries, older)
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "series_id: must be greater than 2, the newest series",
    )


def test_add_series_of_a_stored_id_with_other_keys_already_exists(
    api_with_signers: ApiServer,
) -> None:
    network = api_with_signers.config.network
    with transaction(api_with_signers.engine) as conn:
        receive, change = (PAIR.descriptor(b).to_string(network) for b in (RECEIVE, CHANGE))
        cstore.add_series(conn, 2, receive, change, SeriesState.ACTIVE, network, time.time())
    before = row_counts(api_with_signers.engine)
    code, details = _error(api_with_signers.admin().AddSeries, _add_series_request(2))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert details == "series_id: series 2 exists with other keys or threshold"
    assert row_counts(api_with_signers.engine) == before


def test_a_stored_series_its_signers_never_registered_is_repaired_by_adding_it_again(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine
) -> None:
    """Issue 13: a series written to the store alone (as the old ``[[series]]`` configuration
    did) is registered on no signer; AddSeries with its id and descriptors registers it."""
    daemons = _start_signers(lambda name: tmp_path / name, pki)
    server = ApiServer(pki, make_config(pki, tmp_path, store_url, _endpoints(daemons)), engine)
    try:
        network = server.config.network
        receive, change = (PAIR.descriptor(b).to_string(network) for b in (RECEIVE, CHANGE))
        with transaction(engine) as conn:
            cstore.add_series(conn, 2, receive, change, SeriesState.ACTIVE, network, time.time())
        for daemon in daemons:
            assert read_registered_series(daemon.data_dir, network) == {}
        request = pb.AddSeriesRequest(
            series_id=2, receive_descriptor=receive, change_descriptor=change
        )
        info = server.admin().AddSeries(request, timeout=CALL_TIMEOUT)
        assert (info.series_id, info.state, info.receive_descriptor) == (2, "active", receive)
        for daemon in daemons:
            assert list(read_registered_series(daemon.data_dir, network)) == [2]
        with engine.connect() as conn:
            assert cstore.all_series(conn, network) == [PAIR]
    finally:
        server.stop()
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.log_text()


def test_pool_status_shows_the_checked_signers_and_quorum(api_with_signers: ApiServer) -> None:
    network = api_with_signers.config.network
    with transaction(api_with_signers.engine) as conn:
        receive, change = (PAIR.descriptor(b).to_string(network) for b in (RECEIVE, CHANGE))
        cstore.add_series(conn, 2, receive, change, SeriesState.ACTIVE, network, time.time())
    client = api_with_signers.client()
    status = client.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert [(s.signer_id, s.state) for s in status.signers] == [
        ("signer-0", "down"),
        ("signer-1", "down"),
    ]  # not checked yet
    api_with_signers.board.check(api_with_signers.signers, CALL_TIMEOUT)
    status = client.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert [(s.signer_id, s.state, s.fingerprint) for s in status.signers] == [
        (f"signer-{i}", "healthy", master_key(i).fingerprint.hex()) for i in (0, 1)
    ]
    assert status.quorum == QUORUM_OK
    api_with_signers.admin().SetSignerMaintenance(
        pb.SetSignerMaintenanceRequest(signer_id="signer-1", maintenance=True),
        timeout=CALL_TIMEOUT,
    )
    status = client.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert status.quorum == QUORUM_DEGRADED
    assert status.signers[1].state == "maintenance"
