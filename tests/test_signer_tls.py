"""Mutual TLS and authorization: only the configured coordinator, with a valid certificate from
the pool's CA, reaches the signer, for every service it hosts (health checks included)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.factories import master_key
from tests.signer_harness import CALL_TIMEOUT
from vpool.devnet.processes import (
    NO_NODE,
    ROOT,
    Pki,
    SignerDaemon,
    client_credentials,
    emulator_backend,
    to_toml,
    write_config,
    write_keystore,
)
from vpool.v1 import signer_pb2, signer_pb2_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SignerDaemon]:
    directory = tmp_path_factory.mktemp("signer")
    keystore = write_keystore(directory / "keystore.json", master_key(0))
    daemon = SignerDaemon(
        write_config(
            directory, pki, "signer-0", emulator_backend(keystore), allowed=["coord-a", "coord-b"]
        )
    )
    yield daemon
    assert daemon.stop() == 0, daemon.log_text()


def _get_info(daemon: SignerDaemon, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    """The status of a GetInfo call with ``credentials``."""
    stub = signer_pb2_grpc.SignerServiceStub(daemon.channel(credentials))
    try:
        stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        return code
    return grpc.StatusCode.OK


def test_an_allowed_coordinator_is_served(daemon: SignerDaemon, pki: Pki) -> None:
    for name in ("coord-a", "coord-b"):
        pki.issue("coordinator", name)
        assert _get_info(daemon, pki.credentials(name)) == grpc.StatusCode.OK


def test_no_client_certificate_is_refused(daemon: SignerDaemon, pki: Pki) -> None:
    assert _get_info(daemon, client_credentials(pki.ca_path)) == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(
    daemon: SignerDaemon, pki: Pki, tmp_path: Path
) -> None:
    rogue = Pki(tmp_path)
    cert, key = rogue.issue("coordinator", "coord-a")
    credentials = client_credentials(pki.ca_path, cert, key)
    assert _get_info(daemon, credentials) == grpc.StatusCode.UNAVAILABLE


def test_an_expired_certificate_is_refused(daemon: SignerDaemon, pki: Pki) -> None:
    cert, key = pki.issue("coordinator", "coord-b", start=pki.now - timedelta(days=20), days=10)
    credentials = client_credentials(pki.ca_path, cert, key)
    assert _get_info(daemon, credentials) == grpc.StatusCode.UNAVAILABLE
    pki.issue("coordinator", "coord-b")  # valid again for the other tests


@pytest.mark.parametrize(
    ("role", "name"),
    [("client", "coord-a"), ("admin", "coord-a"), ("coordinator", "coord-c")],
)
def test_a_client_that_is_not_an_allowed_coordinator_is_denied(
    daemon: SignerDaemon, pki: Pki, role: str, name: str
) -> None:
    cert, key = pki.issue(role, name)
    credentials = client_credentials(pki.ca_path, cert, key)
    assert _get_info(daemon, credentials) == grpc.StatusCode.PERMISSION_DENIED
    health = health_pb2_grpc.HealthStub(daemon.channel(credentials))
    with pytest.raises(grpc.RpcError) as failure:
        health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    pki.issue("coordinator", "coord-a")  # restore the allowed coordinator's files


def test_a_signer_certificate_cannot_call_a_signer(daemon: SignerDaemon, pki: Pki) -> None:
    cert, key = pki.issue("signer", "signer-9")
    credentials = client_credentials(pki.ca_path, cert, key)
    refused = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED}
    assert _get_info(daemon, credentials) in refused


def test_a_plaintext_client_is_refused(daemon: SignerDaemon) -> None:
    stub = signer_pb2_grpc.SignerServiceStub(grpc.insecure_channel(daemon.address))
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_needs_both_the_configuration_and_the_flag(tmp_path: Path, pki: Pki) -> None:
    keystore = write_keystore(tmp_path / "keystore.json", master_key(0))
    config = tmp_path / "signer.toml"
    config.write_text(
        to_toml(
            {
                "signer_id": "signer-0",
                "network": "regtest",
                "data_dir": "data",
                "server": {"listen": "127.0.0.1:0", "insecure_dev": True},
                "backend": emulator_backend(keystore),
                "chain": NO_NODE,
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "server.insecure_dev" in result.stderr
