"""Assemble the reliability suite's rows (build/reliability/<part>.json, written by
``tests/reliability/``) into docs/reliability.md, with the command and the machine, and copy the
table into the README between its reliability markers.

    python scripts/reliability_report.py --seconds 1234 --command "make reliability"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import _format, machine  # noqa: E402

BUILD = ROOT / "build" / "reliability"
DOC = ROOT / "docs" / "reliability.md"
README = ROOT / "README.md"
START = "<!-- reliability table: copied from docs/reliability.md -->"
END = "<!-- end of the reliability table -->"
PARTS = ("crash_points", "signer_faults", "fuzzing", "transport_secrets", "load")
"""The parts in the order of the issue; any other part's file follows them."""


def load_rows() -> list[tuple[str, dict[str, object]]]:
    files = sorted(BUILD.glob("*.json"), key=lambda p: (_rank(p.stem), p.stem))
    found = []
    for path in files:
        for item in json.loads(path.read_text(encoding="utf-8")):
            found.append((path.stem, item))
    return found


def _rank(part: str) -> int:
    return PARTS.index(part) if part in PARTS else len(PARTS)


def table(rows: list[tuple[str, dict[str, object]]], command: str, seconds: float) -> str:
    about = machine()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"Measured by `{command}` in {seconds / 60:.1f} min at commit {commit or '?'} on "
        f"{about['cpu']}, {about['cores']} cores, {about['system']}; Python {about['python']}; "
        f"PostgreSQL {about['postgresql']}.",
        "",
        "| part | figure | measured | goal | met | how |",
        "|---|---|---|---|---|---|",
    ]
    for part, r in rows:
        met = "yes" if r["meets_goal"] else "**no**"
        detail = str(r["detail"]).replace("|", "/").replace("\n", " ")
        number = float(r["value"])  # type: ignore[arg-type]
        value = f"{number:,.0f}" if number.is_integer() else _format(number)
        lines.append(
            f"| {part.replace('_', ' ')} | {r['name']} | {value} {r['unit']} | {r['goal']} "
            f"| {met} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--command", default="make reliability")
    parser.add_argument("--seconds", type=float, default=0.0, help="the whole run's duration")
    args = parser.parse_args(argv)
    rows = load_rows()
    if not rows:
        print(f"no rows in {BUILD}: run make reliability", file=sys.stderr)
        return 1
    body = table(rows, args.command, args.seconds)
    DOC.write_text(
        "# Reliability: the figures of one run\n\n"
        "Written by `make reliability` (scripts/reliability_report.py from the rows of "
        "`tests/reliability/`); what each part does and how to read it: the README's "
        "Reliability section.\n\n" + body,
        encoding="utf-8",
    )
    readme = README.read_text(encoding="utf-8")
    if START in readme and END in readme:
        head, rest = readme.split(START, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{START}\n{body}{END}{tail}", encoding="utf-8")
    print(body)
    missed = [r["name"] for _, r in rows if not r["meets_goal"]]
    print(f"{len(rows)} rows, {len(missed)} missing their goal", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
