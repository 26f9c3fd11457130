"""signer.toml: the shipped example loads, paths resolve next to the file, and every mistake is
reported with the key at fault."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pool.networks import REGTEST
from signer.cli import main
from signer.config import (
    ChainConfig,
    ConfigError,
    EmulatorBackendConfig,
    HwiBackendConfig,
    load_config,
    parse_config,
)
from signer.policy import PolicyConfig, series_checksum
from tests.factories import make_series
from vpool.devnet.processes import ROOT, to_toml

EXAMPLE = ROOT / "docs" / "signer.example.toml"
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
CHECKSUM = series_checksum(make_series(1, 2, (0, 1, 2)), REGTEST)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    for name in ("certs/signer-1.pem", "certs/signer-1.key", "certs/ca.pem", "keystore.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    return tmp_path


def test_the_example_loads_with_paths_next_to_it(base: Path) -> None:
    shutil.copy(EXAMPLE, base / "signer.toml")
    config = load_config(base / "signer.toml")
    assert config.signer_id == "signer-1"
    assert config.network == REGTEST
    assert config.data_dir == base / "data"
    assert config.server.cert == base / "certs" / "signer-1.pem"
    assert config.server.allowed_coordinators == frozenset({"coordinator"})
    assert not config.server.insecure_dev
    assert config.backend == EmulatorBackendConfig(
        base / "keystore.json", "VPOOL_KEYSTORE_PASSPHRASE", None
    )
    assert config.policy == PolicyConfig(deny_destinations=frozenset())
    assert config.chain == ChainConfig(
        rpc_url="http://127.0.0.1:18443/",
        cookie_file=Path("/var/lib/bitcoind/regtest/.cookie"),
        min_conf=6,
        max_tip_lag=6,
        timeout_seconds=10.0,
        probe_seconds=10.0,
    )


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "signer_id": "signer-1",
        "network": "regtest",
        "data_dir": "data",
        "server": {
            "cert": "certs/signer-1.pem",
            "key": "certs/signer-1.key",
            "ca": "certs/ca.pem",
            "allowed_coordinators": ["coordinator"],
        },
        "backend": {"kind": "emulator", "keystore": "keystore.json", "passphrase_env": "PW"},
        "policy": {"min_threshold": 2},
        "chain": {"rpc_url": "http://127.0.0.1:18443/", "rpc_cookie_file": "node/.cookie"},
    }
    for dotted, value in changes.items():
        *tables, key = dotted.split("__")
        target = doc
        for table in tables:
            target = target.setdefault(table, {})
        if value is None:
            del target[key]
        else:
            target[key] = value
    return doc


def test_hwi_backend_and_policy(base: Path) -> None:
    backend = {
        "kind": "hwi",
        "fingerprint": "73C5DA0A",
        "device_type": "jade",
        "device_path": "tcp:127.0.0.1:30121",
        "sign_timeout_seconds": 90,
    }
    policy = {
        "min_threshold": 3,
        "max_fee": 5000,
        "allow_destinations": [ADDRESS],
        "allow_operator_refunds": True,
        "approved_series": [CHECKSUM],
        "max_destination_amount": 7,
        "max_daily_refund_amount": 8,
    }
    config = parse_config(_doc(backend=backend, policy=policy), base, base / "signer.toml")
    assert config.backend == HwiBackendConfig(
        bytes.fromhex("73c5da0a"), "jade", "tcp:127.0.0.1:30121", 30.0, 90.0
    )
    assert config.policy.max_fee == 5000
    assert config.policy.allow_destinations == frozenset({ADDRESS})
    assert config.policy.allow_operator_refunds is True
    assert config.policy.min_threshold == 3
    assert config.policy.approved_series == frozenset({CHECKSUM})
    assert (config.policy.max_destination_amount, config.policy.max_daily_refund_amount) == (7, 8)


def test_insecure_dev_needs_no_certificates(base: Path) -> None:
    server = {"listen": "0.0.0.0:7000", "insecure_dev": True}
    config = parse_config(_doc(server=server), base, base / "signer.toml")
    assert config.server.insecure_dev and config.server.cert is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"signer_id": None}, "signer_id: missing"),
        ({"signer_id": "bad name"}, "signer_id: invalid name"),
        ({"network": "litecoin"}, "network: unknown network"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"server__listen": "localhost"}, "server.listen: expected host:port"),
        ({"server__cert": "missing.pem"}, "server.cert: file not found"),
        ({"server__allowed_coordinators": []}, "server.allowed_coordinators: name at least"),
        ({"server__allowed_coordinators": "coordinator"}, "server.allowed_coordinators: expected"),
        ({"server__max_message_bytes": "8M"}, "server.max_message_bytes: expected an integer"),
        ({"server__insecure_dev": "yes"}, "server.insecure_dev: expected true or false"),
        ({"backend__kind": "ledger"}, "backend.kind: expected"),
        ({"backend__keystore": "nope.json"}, "backend.keystore: file not found"),
        ({"backend__passphrase_file": "keystore.json"}, "backend: set exactly one of"),
        ({"backend__passphrase_env": None}, "backend: set exactly one of"),
        ({"backend": {"kind": "hwi"}}, "backend: set fingerprint, or device_type"),
        ({"backend": {"kind": "hwi", "fingerprint": "xyz"}}, "backend.fingerprint: expected 8 hex"),
        ({"backend": {"kind": "hwi", "device_type": "jade"}}, "backend: set device_type and"),
        (
            {"backend": {"kind": "hwi", "device_type": "nano", "device_path": "x"}},
            "backend.device_type: unknown type",
        ),
        (
            {"backend": {"kind": "hwi", "fingerprint": "73c5da0a", "call_timeout_seconds": 0}},
            "backend.call_timeout_seconds: expected a number of seconds",
        ),
        (
            {
                "backend": {
                    "kind": "hwi",
                    "fingerprint": "73c5da0a",
                    "attestation_passphrase_env": "X",
                    "attestation_passphrase_file": "keystore.json",
                }
            },
            "backend: set at most one of attestation_passphrase_env and",
        ),
        ({"policy__max_fee": -1}, "policy.max_fee: must not be negative"),
        ({"policy__deposit_confirmations": 0}, "policy.deposit_confirmations: must be at least 1"),
        ({"policy__max_fees": 1}, "policy.max_fees: unknown key"),
        (
            {"policy__allow_operator_refunds": 1},
            "policy.allow_operator_refunds: expected true or false",
        ),
        ({"policy__max_fee": True}, "policy.max_fee: expected an integer"),
        ({"policy__deny_destinations": ["bc1qnotanaddress"]}, "policy.deny_destinations[0]: "),
        ({"policy": 3}, "policy: expected a table"),
        ({"policy": None}, "policy: missing"),
        ({"policy__min_threshold": None}, "policy.min_threshold: missing"),
        ({"policy__min_threshold": 0}, "policy.min_threshold: must be between 1 and 15"),
        ({"policy__min_threshold": "2"}, "policy.min_threshold: expected an integer"),
        ({"policy__approved_series": "abcdefgh"}, "policy.approved_series: expected an array"),
        ({"policy__approved_series": ["ABCDEFGH"]}, "policy.approved_series[0]: expected the 8"),
        ({"policy__approved_series": ["qqqqqqq"]}, "policy.approved_series[0]: expected the 8"),
        ({"policy__max_destination_amount": -1}, "policy.max_destination_amount: must not be"),
        ({"policy__cosigners": ["[73c5da0a/48h/1h/0h/2h]xpubnothing"]}, "policy.cosigners[0]: "),
        ({"policy__cosigners": ["tpubwithoutorigin"]}, "policy.cosigners[0]: key has no"),
        ({"chain": None}, "chain: missing"),
        ({"chain__rpc_url": None}, "chain.rpc_url: missing"),
        ({"chain__rpc_url": "127.0.0.1:8332"}, "chain.rpc_url: expected http://host:port/"),
        ({"chain__rpc_port": 8332}, "chain.rpc_port: unknown key"),
        ({"chain__rpc_user": "vpool"}, "chain: set either rpc_cookie_file or rpc_user"),
        ({"chain__rpc_cookie_file": None}, "chain: set rpc_cookie_file, or rpc_user and a"),
        (
            {"chain__rpc_cookie_file": None, "chain__rpc_user": "vpool"},
            "chain: set exactly one of rpc_password_env and rpc_password_file",
        ),
        (
            {
                "chain__rpc_cookie_file": None,
                "chain__rpc_user": "vpool",
                "chain__rpc_password_env": "VPOOL_TEST_UNSET_RPC_PASSWORD",
            },
            "chain.rpc_password_env: environment variable VPOOL_TEST_UNSET_RPC_PASSWORD is not",
        ),
        ({"chain__min_conf": 0}, "chain.min_conf: must be at least 1"),
        ({"chain__max_tip_lag": -1}, "chain.max_tip_lag: must not be negative"),
        ({"chain__timeout_seconds": 0}, "chain.timeout_seconds: expected a number of seconds"),
        ({"chain__dev_without_node": True}, "chain.rpc_cookie_file: unknown key"),
    ],
)
def test_mistakes_name_the_key(base: Path, changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(error)}"):
        parse_config(_doc(**changes), base, base / "signer.toml")


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "signer.toml"
    path.write_text("signer_id = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_text(to_toml(_doc()))
    with pytest.raises(ConfigError, match=r"^server\.cert: file not found"):
        load_config(path)


# --- approving a series ----------------------------------------------------------------------


def test_series_checksum_prints_the_canonical_descriptor_and_the_approved_series_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    series = make_series(1, 2, (0, 1, 2))
    canonical = series.descriptor(0).to_string(REGTEST)
    body = canonical.partition("#")[0]
    keys = body.removeprefix("wsh(sortedmulti(2,").removesuffix("))").split(",")
    shuffled = f"wsh(sortedmulti(2,{','.join(reversed(keys))}))"
    assert main(["series-checksum", "--network", "regtest", "--receive", shuffled]) == 0
    assert capsys.readouterr().out == (
        f'{canonical}\napproved_series entry: "{series_checksum(series, REGTEST)}"\n'
    )


def test_series_checksum_refuses_a_change_descriptor(capsys: pytest.CaptureFixture[str]) -> None:
    change = make_series(1, 2, (0, 1, 2)).descriptor(1).to_string(REGTEST)
    assert main(["series-checksum", "--network", "regtest", "--receive", change]) == 1
    assert "receive descriptor: expected branch 0" in capsys.readouterr().err


def test_the_rpc_password_comes_from_the_environment_and_is_never_shown(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPOOL_TEST_RPC_PASSWORD", "s3cret")
    chain = {
        "rpc_url": "http://127.0.0.1:18443/",
        "rpc_user": "vpool",
        "rpc_password_env": "VPOOL_TEST_RPC_PASSWORD",
    }
    config = parse_config(_doc(chain=chain), base, base / "signer.toml")
    assert (config.chain.rpc_user, config.chain.rpc_password) == ("vpool", "s3cret")
    assert "s3cret" not in repr(config)


def test_the_rpc_password_can_come_from_a_file(base: Path) -> None:
    (base / "rpc.txt").write_text("from a file\n")
    chain = {
        "rpc_url": "http://127.0.0.1:18443/",
        "rpc_user": "vpool",
        "rpc_password_file": "rpc.txt",
    }
    config = parse_config(_doc(chain=chain), base, base / "signer.toml")
    assert config.chain.rpc_password == "from a file"


def test_a_signer_without_a_node_must_say_so_explicitly(base: Path) -> None:
    config = parse_config(_doc(chain={"dev_without_node": True}), base, base / "signer.toml")
    assert config.chain.rpc_url is None
