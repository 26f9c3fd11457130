"""Where the `vpool` command finds the coordinator and its credentials when no flag says.

Each setting comes from, first found wins: its command-line flag (``--coordinator``, ``--cert``,
``--key``, ``--ca``, ``--tls-name``), its environment variable (``VPOOL_COORDINATOR``,
``VPOOL_CERT``, ``VPOOL_KEY``, ``VPOOL_CA``, ``VPOOL_TLS_NAME``), the profile file. The profile
file is ``$VPOOL_PROFILE`` when set (it must then exist), else
``$XDG_CONFIG_HOME/vpool/profile.toml`` (``~/.config/vpool/profile.toml``) when it exists::

    coordinator = "127.0.0.1:50050"
    cert = "certs/alice.pem"      # relative paths are relative to the profile file
    key = "certs/alice.key"
    ca = "certs/ca.pem"
    # tls_name = "coordinator"    # only when the certificate does not name the host dialled

Unknown keys are refused, naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SETTINGS = ("coordinator", "cert", "key", "ca", "tls_name")
REQUIRED = ("coordinator", "cert", "key", "ca")
PROFILE_VAR = "VPOOL_PROFILE"
_PATHS = ("cert", "key", "ca")


class ProfileError(ValueError):
    """A setting that is missing or a profile file that cannot be used; names the setting."""


@dataclass(frozen=True)
class Connection:
    coordinator: str
    cert: Path
    key: Path
    ca: Path
    tls_name: str | None


def env_var(setting: str) -> str:
    """``VPOOL_TLS_NAME`` of ``tls_name``."""
    return f"VPOOL_{setting.upper()}"


def flag(setting: str) -> str:
    """``--tls-name`` of ``tls_name``."""
    return "--" + setting.replace("_", "-")


def default_profile_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vpool" / "profile.toml"


def read_profile(path: Path) -> dict[str, str]:
    """The settings of a profile file, paths made absolute."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"profile {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile {path}: not valid TOML: {e}") from None
    settings: dict[str, str] = {}
    for key, value in doc.items():
        if key not in SETTINGS:
            raise ProfileError(f"profile {path}: {key}: unknown key (known: {', '.join(SETTINGS)})")
        if not isinstance(value, str) or not value:
            raise ProfileError(f"profile {path}: {key}: expected a non-empty string")
        settings[key] = str(path.parent / value) if key in _PATHS else value
    return settings


def _profile(environ: Mapping[str, str]) -> dict[str, str]:
    named = environ.get(PROFILE_VAR)
    if named:
        return read_profile(Path(named))
    path = default_profile_path(environ)
    return read_profile(path) if path.is_file() else {}


def resolve(flags: Mapping[str, str | Path | None], environ: Mapping[str, str]) -> Connection:
    """The connection from ``flags`` (setting → value or None), ``environ`` and the profile."""
    found: dict[str, str] = {}
    profile: dict[str, str] | None = None
    for setting in SETTINGS:
        value = flags.get(setting)
        if value is None:
            value = environ.get(env_var(setting)) or None
        if value is None:
            if profile is None:
                profile = _profile(environ)
            value = profile.get(setting)
        if value is not None:
            found[setting] = str(value)
    missing = [s for s in REQUIRED if s not in found]
    if missing:
        where = ", ".join(f"{flag(s)} (or {env_var(s)})" for s in missing)
        raise ProfileError(f"missing {where}: pass it, set it, or write a profile (vpool --help)")
    return Connection(
        coordinator=found["coordinator"],
        cert=Path(found["cert"]),
        key=Path(found["key"]),
        ca=Path(found["ca"]),
        tls_name=found.get("tls_name"),
    )
