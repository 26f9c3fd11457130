"""How the `vpool` command prints answers: tables for people, ``--json`` for programs.

JSON keeps the proto's field names and prints every field (defaults included), enums by name,
64-bit numbers as numbers and bytes (raw transactions, PSBTs, manifests) in hex. The human form
is a table for a list (its columns the item's short fields) and ``field: value`` lines for one
object, with statuses without their enum prefix, raw transactions in hex and other bytes
(PSBTs, manifests) left out (use ``--json``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any, TextIO

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_COLUMNS = {
    "vpool.v1.Withdrawal": (
        "request_id", "status", "amount_sat", "address", "confirmations", "round_id", "reason",
    ),
    "vpool.v1.Deposit": (
        "txid", "vout", "amount_sat", "status", "confirmations", "user_id", "address", "reason",
    ),
    "vpool.v1.RoundSummary": None,
    "vpool.v1.SignerHealth": None,
}  # fmt: skip
"""Columns of a table of these items (None: every scalar field)."""
_HEX_SHOWN = frozenset({"raw_tx"})
"""Bytes the human form shows too (in hex): a signed transaction, ready to broadcast."""


def to_dict(message: Message) -> dict[str, Any]:
    """Every field of ``message`` (bytes in hex, enums by name)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _is_repeated(field):
            out[field.name] = [_value(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = to_dict(value) if message.HasField(field.name) else None
        else:
            out[field.name] = _value(field, value)
    return out


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_dict(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes(value).hex()
    if field.type == FieldDescriptor.TYPE_ENUM:
        described = field.enum_type.values_by_number.get(value)
        return described.name if described is not None else value
    return value


def print_json(message: Message, out: TextIO, indent: int | None = 2) -> None:
    print(json.dumps(to_dict(message), indent=indent), file=out)


def _short(field: FieldDescriptor, value: Any) -> str:
    """A scalar for people: enums without their prefix, lists comma-separated."""
    if isinstance(value, list):
        return ",".join(_short(field, v) for v in value)
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        prefix = _enum_prefix(field)
        return value.removeprefix(prefix).lower()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _enum_prefix(field: FieldDescriptor) -> str:
    names = [v.name for v in field.enum_type.values]
    prefix = names[0].rsplit("_", 1)[0] + "_" if names else ""
    return prefix if all(n.startswith(prefix) for n in names) else ""


def _scalar_fields(descriptor: Any) -> list[FieldDescriptor]:
    """Fields that fit in a table cell: no messages, no bytes."""
    return [
        f
        for f in descriptor.fields
        if f.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BYTES)
    ]


def table(items: Sequence[Message], out: TextIO) -> None:
    """A table with a header line; ``(none)`` when empty."""
    if not items:
        print("(none)", file=out)
        return
    descriptor = items[0].DESCRIPTOR
    scalars = {f.name: f for f in _scalar_fields(descriptor)}
    names = _COLUMNS.get(descriptor.full_name) or tuple(scalars)
    fields = [scalars[n] for n in names if n in scalars]
    rows = [[f.name.upper() for f in fields]]
    for item in items:
        values = to_dict(item)
        rows.append([_short(f, values[f.name]) for f in fields])
    widths = [max(len(row[i]) for row in rows) for i in range(len(fields))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def show(message: Message, out: TextIO, indent: str = "") -> None:
    """One object: ``field: value`` lines; its lists as tables below them."""
    lists: list[tuple[str, list[Message]]] = []
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_BYTES:
            if field.name in _HEX_SHOWN:
                print(f"{indent}{field.name}: {bytes(value).hex()}", file=out)
            elif value:
                print(f"{indent}{field.name}: ({len(value)} bytes; --json shows them)", file=out)
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                lists.append((field.name, list(value)))
            elif message.HasField(field.name):
                print(f"{indent}{field.name}:", file=out)
                show(value, out, indent + "  ")
            continue
        shown = _short(field, _value_or_list(field, value))
        print(f"{indent}{field.name}: {shown}", file=out)
    for name, items in lists:
        print(f"{indent}{name}:", file=out)
        nested = items and any(
            f.type == FieldDescriptor.TYPE_MESSAGE or f.name in _HEX_SHOWN
            for f in items[0].DESCRIPTOR.fields
        )
        if nested:
            for item in items:
                show(item, out, indent + "  ")
                print(file=out)
        else:
            _indented_table(items, out, indent + "  ")


def _value_or_list(field: FieldDescriptor, value: Any) -> Any:
    if _is_repeated(field):
        return [_value(field, v) for v in value]
    return _value(field, value)


def _indented_table(items: Sequence[Message], out: TextIO, indent: str) -> None:
    buffer = io.StringIO()
    table(items, buffer)
    for line in buffer.getvalue().splitlines():
        print(indent + line, file=out)


def human(message: Message, out: TextIO) -> None:
    """A list response (one repeated message field, maybe a page token) as a table; anything
    else as ``field: value`` lines."""
    fields = message.DESCRIPTOR.fields
    lists = [f for f in fields if _is_repeated(f) and f.type == FieldDescriptor.TYPE_MESSAGE]
    others = [f for f in fields if f not in lists]
    if len(lists) == 1 and all(f.name == "next_page_token" for f in others):
        table(list(getattr(message, lists[0].name)), out)
        token = getattr(message, "next_page_token", "")
        if token:
            print(f"more: --page-token {token}", file=out)
        return
    show(message, out)


def fee_checks(checks: Sequence[Any], out: TextIO, *, as_json: bool = False) -> None:
    """``vpool fees --verify``: one line per notice (``vpool.fee_attestations.NoticeCheck``)."""
    if as_json:
        rows = [
            {
                "round_id": c.round_id,
                "txid": c.txid,
                "fee_sat": c.fee_sat,
                "verified": c.ok,
                "signers": list(c.signers),
                "rebuilt": c.rebuilt,
                "problem": c.problem,
            }
            for c in checks
        ]
        json.dump({"notices": rows, "verified": all(c.ok for c in checks)}, out, indent=2)
        out.write("\n")
        return
    for c in checks:
        verdict = "verified" if c.ok else "NOT VERIFIED"
        by = f" by {', '.join(c.signers)}" if c.signers else ""
        rebuilt = ", rebuilt" if c.rebuilt else ""
        detail = f": {c.problem}" if c.problem else ""
        out.write(f"{c.txid} {c.fee_sat} sat {verdict}{by}{rebuilt}{detail}\n")
    bad = sum(not c.ok for c in checks)
    out.write(f"{len(checks) - bad} verified, {bad} not verified\n")
