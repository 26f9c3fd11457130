"""Processes of a development pool, run as operators run them: signer daemons, Jade-protocol
emulators and the coordinator (``python -m <package>.cli ...``), each on a loopback port it picks
itself (port 0) and announces on its ready line; plus the development PKI and config writers.

Used by the integration tests and by ``make demo``. Nothing here is for production keys: the
keystore passphrase is a published constant.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from mnemonic import Mnemonic

from pool.hashes import sha256
from pool.hdkeys import ExtendedPrivateKey
from pool.networks import REGTEST
from pool.series import Series
from signer.keystore import create_keystore
from signer.policy import series_checksum
from vpool import tls
from vpool.v1 import signer_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent.parent
PASSPHRASE = "correct horse battery staple"
"""The development keystores' passphrase (published: development keys only)."""
PASSPHRASE_ENV = "VPOOL_TEST_KEYSTORE_PASSPHRASE"
COORDINATOR = "coordinator"
START_TIMEOUT = 30.0
_READY = re.compile(r"vpool-signer \S+ serving on (\S+)")
_JADE_READY = re.compile(r"jade emulator listening on [^:]+:(\d+) ")
_COORDINATOR_READY = re.compile(r"vpool-coordinator serving on (\S+)")


# --- TLS -------------------------------------------------------------------------------------


@dataclass
class Pki:
    """A development CA in ``directory`` and the certificates issued from it."""

    directory: Path
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        start = self.now - timedelta(days=30)
        self.ca_cert, self.ca_key = tls.create_ca("test pool CA", start, timedelta(days=365))
        tls.save_pair(self.directory, tls.CA_STEM, self.ca_cert, self.ca_key)

    @property
    def ca_path(self) -> Path:
        return self.directory / f"{tls.CA_STEM}.pem"

    def issue(
        self, role: str, name: str, *, start: datetime | None = None, days: float = 30
    ) -> tuple[Path, Path]:
        """``(cert, key)`` paths of a new certificate for ``role``/``name`` (on loopback)."""
        begin = start or self.now - timedelta(days=1)
        cert, key = tls.issue_certificate(
            self.ca_cert,
            self.ca_key,
            name,
            role,
            ["localhost"],
            [ipaddress.ip_address("127.0.0.1")],
            begin,
            begin + timedelta(days=days),
        )
        return tls.save_pair(self.directory, name, cert, key, overwrite=True)

    def credentials(self, name: str = COORDINATOR) -> grpc.ChannelCredentials:
        """Client credentials from the files of ``name`` (issue them first)."""
        return client_credentials(self.ca_path, *self._pair(name))

    def _pair(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}.pem", self.directory / f"{name}.key"


def client_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- keys and configs -----------------------------------------------------------------------


def mnemonic_for(tag: str) -> str:
    """A fixed test mnemonic (24 words from SHA256 of ``tag``)."""
    words: str = Mnemonic("english").to_mnemonic(sha256(tag.encode()))
    return words


def master_of(words: str) -> ExtendedPrivateKey:
    return ExtendedPrivateKey.from_seed(Mnemonic.to_seed(words, ""))


def write_keystore(path: Path, master: ExtendedPrivateKey) -> Path:
    """A keystore of ``master`` (as a regtest xprv), with a fast scrypt setting."""
    create_keystore(path, master.to_string(REGTEST), "xprv", PASSPHRASE, "regtest", scrypt_n=16)
    return path


def to_toml(doc: Mapping[str, Any]) -> str:
    """TOML for a document of scalars, arrays of scalars and one level of tables."""
    top = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping)]
    tables = [
        f"\n[{k}]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in v.items())
        for k, v in doc.items()
        if isinstance(v, Mapping)
    ]
    return "\n".join(top) + "\n" + "".join(tables)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def emulator_backend(keystore: Path) -> dict[str, Any]:
    return {"kind": "emulator", "keystore": str(keystore), "passphrase_env": PASSPHRASE_ENV}


def hwi_backend(
    port: int,
    fingerprint: bytes,
    sign_timeout: float = 60.0,
    answer_within: float = 2.0,
    probe_seconds: float = 2.0,
) -> dict[str, Any]:
    return {
        "answer_within_seconds": answer_within,
        "probe_seconds": probe_seconds,
        "kind": "hwi",
        "device_type": "jade",
        "device_path": f"tcp:127.0.0.1:{port}",
        "fingerprint": fingerprint.hex(),
        "call_timeout_seconds": 20,
        "sign_timeout_seconds": sign_timeout,
    }


NO_NODE: Mapping[str, Any] = {"dev_without_node": True}
"""A ``[chain]`` table without a node: the signer starts, answers queries, and signs nothing."""


