"""Registered multisig wallets: in memory for the process lifetime, optionally in a JSON file.

The file holds only public data (xpubs, origins) and the master fingerprint it belongs to, so a
file written for another wallet is refused, as a real Jade ignores another wallet's records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool.hdkeys import ExtendedPublicKey, format_path, parse_path
from pool.networks import Network
from pool.script import multisig_script, p2wsh_script_pubkey
from signer.jade_emulator.errors import EmulatorError
from vpool.fileio import write_atomic

MAX_REGISTRATIONS = 16
"""Jade's MAX_MULTISIG_REGISTRATIONS."""
WSH_MULTI = "wsh(multi(k))"
_STATE_VERSION = 1


@dataclass(frozen=True)
class Signer:
    """A cosigner as registered: origin, account xpub, and a fixed path applied after it."""

    fingerprint: bytes
    derivation: tuple[int, ...]
    xpub: ExtendedPublicKey
    path: tuple[int, ...]


@dataclass(frozen=True)
class Multisig:
    variant: str
    sorted: bool
    threshold: int
    signers: tuple[Signer, ...]

    def witness_script(self, tails: Sequence[tuple[int, ...]]) -> bytes:
        """The multisig script with each signer's key at ``path + tails[i]``."""
        keys = [
            signer.xpub.derive_path(signer.path + tail).public_key
            for signer, tail in zip(self.signers, tails, strict=True)
        ]
        return multisig_script(self.threshold, sorted(keys) if self.sorted else keys)

    def matches_output(self, tail: tuple[int, ...], keys: set[bytes], script_pubkey: bytes) -> bool:
        """Jade's change check: the same tail on every signer gives exactly ``keys`` and the
        output script."""
        if len(self.signers) != len(keys):
            return False
        derived = {s.xpub.derive_path(s.path + tail).public_key for s in self.signers}
        if derived != keys:
            return False
        script = self.witness_script([tail] * len(self.signers))
        return p2wsh_script_pubkey(script) == script_pubkey


class Registry:
    """Named multisig registrations of one wallet (the caller serializes access)."""

    def __init__(self, network: Network, fingerprint: bytes, state_file: Path | None) -> None:
        self._network = network
        self._fingerprint = fingerprint
        self._state_file = state_file
        self._records: dict[str, Multisig] = {}
        if state_file is not None and state_file.exists():
            self._records = self._load(state_file)

    def get(self, name: str) -> Multisig | None:
        return self._records.get(name)

    def items(self) -> list[tuple[str, Multisig]]:
        return sorted(self._records.items())

    def is_full(self) -> bool:
        return len(self._records) >= MAX_REGISTRATIONS

    def register(self, name: str, multisig: Multisig) -> None:
        """Add or replace the record ``name``; the caller checks ``is_full`` for a new name."""
        self._records[name] = multisig
        if self._state_file is not None:
            document = json.dumps(self._to_json(), indent=2, sort_keys=True).encode() + b"\n"
            write_atomic(self._state_file, document, mode=0o600, overwrite=True)

    def _to_json(self) -> dict[str, object]:
        return {
            "version": _STATE_VERSION,
            "fingerprint": self._fingerprint.hex(),
            "multisigs": {
                name: {
                    "variant": m.variant,
                    "sorted": m.sorted,
                    "threshold": m.threshold,
                    "signers": [
                        {
                            "fingerprint": s.fingerprint.hex(),
                            "derivation": format_path(s.derivation),
                            "xpub": s.xpub.to_string(self._network),
                            "path": format_path(s.path),
                        }
                        for s in m.signers
                    ],
                }
                for name, m in self._records.items()
            },
        }

    def _load(self, state_file: Path) -> dict[str, Multisig]:
        try:
            document = json.loads(state_file.read_bytes())
        except OSError as e:
            raise EmulatorError(f"cannot read state file {state_file}: {e.strerror}") from None
        except ValueError:
            raise EmulatorError(f"state file {state_file} is not JSON") from None
        try:
            if document["version"] != _STATE_VERSION:
                raise EmulatorError(f"state file {state_file}: unknown version")
            if document["fingerprint"] != self._fingerprint.hex():
                raise EmulatorError(
                    f"state file {state_file} belongs to wallet {document['fingerprint']}, "
                    f"not {self._fingerprint.hex()}"
                )
            return {
                name: self._multisig_from_json(record)
                for name, record in document["multisigs"].items()
            }
        except (KeyError, TypeError, AttributeError, ValueError):
            raise EmulatorError(f"state file {state_file} is malformed") from None

    def _multisig_from_json(self, record: dict[str, Any]) -> Multisig:
        variant, is_sorted, threshold = record["variant"], record["sorted"], record["threshold"]
        if variant != WSH_MULTI or not isinstance(is_sorted, bool):
            raise TypeError("bad multisig record")
        if not isinstance(threshold, int):
            raise TypeError("bad multisig threshold")
        return Multisig(
            variant=variant,
            sorted=is_sorted,
            threshold=threshold,
            signers=tuple(
                Signer(
                    fingerprint=bytes.fromhex(s["fingerprint"]),
                    derivation=parse_path(s["derivation"]),
                    xpub=ExtendedPublicKey.from_string(s["xpub"], self._network),
                    path=parse_path(s["path"]),
                )
                for s in record["signers"]
            ),
        )
