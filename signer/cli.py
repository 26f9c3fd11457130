"""`vpool-signer`: the signer daemon's command line (commands arrive with the signer issue)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool-signer",
        description="vpool signer daemon: holds one cosigner key of the pool and signs only "
        "what the round manifest and its own policy allow.",
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
