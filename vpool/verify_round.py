"""``vpool verify-round``: check a round offline, from its manifest and PSBTs (``pool.verify``).

Input: the JSON ``vpool admin round`` prints (``--round FILE``, ``-`` for stdin), or the
manifest's canonical encoding and the PSBTs as files (``--manifest FILE --psbt FILE ...``; a
PSBT file may hold the binary PSBT or its base64). Output: the round's kind, hash, each
transaction's txid and fee, and every difference with the reason a signer would refuse it for.
Exit status 0 when the PSBTs are exactly what the manifest builds, 1 when they are not.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

from pool.verify import Verdict, verify_round

PSBT_MAGIC = b"psbt\xff"


def add_command(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "verify-round", help="check offline that a round's PSBTs are what its manifest builds"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--round", type=Path, metavar="FILE", help="the JSON of `vpool admin round` (- for stdin)"
    )
    source.add_argument("--manifest", type=Path, metavar="FILE", help="the manifest's encoding")
    parser.add_argument(
        "--psbt", type=Path, action="append", default=[], metavar="FILE",
        help="a PSBT, binary or base64, in the round's order (repeat; with --manifest)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        manifest, psbts = _read(args)
    except (OSError, ValueError) as e:
        print(f"vpool: error: {e}", file=sys.stderr)
        return 2
    verdict = verify_round(manifest, psbts)
    print(json.dumps(_document(verdict), indent=2) if args.json else _text(verdict))
    return 0 if verdict.matches else 1


def _read(args: argparse.Namespace) -> tuple[bytes, list[bytes]]:
    if args.round is not None:
        text = sys.stdin.read() if str(args.round) == "-" else args.round.read_text()
        try:
            doc: dict[str, Any] = json.loads(text)
            manifest = base64.b64decode(doc["manifest"], validate=True)
            psbts = [base64.b64decode(t["psbt"], validate=True) for t in doc["transactions"]]
        except (KeyError, TypeError, binascii.Error, json.JSONDecodeError) as e:
            raise ValueError(f"--round: not the JSON of `vpool admin round` ({e})") from None
        return manifest, psbts
    return args.manifest.read_bytes(), [_psbt(path) for path in args.psbt]


def _psbt(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw.startswith(PSBT_MAGIC):
        return raw
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        raise ValueError(f"--psbt {path}: neither a binary PSBT nor base64") from None


def _document(verdict: Verdict) -> dict[str, Any]:
    return {
        "kind": verdict.kind.value if verdict.kind else None,
        "manifest_hash": verdict.manifest_hash.hex(),
        "transactions": [
            {"txid": txid, "fee_sat": fee}
            for txid, fee in zip(verdict.txids, verdict.fees, strict=True)
        ],
        "matches": verdict.matches,
        "differences": [
            {
                "reason": d.reason.value,
                "message": d.message,
                "psbt_index": d.psbt_index,
                "input_index": d.input_index,
            }
            for d in verdict.differences
        ],
    }


def _text(verdict: Verdict) -> str:
    lines = [f"{verdict.kind or 'unknown'} round {verdict.manifest_hash.hex()}"]
    lines += [
        f"  transaction {i}: {txid}, fee {fee} sat"
        for i, (txid, fee) in enumerate(zip(verdict.txids, verdict.fees, strict=True))
    ]
    if verdict.matches:
        lines.append("the PSBTs are exactly what the manifest builds")
    lines += [f"  {d.reason.value}: {d.message}" for d in verdict.differences]
    return "\n".join(lines)
