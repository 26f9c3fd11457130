"""`vpool-coordinator`: the coordinator daemon's command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Imported here so that --help does not load gRPC, SQLAlchemy and the daemon's modules.
    from sqlalchemy.exc import SQLAlchemyError

    from coordinator.config import ConfigError
    from coordinator.daemon import serve
    from vpool.tls import TlsError

    try:
        return serve(args.config)
    except (ConfigError, TlsError) as e:
        print(f"vpool-coordinator: error: {e}", file=sys.stderr)
    except SQLAlchemyError as e:
        print(f"vpool-coordinator: error: database: {e.__class__.__name__}: {e}", file=sys.stderr)
    except OSError as e:
        print(f"vpool-coordinator: error: {e.filename}: {e.strerror}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool-coordinator",
        description="vpool coordinator: takes deposits and withdrawals, runs deterministic "
        "rounds, collects signatures, broadcasts and follows the chain.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the coordinator (gRPC over mutual TLS)")
    serve.add_argument("--config", type=Path, required=True, help="the coordinator.toml file")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
