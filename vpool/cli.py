"""`vpool`: the client and operator command line."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vpool import tls

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before they are made, so peers with slow clocks accept them."""


def _certs_init(args: argparse.Namespace) -> int:
    start = datetime.now(UTC) - CLOCK_SKEW
    cert, key = tls.create_ca(args.common_name, start, timedelta(days=args.days))
    paths = tls.save_pair(args.dir, tls.CA_STEM, cert, key, overwrite=args.force)
    print("\n".join(str(p) for p in paths))
    return 0


def _certs_issue(args: argparse.Namespace) -> int:
    if args.name == tls.CA_STEM:
        raise tls.TlsError(f"the name {tls.CA_STEM!r} is reserved for the CA files")
    ca_cert, ca_key = tls.load_pair(args.dir, tls.CA_STEM)
    start = datetime.now(UTC) - CLOCK_SKEW
    cert, key = tls.issue_certificate(
        ca_cert,
        ca_key,
        args.name,
        args.role,
        args.dns,
        args.ip,
        start,
        start + timedelta(days=args.days),
    )
    paths = tls.save_pair(args.dir, args.name, cert, key, overwrite=args.force)
    print("\n".join(str(p) for p in paths))
    return 0


def _add_certs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser("certs", help="development CA and certificates for mutual TLS")
    sub = certs.add_subparsers(dest="certs_command", metavar="CERTS_COMMAND", required=True)

    init = sub.add_parser("init", help="create a development CA (DIR/ca.pem, DIR/ca.key)")
    init.add_argument("--dir", type=Path, required=True, help="directory for the files")
    init.add_argument("--common-name", default="vpool development CA", help="the CA's name")
    init.add_argument("--days", type=int, default=tls.CA_VALIDITY.days, help="validity in days")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=_certs_init)

    issue = sub.add_parser("issue", help="issue DIR/NAME.pem and DIR/NAME.key from DIR's CA")
    issue.add_argument("--dir", type=Path, required=True, help="directory holding the CA")
    issue.add_argument("--role", choices=tls.ROLES, required=True, help="the holder's role")
    issue.add_argument("--name", required=True, help="the holder's name, e.g. signer-1")
    issue.add_argument("--dns", action="append", default=[], help="a DNS name (repeatable)")
    issue.add_argument(
        "--ip", action="append", default=[], type=ipaddress.ip_address, help="an IP (repeatable)"
    )
    issue.add_argument("--days", type=int, default=365, help="validity in days")
    issue.add_argument("--force", action="store_true", help="replace existing files")
    issue.set_defaults(handler=_certs_issue)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool",
        description="vpool client and operator tool.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_certs(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except (tls.TlsError, OSError) as e:
        print(f"vpool: error: {e}", file=sys.stderr)
        return 1
