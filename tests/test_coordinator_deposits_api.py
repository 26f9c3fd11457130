"""Deposit addresses, deposits and signer maintenance over real gRPC with mutual TLS, with three
real signer daemons (software keystores), on SQLite and PostgreSQL.

The signers are shared by the module and remember every deposit address registered with them
(first registration wins), so each test takes its own range of receive indexes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, select

from coordinator.config import SignerEndpoint
from coordinator.registrations import Registrations
from coordinator.signers import SignerCallError
from coordinator.store import alerts as astore
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import schema
from coordinator.store.deposits import DepositAddress, NewDeposit, Status
from coordinator.store.schema import transaction
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE
from tests.coordinator_harness import (
    CALL_TIMEOUT,
    ApiServer,
    address,
    dead_address,
    make_config,
    row_counts,
)
from tests.factories import make_series, master_key
from vpool.devnet.processes import (
    ROOT,
    Pki,
    SignerDaemon,
    emulator_backend,
    write_config,
    write_keystore,
)
from vpool.v1 import coordinator_pb2 as pb

SERIES = make_series(1, 2, [0, 1, 2])
D = pb.DepositStatus
INDEX_RANGES = itertools.count(0, 100)
REFUND = address("refund")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[list[SignerEndpoint]]:
    daemons = []
    for i in range(3):
        directory = tmp_path_factory.mktemp(f"signer-{i}")
        keystore = write_keystore(directory / "keystore.json", master_key(i))
        config = write_config(
            directory, pki, f"signer-{i}", emulator_backend(keystore), series=[SERIES]
        )
        daemons.append(SignerDaemon(config))
    yield [SignerEndpoint(f"signer-{i}", d.address, "localhost") for i, d in enumerate(daemons)]
    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log_text()


def start(pki: Pki, tmp_path: Path, store_url: str, engine: Engine, signers: Any) -> ApiServer:
    """A server whose series is registered with the signers and checked healthy, its receive
    index at the start of a range of its own."""
    server = ApiServer(pki, make_config(pki, tmp_path, store_url, signers), engine)
    server.admin().AddSeries(
        pb.AddSeriesRequest(
            series_id=SERIES.id,
            receive_descriptor=SERIES.descriptor(RECEIVE).to_string(REGTEST),
            change_descriptor=SERIES.descriptor(CHANGE).to_string(REGTEST),
        ),
        timeout=CALL_TIMEOUT,
    )
    with transaction(engine) as conn:
        cstore.advance_index(conn, SERIES.id, RECEIVE, next(INDEX_RANGES))
    server.board.check(server.signers, CALL_TIMEOUT)
    return server


@pytest.fixture
def api(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine, signers: list[SignerEndpoint]
) -> Iterator[ApiServer]:
    server = start(pki, tmp_path, store_url, engine, signers)
    yield server
    server.stop()


def error(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=CALL_TIMEOUT)
    return info.value.code(), info.value.details()


def next_index(engine: Engine) -> int:
    with engine.connect() as conn:
        return cstore.next_index(conn, SERIES.id, RECEIVE)


# --------------------------------------------------------------------------- GetDepositAddress


def test_an_address_is_registered_on_every_signer_before_it_is_handed_out(
    api: ApiServer,
) -> None:
    index = next_index(api.engine)
    request = pb.GetDepositAddressRequest(
        user_id="u1", refund_address=REFUND, verify_on_signers=True
    )
    got = api.client().GetDepositAddress(request, timeout=CALL_TIMEOUT)
    assert (got.address, got.user_id, got.series_id, got.index, got.refund_address) == (
        SERIES.address(RECEIVE, index, REGTEST), "u1", 1, index, REFUND,
    )  # fmt: skip
    assert list(got.verified_by) == ["signer-0", "signer-1", "signer-2"]
    with api.engine.connect() as conn:
        stored = dstore.address_of(conn, SERIES.derive(RECEIVE, index).script_pubkey)
    assert stored is not None
    assert (stored.client_id, stored.user_id, stored.refund_address) == ("alice", "u1", REFUND)
    for signer_id in api.signers.signer_ids:  # the first registration wins on each signer
        with pytest.raises(SignerCallError, match="FAILED_PRECONDITION"):
            api.signers.register_deposit_address(
                signer_id, REGTEST, SERIES.id, index, address("elsewhere"), CALL_TIMEOUT
            )
    again = api.client().GetDepositAddress(
        pb.GetDepositAddressRequest(user_id="u1"), timeout=CALL_TIMEOUT
    )
    assert (again.index, again.refund_address, list(again.verified_by)) == (index + 1, "", [])


def test_a_degraded_pool_hands_out_no_address_and_runs_no_round(api: ApiServer) -> None:
    admin = api.admin()
    for signer_id in ("signer-1", "signer-2"):  # two of three: more than 1/3 down
        shown = admin.SetSignerMaintenance(
            pb.SetSignerMaintenanceRequest(signer_id=signer_id, maintenance=True),
            timeout=CALL_TIMEOUT,
        )
        assert (shown.signer_id, shown.state) == (signer_id, "maintenance")
    before = row_counts(api.engine)
    code, details = error(api.client().GetDepositAddress, pb.GetDepositAddressRequest(user_id="u"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == (
        "the pool is degraded: 1 of 3 signers of series 1 healthy; needs at least 2, and at "
        "least 2/3 of 3; no deposit address is handed out until it is ok"
    )
    assert row_counts(api.engine) == before
    code, details = error(admin.RunRoundNow, pb.RunRoundNowRequest())
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "the pool is degraded" in details
    assert api.rounds.runs == 0
    status = api.client().GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert (status.quorum, [s.state for s in status.signers]) == (
        "degraded", ["healthy", "maintenance", "maintenance"],
    )  # fmt: skip
    admin.SetSignerMaintenance(
        pb.SetSignerMaintenanceRequest(signer_id="signer-1", maintenance=False),
        timeout=CALL_TIMEOUT,
    )
    got = api.client().GetDepositAddress(pb.GetDepositAddressRequest(user_id="u"))
    assert got.address  # one of three in maintenance: the pool is ok again


def missed_registrations(engine: Engine) -> set[tuple[int, str]]:
    """(receive index, signer) of every registration a signer missed."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.deposit_addresses.c.idx, schema.missed_registrations.c.signer_id).join(
                schema.deposit_addresses,
                schema.deposit_addresses.c.script_pubkey
                == schema.missed_registrations.c.script_pubkey,
            )
        ).all()
    return {(int(i), str(s)) for i, s in rows}


