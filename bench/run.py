"""``make bench``: every row measured in this run; writes bench/results.json and results.md.

``python -m bench.run`` (about 10 minutes on a 2-core machine) or ``python -m bench.run
--quick`` (smaller sizes, within 2 minutes; the row names say the sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from bench import build, sighash, signround, submissions, whole_round
from bench.common import Row
from tests.store_fixtures import PG_ADMIN

HERE = Path(__file__).resolve().parent
REPETITIONS = 5
LIBRARIES = (
    "coincurve",
    "python-bitcoinlib",
    "bdkpython",
    "grpcio",
    "sqlalchemy",
    "psycopg",
)


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libraries = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "libraries": libraries,
        "postgresql": _postgres_version(),
    }


def _postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN) as conn:
            found = conn.execute("SHOW server_version").fetchone()
        return str(found[0]) if found else "?"
    except Exception as e:
        return f"unreachable ({e.__class__.__name__})"


def plan(quick: bool) -> list[tuple[str, Callable[[], list[Row]]]]:
    """The rows in running order."""
    reps = REPETITIONS
    sign_inputs = 100 if quick else 500
    build_pending = 2_000 if quick else 10_000
    growth = (500, 5_000) if quick else (10_000, 100_000)
    short = (500, 2_000) if quick else (1_000, 4_000)
    memory_pending = 20_000 if quick else 100_000
    submit_burst = 320 if quick else 1_280
    db_inputs = (50, 500) if quick else (100, 1_000)
    round_size = whole_round.QUICK if quick else whole_round.FULL
    the_round: list[signround.Round] = []

    def round_() -> signround.Round:
        if not the_round:
            the_round.append(signround.make_round(sign_inputs))
        return the_round[0]

    return [
        ("sighash flat", lambda: [sighash.flat_per_input(reps)]),
        ("sighash vs bitcoinlib", lambda: [sighash.against_bitcoinlib(reps)]),
        ("SignRound vs coincurve", lambda: [signround.against_bare(round_(), reps)[0]]),
        ("SignRound vs bdk", lambda: [signround.against_bdk(round_(), reps)]),
        ("submissions SQLite", lambda: submissions.measure("SQLite", submit_burst)),
        ("submissions PostgreSQL", lambda: submissions.measure("PostgreSQL", submit_burst)),
        ("manifest + plan", lambda: [build.manifest_and_plan(build_pending, reps)]),
        ("signer rebuild", lambda: [build.signer_rebuild(build_pending, reps)]),
        ("build growth", lambda: [build.growth(*growth, reps, budget=150.0)[0]]),
        ("build growth, funds short", lambda: [build.growth(*short, reps, funded=False)[0]]),
        ("peak memory", lambda: [build.peak_memory(memory_pending)]),
        ("signer database growth", lambda: [signround.database_growth(*db_inputs)]),
        ("whole round", lambda: whole_round.measure(round_size, reps)),
    ]


def table(rows: list[Row], about: dict[str, str], seconds: float, quick: bool) -> str:
    lines = [
        f"Measured by `make bench{' QUICK=1' if quick else ''}` in {seconds:.0f} s on "
        f"{about['cpu']}, {about['cores']} cores, {about['system']}; Python {about['python']}; "
        f"{about['libraries']}; PostgreSQL {about['postgresql']}.",
        "",
        "| figure | measured | goal | met | how |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        met = "yes" if r.meets_goal else "**no**"
        detail = r.detail.replace("|", "/")
        lines.append(f"| {r.name} | {_format(r.value)} {r.unit} | {r.goal} | {met} | {detail} |")
    return "\n".join(lines) + "\n"


def _format(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, within 2 minutes")
    parser.add_argument("--only", action="append", default=[], help="rows whose step matches")
    args = parser.parse_args(argv)
    about = machine()
    started = time.perf_counter()
    rows: list[Row] = []
    for step, measure in plan(args.quick):
        if args.only and not any(o.lower() in step.lower() for o in args.only):
            continue
        begun = time.perf_counter()
        print(f"{step} ...", end=" ", flush=True)
        found = measure()
        rows += found
        shown = "; ".join(f"{_format(r.value)} {r.unit}" for r in found)
        print(f"{shown} ({time.perf_counter() - begun:.0f} s)", flush=True)
    seconds = time.perf_counter() - started
    (HERE / "results.json").write_text(
        json.dumps([r.to_json() for r in rows], indent=2) + "\n", encoding="utf-8"
    )
    (HERE / "results.md").write_text(table(rows, about, seconds, args.quick), encoding="utf-8")
    print(f"{len(rows)} rows in {seconds:.0f} s: bench/results.json, bench/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
