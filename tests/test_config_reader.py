"""Both daemons read their configuration through one strict reader (vpool.config_reader): the same
mistake is refused the same way by `vpool-coordinator check-config` and `vpool-signer
check-config`, naming the key, and a file both init commands wrote passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import cli as coordinator_cli
from signer import cli as signer_cli
from vpool.config_reader import ConfigError, Table
from vpool.devnet.processes import free_port

DAEMONS = ("coordinator", "signer")


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """coordinator.toml and signer.toml as each init writes them (one development CA)."""
    pool = tmp_path_factory.mktemp("pool")
    signer = tmp_path_factory.mktemp("signer")
    listen = f"127.0.0.1:{free_port()}"
    assert coordinator_cli.main(["init", "--dir", str(pool), "--listen", listen]) == 0
    certs = str(pool / "certs")
    args = ["init", "--dir", str(signer), "--signer-id", "signer-1", "--ca-dir", certs]
    assert signer_cli.main([*args, "--listen", f"127.0.0.1:{free_port()}"]) == 0
    return {"coordinator": pool / "coordinator.toml", "signer": signer / "signer.toml"}


def check_config(
    daemon: str, path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    capsys.readouterr()
    main = coordinator_cli.main if daemon == "coordinator" else signer_cli.main
    status = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def edited(original: Path, change: str, into: str) -> Path:
    """A copy of ``original`` beside it (its relative paths still hold) with ``change``
    replaced by ``into`` (once), or ``into`` prepended when ``change`` is empty."""
    text = original.read_text(encoding="utf-8")
    if change:
        assert change in text, change
        text = text.replace(change, into, 1)
    else:
        text = into + text
    path = original.with_name(f"edited-{original.name}")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("daemon", DAEMONS)
def test_the_file_init_wrote_passes(
    daemon: str, configs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = check_config(daemon, configs[daemon], capsys)
    assert status == 0 and out.startswith("OK: ")


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize(
    ("change", "into", "message"),
    [
        ("", 'colour = "blue"\n', "colour: unknown key"),
        ("[server]\n", "[server]\nlistn = '127.0.0.1:1'\n", "server.listn: unknown key"),
        ("max_message_bytes = ", "max_message_bytes = '8M'\n# ",
         "server.max_message_bytes: expected an integer"),
        ("[server]\n", "[livenes]\n[server]\n", "livenes: unknown key"),
        ("[chain]\n", "[chain]\nrpc_urll = 'x'\n", "chain.rpc_urll: unknown key"),
    ],
)  # fmt: skip
def test_the_same_mistake_is_refused_the_same_way_by_both_daemons(
    daemon: str,
    change: str,
    into: str,
    message: str,
    configs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = edited(configs[daemon], change, into)
    status, out, err = check_config(daemon, path, capsys)
    assert status == 1 and out == ""
    assert err.startswith(f"vpool-{daemon}: error: {path}: {message}"), err


def test_an_unknown_key_in_an_array_of_tables_is_named_with_its_position() -> None:
    doc = Table({"signers": [{"id": "a"}, {"id": "b", "tlsname": "x"}]}, Path("."))
    for entry in doc.tables("signers"):
        entry.value("id", str)
    with pytest.raises(ConfigError, match=r"^signers\[1\]\.tlsname: unknown key$"):
        doc.finish()


def test_a_misspelt_required_key_is_named_as_the_unknown_key_it_is() -> None:
    policy = Table({"policy": {"min_treshold": 2}}, Path(".")).table("policy")
    with pytest.raises(ConfigError, match=r"^policy\.min_treshold: unknown key \(did you mean"):
        policy.integer("min_threshold")


def test_a_required_key_that_is_absent_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"^chain\.rpc_url: missing$"):
        Table({"chain": {}}, Path(".")).table("chain").value("rpc_url", str)


def test_a_key_read_with_its_default_is_known() -> None:
    doc = Table({"pool": {"min_conf": 3}}, Path("."))
    assert doc.table("pool").value("min_conf", int, 1) == 3
    doc.finish()
