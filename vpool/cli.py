"""`vpool`: the client and operator command line."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.message import Message

from vpool import commands, exitcodes, fee_attestations, output, profile, tls, verify_round
from vpool.v1 import coordinator_pb2
from vpool.version import version_text

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before they are made, so peers with slow clocks accept them."""
MAX_DAYS = 36_500
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


def _integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (argparse names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    return parse


def _certs_init(args: argparse.Namespace) -> int:
    args.dir.mkdir(parents=True, exist_ok=True)
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
    init.add_argument(
        "--days", type=_integer(1, MAX_DAYS), default=tls.CA_VALIDITY.days, help="validity in days"
    )
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
    issue.add_argument("--days", type=_integer(1, MAX_DAYS), default=365, help="validity in days")
    issue.add_argument("--force", action="store_true", help="replace existing files")
    issue.set_defaults(handler=_certs_issue)


# --- talking to the coordinator ---------------------------------------------------------------


def _channel(args: argparse.Namespace) -> grpc.Channel:
    flags = {setting: getattr(args, setting) for setting in profile.SETTINGS}
    found = profile.resolve(flags, os.environ)
    return commands.open_channel(found.coordinator, found.cert, found.key, found.ca, found.tls_name)


def _print(message: Message, args: argparse.Namespace) -> None:
    if args.json:
        output.print_json(message, sys.stdout)
    else:
        output.human(message, sys.stdout)


def _rpc(
    call: Callable[[grpc.Channel, argparse.Namespace], Message],
) -> Callable[[argparse.Namespace], int]:
    """A command's handler: one call to the coordinator, its answer printed."""

    def handler(args: argparse.Namespace) -> int:
        with _channel(args) as channel:
            _print(call(channel, args), args)
        return exitcodes.OK

    return handler


@_rpc
def _withdraw(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.withdraw(
        channel, args.request_id, args.address, args.amount, args.extra_fee, args.timeout
    )


@_rpc
def _withdrawal_get(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.get_withdrawal(channel, args.request_id, args.timeout)


@_rpc
def _withdrawal_list(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.list_withdrawals(
        channel, args.status, args.page_size, args.page_token, args.timeout
    )


@_rpc
def _withdrawal_cancel(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.cancel_withdrawal(channel, args.request_id, args.timeout)


def _event_line(event: Message) -> str:
    """One event for people: cursor, time, status, and what changed."""
    values = output.to_dict(event)
    at = datetime.fromtimestamp(values["at_unix"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    status = str(values["status"]).split("_STATUS_", 1)[-1].lower()
    if "withdrawal" in values:
        w = values["withdrawal"] or {}
        what = f"withdrawal {w.get('request_id')} {w.get('amount_sat')} sat to {w.get('address')}"
    else:
        d = values["deposit"] or {}
        what = (
            f"deposit {d.get('txid')}:{d.get('vout')} {d.get('amount_sat')} sat "
            f"user {d.get('user_id') or '-'}"
        )
    return f"{values['cursor']}  {at}  {status}  {what}"


def _follow(args: argparse.Namespace, events: Iterator[Message]) -> int:
    """Print each event (a JSON line with --json) until interrupted or the stream ends."""
    # SIGINT and SIGTERM cancel the stream, which ends the loop below: a KeyboardInterrupt
    # raised somewhere inside gRPC's iterator could leave its call hanging instead.
    cancel: Callable[[], object] = events.cancel  # type: ignore[attr-defined]
    previous = {s: signal.signal(s, lambda *_: cancel()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for event in events:
            if args.json:
                output.print_json(event, sys.stdout, indent=None)
            else:
                print(_event_line(event))
            sys.stdout.flush()
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return exitcodes.OK


def _withdrawal_watch(args: argparse.Namespace) -> int:
    """Status changes until interrupted; resume with --after-cursor."""
    with _channel(args) as channel:
        return _follow(args, commands.watch_withdrawals(channel, args.after_cursor))


def _deposits(args: argparse.Namespace) -> int:
    """A page of deposits, or with --watch their status changes until interrupted."""
    with _channel(args) as channel:
        if args.watch:
            return _follow(args, commands.watch_deposits(channel, args.after_cursor))
        page = commands.list_deposits(
            channel, args.user_id, args.status, args.page_size, args.page_token, args.timeout
        )
        _print(page, args)
    return exitcodes.OK


@_rpc
def _refunds(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    statuses = args.status or list(commands.REFUND_STATUSES)
    return commands.list_deposits(
        channel, args.user_id, statuses, args.page_size, args.page_token, args.timeout
    )


@_rpc
def _deposit_address(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.deposit_address(
        channel, args.user_id, args.refund_address, args.verify_on_signers, args.timeout
    )


@_rpc
def _pool_status(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.pool_status(channel, args.timeout)


def _fees(args: argparse.Namespace) -> int:
    """The caller's fee notices; with --verify, each checked against the signers'
    attestations (vpool.fee_attestations): exit status 1 when one does not verify."""
    if not args.verify:
        if args.signers is not None or args.rebuild or args.client_id:
            print(
                "vpool: error: --signers, --rebuild and --client-id go with --verify",
                file=sys.stderr,
            )
            return exitcodes.USAGE
        return _rpc(_fee_page)(args)
    if args.signers is None:
        print(
            "vpool: error: --verify needs --signers FILE (the operator's signer list)",
            file=sys.stderr,
        )
        return exitcodes.USAGE
    try:
        signers = fee_attestations.load_signer_list(args.signers)
    except fee_attestations.SignerListError as e:
        print(f"vpool: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    with _channel(args) as channel:
        statement = commands.fee_statement(channel, args.page_size, args.page_token, args.timeout)
        client_id = args.client_id or _own_name(args)

        def manifest_of(round_id: str) -> coordinator_pb2.RoundManifest:
            return commands.round_manifest(channel, round_id, args.timeout)

        checks = fee_attestations.check_statement(
            statement, client_id, signers, manifest_of if args.rebuild else None
        )
    output.fee_checks(checks, sys.stdout, as_json=args.json)
    return exitcodes.OK if all(c.ok for c in checks) else exitcodes.ERROR


def _fee_page(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.fee_statement(channel, args.page_size, args.page_token, args.timeout)


def _own_name(args: argparse.Namespace) -> str:
    """The name in the caller's own certificate: the client id the coordinator knows it by."""
    flags = {setting: getattr(args, setting) for setting in profile.SETTINGS}
    found = profile.resolve(flags, os.environ)
    return tls.peer_identity(found.cert.read_bytes())[1]


@_rpc
def _admin_rounds(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.list_rounds(channel, args.page_size, args.page_token, args.timeout)


@_rpc
def _admin_round(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.get_round(channel, args.round_id, args.timeout)


def _admin_cancel_round(args: argparse.Namespace) -> int:
    """What happened first, on its own line (``abandoned: cancelled by an operator ...``, or
    ``broadcast: replacement requested: ...``; a refusal is the error ``FAILED_PRECONDITION``
    with its reason), then the round."""
    with _channel(args) as channel:
        answer = commands.cancel_round(channel, args.round_id, args.timeout)
    status = coordinator_pb2.RoundStatus.Name(answer.status).removeprefix("ROUND_STATUS_").lower()
    print(f"cancel-round {answer.round_id}: {status}: {answer.detail}", file=sys.stderr)
    _print(answer, args)
    return exitcodes.OK


@_rpc
def _admin_run_round(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.run_round(channel, args.timeout)


@_rpc
def _admin_pause(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.pause_rounds(channel, args.timeout)


@_rpc
def _admin_resume(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.resume_rounds(channel, args.timeout)


@_rpc
def _admin_add_series(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.add_series(channel, args.series_id, args.receive, args.change, args.timeout)


@_rpc
def _admin_maintenance(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.set_maintenance(channel, args.signer_id, args.state == "on", args.timeout)


@_rpc
def _admin_propose_refund(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.propose_refund(channel, args.txid, args.vout, args.address, args.timeout)


@_rpc
def _admin_refunds(channel: grpc.Channel, args: argparse.Namespace) -> Message:
    return commands.list_refunds(channel, args.page_size, args.page_token, args.timeout)


def _connection() -> argparse.ArgumentParser:
    """The options every coordinator command takes; see vpool.profile for their defaults."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "connection (default: $VPOOL_COORDINATOR, $VPOOL_CERT, $VPOOL_KEY, $VPOOL_CA, "
        "$VPOOL_TLS_NAME, then the profile $VPOOL_PROFILE or ~/.config/vpool/profile.toml)"
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="its address")
    group.add_argument("--cert", type=Path, help="your certificate (PEM)")
    group.add_argument("--key", type=Path, help="your private key (PEM)")
    group.add_argument("--ca", type=Path, help="the pool's CA certificate")
    group.add_argument("--tls-name", help="the name in the coordinator's certificate, if not HOST")
    group.add_argument(
        "--timeout", type=float, default=commands.DEFAULT_TIMEOUT, help="seconds per call"
    )
    parent.add_argument(
        "--json", action="store_true", help="print JSON (bytes in hex) instead of a table"
    )
    return parent


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--page-size", type=_integer(0, UINT32_MAX), default=0, help="at most this many (max 1000)"
    )
    parser.add_argument("--page-token", default="", help="next_page_token of the previous page")


def _add_client_commands(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
    parent: argparse.ArgumentParser,
) -> None:
    withdraw = subcommands.add_parser("withdraw", parents=[parent], help="request a withdrawal")
    withdraw.add_argument("--request-id", required=True, help="your id for it (idempotency key)")
    withdraw.add_argument("--address", required=True, help="destination address")
    sat = _integer(0, UINT64_MAX)
    withdraw.add_argument("--amount", type=sat, required=True, help="satoshis to pay")
    withdraw.add_argument("--extra-fee", type=sat, default=0, help="satoshis added to the fee")
    withdraw.set_defaults(handler=_withdraw)

    group = subcommands.add_parser("withdrawal", help="your withdrawals")
    sub = group.add_subparsers(dest="withdrawal_command", metavar="ACTION", required=True)
    for name, handler, help_text in (
        ("get", _withdrawal_get, "one withdrawal"),
        ("cancel", _withdrawal_cancel, "cancel a withdrawal that is not in a round yet"),
    ):
        action = sub.add_parser(name, parents=[parent], help=help_text)
        action.add_argument("--request-id", required=True, help="your id for it")
        action.set_defaults(handler=handler)
    listing = sub.add_parser("list", parents=[parent], help="your withdrawals, newest first")
    listing.add_argument(
        "--status", action="append", default=[], choices=sorted(commands.STATUS_NAMES),
        help="only this status (repeatable)",
    )  # fmt: skip
    _paging(listing)
    listing.set_defaults(handler=_withdrawal_list)
    watch = sub.add_parser("watch", parents=[parent], help="follow status changes")
    watch.add_argument(
        "--after-cursor", type=_integer(0, UINT64_MAX), default=0, help="the last cursor you saw"
    )
    watch.set_defaults(handler=_withdrawal_watch)

    address = subcommands.add_parser(
        "deposit-address", parents=[parent], help="a new deposit address for one of your users"
    )
    address.add_argument("--user-id", required=True, help="your user it is for")
    address.add_argument("--refund-address", default="", help="where to refund its deposits")
    address.add_argument(
        "--verify-on-signers",
        action="store_true",
        help="have every signer compute it too (fails unless all agree)",
    )
    address.set_defaults(handler=_deposit_address)

    for name, handler, help_text, statuses in (
        ("deposits", _deposits, "your deposits, newest first (--watch: follow them)", None),
        ("refunds", _refunds, "your deposits being refunded, newest first", "refund"),
    ):
        listing = subcommands.add_parser(name, parents=[parent], help=help_text)
        listing.add_argument("--user-id", default="", help="only this user's")
        choices = sorted(commands.DEPOSIT_STATUS_NAMES)
        if statuses is not None:
            choices = sorted(commands.REFUND_STATUSES)
        listing.add_argument(
            "--status", action="append", default=[], choices=choices,
            help="only this status (repeatable)",
        )  # fmt: skip
        _paging(listing)
        if name == "deposits":
            listing.add_argument(
                "--watch", action="store_true", help="follow status changes until interrupted"
            )
            listing.add_argument(
                "--after-cursor", type=_integer(0, UINT64_MAX), default=0,
                help="with --watch: the last cursor you saw",
            )  # fmt: skip
        listing.set_defaults(handler=handler)

    pool = subcommands.add_parser("pool", help="the pool")
    pool_sub = pool.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    status = pool_sub.add_parser("status", parents=[parent], help="balances, signers, queue")
    status.set_defaults(handler=_pool_status)

    fees = subcommands.add_parser("fees", parents=[parent], help="your share of each network fee")
    _paging(fees)
    fees.add_argument(
        "--verify",
        action="store_true",
        help="check each share against the signers' attestations (docs/fee-attestations.md)",
    )
    fees.add_argument(
        "--signers", type=Path, metavar="FILE", help="the operator's signer list (with --verify)"
    )
    fees.add_argument(
        "--rebuild",
        action="store_true",
        help="also rebuild each round from its manifest and compare (with --verify)",
    )
    fees.add_argument(
        "--client-id", default="", help="your client id, if not the name in your certificate"
    )
    fees.set_defaults(handler=_fees)


def _add_admin_commands(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
    parent: argparse.ArgumentParser,
) -> None:
    admin = subcommands.add_parser("admin", help="operator commands (an admin certificate)")
    sub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    rounds = sub.add_parser("rounds", parents=[parent], help="rounds, newest first")
    _paging(rounds)
    rounds.set_defaults(handler=_admin_rounds)
    one = sub.add_parser("round", parents=[parent], help="one round in full")
    one.add_argument("--round-id", required=True, help="the manifest hash (hex)")
    one.set_defaults(handler=_admin_round)
    cancel = sub.add_parser(
        "cancel-round",
        parents=[parent],
        help="cancel a round: a signing round without signatures is abandoned (its requests "
        "queue again); a signed or broadcast one is replaced by transactions without its "
        "payments, which queue again once the replacement confirms; anything else is refused, "
        "saying why",
    )
    cancel.add_argument("--round-id", required=True, help="the manifest hash (hex)")
    cancel.set_defaults(handler=_admin_cancel_round)
    for name, handler, help_text in (
        ("run-round", _admin_run_round, "run a round now"),
        ("pause", _admin_pause, "start no new rounds"),
        ("resume", _admin_resume, "start rounds again"),
    ):
        sub.add_parser(name, parents=[parent], help=help_text).set_defaults(handler=handler)
    series = sub.add_parser("add-series", parents=[parent], help="add the new active series")
    series.add_argument(
        "--series-id", type=_integer(0, UINT32_MAX), required=True, help="above every existing id"
    )
    series.add_argument("--receive", required=True, help="receive descriptor (/0/*)")
    series.add_argument("--change", required=True, help="change descriptor (/1/*)")
    series.set_defaults(handler=_admin_add_series)
    maintenance = sub.add_parser(
        "maintenance", parents=[parent], help="start or end a signer's maintenance"
    )
    maintenance.add_argument("--signer-id", required=True, help="the signer")
    maintenance.add_argument("state", choices=("on", "off"), help="on: start it; off: end it")
    maintenance.set_defaults(handler=_admin_maintenance)
    refund = sub.add_parser(
        "propose-refund", parents=[parent], help="refund a deposit to an address you choose"
    )
    refund.add_argument("--txid", required=True, help="the deposit transaction")
    refund.add_argument("--vout", type=_integer(0, UINT32_MAX), required=True, help="its output")
    refund.add_argument("--address", required=True, help="where to refund it")
    refund.set_defaults(handler=_admin_propose_refund)
    refunds = sub.add_parser("refunds", parents=[parent], help="every deposit with a refund")
    _paging(refunds)
    refunds.set_defaults(handler=_admin_refunds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool",
        description="vpool client and operator tool. Connection settings come from flags, "
        "then VPOOL_* environment variables, then a profile file (see README, 'The "
        "command line').",
        epilog=exitcodes.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text("vpool"))
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_certs(subcommands)
    connection = _connection()
    _add_client_commands(subcommands, connection)
    _add_admin_commands(subcommands, connection)
    verify_round.add_command(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return exitcodes.OK
    try:
        return handler(args)
    except grpc.RpcError as e:
        print(f"vpool: error: {e.code().name}: {e.details()}", file=sys.stderr)
        return exitcodes.of_status(e.code())
    except profile.ProfileError as e:
        print(f"vpool: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except (tls.TlsError, OSError) as e:
        print(f"vpool: error: {e}", file=sys.stderr)
        return exitcodes.ERROR


if __name__ == "__main__":
    sys.exit(main())
