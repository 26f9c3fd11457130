"""Development CA, role certificates, identity read-back, key files and the `vpool certs` CLI."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from vpool import tls
from vpool.cli import main

NOW = datetime(2030, 1, 1, tzinfo=UTC)
LOCALHOST = [ipaddress.ip_address("127.0.0.1")]

CA = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@pytest.fixture(scope="module")
def ca() -> CA:
    return tls.create_ca("test CA", NOW - timedelta(days=365))


def issue(ca: CA, role: str, name: str, days: int = 30, start: datetime = NOW) -> x509.Certificate:
    cert, _ = tls.issue_certificate(
        ca[0], ca[1], name, role, ["localhost"], LOCALHOST, start, start + timedelta(days=days)
    )
    return cert


def policy(ca: CA, at: datetime = NOW) -> PolicyBuilder:
    return PolicyBuilder().store(Store([ca[0]])).time(at)


def test_ca_is_p256_and_valid_for_ten_years(ca: CA) -> None:
    cert, key = ca
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=3650)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_signer_certificate_verifies_as_server_against_the_ca(ca: CA) -> None:
    cert = issue(ca, "signer", "signer-1")
    chain = policy(ca).build_server_verifier(DNSName("localhost")).verify(cert, [])
    assert chain[-1] == ca[0]


def test_client_certificate_verifies_as_client_against_the_ca(ca: CA) -> None:
    cert = issue(ca, "client", "alice")
    subjects = policy(ca).build_client_verifier().verify(cert, []).subjects
    assert subjects is not None
    assert x509.UniformResourceIdentifier("vpool:client/alice") in subjects


def test_coordinator_certificate_verifies_as_server_and_as_client(ca: CA) -> None:
    cert = issue(ca, "coordinator", "coord")
    policy(ca).build_server_verifier(DNSName("localhost")).verify(cert, [])
    policy(ca).build_client_verifier().verify(cert, [])


def test_signer_certificate_is_refused_as_client(ca: CA) -> None:
    cert = issue(ca, "signer", "signer-1")
    with pytest.raises(VerificationError):
        policy(ca).build_client_verifier().verify(cert, [])


def test_admin_certificate_is_refused_as_server(ca: CA) -> None:
    cert = issue(ca, "admin", "root")
    with pytest.raises(VerificationError):
        policy(ca).build_server_verifier(DNSName("localhost")).verify(cert, [])


def test_certificate_from_another_ca_is_refused(ca: CA) -> None:
    other = tls.create_ca("other CA", NOW - timedelta(days=1))
    cert = issue(other, "coordinator", "coord")
    with pytest.raises(VerificationError):
        policy(ca).build_client_verifier().verify(cert, [])


def test_expired_certificate_has_the_given_dates_and_is_refused(ca: CA) -> None:
    start = NOW - timedelta(days=60)
    cert = issue(ca, "coordinator", "coord", days=30, start=start)
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == start + timedelta(days=30)
    with pytest.raises(VerificationError):
        policy(ca).build_client_verifier().verify(cert, [])


@pytest.mark.parametrize("role", tls.ROLES)
def test_peer_identity_round_trips_role_and_name(ca: CA, role: str) -> None:
    cert = issue(ca, role, f"{role}-7")
    assert tls.peer_identity(cert) == (role, f"{role}-7")


def test_peer_identity_reads_pem_text_pem_bytes_and_der(ca: CA) -> None:
    cert = issue(ca, "signer", "signer-2")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert {tls.peer_identity(x) for x in (pem.decode(), pem, der)} == {("signer", "signer-2")}


def test_role_is_also_in_the_subject(ca: CA) -> None:
    cert = issue(ca, "signer", "signer-3")
    ou = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert (ou[0].value, cn[0].value) == ("signer", "signer-3")


def test_peer_identity_refuses_certificate_without_vpool_uri(ca: CA) -> None:
    with pytest.raises(tls.TlsError, match="no subject alternative names"):
        tls.peer_identity(ca[0])


def test_peer_identity_refuses_garbage_bytes() -> None:
    with pytest.raises(tls.TlsError, match="not a certificate"):
        tls.peer_identity(b"\x30\x03\x02\x01\x00")


def test_issue_refuses_unknown_role(ca: CA) -> None:
    with pytest.raises(tls.TlsError, match="unknown role"):
        issue(ca, "auditor", "x")


def test_issue_refuses_name_with_a_slash(ca: CA) -> None:
    with pytest.raises(tls.TlsError, match="invalid name"):
        issue(ca, "signer", "a/b")


def test_issue_refuses_validity_beyond_the_ca(ca: CA) -> None:
    with pytest.raises(tls.TlsError, match="within the CA's validity"):
        issue(ca, "signer", "signer-1", days=3650 * 2)


def test_issue_refuses_naive_times(ca: CA) -> None:
    with pytest.raises(tls.TlsError, match="timezone-aware"):
        issue(ca, "signer", "signer-1", start=NOW.replace(tzinfo=None))


def test_saved_key_is_owner_only_and_certificate_world_readable(ca: CA, tmp_path: Path) -> None:
    cert_path, key_path = tls.save_pair(tmp_path, "ca", *ca)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644


def test_saved_pair_loads_back(ca: CA, tmp_path: Path) -> None:
    tls.save_pair(tmp_path, "ca", *ca)
    cert, key = tls.load_pair(tmp_path, "ca")
    assert cert == ca[0]
    assert key.private_numbers() == ca[1].private_numbers()


def test_save_pair_refuses_to_overwrite_and_leaves_files_alone(ca: CA, tmp_path: Path) -> None:
    tls.save_pair(tmp_path, "ca", *ca)
    before = (tmp_path / "ca.key").read_bytes()
    other = tls.create_ca("other CA", NOW)
    with pytest.raises(FileExistsError):
        tls.save_pair(tmp_path, "ca", *other)
    assert (tmp_path / "ca.key").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_cli_init_then_issue_writes_a_certificate_the_ca_verifies(tmp_path: Path) -> None:
    tmp_path = tmp_path / "certs"  # made by init, as in the README
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 0
    args = ["--role", "signer", "--name", "signer-1", "--dns", "localhost", "--ip", "127.0.0.1"]
    assert main(["certs", "issue", "--dir", str(tmp_path), *args]) == 0
    ca_cert = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    leaf = (tmp_path / "signer-1.pem").read_bytes()
    assert tls.peer_identity(leaf) == ("signer", "signer-1")
    verifier = PolicyBuilder().store(Store([ca_cert])).build_server_verifier(DNSName("localhost"))
    verifier.verify(x509.load_pem_x509_certificate(leaf), [])
    assert stat.S_IMODE((tmp_path / "signer-1.key").stat().st_mode) == 0o600


def test_cli_init_refuses_to_replace_a_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 0
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 1
    assert "use --force" in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "certs" in capsys.readouterr().out


def test_cli_issue_with_a_damaged_ca_key_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 0
    (tmp_path / "ca.key").write_text("garbage\n")
    assert main(["certs", "issue", "--dir", str(tmp_path), "--role", "admin", "--name", "a"]) == 1
    assert "not an unencrypted EC private key" in capsys.readouterr().err


def test_a_certificate_is_valid_for_its_own_name(ca: CA) -> None:
    cert = issue(ca, "signer", "signer-7")
    policy(ca).build_server_verifier(DNSName("signer-7")).verify(cert, [])


CONNECTION = ["--coordinator", "localhost:1", "--cert", "c.pem", "--key", "c.key", "--ca", "ca.pem"]


@pytest.mark.parametrize(
    "command",
    [
        "certs init --dir certs --days 0",
        "certs issue --dir certs --role admin --name a --days 1e9",
        "withdraw --request-id w --address a --amount -5",
        "withdraw --request-id w --address a --amount 1 --extra-fee x",
        f"fees --page-size {2**32}",
        "withdrawal watch --after-cursor -1",
        "admin add-series --receive r --change c --series-id -1",
    ],
)
def test_cli_refuses_a_bad_number_naming_its_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = command.split()
    option = argv[-2]  # the bad value comes last
    with pytest.raises(SystemExit) as exited:
        main(argv if argv[0] == "certs" else [*argv, *CONNECTION])
    assert exited.value.code == 2
    assert f"error: argument {option}: " in capsys.readouterr().err
