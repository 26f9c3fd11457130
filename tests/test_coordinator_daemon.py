"""`vpool-coordinator serve` as a process, driven with the `vpool` command line, on both stores.

No node and no signer run here (the end-to-end test has them): the chain backend points at a
closed port, so the daemon must serve its API, report the chain's absence without dying, keep
its state across a restart, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import load_config
from coordinator.store import chain as cstore
from coordinator.store.schema import make_engine, migrate
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE
from tests.coordinator_harness import ADMIN, BTC, address, fund_pool, write_daemon_config
from tests.factories import make_series
from tests.store_fixtures import add_active_series
from vpool import cli, exitcodes
from vpool.devnet.processes import ROOT, CoordinatorDaemon, Pki

SERIES = make_series(1, 2, [0, 1, 2])
CLOSED_PORT_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.issue("client", "alice")
    pki.issue("admin", ADMIN)
    return pki


@pytest.fixture
def config(tmp_path: Path, pki: Pki, store_url: str) -> Path:
    engine = make_engine(store_url)
    try:
        migrate(engine)
        add_active_series(engine, SERIES)
        fund_pool(engine, 100 * BTC)  # SubmitWithdrawal admits what the pool can pay
    finally:
        engine.dispose()
    return write_daemon_config(tmp_path / "coordinator", pki, store_url, CLOSED_PORT_URL)


@pytest.fixture
def daemon(config: Path) -> Iterator[CoordinatorDaemon]:
    daemon = CoordinatorDaemon(config)
    yield daemon
    daemon.stop()


def _connection(daemon: CoordinatorDaemon, pki: Pki, name: str) -> list[str]:
    return [
        "--coordinator", daemon.address,
        "--cert", str(pki.directory / f"{name}.pem"),
        "--key", str(pki.directory / f"{name}.key"),
        "--ca", str(pki.ca_path),
    ]  # fmt: skip


def _vpool(
    capsys: pytest.CaptureFixture[str], daemon: CoordinatorDaemon, pki: Pki, *args: str
) -> tuple[int, Any, str]:
    """Run ``vpool ARGS`` as alice (``admin ...`` as the admin): exit status, JSON out, stderr."""
    name = ADMIN if args[0] == "admin" else "alice"
    status = cli.main([*args, "--json", *_connection(daemon, pki, name)])
    out, err = capsys.readouterr()
    return status, json.loads(out) if status == 0 else None, err


def _degraded_status(
    capsys: pytest.CaptureFixture[str], daemon: CoordinatorDaemon, pki: Pki
) -> dict[str, Any]:
    """The pool status once the daemon has recorded its quorum as degraded."""
    deadline = time.monotonic() + 20
    while True:
        status, pool, err = _vpool(capsys, daemon, pki, "pool", "status")
        assert status == 0, err
        if pool["quorum"] == "degraded" or time.monotonic() > deadline:
            assert pool["quorum"] == "degraded"
            return dict(pool)
        time.sleep(0.1)


def test_serve_answers_and_keeps_state_across_a_restart(
    daemon: CoordinatorDaemon, pki: Pki, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = address("dest")
    withdraw = ["withdraw", "--request-id", "w-1", "--address", dest, "--amount", "100000"]
    status, got, _ = _vpool(capsys, daemon, pki, *withdraw)
    assert status == 0
    assert (got["request_id"], got["status"]) == ("w-1", "WITHDRAWAL_STATUS_PENDING")

    pool = _degraded_status(capsys, daemon, pki)  # no signer: its first check says so
    assert pool["queue_length"] == 1
    assert [(s["series_id"], s["state"]) for s in pool["series"]] == [(1, "active")]

    assert _vpool(capsys, daemon, pki, "admin", "pause")[1] == {"paused": True}
    status, _, err = _vpool(capsys, daemon, pki, "admin", "run-round")
    assert status == exitcodes.REFUSED and "FAILED_PRECONDITION" in err and "paused" in err

    assert daemon.stop() == 0, daemon.log_text()
    restarted = CoordinatorDaemon(config)
    try:
        status, pool, _ = _vpool(capsys, restarted, pki, "pool", "status")
        assert pool["rounds_paused"] is True
        assert [s["series_id"] for s in pool["series"]] == [1]
        status, listed, _ = _vpool(capsys, restarted, pki, "withdrawal", "list")
        assert [w["request_id"] for w in listed["withdrawals"]] == ["w-1"]
        assert _vpool(capsys, restarted, pki, "admin", "resume")[1] == {"paused": False}
        status, _, err = _vpool(capsys, restarted, pki, "admin", "run-round")
        # The quorum recorded before the restart holds: no round while it is degraded.
        assert status == exitcodes.REFUSED and "FAILED_PRECONDITION" in err and "degraded" in err
        assert restarted.proc.poll() is None
    finally:
        assert restarted.stop() == 0, restarted.log_text()


def test_watch_prints_json_lines_until_interrupted(
    daemon: CoordinatorDaemon, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = address("dest")
    withdraw = ["withdraw", "--request-id", "w-1", "--address", dest, "--amount", "100000"]
    assert _vpool(capsys, daemon, pki, *withdraw)[0] == 0
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vpool.cli",
            "withdrawal",
            "watch",
            "--json",
            *_connection(daemon, pki, "alice"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    event = json.loads(watch.stdout.readline())
    assert event["status"] == "WITHDRAWAL_STATUS_PENDING"
    assert event["withdrawal"]["request_id"] == "w-1"
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=60) == 0
    watch.stdout.close()


def test_series_in_the_configuration_are_refused_naming_the_command_that_adds_them(
    tmp_path: Path, pki: Pki, store_url: str
) -> None:
    """A [[series]] table once created series in the store that no signer had registered."""
    config = write_daemon_config(tmp_path, pki, store_url, CLOSED_PORT_URL)
    receive, change = (SERIES.descriptor(b).to_string(REGTEST) for b in (RECEIVE, CHANGE))
    with config.open("a", encoding="utf-8") as f:
        f.write(f'\n[[series]]\nid = 1\nreceive = "{receive}"\nchange = "{change}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "vpool-coordinator: error: series: not read from the configuration" in done.stderr
    assert "vpool admin add-series" in done.stderr
    engine = make_engine(store_url)
    try:
        migrate(engine)  # the daemon stopped before opening the store
        with engine.connect() as conn:
            assert cstore.all_series(conn, REGTEST) == []
    finally:
        engine.dispose()


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    example = (ROOT / "docs" / "coordinator.example.toml").read_text(encoding="utf-8")
    (tmp_path / "certs").mkdir()
    for name in ("coordinator.pem", "coordinator.key", "ca.pem"):
        (tmp_path / "certs" / name).write_text("")
    path = tmp_path / "coordinator.toml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path)
    assert config.network is REGTEST
    assert config.database_url == f"sqlite:///{tmp_path / 'data'}/coordinator.db"
    assert config.server.clients == {"exchange-a", "custodian-b"}
    assert config.server.admins == {"ops"}
    assert [s.tls_name for s in config.signers] == ["signer-1", "signer-2", "signer-3"]
    assert config.pool.max_withdrawal == 10 * 100_000_000
    assert config.rounds.queue_threshold == 100
    assert (config.rounds.max_requests, config.rounds.max_inputs) == (3_000, 2_000)
    assert config.chain.scan_start_height == 0
