"""A registered series written out for other wallets, so an operator can enroll the pool's
multisig elsewhere (a backup wallet, a watch-only wallet, another device).

Formats: ``descriptor`` (the receive and change output descriptors, with checksums), ``bsms``
(a BIP129 descriptor record: version, descriptor template with ``/**``, path restrictions, first
address), ``coldcard`` (Coldcard's multisig setup text file) and ``caravan`` (Caravan's wallet
configuration JSON). Every key carries its origin (master fingerprint and path).
"""

from __future__ import annotations

import json

from pool.descriptor import add_checksum
from pool.hdkeys import format_path
from pool.networks import Network
from pool.series import CHANGE, RECEIVE, Series

FORMATS = ("descriptor", "bsms", "coldcard", "caravan")


def wallet_name(series: Series) -> str:
    return f"vpool-series-{series.id}"


def descriptor(series: Series, network: Network) -> str:
    """Two lines: the receive descriptor, then the change descriptor."""
    return "\n".join(series.descriptor(b).to_string(network) for b in (RECEIVE, CHANGE)) + "\n"


def bsms(series: Series, network: Network) -> str:
    """The BIP129 (BSMS 1.0) descriptor record of the series."""
    keys = ",".join(f"{key.to_string(network)}/**" for key in series.keys)
    template = add_checksum(f"wsh(sortedmulti({series.m},{keys}))")
    first = series.address(RECEIVE, 0, network)
    return f"BSMS 1.0\n{template}\n/0/*,/1/*\n{first}\n"


def _apostrophe_path(path: tuple[int, ...]) -> str:
    return "m/" + format_path(path).replace("h", "'") if path else "m"


def coldcard(series: Series, network: Network) -> str:
    """Coldcard's multisig setup file: one Derivation line before each key."""
    lines = [
        "# Coldcard multisig setup file (written by vpool-signer export-multisig)",
        f"Name: {wallet_name(series)}",
        f"Policy: {series.m} of {series.n}",
        "Format: P2WSH",
        "",
    ]
    for key in series.keys:
        lines.append(f"Derivation: {_apostrophe_path(key.origin.path)}")
        lines.append(f"{key.origin.fingerprint.hex().upper()}: {key.xpub.to_string(network)}")
        lines.append("")
    return "\n".join(lines)


def caravan(series: Series, network: Network) -> str:
    """Caravan's wallet configuration (JSON)."""
    config = {
        "name": wallet_name(series),
        "addressType": "P2WSH",
        "network": "mainnet" if network.name == "mainnet" else network.name,
        "client": {"type": "public"},
        "quorum": {"requiredSigners": series.m, "totalSigners": series.n},
        "extendedPublicKeys": [
            {
                "name": key.origin.fingerprint.hex(),
                "bip32Path": _apostrophe_path(key.origin.path),
                "xpub": key.xpub.to_string(network),
                "xfp": key.origin.fingerprint.hex(),
                "method": "text",
            }
            for key in series.keys
        ],
        "startingAddressIndex": 0,
    }
    return json.dumps(config, indent=2) + "\n"


def export(series: Series, network: Network, form: str) -> str:
    """The series in format ``form`` (one of FORMATS)."""
    writers = {"descriptor": descriptor, "bsms": bsms, "coldcard": coldcard, "caravan": caravan}
    return writers[form](series, network)