def node_chain(
    directory: Path,
    url: str,
    user: str,
    password: str,
    *,
    min_conf: int = 1,
    max_tip_lag: int = 6,
    probe_seconds: float = 0.5,
) -> dict[str, Any]:
    """A ``[chain]`` table naming a node (the password goes to a file only its owner reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "rpc-password.txt"
    secret.touch(mode=0o600)
    secret.write_text(password, encoding="utf-8")
    return {
        "rpc_url": url,
        "rpc_user": user,
        "rpc_password_file": str(secret),
        "min_conf": min_conf,
        "max_tip_lag": max_tip_lag,
        "timeout_seconds": 10.0,
        "probe_seconds": probe_seconds,
    }


def write_config(
    directory: Path,
    pki: Pki,
    signer_id: str,
    backend: Mapping[str, Any],
    policy: Mapping[str, Any] | None = None,
    allowed: Sequence[str] = (COORDINATOR,),
    series: Sequence[Series] = (),
    listen: str = "127.0.0.1:0",
    chain: Mapping[str, Any] = NO_NODE,
) -> Path:
    """``directory/signer.toml`` for a signer on a free loopback port, with its certificate.

    ``series`` are the series the tests will register, as an operator approves them: their keys
    become the signer's ``cosigners`` (its own key among them is harmless), their checksums its
    ``approved_series``, and its ``min_threshold`` their smallest m (2 without series). Keys
    ``policy`` sets win. ``chain`` is its ``[chain]`` table (``node_chain``); without a node it
    signs nothing.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = pki.issue("signer", signer_id)
    keys = list(dict.fromkeys(k for one in series for k in one.keys))
    policy_doc: dict[str, Any] = {
        "min_threshold": min((one.m for one in series), default=2),
        "cosigners": [k.to_string(REGTEST) for k in keys],
        "approved_series": sorted({series_checksum(one, REGTEST) for one in series}),
        **(policy or {}),
    }
    doc: dict[str, Any] = {
        "signer_id": signer_id,
        "network": "regtest",
        "data_dir": "data",
        "server": {
            "listen": listen,
            "cert": str(cert),
            "key": str(key),
            "ca": str(pki.ca_path),
            "allowed_coordinators": list(allowed),
        },
        "backend": dict(backend),
        "policy": policy_doc,
        "chain": dict(chain),
    }
    path = directory / "signer.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    return path


# --- processes -------------------------------------------------------------------------------


class Process:
    """A ``python -m <module>`` subprocess (``signer.cli`` by default) that prints one ready
    line on stdout."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        ready: re.Pattern[str],
        module: str = "signer.cli",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log = log
        env = {**os.environ, PASSPHRASE_ENV: PASSPHRASE, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.match = self._wait_ready(ready)

    def _wait_ready(self, ready: re.Pattern[str]) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=deadline - time.monotonic()):
                    break
                line = self.proc.stdout.readline()
                if not line:
                    break
                match = ready.search(line)
                if match:
                    return match
        self.stop()
        raise RuntimeError(f"{self.proc.args!r} did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def log_lines(self) -> list[dict[str, object]]:
        """Its log's JSON lines (vpool.logs), parsed; a line that is not JSON raises."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def metrics_url(self) -> str | None:
        """Where it serves /metrics, as its log says (None: it does not)."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if '"http_listening"' in line:
                url = json.loads(line)["metrics_url"]
                assert isinstance(url, str)
                return url
        return None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class SignerDaemon(Process):
    """``vpool-signer serve``; ``address`` is where it listens."""

    def __init__(self, config: Path, args: Sequence[str] = ()) -> None:
        """``args``: more options of ``serve`` (e.g. ``--metrics-listen``), kept on restart."""
        self.config = config
        self.args = tuple(args)
        command = ["serve", "--config", str(config), *self.args]
        super().__init__(command, config.parent / "signer.log", _READY)
        self.address = self.match.group(1)

    @property
    def data_dir(self) -> Path:
        return self.config.parent / "data"

    def restart(self) -> SignerDaemon:
        self.stop()
        return SignerDaemon(self.config, self.args)

    def stub(self, pki: Pki, name: str = COORDINATOR) -> signer_pb2_grpc.SignerServiceStub:
        channel = self.channel(pki.credentials(name))
        return signer_pb2_grpc.SignerServiceStub(channel)  # type: ignore[no-untyped-call]

    def channel(self, credentials: grpc.ChannelCredentials) -> grpc.Channel:
        return grpc.secure_channel(self.address, credentials)


class JadeEmulator(Process):
    """``vpool-signer emulate-jade`` on a free port (or ``port``)."""

    def __init__(
        self,
        directory: Path,
        words: str,
        port: int = 0,
        stall_seconds: float = 0.0,
        require_previous_tx: bool = False,
        approve_after: float = 0.0,
        locked: bool = False,
        single_client: bool = False,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        words_file = directory / "mnemonic.txt"
        words_file.write_text(words, encoding="utf-8")
        args = ["emulate-jade", "--network", "regtest", "--mnemonic-file", str(words_file)]
        args += ["--port", str(port), "--state-file", str(directory / "registry.json")]
        args += ["--stall-seconds", str(stall_seconds)]
        args += ["--approve-after", str(approve_after)]
        if locked:
            args.append("--locked")
        if single_client:
            args.append("--single-client")
        if require_previous_tx:
            args.append("--require-previous-tx")
        super().__init__(args, directory / "jade.log", _JADE_READY)
        self.port = int(self.match.group(1))
        self.fingerprint = master_of(words).fingerprint

    def unlock(self) -> None:
        """Its user enters the PIN (SIGUSR1)."""
        self.proc.send_signal(signal.SIGUSR1)

    def prompts(self) -> int:
        """Transactions shown to its user so far, as its log counts them."""
        return self.log.read_text(encoding="utf-8").count("shown to the user")

    def reviews(self) -> list[str]:
        """What its user was shown of each transaction, as logged: ``outputs shown [..],
        change [..]`` (signer.jade_emulator.signing.review_outputs)."""
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [line.partition("sign_psbt: ")[2] for line in lines if "sign_psbt: outputs" in line]


class CoordinatorDaemon(Process):
    """``vpool-coordinator serve``; ``address`` is where it listens."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        log = config.parent / "coordinator.log"
        args = ["serve", "--config", str(config)]
        super().__init__(args, log, _COORDINATOR_READY, "coordinator.cli", env)
        self.address = self.match.group(1)