def test_an_address_is_handed_out_with_one_of_three_signers_unreachable(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine, signers: list[SignerEndpoint]
) -> None:
    start(pki, tmp_path, store_url, engine, signers).stop()
    gone = [*signers[:2], SignerEndpoint("signer-2", dead_address(), "localhost")]
    server = ApiServer(pki, make_config(pki, tmp_path, store_url, gone), engine)
    try:
        index = next_index(engine)
        got = server.client().GetDepositAddress(
            pb.GetDepositAddressRequest(user_id="u", refund_address=REFUND), timeout=CALL_TIMEOUT
        )
        assert (got.index, got.address) == (index, SERIES.address(RECEIVE, index, REGTEST))
        assert missed_registrations(engine) == {(index, "signer-2")}
    finally:
        server.stop()


def test_a_registration_a_signer_missed_is_replayed_to_it_when_it_returns(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine, signers: list[SignerEndpoint]
) -> None:
    start(pki, tmp_path, store_url, engine, signers).stop()
    gone = [*signers[:2], SignerEndpoint("signer-2", dead_address(), "localhost")]
    server = ApiServer(pki, make_config(pki, tmp_path, store_url, gone), engine)
    try:
        got = server.client().GetDepositAddress(
            pb.GetDepositAddressRequest(user_id="u", refund_address=REFUND), timeout=CALL_TIMEOUT
        )
    finally:
        server.stop()
    back = ApiServer(pki, make_config(pki, tmp_path, store_url, signers), engine)
    try:
        back.board.check(back.signers, CALL_TIMEOUT)
        replays = Registrations(engine, REGTEST, back.signers, back.board, CALL_TIMEOUT, time.time)
        assert replays.replay() == 1
        assert missed_registrations(engine) == set()
        answer = back.signers.register_deposit_address(
            "signer-2", REGTEST, SERIES.id, got.index, REFUND, CALL_TIMEOUT
        )
        assert answer.already_registered  # it has the refund address: the replay's
        with pytest.raises(SignerCallError, match="FAILED_PRECONDITION"):
            back.signers.register_deposit_address(
                "signer-2", REGTEST, SERIES.id, got.index, address("elsewhere"), CALL_TIMEOUT
            )
        assert replays.replay() == 0
    finally:
        back.stop()


