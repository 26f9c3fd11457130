"""``signer.toml``: the signer daemon's configuration, checked in full before anything starts.

Every error names the key at fault (``backend.keystore: file not found``). Unknown keys are
refused, so a typo never silently falls back to a default. Relative paths are resolved against
the directory of the configuration file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool.address import address_to_script_pubkey
from pool.descriptor import DescriptorKey
from pool.errors import VpoolError
from pool.networks import NETWORKS, Network
from signer.policy import PolicyConfig
from vpool.config_reader import ConfigError as ConfigError  # raised by load_config
from vpool.config_reader import Table, read_document
from vpool.tls import TlsError, check_name

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_CALL_TIMEOUT = 30.0
DEFAULT_SIGN_TIMEOUT = 300.0
DEFAULT_ANSWER_WITHIN = 2.0
DEFAULT_DEVICE_PROBE = 2.0
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
_HWI_DEVICE_TYPES = (
    "trezor", "ledger", "keepkey", "digitalbitbox", "coldcard", "bitbox02", "jade",
)  # fmt: skip


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    cert: Path | None
    key: Path | None
    ca: Path | None
    allowed_coordinators: frozenset[str]
    max_message_bytes: int
    insecure_dev: bool


@dataclass(frozen=True)
class EmulatorBackendConfig:
    """A software key in an encrypted keystore; exactly one passphrase source is set."""

    keystore: Path
    passphrase_env: str | None
    passphrase_file: Path | None
    answer_within_seconds: float = 2.0
    """How long a SignRound call waits for the device before it answers ``pending``."""


@dataclass(frozen=True)
class HwiBackendConfig:
    """A device found by master fingerprint, or by type and path (then the fingerprint, if
    given, is checked)."""

    fingerprint: bytes | None
    device_type: str | None
    device_path: str | None
    call_timeout_seconds: float
    sign_timeout_seconds: float
    answer_within_seconds: float = 2.0
    """How long a SignRound call waits for the device before it answers ``pending``."""
    probe_seconds: float = 2.0
    """How often the device is probed (also on every health check)."""
    max_reviewed_payments: int = 0
    """Payments a person reviews per transaction on this device (0: no cap set), reported in
    GetInfo for the round builder."""


BackendConfig = EmulatorBackendConfig | HwiBackendConfig

DEFAULT_CHAIN_MIN_CONF = 6
DEFAULT_CHAIN_MAX_TIP_LAG = 6
DEFAULT_CHAIN_TIMEOUT = 10.0
DEFAULT_CHAIN_PROBE = 10.0


@dataclass(frozen=True)
class ChainConfig:
    """This signer's own node (``[chain]``): every round's facts are checked against it.

    ``rpc_url`` is None only in development mode without a node (``dev_without_node``), where
    every round is refused."""

    rpc_url: str | None
    rpc_user: str = ""
    rpc_password: str = dataclasses.field(default="", repr=False)
    """Read from ``rpc_password_env`` or ``rpc_password_file``; never logged."""
    cookie_file: Path | None = None
    min_conf: int = DEFAULT_CHAIN_MIN_CONF
    max_tip_lag: int = DEFAULT_CHAIN_MAX_TIP_LAG
    timeout_seconds: float = DEFAULT_CHAIN_TIMEOUT
    probe_seconds: float = DEFAULT_CHAIN_PROBE
    """How often the health probe asks the node for its tip."""


@dataclass(frozen=True)
class SignerConfig:
    path: Path
    signer_id: str
    network: Network
    data_dir: Path
    server: ServerConfig
    backend: BackendConfig
    policy: PolicyConfig
    chain: ChainConfig


def load_config(path: Path) -> SignerConfig:
    """Read and check the configuration file at ``path``."""
    return parse_config(read_document(path), path.resolve().parent, path)


def parse_config(doc: Mapping[str, Any], base: Path, path: Path) -> SignerConfig:
    """The configuration in the TOML document ``doc``; relative paths are resolved in ``base``."""
    t = Table(doc, base)
    signer_id = t.string("signer_id")
    try:
        check_name(signer_id)
    except TlsError as e:
        raise ConfigError(f"signer_id: {e}") from None
    network_name = t.string("network")
    if network_name not in NETWORKS:
        raise ConfigError(f"network: unknown network {network_name!r} (known: {_known()})")
    network = NETWORKS[network_name]
    data_dir = t.path("data_dir", must_exist=False)
    config = SignerConfig(
        path=path,
        signer_id=signer_id,
        network=network,
        data_dir=data_dir,
        server=_server(t.table("server", required=True)),
        backend=_backend(t.table("backend", required=True)),
        policy=_policy(t.table("policy", required=True), network),
        chain=_chain(t.table("chain", required=True)),
    )
    t.finish()
    return config


def _known() -> str:
    return ", ".join(NETWORKS)


def _server(t: Table) -> ServerConfig:
    listen = t.string("listen", DEFAULT_LISTEN)
    if not _LISTEN.fullmatch(listen) or int(listen.rsplit(":", 1)[1]) > 65535:
        raise ConfigError(f"{t.key('listen')}: expected host:port, e.g. {DEFAULT_LISTEN}")
    insecure = t.boolean("insecure_dev", False)
    tls_required = not insecure
    coordinators = t.strings("allowed_coordinators", required=tls_required)
    for position, name in enumerate(coordinators):
        try:
            check_name(name)
        except TlsError as e:
            raise ConfigError(f"{t.key('allowed_coordinators')}[{position}]: {e}") from None
    if tls_required and not coordinators:
        raise ConfigError(f"{t.key('allowed_coordinators')}: name at least one coordinator")
    max_bytes = t.integer("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if max_bytes < 1024:
        raise ConfigError(f"{t.key('max_message_bytes')}: must be at least 1024")
    return ServerConfig(
        listen=listen,
        cert=t.optional_path("cert", required=tls_required),
        key=t.optional_path("key", required=tls_required),
        ca=t.optional_path("ca", required=tls_required),
        allowed_coordinators=frozenset(coordinators),
        max_message_bytes=max_bytes,
        insecure_dev=insecure,
    )


def _backend(t: Table) -> BackendConfig:
    kind = t.string("kind")
    if kind == "emulator":
        env = t.optional_string("passphrase_env")
        file = t.optional_path("passphrase_file", required=False)
        if (env is None) == (file is None):
            raise ConfigError(f"{t.prefix}: set exactly one of passphrase_env and passphrase_file")
        return EmulatorBackendConfig(
            t.path("keystore"),
            env,
            file,
            t.seconds("answer_within_seconds", DEFAULT_ANSWER_WITHIN),
        )
    if kind == "hwi":
        return _hwi(t)
    raise ConfigError(f'{t.key("kind")}: expected "emulator" or "hwi", got {kind!r}')


def _hwi(t: Table) -> HwiBackendConfig:
    fingerprint_text = t.optional_string("fingerprint")
    fingerprint = None
    if fingerprint_text is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{8}", fingerprint_text):
            raise ConfigError(f"{t.key('fingerprint')}: expected 8 hex digits")
        fingerprint = bytes.fromhex(fingerprint_text)
    device_type = t.optional_string("device_type")
    device_path = t.optional_string("device_path")
    if (device_type is None) != (device_path is None):
        raise ConfigError(f"{t.prefix}: set device_type and device_path together")
    if device_type is None and fingerprint is None:
        raise ConfigError(f"{t.prefix}: set fingerprint, or device_type and device_path")
    if device_type is not None and device_type not in _HWI_DEVICE_TYPES:
        known = ", ".join(_HWI_DEVICE_TYPES)
        raise ConfigError(f"{t.key('device_type')}: unknown type {device_type!r} (known: {known})")
    return HwiBackendConfig(
        fingerprint=fingerprint,
        device_type=device_type,
        device_path=device_path,
        call_timeout_seconds=t.seconds("call_timeout_seconds", DEFAULT_CALL_TIMEOUT),
        sign_timeout_seconds=t.seconds("sign_timeout_seconds", DEFAULT_SIGN_TIMEOUT),
        answer_within_seconds=t.seconds("answer_within_seconds", DEFAULT_ANSWER_WITHIN),
        probe_seconds=t.seconds("probe_seconds", DEFAULT_DEVICE_PROBE),
        max_reviewed_payments=_reviewed_payments(t),
    )


def _reviewed_payments(t: Table) -> int:
    value = t.integer("max_reviewed_payments", 0)
    if value < 0:
        raise ConfigError(f"{t.key('max_reviewed_payments')}: expected 0 (no cap) or more")
    return value


def _chain(t: Table) -> ChainConfig:
    if t.boolean("dev_without_node", False):
        return ChainConfig(rpc_url=None)
    url = t.string("rpc_url")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(f"{t.key('rpc_url')}: expected http://host:port/")
    cookie = None  # Core writes its cookie when it starts: it need not exist yet
    if "rpc_cookie_file" in t.doc:
        cookie = t.path("rpc_cookie_file", must_exist=False)
    user = t.optional_string("rpc_user")
    password_env = t.optional_string("rpc_password_env")
    password_file = t.optional_path("rpc_password_file", required=False)
    password = ""
    if cookie is not None:
        if user is not None or password_env is not None or password_file is not None:
            raise ConfigError(
                f"{t.prefix}: set either rpc_cookie_file or rpc_user with a password, not both"
            )
    else:
        if user is None:
            raise ConfigError(f"{t.prefix}: set rpc_cookie_file, or rpc_user and a password")
        if (password_env is None) == (password_file is None):
            raise ConfigError(
                f"{t.prefix}: set exactly one of rpc_password_env and rpc_password_file"
            )
        if password_env is not None:
            value = os.environ.get(password_env)
            if not value:
                raise ConfigError(
                    f"{t.key('rpc_password_env')}: environment variable {password_env} is not set"
                )
            password = value
        else:
            assert password_file is not None
            password = password_file.read_text(encoding="utf-8").strip()
            if not password:
                raise ConfigError(f"{t.key('rpc_password_file')}: the file is empty")
    min_conf = t.integer("min_conf", DEFAULT_CHAIN_MIN_CONF)
    if min_conf < 1:
        raise ConfigError(f"{t.key('min_conf')}: must be at least 1")
    max_tip_lag = t.integer("max_tip_lag", DEFAULT_CHAIN_MAX_TIP_LAG)
    if max_tip_lag < 0:
        raise ConfigError(f"{t.key('max_tip_lag')}: must not be negative")
    return ChainConfig(
        rpc_url=url,
        rpc_user=user or "",
        rpc_password=password,
        cookie_file=cookie,
        min_conf=min_conf,
        max_tip_lag=max_tip_lag,
        timeout_seconds=t.seconds("timeout_seconds", DEFAULT_CHAIN_TIMEOUT),
        probe_seconds=t.seconds("probe_seconds", DEFAULT_CHAIN_PROBE),
    )


_ADDRESS_LISTS = ("allow_destinations", "deny_destinations")
_REQUIRED_POLICY = ("min_threshold",)
"""Keys with no default: an operator states them (no threshold is assumed for a pool)."""
_CHECKSUM = re.compile(r"[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{8}")
"""A BIP380 descriptor checksum: 8 characters of the bech32 charset."""


def _policy(t: Table, network: Network) -> PolicyConfig:
    names = [f.name for f in dataclasses.fields(PolicyConfig)]
    values: dict[str, Any] = {}
    for name in _REQUIRED_POLICY:
        if name not in t.doc:
            raise t.missing(
                name, "the smallest m of a series this signer registers; set it to the pool's m"
            )
    for name in names:
        if name not in t.doc:
            continue
        if name == "min_threshold":
            value = t.integer(name)
            if not 1 <= value <= 15:
                raise ConfigError(f"{t.key(name)}: must be between 1 and 15")
            values[name] = value
        elif name == "approved_series":
            checksums = t.strings(name)
            for position, checksum in enumerate(checksums):
                if not _CHECKSUM.fullmatch(checksum):
                    raise ConfigError(
                        f"{t.key(name)}[{position}]: expected the 8-character BIP380 checksum of "
                        "a receive descriptor"
                    )
            values[name] = frozenset(checksums)
        elif name == "cosigners":
            values[name] = frozenset(
                _cosigner(t, position, text, network)
                for position, text in enumerate(t.strings(name))
            )
        elif name in _ADDRESS_LISTS:
            addresses = t.strings(name)
            for position, address in enumerate(addresses):
                try:
                    address_to_script_pubkey(address, network)
                except VpoolError as e:
                    raise ConfigError(f"{t.key(name)}[{position}]: {e}") from None
            values[name] = frozenset(addresses)
        elif name == "allow_operator_refunds":
            values[name] = t.boolean(name, False)
        else:
            value = t.integer(name)
            if value < 0:
                raise ConfigError(f"{t.key(name)}: must not be negative")
            if name == "deposit_confirmations" and value < 1:
                raise ConfigError(f"{t.key(name)}: must be at least 1")
            values[name] = value
    return PolicyConfig(**values)


def _cosigner(t: Table, position: int, text: str, network: Network) -> str:
    """A cosigner key in its canonical spelling (h notation)."""
    try:
        return DescriptorKey.parse(text, network).to_string(network)
    except VpoolError as e:
        raise ConfigError(f"{t.key('cosigners')}[{position}]: {e}") from None
