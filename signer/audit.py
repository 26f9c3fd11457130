"""The audit trail: one hash-chained JSON line per SignRound request, append-only.

Each entry carries ``prev``, the hash of the entry before it (64 zeros for the first), and its own
``hash``: SHA256 of its canonical JSON (sorted keys, compact separators) without ``hash``. A
changed, removed or reordered entry breaks the chain. Entries hold the round's kind, hashes,
decisions and reason codes, and what was asked to be signed (``transactions``: per PSBT its
txid, inputs with their amounts, outputs with their addresses and amounts, and the fee; see
``describe_psbts``), never a PSBT, a signature or key material. Entries written before rounds
had a kind have no ``kind`` (they are withdrawals), entries written before they described their
transactions have no ``transactions``; both still verify.

The chain proves the file consistent, not complete: removing entries from the end is only seen by
comparing the head with a copy kept elsewhere. The signer's GetInfo gives its head
(``audit_seq``, ``audit_head``); the coordinator records every signer's head after every round
(coordinator.audit_heads) and shows it in GetPoolStatus and on its status page; ``vpool-signer
audit verify --against SEQ:HASH`` (or ``--against HASH``) fails when the log no longer holds
that entry: its tail was cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pool.address import script_pubkey_to_address
from pool.errors import VpoolError
from pool.networks import Network
from pool.psbt import Psbt

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64
"""The ``prev`` of the first entry."""
FIELDS = frozenset(
    {
        "seq",
        "time",
        "kind",
        "manifest_hash",
        "psbt_hashes",
        "decision",
        "reasons",
        "policy_hash",
        "signer_id",
        "transactions",
        "prev",
        "hash",
    }
)
UNDESCRIBED_FIELDS = FIELDS - {"transactions"}
"""The fields of entries written before entries described their transactions."""
LEGACY_FIELDS = UNDESCRIBED_FIELDS - {"kind"}
"""The fields of entries written before rounds had a kind."""
_TAIL_BLOCK = 4096


class Decision(StrEnum):
    SIGNED = "signed"
    REFUSED = "refused"
    FAILED = "failed"
    """Passed the policy, but the device did not sign (refused, error, timeout)."""


class AuditError(Exception):
    """The audit log cannot be continued (its last entry is damaged)."""


class _BadEntry(Exception):
    """A line of the log that breaks the chain; the message says how."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    """ISO 8601, UTC."""
    kind: str
    """The round's kind: ``withdrawal`` or ``refund``."""
    manifest_hash: str
    """SHA256 (hex) of the manifest as received: the round's manifest hash when it decodes."""
    psbt_hashes: tuple[str, ...]
    """SHA256 (hex) of each PSBT as received."""
    decision: Decision
    reasons: tuple[str, ...]
    policy_hash: str
    signer_id: str
    transactions: tuple[dict[str, Any], ...]
    """What each PSBT asks to sign (``describe_psbts``)."""
    prev: str
    hash: str

    def line(self) -> bytes:
        """The entry as stored: canonical JSON and a newline."""
        # The fields as they are (no deep copy: the JSON is the same, and nothing is kept).
        return _canonical({f.name: getattr(self, f.name) for f in fields(self)}) + b"\n"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    """Entries that passed, before the first bad one (all of them when ``ok``)."""
    first_bad_seq: int | None
    """Position (1-based line number, the seq it should have) of the first bad entry."""
    message: str
    head: str
    """Hash of the last entry that passed (``GENESIS`` when none)."""


