"""Real signer daemons and Jade emulators for integration tests: processes, TLS, configs, stubs.

Everything runs as the operator would run it (``python -m signer.cli serve``/``emulate-jade``)
on loopback ports the processes pick themselves (port 0) and announce on their ready line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pool.descriptor import DescriptorKey
from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.series import CHANGE, RECEIVE, Series
from pool.withdrawal import build_round
from vpool.devnet.processes import (
    COORDINATOR,
    PASSPHRASE_ENV,
    Pki,
    to_toml,
)
from vpool.v1 import common_pb2, signer_pb2

CALL_TIMEOUT = 20.0


# --- TLS -------------------------------------------------------------------------------------


# --- keys and configs -----------------------------------------------------------------------


def emulator_backend(keystore: Path) -> dict[str, Any]:
    return {"kind": "emulator", "keystore": str(keystore), "passphrase_env": PASSPHRASE_ENV}


def hwi_backend(port: int, fingerprint: bytes, sign_timeout: float = 60.0) -> dict[str, Any]:
    return {
        "kind": "hwi",
        "device_type": "jade",
        "device_path": f"tcp:127.0.0.1:{port}",
        "fingerprint": fingerprint.hex(),
        "call_timeout_seconds": 20,
        "sign_timeout_seconds": sign_timeout,
    }


def write_config(
    directory: Path,
    pki: Pki,
    signer_id: str,
    backend: Mapping[str, Any],
    policy: Mapping[str, Any] | None = None,
    allowed: Sequence[str] = (COORDINATOR,),
    cosigners: Sequence[DescriptorKey] = (),
) -> Path:
    """``directory/signer.toml`` for a signer on a free loopback port, with its certificate.

    ``cosigners`` are the keys of the series the tests will register (the signer's own key among
    them is harmless): the policy registers only series made of its own and these keys.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = pki.issue("signer", signer_id)
    doc: dict[str, Any] = {
        "signer_id": signer_id,
        "network": "regtest",
        "data_dir": "data",
        "server": {
            "listen": "127.0.0.1:0",
            "cert": str(cert),
            "key": str(key),
            "ca": str(pki.ca_path),
            "allowed_coordinators": list(allowed),
        },
        "backend": dict(backend),
        "policy": {**(policy or {}), "cosigners": [k.to_string(REGTEST) for k in cosigners]},
    }
    path = directory / "signer.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    return path


# --- processes -------------------------------------------------------------------------------


# --- rounds ----------------------------------------------------------------------------------


def round_request(m: Manifest) -> signer_pb2.SignRoundRequest:
    """The SignRound request of a manifest: its encoding and the PSBTs it builds."""
    plan = build_round(m)
    return signer_pb2.SignRoundRequest(
        kind=signer_pb2.ROUND_KIND_WITHDRAWAL,
        manifest=encode_manifest(m),
        psbts=[t.psbt.serialize() for t in plan.transactions],
    )


def register_request(series: Series) -> signer_pb2.RegisterSeriesRequest:
    return signer_pb2.RegisterSeriesRequest(
        network=common_pb2.NETWORK_REGTEST,
        series_id=series.id,
        receive_descriptor=series.descriptor(RECEIVE).to_string(REGTEST),
        change_descriptor=series.descriptor(CHANGE).to_string(REGTEST),
    )


def with_signatures(psbt: Psbt, signed: signer_pb2.SignedPsbt) -> Psbt:
    """``psbt`` with the partial signatures of one SignRound answer added."""
    inputs = list(psbt.inputs)
    for sig in signed.signatures:
        current = inputs[sig.input_index]
        partial = {**current.partial_sigs, bytes(sig.pubkey): bytes(sig.signature)}
        inputs[sig.input_index] = replace(current, partial_sigs=partial)
    return replace(psbt, inputs=tuple(inputs))
