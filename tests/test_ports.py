"""A daemon refuses a port another process holds: gRPC's default SO_REUSEPORT would let two
daemons share one port and split its calls between them."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordinator_harness import write_daemon_config
from vpool.devnet.processes import (
    ROOT,
    CoordinatorDaemon,
    Pki,
    SignerDaemon,
    emulator_backend,
    master_of,
    mnemonic_for,
    write_config,
    write_keystore,
)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on, with SO_REUSEPORT set as gRPC
    would set it."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _run(module: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"VPOOL_TEST_KEYSTORE_PASSPHRASE": "correct horse battery staple", "PATH": ""},
    )


def test_a_signer_refuses_a_port_another_process_holds(tmp_path: Path, held_port: int) -> None:
    pki = Pki(tmp_path / "pki")
    keystore = write_keystore(tmp_path / "keystore.json", master_of(mnemonic_for("ports")))
    config = write_config(
        tmp_path / "signer",
        pki,
        "signer-1",
        emulator_backend(keystore),
        policy={"min_threshold": 2},
        listen=f"127.0.0.1:{held_port}",
    )
    done = _run("signer.cli", config)
    assert done.returncode != 0
    assert f"server.listen: cannot listen on 127.0.0.1:{held_port}" in done.stderr


def test_a_coordinator_refuses_a_port_another_process_holds(
    tmp_path: Path, held_port: int, store_url: str
) -> None:
    pki = Pki(tmp_path / "pki")
    config = write_daemon_config(tmp_path / "coordinator", pki, store_url, "http://127.0.0.1:9")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{held_port}"'))
    done = _run("coordinator.cli", config)
    assert done.returncode != 0
    assert f"server.listen: cannot listen on 127.0.0.1:{held_port}" in done.stderr


def test_a_second_signer_on_a_running_signers_port_is_refused_and_the_first_serves_on(
    tmp_path: Path,
) -> None:
    """Issue 13: two signers on one key and one port (different data dirs) would each keep half
    of the signing log and of the daily limits."""
    pki = Pki(tmp_path / "pki")
    keystore = write_keystore(tmp_path / "keystore.json", master_of(mnemonic_for("ports")))
    backend = emulator_backend(keystore)
    first = SignerDaemon(write_config(tmp_path / "first", pki, "signer-1", backend))
    try:
        second = write_config(tmp_path / "second", pki, "signer-1", backend, listen=first.address)
        done = _run("signer.cli", second)
        assert done.returncode != 0
        assert f"server.listen: cannot listen on {first.address}" in done.stderr
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0, first.log_text()


def test_a_second_coordinator_on_a_running_coordinators_port_is_refused(
    tmp_path: Path, store_url: str
) -> None:
    pki = Pki(tmp_path / "pki")
    config = write_daemon_config(tmp_path / "first", pki, store_url, "http://127.0.0.1:9")
    first = CoordinatorDaemon(config)
    try:
        other = write_daemon_config(tmp_path / "second", pki, store_url, "http://127.0.0.1:9")
        text = other.read_text(encoding="utf-8")
        other.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "{first.address}"'))
        done = _run("coordinator.cli", other)
        assert done.returncode != 0
        assert f"server.listen: cannot listen on {first.address}" in done.stderr
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0, first.log_text()
