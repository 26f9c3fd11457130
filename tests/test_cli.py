"""The `vpool` and `vpool-coordinator` commands as an operator runs them: processes against a
coordinator daemon set up by `vpool-coordinator init` alone (its certificates name 127.0.0.1, so
no --tls-name), with connection settings from flags, environment variables or a profile.

The daemon has one configured signer that does not run and a node that does not answer: the
pool is degraded, which the health must say.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.config import load_config
from coordinator.store.schema import make_engine
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE
from tests.coordinator_harness import address, dead_address, fund_pool
from tests.factories import make_series
from vpool import exitcodes, output, profile
from vpool.devnet.processes import ROOT, CoordinatorDaemon, free_port
from vpool.v1 import coordinator_pb2 as pb

TIMEOUT = 60
CLIENT, ADMIN = "exchange-a", "ops"


@dataclass(frozen=True)
class Setup:
    directory: Path
    daemon: CoordinatorDaemon

    @property
    def config(self) -> Path:
        return self.directory / "coordinator.toml"

    def profile(self, name: str) -> Path:
        return self.directory / f"{name}.profile.toml"

    def env(self, name: str) -> dict[str, str]:
        """The VPOOL_* variables of certificate ``name``."""
        certs = self.directory / "certs"
        return {
            "VPOOL_COORDINATOR": self.daemon.address,
            "VPOOL_CERT": str(certs / f"{name}.pem"),
            "VPOOL_KEY": str(certs / f"{name}.key"),
            "VPOOL_CA": str(certs / "ca.pem"),
        }


def run(
    module: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` with no VPOOL_* variable but ``env``'s and no user profile."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VPOOL_")}
    clean["XDG_CONFIG_HOME"] = "/nonexistent"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def vpool(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run("vpool.cli", *args, env=env)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("pool")
    done = run(
        "coordinator.cli", "init", "--dir", str(directory),
        "--listen", f"127.0.0.1:{free_port()}", "--rpc-url", "http://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = directory / "coordinator.toml"
    with config.open("a", encoding="utf-8") as f:
        f.write(f'\n[[signers]]\nid = "signer-1"\naddress = "{dead_address()}"\n')
    daemon = CoordinatorDaemon(config)
    fund_pool(make_engine(load_config(config).database_url), 10**8)  # admission takes withdrawals
    yield Setup(directory, daemon)
    assert daemon.stop() == 0, daemon.log_text()


# --- init, check-config, --version -------------------------------------------------------------


def test_init_writes_a_configuration_that_check_config_accepts(setup: Setup) -> None:
    done = run("coordinator.cli", "check-config", "--config", str(setup.config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OK: {setup.config}")


def test_check_config_refuses_an_unknown_key_naming_it(setup: Setup, tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    text = setup.config.read_text(encoding="utf-8").replace("[pool]\n", "[pool]\nmin_confs = 3\n")
    config.write_text(text, encoding="utf-8")
    (tmp_path / "certs").symlink_to(setup.directory / "certs")
    done = run("coordinator.cli", "check-config", "--config", str(config))
    assert done.returncode == 1
    assert "pool.min_confs: unknown key" in done.stderr
    assert done.stdout == ""


def test_init_refuses_to_replace_a_configuration(setup: Setup) -> None:
    done = run("coordinator.cli", "init", "--dir", str(setup.directory))
    assert done.returncode == 1
    assert "coordinator.toml exists (use --force to replace it)" in done.stderr


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("vpool.cli", "vpool"),
        ("coordinator.cli", "vpool-coordinator"),
        ("signer.cli", "vpool-signer"),
    ],
)
def test_every_command_prints_its_version(module: str, name: str) -> None:
    done = run(module, "--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"{name} ") and len(done.stdout.split()) == 2


# --- the connection profile ----------------------------------------------------------------------


def test_the_profile_written_by_init_is_enough_to_call(setup: Setup) -> None:
    done = vpool("admin", "refunds", env={"VPOOL_PROFILE": str(setup.profile(ADMIN))})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "(none)\n"


def test_environment_variables_are_enough_to_call(setup: Setup) -> None:
    done = vpool("withdrawal", "list", env=setup.env(CLIENT))
    assert done.returncode == 0, done.stderr


def test_a_flag_wins_over_the_environment(setup: Setup) -> None:
    env = {**setup.env(CLIENT), "VPOOL_COORDINATOR": dead_address()}
    done = vpool("withdrawal", "list", "--coordinator", setup.daemon.address, env=env)
    assert done.returncode == 0, done.stderr


def test_missing_connection_settings_are_bad_usage_naming_them() -> None:
    done = vpool("withdrawal", "list")
    assert done.returncode == exitcodes.USAGE
    assert "--coordinator (or VPOOL_COORDINATOR)" in done.stderr
    assert "--ca (or VPOOL_CA)" in done.stderr


def test_an_unknown_profile_key_is_bad_usage_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "profile.toml"
    path.write_text('coordinater = "127.0.0.1:1"\n', encoding="utf-8")
    done = vpool("withdrawal", "list", env={"VPOOL_PROFILE": str(path)})
    assert done.returncode == exitcodes.USAGE
    assert "coordinater: unknown key" in done.stderr


def test_the_environment_wins_over_the_profile_and_paths_are_relative_to_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "profile.toml"
    path.write_text('coordinator = "a:1"\ncert = "c.pem"\nkey = "k"\nca = "ca.pem"\n')
    found = profile.resolve(
        {"cert": None, "key": Path("/flag.key")},
        {"VPOOL_PROFILE": str(path), "VPOOL_COORDINATOR": "b:2"},
    )
    assert (found.coordinator, found.cert, found.key) == (
        "b:2",
        tmp_path / "c.pem",
        Path("/flag.key"),
    )
    assert (found.ca, found.tls_name) == (tmp_path / "ca.pem", None)


# --- exit codes ----------------------------------------------------------------------------------


def test_an_unknown_withdrawal_exits_not_found(setup: Setup) -> None:
    done = vpool("withdrawal", "get", "--request-id", "nope", env=setup.env(CLIENT))
    assert done.returncode == exitcodes.NOT_FOUND
    assert "NOT_FOUND" in done.stderr


def test_an_invalid_argument_exits_bad_usage_naming_the_field(setup: Setup) -> None:
    args = ["withdraw", "--request-id", "w-bad", "--address", "bogus", "--amount", "1000"]
    done = vpool(*args, env=setup.env(CLIENT))
    assert done.returncode == exitcodes.USAGE
    assert "INVALID_ARGUMENT: address:" in done.stderr


def test_a_client_calling_an_admin_command_exits_refused(setup: Setup) -> None:
    done = vpool("admin", "rounds", env=setup.env(CLIENT))
    assert done.returncode == exitcodes.REFUSED
    assert "PERMISSION_DENIED" in done.stderr


def test_a_deposit_address_of_a_degraded_pool_exits_refused(setup: Setup) -> None:
    done = vpool("deposit-address", "--user-id", "u1", env=setup.env(CLIENT))
    assert done.returncode == exitcodes.REFUSED
    assert "FAILED_PRECONDITION" in done.stderr


def test_a_coordinator_that_does_not_answer_exits_unavailable(setup: Setup) -> None:
    env = {**setup.env(CLIENT), "VPOOL_COORDINATOR": dead_address()}
    done = vpool("pool", "status", "--timeout", "5", env=env)
    assert done.returncode == exitcodes.UNAVAILABLE
    assert "UNAVAILABLE" in done.stderr


def test_a_missing_option_exits_bad_usage(setup: Setup) -> None:
    done = vpool("withdraw", "--request-id", "w-x", env=setup.env(CLIENT))
    assert done.returncode == exitcodes.USAGE
    assert "--address" in done.stderr


# --- output ------------------------------------------------------------------------------------


def test_withdrawals_print_as_a_table_and_as_json(setup: Setup) -> None:
    dest = address("cli-dest")
    args = ["withdraw", "--request-id", "w-table", "--address", dest, "--amount", "100000"]
    assert vpool(*args, env=setup.env(CLIENT)).returncode == 0
    table = vpool("withdrawal", "list", "--status", "pending", env=setup.env(CLIENT))
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["REQUEST_ID", "STATUS", "AMOUNT_SAT", "ADDRESS"]
    assert ["w-table", "pending", "100000", dest] in [row.split()[:4] for row in rows]
    shown = vpool("withdrawal", "get", "--request-id", "w-table", "--json", env=setup.env(CLIENT))
    got = json.loads(shown.stdout)
    assert (got["status"], got["amount_sat"], got["round_id"]) == (
        "WITHDRAWAL_STATUS_PENDING", 100000, "",
    )  # fmt: skip


def test_an_uppercase_bech32_address_is_stored_in_lower_case(setup: Setup) -> None:
    dest = address("cli-upper")
    args = ["withdraw", "--request-id", "w-upper", "--address", dest.upper(), "--amount", "100000"]
    done = vpool(*args, "--json", env=setup.env(CLIENT))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["address"] == dest


def test_raw_transactions_and_other_bytes_are_hex_in_json() -> None:
    tx = pb.RoundTransaction(txid="ab" * 32, raw_tx=bytes([2, 0, 0, 0, 255]), psbt=b"psbt\xff")
    got = output.to_dict(pb.Round(round_id="r", transactions=[tx]))
    assert got["transactions"][0]["raw_tx"] == "02000000ff"
    assert got["transactions"][0]["psbt"] == "70736274ff"
    assert got["manifest"] == ""


def test_a_round_shows_its_raw_transactions_in_hex_to_people_too() -> None:
    tx = pb.RoundTransaction(txid="ab" * 32, raw_tx=bytes([2, 0, 0, 0, 255]), psbt=b"psbt\xff")
    out = io.StringIO()
    output.human(pb.Round(round_id="r", transactions=[tx], manifest=b"m"), out)
    lines = out.getvalue().splitlines()
    assert "  raw_tx: 02000000ff" in lines
    assert "  psbt: (5 bytes; --json shows them)" in lines
    assert "manifest: (1 bytes; --json shows them)" in lines


def test_lists_of_nothing_print_none(setup: Setup) -> None:
    for command in (["deposits"], ["refunds"]):
        done = vpool(*command, env=setup.env(CLIENT))
        assert (done.returncode, done.stdout) == (0, "(none)\n"), done.stderr


def test_withdrawal_cancel_prints_the_cancelled_withdrawal(setup: Setup) -> None:
    args = ["--request-id", "w-cancel"]
    submit = ["withdraw", *args, "--address", address("cli-cancel"), "--amount", "100000"]
    assert vpool(*submit, env=setup.env(CLIENT)).returncode == 0
    done = vpool("withdrawal", "cancel", *args, env=setup.env(CLIENT))
    assert done.returncode == 0, done.stderr
    assert "status: cancelled" in done.stdout.splitlines()
    again = vpool("withdrawal", "cancel", *args, "--json", env=setup.env(CLIENT))
    assert json.loads(again.stdout)["status"] == "WITHDRAWAL_STATUS_CANCELLED"


def test_withdrawal_cancel_of_an_unknown_request_exits_not_found(setup: Setup) -> None:
    done = vpool("withdrawal", "cancel", "--request-id", "nope", env=setup.env(CLIENT))
    assert done.returncode == exitcodes.NOT_FOUND


def test_fees_print_the_clients_statement_as_lines_and_as_json(setup: Setup) -> None:
    shown = vpool("fees", env=setup.env(CLIENT))
    assert shown.returncode == 0, shown.stderr
    assert "total_sat: 0" in shown.stdout.splitlines()
    assert json.loads(vpool("fees", "--json", env=setup.env(CLIENT)).stdout)["total_sat"] == 0


def test_pool_status_prints_the_quorum_for_people(setup: Setup) -> None:
    done = vpool("pool", "status", env=setup.env(CLIENT))
    assert done.returncode == 0, done.stderr
    assert "quorum: degraded" in done.stdout.splitlines()


# --- admin commands ----------------------------------------------------------------------------


def test_admin_rounds_of_a_pool_without_rounds_print_none(setup: Setup) -> None:
    done = vpool("admin", "rounds", env=setup.env(ADMIN))
    assert (done.returncode, done.stdout) == (0, "(none)\n"), done.stderr
    listed = json.loads(vpool("admin", "rounds", "--json", env=setup.env(ADMIN)).stdout)
    assert listed["rounds"] == []


def test_admin_round_of_an_unknown_round_exits_not_found(setup: Setup) -> None:
    done = vpool("admin", "round", "--round-id", "ab" * 32, env=setup.env(ADMIN))
    assert done.returncode == exitcodes.NOT_FOUND


def test_admin_pause_and_resume_print_the_rounds_state(setup: Setup) -> None:
    paused = vpool("admin", "pause", env=setup.env(ADMIN))
    assert paused.returncode == 0, paused.stderr
    assert "paused: yes" in paused.stdout.splitlines()
    resumed = vpool("admin", "resume", "--json", env=setup.env(ADMIN))
    assert json.loads(resumed.stdout) == {"paused": False}


def test_admin_add_series_with_a_bad_descriptor_exits_bad_usage_naming_it(setup: Setup) -> None:
    args = ["--series-id", "1000", "--receive", "pkh(x)", "--change", "pkh(x)"]
    done = vpool("admin", "add-series", *args, env=setup.env(ADMIN))
    assert done.returncode == exitcodes.USAGE
    assert "INVALID_ARGUMENT: receive_descriptor:" in done.stderr


def test_admin_add_series_while_its_signer_is_down_exits_unavailable(setup: Setup) -> None:
    series = make_series(1000, 2, [0, 1, 2])
    receive, change = (series.descriptor(b).to_string(REGTEST) for b in (RECEIVE, CHANGE))
    args = ["--series-id", "1000", "--receive", receive, "--change", change, "--timeout", "20"]
    done = vpool("admin", "add-series", *args, env=setup.env(ADMIN))
    assert done.returncode == exitcodes.UNAVAILABLE, done.stderr
    assert "the series was not added" in done.stderr


def test_admin_maintenance_starts_and_ends_a_signers_maintenance(setup: Setup) -> None:
    env = setup.env(ADMIN)
    on = vpool("admin", "maintenance", "--signer-id", "signer-1", "on", "--json", env=env)
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout)["state"] == "maintenance"
    off = vpool("admin", "maintenance", "--signer-id", "signer-1", "off", env=env)
    assert off.returncode == 0, off.stderr
    assert "state: down" in off.stdout.splitlines()


def test_admin_maintenance_of_an_unknown_signer_exits_not_found(setup: Setup) -> None:
    done = vpool("admin", "maintenance", "--signer-id", "nobody", "on", env=setup.env(ADMIN))
    assert done.returncode == exitcodes.NOT_FOUND
    assert "signer_id" in done.stderr


def test_admin_propose_refund_of_an_unknown_deposit_exits_not_found(setup: Setup) -> None:
    args = ["--txid", "ab" * 32, "--vout", "0", "--address", address("cli-refund")]
    done = vpool("admin", "propose-refund", *args, env=setup.env(ADMIN))
    assert done.returncode == exitcodes.NOT_FOUND
    assert "no deposit" in done.stderr


def test_admin_cancel_round_of_an_unknown_round_exits_not_found(setup: Setup) -> None:
    done = vpool("admin", "cancel-round", "--round-id", "ab" * 32, env=setup.env(ADMIN))
    assert done.returncode == exitcodes.NOT_FOUND
    assert "NOT_FOUND: round_id: no round" in done.stderr


def test_admin_cancel_round_without_a_round_id_exits_bad_usage(setup: Setup) -> None:
    empty = vpool("admin", "cancel-round", "--round-id", "", env=setup.env(ADMIN))
    assert empty.returncode == exitcodes.USAGE
    assert "INVALID_ARGUMENT: round_id: missing" in empty.stderr
    missing = vpool("admin", "cancel-round", env=setup.env(ADMIN))
    assert missing.returncode == exitcodes.USAGE
    assert "--round-id" in missing.stderr


# --- health ------------------------------------------------------------------------------------


def _health(setup: Setup, service: str) -> int:
    certs = setup.directory / "certs"
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        (certs / f"{CLIENT}.key").read_bytes(),
        (certs / f"{CLIENT}.pem").read_bytes(),
    )
    with grpc.secure_channel(setup.daemon.address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    return int(answer.status)


def test_health_is_not_serving_while_the_pool_is_degraded_and_its_node_silent(
    setup: Setup,
) -> None:
    Status = health_pb2.HealthCheckResponse
    deadline = time.monotonic() + TIMEOUT
    while True:
        status = json.loads(vpool("pool", "status", "--json", env=setup.env(CLIENT)).stdout)
        if "the node does not answer" in status["health_detail"]:
            break
        assert time.monotonic() < deadline, setup.daemon.log_text()
        time.sleep(0.1)
    assert status["health"] == "NOT_SERVING"
    assert "the pool is degraded" in status["health_detail"]
    assert _health(setup, "vpool.v1.CoordinatorService") == Status.NOT_SERVING
    assert _health(setup, "") == Status.NOT_SERVING
    assert _health(setup, "vpool.v1.AdminService") == Status.SERVING
    log = setup.daemon.log.read_text(errors="replace")
    assert "health: NOT_SERVING: the pool is degraded" in log
