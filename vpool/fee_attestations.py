"""A client's check of its fee statement (``vpool fees --verify``, docs/fee-attestations.md):
each notice's share must have been attested, in one and the same statement, by at least m
distinct signers whose attestation keys the client pinned from the operator's published signer
list; with ``rebuild``, the client also rebuilds the round from its manifest
(``GetRoundManifest``) and checks that the attested statement is what the pure core computes.

The signer list is a TOML file the operator publishes (each signer's key is in its GetInfo,
``attestation_public_key``, and in ``vpool-signer`` logs at first start)::

    threshold = 2                  # m: attestations a share needs
    [signers]
    signer-1 = "02…"               # 33-byte compressed public key, hex
    signer-2 = "03…"

The keys a coordinator returns (``FeeStatement.signer_keys``) are never used for the check: a
coordinator that made up a share would make up keys too.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool import ecdsa
from pool.attestation import (
    Attestation,
    FeeStatement,
    cancel_statements,
    round_statements,
    verify_share,
)
from pool.cancel import build_cancel, decode_cancel, is_cancel_manifest
from pool.errors import VpoolError
from pool.manifest import decode_manifest
from pool.withdrawal import build_round
from vpool.v1 import common_pb2, coordinator_pb2


class SignerListError(Exception):
    """A signer list that cannot be used; the message names the key at fault."""


@dataclass(frozen=True)
class SignerList:
    threshold: int
    keys: Mapping[str, bytes]
    """Signer name → 33-byte compressed attestation public key."""


def load_signer_list(path: Path) -> SignerList:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SignerListError(f"{path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SignerListError(f"{path}: not valid TOML: {e}") from None
    return parse_signer_list(doc, str(path))


def parse_signer_list(doc: Mapping[str, Any], where: str = "signer list") -> SignerList:
    unknown = sorted(set(doc) - {"threshold", "signers"})
    if unknown:
        raise SignerListError(f"{where}: unknown key {unknown[0]!r}")
    signers = doc.get("signers")
    if not isinstance(signers, dict) or not signers:
        raise SignerListError(f"{where}: signers: a table of signer name = public key hex")
    keys: dict[str, bytes] = {}
    for name, text in signers.items():
        try:
            key = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if len(key) != 33 or not ecdsa.is_valid_public_key(key):
            raise SignerListError(f"{where}: signers.{name}: not a compressed public key in hex")
        if key in keys.values():
            raise SignerListError(f"{where}: signers.{name}: the key of another signer")
        keys[name] = key
    threshold = doc.get("threshold")
    if type(threshold) is not int or not 1 <= threshold <= len(keys):
        raise SignerListError(f"{where}: threshold: an integer from 1 to {len(keys)}")
    return SignerList(threshold, keys)


@dataclass(frozen=True)
class NoticeCheck:
    round_id: str
    txid: str
    fee_sat: int
    signers: tuple[str, ...]
    """The pinned signers that attested the share (empty when not verified)."""
    problem: str
    """Empty when the notice is verified."""
    rebuilt: bool = False
    """The round was rebuilt from its manifest and agrees."""

    @property
    def ok(self) -> bool:
        return not self.problem


def attestations(notice: coordinator_pb2.FeeNotice) -> list[Attestation]:
    return [_attestation(a) for a in notice.attestations]


def _attestation(a: common_pb2.FeeAttestation) -> Attestation:
    return Attestation(bytes(a.public_key), bytes(a.statement), bytes(a.signature))


def check_notice(
    notice: coordinator_pb2.FeeNotice,
    client_id: str,
    signers: SignerList,
    manifest: coordinator_pb2.RoundManifest | None = None,
) -> NoticeCheck:
    """Whether m pinned signers attested the notice's share of its transaction (and, given the
    round's manifest, whether the attested statement is the rebuild's)."""

    def result(problem: str, names: tuple[str, ...] = (), rebuilt: bool = False) -> NoticeCheck:
        return NoticeCheck(notice.round_id, notice.txid, notice.fee_sat, names, problem, rebuilt)

    try:
        round_hash = bytes.fromhex(notice.round_id)
    except ValueError:
        return result("the notice's round id is not hex")
    verified = verify_share(
        attestations(notice), signers.keys, signers.threshold, round_hash, notice.txid
    )
    if verified is None:
        return result(
            f"no statement of this transaction is attested by {signers.threshold} of the pinned "
            "signers (missing, forged, altered or disagreeing attestations)"
        )
    statement, names = verified.statement, verified.signers
    attested = statement.share_of(client_id)
    if attested != notice.fee_sat:
        return result(
            f"the coordinator says {notice.fee_sat} sat, the signers attested {attested}", names
        )
    if notice.tx_fee_sat and statement.fee != notice.tx_fee_sat:
        return result(
            f"the coordinator says the fee is {notice.tx_fee_sat} sat, the signers attested "
            f"{statement.fee}",
            names,
        )
    if manifest is None:
        return result("", names)
    problem = _rebuild_problem(manifest, round_hash, statement)
    return result(problem, names, rebuilt=not problem)


def _rebuild_problem(
    manifest: coordinator_pb2.RoundManifest, round_hash: bytes, attested: FeeStatement
) -> str:
    data = bytes(manifest.manifest)
    if hashlib.sha256(data).digest() != round_hash:
        return "the manifest the coordinator returned is not the round's (its hash differs)"
    try:
        if is_cancel_manifest(data):
            statements = cancel_statements(build_cancel(decode_cancel(data)))
        else:
            statements = round_statements(build_round(decode_manifest(data)))
    except VpoolError as e:
        return f"the round's manifest cannot be rebuilt: {e}"
    mine = [s for s in statements if s.txid == attested.txid]
    if not mine:
        return "the rebuild of the round's manifest has no such transaction"
    if mine[0] != attested:
        return "the attested statement differs from this client's rebuild of the round"
    return ""


def check_statement(
    statement: coordinator_pb2.FeeStatement,
    client_id: str,
    signers: SignerList,
    manifest_of: Callable[[str], coordinator_pb2.RoundManifest] | None = None,
) -> list[NoticeCheck]:
    """Each notice of a fee statement page checked; ``manifest_of`` (round id → its manifest)
    rebuilds every round too."""
    manifests: dict[str, coordinator_pb2.RoundManifest] = {}
    checks = []
    for notice in statement.notices:
        manifest = None
        if manifest_of is not None:
            if notice.round_id not in manifests:
                manifests[notice.round_id] = manifest_of(notice.round_id)
            manifest = manifests[notice.round_id]
        checks.append(check_notice(notice, client_id, signers, manifest))
    return checks