def test_with_two_of_three_signers_unreachable_no_address_is_handed_out_nor_index_taken(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine, signers: list[SignerEndpoint]
) -> None:
    start(pki, tmp_path, store_url, engine, signers).stop()
    gone = [
        signers[0],
        SignerEndpoint("signer-1", dead_address(), "localhost"),
        SignerEndpoint("signer-2", dead_address(), "localhost"),
    ]
    server = ApiServer(pki, make_config(pki, tmp_path, store_url, gone), engine)
    try:
        index = next_index(engine)
        before = row_counts(engine)
        code, details = error(
            server.client().GetDepositAddress, pb.GetDepositAddressRequest(user_id="u")
        )
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith(
            "a deposit address needs its refund address recorded by at least 2 of the 3 "
            "signers of series 1; 1 can be asked now (signer signer-1: UNAVAILABLE"
        )
        assert details.endswith("; no address index was taken")
        assert row_counts(engine) == before
        assert next_index(engine) == index
    finally:
        server.stop()


def test_without_an_active_series_no_address_is_handed_out(
    pki: Pki, tmp_path: Path, store_url: str, engine: Engine
) -> None:
    server = ApiServer(pki, make_config(pki, tmp_path, store_url), engine)
    try:
        code, details = error(
            server.client().GetDepositAddress, pb.GetDepositAddressRequest(user_id="u")
        )
        assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "there is no active series")
    finally:
        server.stop()


MAINNET = "bc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"
BAD_INPUT = [
    ({"user_id": ""}, "user_id: missing"),
    ({"user_id": "x" * 129}, "user_id: is 129 bytes long (UTF-8); at most 128"),
    ({"user_id": "tab\there"}, "user_id: must contain printable characters only"),
    ({"refund_address": "bcrt1qqqqq"}, "refund_address: "),
    ({"refund_address": address("x")[:-1] + "q"}, "refund_address: "),
    ({"refund_address": "not an address"}, "refund_address: "),
]