def audit_path(data_dir: Path) -> Path:
    return data_dir / AUDIT_FILE


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(doc: Mapping[str, Any]) -> str:
    """SHA256 (hex) of the canonical JSON of an entry without its ``hash``."""
    body = {key: value for key, value in doc.items() if key != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _iso_utc(now: float) -> str:
    """``2024-05-01T12:00:00.000Z``."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _read_entry(line: bytes) -> dict[str, Any]:
    """One stored line as an entry whose hash matches its contents, else ``_BadEntry``."""
    if not line.endswith(b"\n"):
        raise _BadEntry("the line is incomplete (torn write or truncated file)")
    try:
        doc = json.loads(line)
    except ValueError:
        raise _BadEntry("the line is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) not in (FIELDS, UNDESCRIBED_FIELDS, LEGACY_FIELDS):
        raise _BadEntry("the line is not an audit entry (wrong fields)")
    if type(doc["seq"]) is not int or not isinstance(doc["hash"], str):
        raise _BadEntry("the line is not an audit entry (wrong field types)")
    if entry_hash(doc) != doc["hash"]:
        raise _BadEntry("its hash does not match its contents (entry modified)")
    if _canonical(doc) + b"\n" != line:
        raise _BadEntry("the line is not in canonical form (entry rewritten)")
    return doc


def _check_link(doc: Mapping[str, Any], seq: int, prev: str) -> None:
    if doc["seq"] != seq:
        raise _BadEntry(f"seq {doc['seq']} where {seq} was expected (entry deleted or reordered)")
    if doc["prev"] != prev:
        raise _BadEntry("prev is not the hash of the entry before it (entry deleted or reordered)")


def describe_psbts(
    psbts: Sequence[bytes], network: Network, parsed: Sequence[Psbt] | None = None
) -> tuple[dict[str, Any], ...]:
    """What each PSBT (as received) asks to sign, for a person reading the log:

        {"txid": ..., "inputs": [{"outpoint": "txid:vout", "amount": sat}],
         "outputs": [{"address": ..., "amount": sat}], "fee": sat}

    An input without its previous output in the PSBT has ``"amount": null`` and the fee is
    null; an output script without an address has ``"script"`` (hex) instead of ``address``; a
    PSBT that does not decode is ``{"error": ...}``. ``parsed``, when given, is
    ``Psbt.parse`` of each of ``psbts`` already made (the policy's), described instead of
    parsing the bytes again."""
    if parsed is not None and len(parsed) != len(psbts):
        raise ValueError(f"{len(parsed)} parsed PSBTs for {len(psbts)} received")
    described: list[dict[str, Any]] = []
    for n, raw in enumerate(psbts):
        if parsed is not None:
            psbt = parsed[n]
        else:
            try:
                psbt = Psbt.parse(raw)
            except VpoolError as e:
                described.append({"error": f"not a PSBT: {e}"})
                continue
        inputs: list[dict[str, Any]] = []
        for txin, psbt_input in zip(psbt.tx.inputs, psbt.inputs, strict=True):
            utxo = psbt_input.witness_utxo
            inputs.append(
                {"outpoint": str(txin.prevout), "amount": None if utxo is None else utxo.value}
            )
        outputs: list[dict[str, Any]] = []
        for txout in psbt.tx.outputs:
            address = script_pubkey_to_address(txout.script_pubkey, network)
            where = (
                {"script": txout.script_pubkey.hex()} if address is None else {"address": address}
            )
            outputs.append({**where, "amount": txout.value})
        amounts = [i["amount"] for i in inputs]
        fee = (
            None
            if None in amounts
            else sum(int(a) for a in amounts if a is not None) - sum(o["amount"] for o in outputs)
        )
        described.append(
            {"txid": psbt.tx.txid_hex, "inputs": inputs, "outputs": outputs, "fee": fee}
        )
    return tuple(described)


@dataclass(frozen=True)
class Anchor:
    """An entry the log must still hold: its seq (0: any) and hash, as the coordinator
    recorded them (``SEQ:HASH`` or ``HASH``)."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq_text, _, digest = text.strip().rpartition(":")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("the head must be SEQ:HASH or HASH, HASH being 64 hex characters")
        if seq_text and not seq_text.isdigit():
            raise ValueError("the head's SEQ must be a number")
        return cls(int(seq_text or 0), digest)


def verify_against(path: Path, anchor: Anchor) -> VerifyResult:
    """``verify``, and the log must hold the anchor's entry (at its seq, when given): a log
    whose tail was cut no longer does."""
    result = verify(path)
    if not result.ok:
        return result
    if anchor.hash == GENESIS:
        return result
    with path.open("rb") as f:
        for seq, line in enumerate(f, 1):
            if json.loads(line)["hash"] == anchor.hash:
                if anchor.seq and anchor.seq != seq:
                    message = f"the head {anchor.hash} is entry {seq}, not {anchor.seq}"
                    return VerifyResult(False, result.entries, seq, message, result.head)
                return result
    where = f"entry {anchor.seq} " if anchor.seq else ""
    message = (
        f"the log no longer holds {where}{anchor.hash}: its tail was cut (it ends at entry "
        f"{result.entries}, head {result.head})"
    )
    return VerifyResult(False, result.entries, result.entries + 1, message, result.head)


def verify(path: Path) -> VerifyResult:
    """Check the whole chain of the log at ``path``; stops at the first bad entry."""
    head, count = GENESIS, 0
    with path.open("rb") as f:
        for seq, line in enumerate(f, 1):
            try:
                doc = _read_entry(line)
                _check_link(doc, seq, head)
            except _BadEntry as e:
                return VerifyResult(False, count, seq, str(e), head)
            head, count = doc["hash"], seq
    return VerifyResult(True, count, None, "", head)


def _last_line(path: Path) -> bytes:
    """The file's last line, with its newline if it has one (b"" for an empty file)."""
    with path.open("rb") as f:
        position = f.seek(0, os.SEEK_END)
        data = b""
        while position > 0 and b"\n" not in data[:-1]:
            step = min(_TAIL_BLOCK, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
    return data[data.rfind(b"\n", 0, len(data) - 1) + 1 :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """The append-only log at ``path``, continuing the chain of the entries already there.

    Opening refuses a log whose last line is damaged (``AuditError``): run ``audit verify``.
    Safe to share between the threads of one process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._seq, self._head = self._tail() if path.exists() else (0, GENESIS)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _fsync_dir(path.parent)

    def _tail(self) -> tuple[int, str]:
        line = _last_line(self.path)
        if not line:
            return 0, GENESIS
        try:
            doc = _read_entry(line)
        except _BadEntry as e:
            raise AuditError(
                f"audit log {self.path}: the last entry is damaged: {e}; "
                "run `vpool-signer audit verify`"
            ) from None
        return doc["seq"], doc["hash"]

    @property
    def head(self) -> str:
        """Hash of the last entry (``GENESIS`` for an empty log)."""
        with self._mutex:
            return self._head

    @property
    def position(self) -> tuple[int, str]:
        """(seq, hash) of the last entry ((0, ``GENESIS``) for an empty log)."""
        with self._mutex:
            return self._seq, self._head

    def append(
        self,
        *,
        kind: str,
        manifest: bytes,
        psbts: Sequence[bytes],
        decision: Decision,
        reasons: Iterable[str],
        policy_hash: str,
        signer_id: str,
        now: float,
        transactions: Sequence[Mapping[str, Any]] = (),
    ) -> AuditEntry:
        """Add the entry of one request (hashing ``manifest`` and ``psbts``; ``transactions``:
        what they ask to sign, ``describe_psbts``) and sync it to disk."""
        with self._mutex:
            body: dict[str, Any] = {
                "seq": self._seq + 1,
                "time": _iso_utc(now),
                "kind": str(kind),
                "manifest_hash": hashlib.sha256(manifest).hexdigest(),
                "psbt_hashes": tuple(hashlib.sha256(psbt).hexdigest() for psbt in psbts),
                "decision": Decision(decision),
                "reasons": tuple(str(reason) for reason in reasons),
                "policy_hash": policy_hash,
                "signer_id": signer_id,
                "transactions": tuple(dict(t) for t in transactions),
                "prev": self._head,
            }
            entry = AuditEntry(**body, hash=entry_hash(body))
            self._write(entry.line())
            self._seq, self._head = entry.seq, entry.hash
        return entry

    def _write(self, line: bytes) -> None:
        """Write and fsync one line; on failure, cut the file back to where it was."""
        size = os.fstat(self._fd).st_size
        try:
            written = 0
            while written < len(line):
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, size)
            raise

    def close(self) -> None:
        """Close the file; closing twice does nothing."""
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
