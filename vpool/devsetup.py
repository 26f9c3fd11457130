"""What ``vpool-coordinator init`` and ``vpool-signer init`` share: a development CA and
certificates that name every address a client on this machine dials (``localhost``,
``127.0.0.1``, ``::1`` and the holder's own name), so that no ``--tls-name`` is needed, and
configuration files written once (an existing file is kept unless forced)."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vpool import tls
from vpool.fileio import write_atomic

CLOCK_SKEW = timedelta(minutes=5)
CERT_DAYS = 365
LOOPBACK_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class SetupError(Exception):
    """A file to write exists (and --force was not given), or the CA cannot be used."""


def ensure_ca(directory: Path) -> Path:
    """The CA in ``directory`` (ca.pem, ca.key), created when absent; its certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / f"{tls.CA_STEM}.pem").exists():
        start = datetime.now(UTC) - CLOCK_SKEW
        cert, key = tls.create_ca("vpool development CA", start)
        tls.save_pair(directory, tls.CA_STEM, cert, key)
    return directory / f"{tls.CA_STEM}.pem"


def issue(directory: Path, role: str, name: str, *, force: bool) -> tuple[Path, Path]:
    """``(cert, key)`` for ``role``/``name`` from the CA in ``directory``, valid for
    ``localhost``, ``name``, this host's name, 127.0.0.1 and ::1. Kept when both files exist
    and not ``force``."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if cert_path.exists() and key_path.exists() and not force:
        return cert_path, key_path
    try:
        ca_cert, ca_key = tls.load_pair(directory, tls.CA_STEM)
    except (OSError, tls.TlsError) as e:
        raise SetupError(f"the CA in {directory}: {e}") from None
    names = list(dict.fromkeys(["localhost", name, socket.gethostname()]))
    start = datetime.now(UTC) - CLOCK_SKEW
    cert, key = tls.issue_certificate(
        ca_cert, ca_key, name, role, names, list(LOOPBACK_IPS), start,
        start + timedelta(days=CERT_DAYS),
    )  # fmt: skip
    paths = tls.save_pair(directory, name, cert, key, overwrite=True)
    return paths[0], paths[1]


def write_file(path: Path, text: str, *, force: bool, mode: int = 0o644) -> Path:
    """Write ``text`` to ``path``; an existing file is refused unless ``force``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(path, text.encode(), mode=mode, overwrite=force)
    except FileExistsError:
        raise SetupError(f"{path} exists (use --force to replace it)") from None
    return path


def client_profile(coordinator: str, cert: Path, key: Path, ca: Path) -> str:
    """A `vpool` profile (vpool.profile) for one certificate, paths relative to the profile."""
    return (
        "# vpool connection profile: VPOOL_PROFILE=<this file> vpool ...\n"
        f'coordinator = "{coordinator}"\n'
        f'cert = "{cert}"\nkey = "{key}"\nca = "{ca}"\n'
    )
