"""Development TLS material: a pool CA and the certificates of signers, coordinators and clients.

A certificate names its holder twice: the subject (``CN=<name>, OU=<role>``) for people, and a URI
subject alternative name ``vpool:<role>/<name>`` that :func:`peer_identity` reads back. The URI is
the one that counts. Functions take the time as an argument; only the command line reads the clock.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpool.fileio import write_atomic

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ROLES = ("signer", "coordinator", "client", "admin")
SERVER_ROLES = frozenset({"signer", "coordinator"})
CLIENT_ROLES = frozenset({"coordinator", "client", "admin"})
URI_SCHEME = "vpool"
CA_VALIDITY = timedelta(days=3650)
CA_STEM = "ca"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TlsError(ValueError):
    """Bad certificate input, or a certificate that carries no valid vpool identity."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid identity name (letters, digits, ``.``, ``_``, ``-``)."""
    if not _NAME.fullmatch(name):
        raise TlsError(f"invalid name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise TlsError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    return role


def _check_window(not_before: datetime, not_after: datetime) -> None:
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise TlsError("certificate validity times must be timezone-aware")
    if not_after <= not_before:
        raise TlsError("certificate not_after must be later than not_before")


def create_ca(
    common_name: str, now: datetime, valid_for: timedelta = CA_VALIDITY
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed EC P-256 CA certificate valid from ``now`` for ``valid_for``, and its key."""
    _check_window(now, now + valid_for)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    role: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[IPAddress],
    not_before: datetime,
    not_after: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate for ``role``/``common_name`` signed by the CA, and its new P-256 key.

    Servers (signer, coordinator) get serverAuth, callers (coordinator, client, admin) clientAuth.
    ``dns_names`` and ``ip_addresses`` are the host names a server is reached by.
    """
    check_name(common_name)
    _check_role(role)
    _check_window(not_before, not_after)
    if not_before < ca_cert.not_valid_before_utc or not_after > ca_cert.not_valid_after_utc:
        raise TlsError("certificate validity must lie within the CA's validity")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(role, common_name))]
    # The name itself is always a DNS name of the certificate, so that a peer can be dialled by
    # its name (the coordinator checks a signer's certificate against its configured tls_name).
    names = [common_name, *(d for d in dns_names if d != common_name)]
    sans += [x509.DNSName(d) for d in names]
    sans += [x509.IPAddress(ip) for ip in ip_addresses]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if role in SERVER_ROLES else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if role in CLIENT_ROLES else []
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def identity_uri(role: str, name: str) -> str:
    """The URI subject alternative name that carries a vpool identity."""
    return f"{URI_SCHEME}:{role}/{name}"


def load_certificate(data: bytes | str) -> x509.Certificate:
    """Parse a certificate given as PEM (text or bytes) or DER."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as e:
        raise TlsError(f"not a certificate: {e}") from None


def peer_identity(cert: bytes | str | x509.Certificate) -> tuple[str, str]:
    """The ``(role, name)`` a certificate was issued for, from its ``vpool:`` URI.

    Does not verify the certificate: call it on a peer that TLS has already authenticated.
    """
    parsed = cert if isinstance(cert, x509.Certificate) else load_certificate(cert)
    try:
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise TlsError("certificate has no subject alternative names") from None
    prefix = f"{URI_SCHEME}:"
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    uris = [u for u in uris if u.startswith(prefix)]
    if len(uris) != 1:
        raise TlsError(f"certificate must carry exactly one {prefix} URI, found {len(uris)}")
    role, sep, name = uris[0].removeprefix(prefix).partition("/")
    if not sep:
        raise TlsError(f"malformed identity URI {uris[0]!r}")
    return _check_role(role), check_name(name)


def save_pair(
    directory: Path,
    stem: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``<stem>.pem`` (mode 0644) and ``<stem>.key`` (PKCS#8 PEM, mode 0600)."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    if not overwrite:
        for path in (cert_path, key_path):
            if path.exists():
                raise FileExistsError(f"{path} exists (use --force to replace it)")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(key_path, key_pem, mode=0o600, overwrite=overwrite)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_atomic(cert_path, cert_pem, mode=0o644, overwrite=overwrite)
    return cert_path, key_path


def load_pair(directory: Path, stem: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Read back what :func:`save_pair` wrote."""
    cert = load_certificate((directory / f"{stem}.pem").read_bytes())
    key_path = directory / f"{stem}.key"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{key_path} is not an unencrypted EC private key in PEM")
    return cert, key
