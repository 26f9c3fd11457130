"""`vpool-coordinator`: the coordinator daemon's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pool.networks import NETWORKS
from vpool.logs import add_arguments as add_log_arguments
from vpool.version import version_text

EXIT_HELP = """exit codes: 0 done; 1 the configuration or a file it names cannot be used (the
message names the key); 2 bad usage."""


def _serve(args: argparse.Namespace) -> int:
    from vpool import logs

    logs.configure(args.log_level, args.log_format)
    if args.log_format == "json":
        logs.capture_native_stderr()  # gRPC's own lines (TLS handshakes refused) as JSON too
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


def _check_config(args: argparse.Namespace) -> int:
    """Read the configuration as ``serve`` does, without starting anything."""
    from coordinator.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"vpool-coordinator: error: {args.config}: {e}", file=sys.stderr)
        return 1
    print(
        f"OK: {args.config} ({config.network.name}, listen {config.server.listen}, "
        f"{len(config.signers)} signers)"
    )
    return 0


def _init(args: argparse.Namespace) -> int:
    from coordinator.setup import InitOptions, init
    from vpool.devsetup import SetupError
    from vpool.tls import TlsError

    options = InitOptions(
        args.dir, args.network, args.listen, args.rpc_url, args.client, args.admin, args.force,
        args.rpc_cookie_file,
    )  # fmt: skip
    try:
        written = init(options)
    except (SetupError, TlsError) as e:
        print(f"vpool-coordinator: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in written))
    print(
        f"next: edit {args.dir / 'coordinator.toml'} ([chain], [[signers]]), then "
        f"vpool-coordinator check-config --config {args.dir / 'coordinator.toml'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool-coordinator",
        description="vpool coordinator: takes deposits and withdrawals, runs deterministic "
        "rounds, collects signatures, broadcasts and follows the chain.",
        epilog=EXIT_HELP,
    )
    parser.add_argument("--version", action="version", version=version_text("vpool-coordinator"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the coordinator (gRPC over mutual TLS)")
    serve.add_argument("--config", type=Path, required=True, help="the coordinator.toml file")
    add_log_arguments(serve)
    serve.set_defaults(handler=_serve)

    check = commands.add_parser(
        "check-config", help="check a coordinator.toml (every key, type and bound) and say OK"
    )
    check.add_argument("--config", type=Path, required=True, help="the coordinator.toml file")
    check.set_defaults(handler=_check_config)

    init = commands.add_parser(
        "init",
        help="write a commented coordinator.toml, a development CA and certificates (for "
        "localhost, 127.0.0.1 and ::1), and a vpool profile for one client and one admin",
    )
    init.add_argument("--dir", type=Path, required=True, help="where to write them")
    init.add_argument("--network", choices=sorted(NETWORKS), default="regtest")
    init.add_argument("--listen", default="127.0.0.1:50060", help="the API's host:port")
    init.add_argument("--rpc-url", default="http://127.0.0.1:18443", help="the node's JSON-RPC URL")
    init.add_argument(
        "--rpc-cookie-file", default="",
        help="the node's cookie file (user:password; default: a user and password to edit)",
    )  # fmt: skip
    init.add_argument("--client", default="exchange-a", help="the client certificate's name")
    init.add_argument("--admin", default="ops", help="the admin certificate's name")
    init.add_argument("--force", action="store_true", help="replace existing files (not the CA)")
    init.set_defaults(handler=_init)
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