@pytest.mark.parametrize(("changes", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_is_refused_naming_the_field(
    api: ApiServer, changes: dict[str, str], message: str
) -> None:
    before = (row_counts(api.engine), next_index(api.engine))
    request = pb.GetDepositAddressRequest(**{"user_id": "u1", **changes})
    code, details = error(api.client().GetDepositAddress, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message)
    assert (row_counts(api.engine), next_index(api.engine)) == before


def test_set_signer_maintenance_names_a_configured_signer(api: ApiServer) -> None:
    admin = api.admin()
    code, details = error(admin.SetSignerMaintenance, pb.SetSignerMaintenanceRequest())
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "signer_id: missing")
    request = pb.SetSignerMaintenanceRequest(signer_id="signer-9", maintenance=True)
    code, details = error(admin.SetSignerMaintenance, request)
    assert (code, details) == (
        grpc.StatusCode.NOT_FOUND, "signer_id: no configured signer 'signer-9'",
    )  # fmt: skip
    code, _ = error(api.admin("alice", "client").SetSignerMaintenance, request)
    assert code == grpc.StatusCode.PERMISSION_DENIED  # alice is no admin


# --------------------------------------------------------------------------- ListDeposits, Watch


def found_in_block(api: ApiServer, client: str, user: str, index: int, tag: int) -> str:
    """A deposit to receive address ``index`` (handed to ``client``'s ``user``), seen in block
    ``100 + tag``; its txid."""
    script = SERIES.derive(RECEIVE, index).script_pubkey
    txid = f"{tag:064x}"
    with transaction(api.engine) as conn:
        if dstore.address_of(conn, script) is None:
            dstore.record_address(
                conn, DepositAddress(script, SERIES.id, index, client, user, "", time.time())
            )
        cstore.ensure_lookahead(conn, REGTEST, index + 1)
        new = NewDeposit(txid, 0, script, 50_000 + tag, 100 + tag, f"{tag:064x}", b"raw")
        dstore.add_deposit(conn, new, time.time())
    api.changes.notify()
    return txid


def move(api: ApiServer, txid: str, status: Status, reason: str | None = None) -> None:
    with transaction(api.engine) as conn:
        dstore.set_status(conn, txid, 0, status, time.time(), reason=reason)
    api.changes.notify()


def test_list_deposits_shows_the_callers_own_by_user_and_status_in_pages(
    api: ApiServer,
) -> None:
    base = next_index(api.engine)
    mine = [found_in_block(api, "alice", f"u{i % 2}", base + i % 2, i) for i in range(1, 6)]
    found_in_block(api, "bob", "u0", base + 2, 6)
    move(api, mine[0], Status.REFUND_PENDING, "9000 sat is below the minimum deposit of 10000")
    alice = api.client()
    listed, token = [], ""
    while True:
        page = alice.ListDeposits(
            pb.ListDepositsRequest(page_size=2, page_token=token), timeout=CALL_TIMEOUT
        )
        listed += page.deposits
        token = page.next_page_token
        if not token:
            break
    assert [d.txid for d in listed] == mine[::-1]
    first = listed[-1]
    assert (first.status, first.reason, first.amount_sat, first.user_id, first.height) == (
        D.DEPOSIT_STATUS_REFUND_PENDING,
        "9000 sat is below the minimum deposit of 10000",
        50_001,
        "u1",
        101,
    )
    assert first.address == SERIES.address(RECEIVE, base + 1, REGTEST)
    by_user = alice.ListDeposits(pb.ListDepositsRequest(user_id="u0"), timeout=CALL_TIMEOUT)
    assert [d.txid for d in by_user.deposits] == [mine[3], mine[1]]
    pending = pb.ListDepositsRequest(statuses=[D.DEPOSIT_STATUS_REFUND_PENDING])
    assert [d.txid for d in alice.ListDeposits(pending, timeout=CALL_TIMEOUT).deposits] == [mine[0]]
    code, details = error(alice.ListDeposits, pb.ListDepositsRequest(statuses=[42]))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "statuses[0]: unknown deposit status 42",
    )
    code, details = error(alice.ListDeposits, pb.ListDepositsRequest(page_token="bogus"))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token returned by this service",
    )  # fmt: skip


def test_watch_deposits_delivers_every_transition_in_order_across_a_reconnect(
    api: ApiServer,
) -> None:
    base = next_index(api.engine)
    alice = api.client()
    stream = alice.WatchDeposits(pb.WatchDepositsRequest(), timeout=CALL_TIMEOUT)
    txid = found_in_block(api, "alice", "u1", base, 1)
    found_in_block(api, "bob", "u1", base + 1, 2)  # not alice's business
    received = [next(stream)]
    move(api, txid, Status.CONFIRMING)
    received.append(next(stream))
    stream.cancel()

    move(api, txid, Status.CREDITED)
    move(api, txid, Status.REORGED)
    stream = alice.WatchDeposits(
        pb.WatchDepositsRequest(after_cursor=received[-1].cursor), timeout=CALL_TIMEOUT
    )
    received += [next(stream), next(stream)]
    stream.cancel()
    assert [e.status for e in received] == [
        D.DEPOSIT_STATUS_SEEN,
        D.DEPOSIT_STATUS_CONFIRMING,
        D.DEPOSIT_STATUS_CREDITED,
        D.DEPOSIT_STATUS_REORGED,
    ]
    cursors = [e.cursor for e in received]
    assert cursors == sorted(set(cursors))
    # Each event's deposit carries the event's status, even when replayed after later changes.
    assert [e.deposit.status for e in received] == [e.status for e in received]
    assert {(e.deposit.txid, e.deposit.user_id) for e in received} == {(txid, "u1")}


# --------------------------------------------------------------------------- the command line


