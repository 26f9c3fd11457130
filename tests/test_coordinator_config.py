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
        (_edited("rungs = 3", "rung = 3"), "ladder.rung: unknown key"),
        ('netwrok = "regtest"\n' + EXAMPLE, "netwrok: unknown key"),
        (_edited('cert = "certs/coordinator.pem"', 'cert = "certs/coordinator.pem"\ncrt = ""'),
         "server.tls.crt: unknown key"),
        (_edited('address = "127.0.0.1:50052"', 'address = "127.0.0.1:50052"\ntlsname = "x"'),
         "signers[1].tlsname: unknown key"),
        (_edited("poll_seconds = 1.0", "poll_second = 1.0"), "standby.poll_second: unknown key"),
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
        ("sign_deadline_seconds = 30.0", "sign_deadline_seconds = 0",
         "rounds.sign_deadline_seconds: must be positive"),
        ("poll_seconds = 2.0", "poll_seconds = nan", "chain.poll_seconds: must be a finite number"),
        ("poll_seconds = 2.0", "poll_seconds = inf", "chain.poll_seconds: must be a finite number"),
        ("interval_seconds = 60.0", "interval_seconds = 40000000.0",
         "rounds.interval_seconds: must be at most 31622400.0"),
        ("withdrawal_expiry_seconds = 604800.0", "withdrawal_expiry_seconds = 0",
         "rounds.withdrawal_expiry_seconds: must be positive"),
        ("queue_threshold = 100", "queue_threshold = 0",
         "rounds.queue_threshold: must be positive"),
        ("fee_ceiling = 50000", "fee_ceiling = 10000001",
         "chain.fee_ceiling: must be at most 10000000"),
        ("fee_target_blocks = 6", "fee_target_blocks = 1009",
         "chain.fee_target_blocks: must be at most 1008"),
        ("max_message_bytes = 16777216", "max_message_bytes = 0",
         "server.max_message_bytes: must be at least 1024"),
        ("max_message_bytes = 16777216", "max_message_bytes = 2147483648",
         "server.max_message_bytes: must be at most 2147483647"),
        ('# metrics_listen = "127.0.0.1:9460"', 'metrics_listen = "127.0.0.1:70000"',
         "server.metrics_listen: expected host:port (port 1 to 65535)"),
        ("maturation = 6", "maturation = 100001", "pool.maturation: must be at most 100000"),
        ("min_conf = 6", "min_conf = 0", "pool.min_conf: must be positive"),
        ("dust_limit = 546", "dust_limit = 1000000001",
         "pool.dust_limit: must be at most 1000000000"),
        ("coinbase_maturity = 100", "coinbase_maturity = 99",
         "pool.coinbase_maturity: must be at least 100"),
        ("address_lookahead = 100", "address_lookahead = 100001",
         "pool.address_lookahead: must be at most 100000"),
        ("confirmations = 3", "confirmations = 100001",
         "deposits.confirmations: must be at most 100000"),
        ("min_deposit = 10000", "min_deposit = 2100000000000001",
         "deposits.min_deposit: must be at most 2100000000000000"),
        ("health_interval_seconds = 30.0", "health_interval_seconds = -inf",
         "liveness.health_interval_seconds: must be a finite number"),
        ("down_after_missed = 2", "down_after_missed = 1001",
         "liveness.down_after_missed: must be at most 1000"),
        ("poll_seconds = 3.0", "poll_seconds = 0", "rounds.poll_seconds: must be positive"),
        ("poll_seconds = 1.0", "poll_seconds = 0.01",
         "standby.poll_seconds: must be at least 0.05 seconds"),
        ("poll_seconds = 1.0", "poll_seconds = nan", "standby.poll_seconds: must be a finite"),
        ("poll_seconds = 1.0", "poll_seconds = 61.0",
         "standby.poll_seconds: must be at most 60.0 seconds"),
        ('# name = "coordinator-a"', f'name = "{"x" * 41}"',
         "standby.name: at most 40 bytes of printable characters"),
        ("rungs = 3", "rungs = 11", "ladder.rungs: must be from 0 to 10"),
        ("rungs = 3", "rungs = -1", "ladder.rungs: must be from 0 to 10"),
        ("step = 5000", "step = 999", "ladder.step: must be at least 1000"),
        ("step = 5000", "step = 1000001", "ladder.step: must be at most 1000000"),
        ("bump_after_blocks = 3", "bump_after_blocks = 0",
         "ladder.bump_after_blocks: must be positive"),
        ("bump_after_blocks = 3", "bump_after_blocks = 100001",
         "ladder.bump_after_blocks: must be at most 100000"),
    ],
)  # fmt: skip
def test_a_value_out_of_bounds_is_refused_by_name(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        _load(tmp_path, _edited(old, new))


def test_the_ladder_is_off_unless_configured(tmp_path: Path) -> None:
    start = EXAMPLE.index("[ladder]")
    end = EXAMPLE.index("[deposits]")
    (tmp_path / "certs").mkdir(exist_ok=True)
    for name in ("coordinator.pem", "coordinator.key", "ca.pem"):
        (tmp_path / "certs" / name).write_text("")
    path = tmp_path / "coordinator.toml"
    path.write_text(EXAMPLE[:start] + EXAMPLE[end:], encoding="utf-8")
    ladder = load_config(path).ladder
    assert (ladder.rungs, ladder.manifest_step()) == (0, 0)
