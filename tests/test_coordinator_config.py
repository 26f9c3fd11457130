"""``coordinator.toml`` is read strictly: every key known, typed and within its bounds, each
error naming the key (the example configuration is the starting point of each case)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coordinator.config import ConfigError, load_config
from vpool.devnet.processes import ROOT

EXAMPLE = (ROOT / "docs" / "coordinator.example.toml").read_text(encoding="utf-8")


def _load(tmp_path: Path, text: str) -> None:
    (tmp_path / "certs").mkdir(exist_ok=True)
    for name in ("coordinator.pem", "coordinator.key", "ca.pem"):
        (tmp_path / "certs" / name).write_text("")
    path = tmp_path / "coordinator.toml"
    path.write_text(text, encoding="utf-8")
    load_config(path)


def _edited(old: str, new: str) -> str:
    assert old in EXAMPLE, old
    return EXAMPLE.replace(old, new, 1)


def test_the_example_loads_as_it_is(tmp_path: Path) -> None:
    _load(tmp_path, EXAMPLE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_edited("min_conf = 6", "min_confs = 6"), "pool.min_confs: unknown key"),
        (_edited("[liveness]", "[livenes]"), "livenes: unknown key"),
        ('netwrok = "regtest"\n' + EXAMPLE, "netwrok: unknown key"),
        (_edited('cert = "certs/coordinator.pem"', 'cert = "certs/coordinator.pem"\ncrt = ""'),
         "server.tls.crt: unknown key"),
        (_edited('address = "127.0.0.1:50052"', 'address = "127.0.0.1:50052"\ntlsname = "x"'),
         "signers[1].tlsname: unknown key"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        _load(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("fee_floor = 1000", "fee_floor = 0", "chain.fee_floor: must be at least 1000"),
        ("fee_floor = 1000", "fee_floor = 999", "chain.fee_floor: must be at least 1000"),
        ("poll_seconds = 2.0", "poll_seconds = 0", "chain.poll_seconds: must be positive"),
        ("timeout_seconds = 30.0", "timeout_seconds = -1", "chain.timeout_seconds: must be"),
        ("fee_target_blocks = 6", "fee_target_blocks = 0", "chain.fee_target_blocks: must be"),
        ("max_weight = 400000", "max_weight = 400001", "pool.max_weight: must be at most 400000"),
        ("max_weight = 400000", "max_weight = 3999", "pool.max_weight: must be at least 4000"),
        ("max_withdrawal = 1000000000", "max_withdrawal = 2100000000000001",
         "pool.max_withdrawal: must be at most 2100000000000000"),
        ("sign_deadline_seconds = 10.0", "sign_deadline_seconds = 0",
         "rounds.sign_deadline_seconds: must be positive"),
        ("poll_seconds = 3.0", "poll_seconds = 0", "rounds.poll_seconds: must be positive"),
    ],
)  # fmt: skip
def test_a_value_out_of_bounds_is_refused_by_name(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        _load(tmp_path, _edited(old, new))
