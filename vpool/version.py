"""The installed version of vpool, for every command's ``--version``."""

from __future__ import annotations

from importlib import metadata


def software_version() -> str:
    """The version of the installed vpool package ("unknown" when run from a bare tree)."""
    try:
        return metadata.version("vpool")
    except metadata.PackageNotFoundError:
        return "unknown"


def version_text(prog: str) -> str:
    return f"{prog} {software_version()}"
