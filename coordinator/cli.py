"""`vpool-coordinator`: the coordinator daemon's command line (commands arrive later)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool-coordinator",
        description="vpool coordinator: takes deposits and withdrawals, runs deterministic "
        "rounds, collects signatures, broadcasts and follows the chain.",
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