def vpool(api: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``vpool ARGS`` as alice, its connection from the environment."""
    api.pki.issue("client", "alice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPOOL_")}
    env |= {
        "VPOOL_COORDINATOR": api.address,
        "VPOOL_CERT": str(api.pki.directory / "alice.pem"),
        "VPOOL_KEY": str(api.pki.directory / "alice.key"),
        "VPOOL_CA": str(api.pki.ca_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "vpool.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_vpool_deposit_address_prints_the_address_every_signer_computed(api: ApiServer) -> None:
    index = next_index(api.engine)
    done = vpool(api, "deposit-address", "--user-id", "cli", "--verify-on-signers", "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert (got["address"], got["index"]) == (SERIES.address(RECEIVE, index, REGTEST), index)
    assert got["verified_by"] == ["signer-0", "signer-1", "signer-2"]


def test_an_uppercase_refund_address_is_registered_in_lower_case(api: ApiServer) -> None:
    request = pb.GetDepositAddressRequest(user_id="u-up", refund_address=REFUND.upper())
    got = api.client().GetDepositAddress(request, timeout=CALL_TIMEOUT)
    assert got.refund_address == REFUND
    with api.engine.connect() as conn:
        stored = dstore.address_of(conn, SERIES.derive(RECEIVE, got.index).script_pubkey)
    assert stored is not None and stored.refund_address == REFUND


def test_vpool_deposits_and_refunds_list_the_callers_deposits(api: ApiServer) -> None:
    base = next_index(api.engine)
    credited = found_in_block(api, "alice", "cli", base, 41)
    refunded = found_in_block(api, "alice", "cli", base, 42)
    move(api, refunded, Status.REFUND_PENDING, "too small")
    header, *rows = vpool(api, "deposits", "--user-id", "cli").stdout.splitlines()
    assert header.split()[:4] == ["TXID", "VOUT", "AMOUNT_SAT", "STATUS"]
    assert [row.split()[:4] for row in rows] == [
        [refunded, "0", "50042", "refund_pending"], [credited, "0", "50041", "seen"],
    ]  # fmt: skip
    listed = json.loads(vpool(api, "refunds", "--user-id", "cli", "--json").stdout)
    assert [(d["txid"], d["reason"]) for d in listed["deposits"]] == [(refunded, "too small")]


def test_vpool_deposits_watch_prints_events_until_interrupted(api: ApiServer) -> None:
    base = next_index(api.engine)
    txid = found_in_block(api, "alice", "cli-watch", base, 43)
    api.pki.issue("client", "alice")
    watch = subprocess.Popen(
        [
            sys.executable, "-m", "vpool.cli", "deposits", "--watch",
            "--coordinator", api.address, "--cert", str(api.pki.directory / "alice.pem"),
            "--key", str(api.pki.directory / "alice.key"), "--ca", str(api.pki.ca_path),
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stdout is not None
    lines = []
    while not any(txid in line for line in lines):
        lines.append(watch.stdout.readline())
    assert f"  seen  deposit {txid}:0 50043 sat user cli-watch" in lines[-1]
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=60) == 0
    watch.stdout.close()


def test_pool_status_shows_the_alerts(api: ApiServer) -> None:
    with transaction(api.engine) as conn:
        astore.add_alert(conn, "deposit_reorged", "deposit ab:0 was credited", time.time())
    status = api.client().GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    assert list(status.alerts) == ["deposit_reorged: deposit ab:0 was credited"]
    assert [(s.signer_id, s.state) for s in status.signers] == [
        (f"signer-{i}", "healthy") for i in range(3)
    ]
    assert all(s.last_seen_unix > 0 for s in status.signers) and status.quorum == "ok"


def test_an_uppercase_operator_refund_address_is_stored_in_lower_case(api: ApiServer) -> None:
    base = next_index(api.engine)
    script = SERIES.derive(RECEIVE, base).script_pubkey
    txid = f"{44:064x}"
    with transaction(api.engine) as conn:  # no raw transaction: no sender to derive
        dstore.record_address(
            conn, DepositAddress(script, SERIES.id, base, "alice", "u-op", "", time.time())
        )
        cstore.ensure_lookahead(conn, REGTEST, base + 1)
        dstore.add_deposit(conn, NewDeposit(txid, 0, script, 5_000, 144, txid, b""), time.time())
    move(api, txid, Status.REFUND_PENDING, "5000 sat is below the minimum deposit of 10000")
    request = pb.ProposeRefundRequest(txid=txid, vout=0, address=REFUND.upper())
    got = api.admin().ProposeRefund(request, timeout=CALL_TIMEOUT)
    assert (got.refund_address, got.refund_source) == (REFUND, "operator")
