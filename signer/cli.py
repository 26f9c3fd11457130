"""`vpool-signer`: the signer daemon's command line."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pool.errors import HDKeyError
from pool.hdkeys import parse_path
from pool.networks import NETWORKS
from signer import audit, keystore
from signer.jade_emulator import (
    HWI_SIMULATOR_PORT,
    EmulatorError,
    Faults,
    JadeDevice,
    JadeEmulatorServer,
    master_from_mnemonic,
)
from vpool import exitcodes
from vpool.logs import add_arguments as add_log_arguments
from vpool.version import version_text


def _passphrase(args: argparse.Namespace) -> str:
    if args.passphrase_env is not None:
        return keystore.passphrase_from_env(args.passphrase_env)
    return keystore.passphrase_from_file(args.passphrase_file)


def _keystore_create(args: argparse.Namespace) -> int:
    if args.generate:
        kind, secret = "mnemonic", keystore.generate_mnemonic()
    elif args.mnemonic_file is not None:
        kind, secret = "mnemonic", args.mnemonic_file.read_text(encoding="utf-8")
    else:
        kind, secret = "xprv", args.xprv_file.read_text(encoding="utf-8")
    unlocked = keystore.create_keystore(
        args.file, secret, kind, _passphrase(args), args.network, overwrite=args.force
    )
    fingerprint = unlocked.master.fingerprint.hex()
    print(f"created {args.file}: {kind} for {args.network}, master fingerprint {fingerprint}")
    if args.generate:
        print(
            "the new mnemonic exists only in this keystore: write its words down now with "
            f"vpool-signer keystore show-mnemonic --file {args.file}"
        )
    return 0


MNEMONIC_WARNING = (
    "WARNING: these words are the signer's key. Anyone who reads them can sign for it, without "
    "the keystore or its passphrase: write them on paper, keep them offline, never type them "
    "into a computer or a photo, and clear this screen."
)


def _asked_passphrase(args: argparse.Namespace) -> str:
    """The passphrase from --passphrase-env or --passphrase-file, else asked at the terminal."""
    if args.passphrase_env is not None or args.passphrase_file is not None:
        return _passphrase(args)
    if not sys.stdin.isatty():
        raise _Usage(
            "no terminal to ask the passphrase: give --passphrase-env or --passphrase-file"
        )
    return getpass.getpass(f"passphrase of {args.file}: ")


class _Usage(Exception):
    """Bad usage found after parsing (exit 2)."""


def _keystore_show_mnemonic(args: argparse.Namespace) -> int:
    """The words of a keystore made from a mnemonic (``create --generate`` or
    ``--mnemonic-file``), after a warning; a keystore made from an xprv has none to show."""
    unlocked = keystore.load_keystore(args.file, _asked_passphrase(args))
    if unlocked.mnemonic is None:
        print(
            f"vpool-signer: error: {args.file} holds a master xprv, not a mnemonic: it has no "
            "words to show (back up the file and its passphrase, or the xprv itself)",
            file=sys.stderr,
        )
        return exitcodes.REFUSED
    words = unlocked.mnemonic.split()
    print(MNEMONIC_WARNING, file=sys.stderr, flush=True)
    if args.numbered:
        print("\n".join(f"{i:2d}. {word}" for i, word in enumerate(words, 1)))
    else:
        print(" ".join(words))
    return 0


def _keystore_show_xpub(args: argparse.Namespace) -> int:
    unlocked = keystore.load_keystore(args.file, _passphrase(args))
    if unlocked.network.name != args.network:
        raise keystore.KeystoreError(
            f"the keystore is for {unlocked.network.name}, not {args.network}"
        )
    path = parse_path(args.path) if args.path else keystore.bip48_account_path(unlocked.network)
    origin, xpub = unlocked.xpub_at(path)
    print(f"[{origin.to_string()}]{xpub}")
    return 0


def _emulate_jade(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    master = master_from_mnemonic(args.mnemonic_file.read_text(encoding="utf-8"))
    faults = Faults(
        args.stall_seconds,
        args.stall_all,
        args.refuse_signing,
        args.require_previous_tx,
        args.approve_after,
    )
    device = JadeDevice(
        master,
        NETWORKS[args.network],
        restrict_network=args.restrict_network,
        state_file=args.state_file,
        faults=faults,
        locked=args.locked,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: device.unlock())
    with JadeEmulatorServer(device, args.host, args.port, args.single_client) as server:
        print(
            f"jade emulator listening on {args.host}:{server.port} for {args.network}, "
            f"master fingerprint {device.fingerprint.hex()}",
            flush=True,
        )
        stop.wait()
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, required=True, help="the keystore file")
    parser.add_argument("--network", choices=list(NETWORKS), required=True, help="bitcoin network")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from $VAR")
    source.add_argument("--passphrase-file", type=Path, help="read the passphrase from a file")


def _add_keystore(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("keystore", help="create or inspect the encrypted keystore")
    sub = parser.add_subparsers(dest="keystore_command", metavar="KEYSTORE_COMMAND", required=True)

    create = sub.add_parser("create", help="encrypt a mnemonic or master xprv into a keystore")
    _add_common(create)
    secret = create.add_mutually_exclusive_group(required=True)
    secret.add_argument("--mnemonic-file", type=Path, help="a file holding a BIP39 mnemonic")
    secret.add_argument("--xprv-file", type=Path, help="a file holding a master xprv/tprv")
    secret.add_argument("--generate", action="store_true", help="generate a 24-word mnemonic")
    create.add_argument("--force", action="store_true", help="replace an existing keystore")
    create.set_defaults(handler=_keystore_create)

    words = sub.add_parser(
        "show-mnemonic",
        help="print the keystore's BIP39 words, to back them up on paper (asks the passphrase "
        "at the terminal unless --passphrase-env or --passphrase-file says where it is)",
    )
    words.add_argument("--file", type=Path, required=True, help="the keystore file")
    source = words.add_mutually_exclusive_group()
    source.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from $VAR")
    source.add_argument("--passphrase-file", type=Path, help="read the passphrase from a file")
    words.add_argument("--numbered", action="store_true", help="one numbered word per line")
    words.set_defaults(handler=_keystore_show_mnemonic)

    show = sub.add_parser("show-xpub", help="print [origin]xpub, ready for a descriptor")
    _add_common(show)
    show.add_argument("--path", help="derivation path (default: m/48h/<coin>h/0h/2h)")
    show.set_defaults(handler=_keystore_show_xpub)


def _add_emulate_jade(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "emulate-jade",
        help="serve a Jade-protocol hardware wallet emulator over TCP, for hwilib in CI",
    )
    parser.add_argument("--network", choices=list(NETWORKS), required=True, help="bitcoin network")
    parser.add_argument(
        "--mnemonic-file", type=Path, required=True, help="a file holding the BIP39 mnemonic"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=HWI_SIMULATOR_PORT,
        help=f"TCP port (default {HWI_SIMULATOR_PORT}, where hwi looks; 0 picks a free one)",
    )
    parser.add_argument(
        "--restrict-network",
        action="store_true",
        help="refuse other network types, as a Jade set to this network does "
        "(the QEMU simulator, like this emulator by default, serves every network)",
    )
    parser.add_argument(
        "--state-file", type=Path, help="keep registered multisigs in this JSON file"
    )
    parser.add_argument(
        "--stall-seconds",
        type=_seconds,
        default=0.0,
        metavar="N",
        help="fault: answer sign_psbt N seconds late",
    )
    parser.add_argument(
        "--stall-all", action="store_true", help="fault: stall every call, not only sign_psbt"
    )
    parser.add_argument(
        "--refuse-signing", action="store_true", help="fault: the user rejects every transaction"
    )
    parser.add_argument(
        "--single-client",
        action="store_true",
        help="serve one connection at a time, like the QEMU simulator and a USB serial port "
        "(a second client waits until the first closes)",
    )
    parser.add_argument(
        "--locked",
        action="store_true",
        help="start locked (PIN not entered: only get_version_info, ping and add_entropy are "
        "answered); SIGUSR1 is the user unlocking it",
    )
    parser.add_argument(
        "--approve-after",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="the user approves (or with --refuse-signing refuses) each transaction SECONDS "
        "after it is shown; each prompt is logged ('sign_psbt: prompt N shown to the user')",
    )
    parser.add_argument(
        "--require-previous-tx",
        action="store_true",
        help="refuse inputs to sign without their previous transaction, as Trezor and BitBox02 do",
    )
    parser.set_defaults(handler=_emulate_jade)


def _audit_verify(args: argparse.Namespace) -> int:
    path = args.file if args.file is not None else audit.audit_path(args.data_dir)
    if args.against is None:
        result = audit.verify(path)
    else:
        try:
            anchor = audit.Anchor.parse(args.against)
        except ValueError as e:
            print(f"vpool-signer: error: --against: {e}", file=sys.stderr)
            return 2
        result = audit.verify_against(path, anchor)
    if result.ok:
        print(f"audit log OK: {result.entries} entries, head {result.head}")
        if args.against is not None:
            print(f"it holds {args.against}, the head recorded elsewhere")
        return 0
    print(
        f"audit log {path} is BAD at entry {result.first_bad_seq}: {result.message} "
        f"({result.entries} entries before it verify, head {result.head})"
    )
    return 1


def _add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("audit", help="check the signer's hash-chained audit log")
    sub = parser.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)
    check = sub.add_parser("verify", help="verify every entry and link of the audit log")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data-dir", type=Path, help=f"the signer's data dir (its {audit.AUDIT_FILE})"
    )
    source.add_argument("--file", type=Path, help="the audit log file")
    check.add_argument(
        "--against",
        metavar="HEAD",
        help="SEQ:HASH (or HASH) of an entry the log must still hold, e.g. the head the "
        "coordinator recorded after a round (GetPoolStatus, its status page): a log whose tail "
        "was cut fails",
    )
    check.set_defaults(handler=_audit_verify)


def _series_checksum(args: argparse.Namespace) -> int:
    from pool.descriptor import MultisigDescriptor
    from pool.errors import VpoolError
    from pool.series import RECEIVE, Series, SeriesState
    from signer.policy import series_checksum

    network = NETWORKS[args.network]
    try:
        descriptor = MultisigDescriptor.parse(args.receive, network)
        if descriptor.branch != RECEIVE:
            raise VpoolError(f"expected branch {RECEIVE} (/0/*), found {descriptor.branch}")
        series = Series(0, descriptor.m, descriptor.keys, SeriesState.ACTIVE)
    except VpoolError as e:
        print(f"vpool-signer: error: receive descriptor: {e}", file=sys.stderr)
        return 1
    print(series.descriptor(RECEIVE).to_string(network))
    print(f'approved_series entry: "{series_checksum(series, network)}"')
    return 0


def _add_series_checksum(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "series-checksum",
        help="print a series' canonical receive descriptor and its approved_series entry",
    )
    parser.add_argument("--network", choices=sorted(NETWORKS), required=True)
    parser.add_argument(
        "--receive", required=True, help="the series' receive descriptor (/0/*), any key order"
    )
    parser.set_defaults(handler=_series_checksum)


def _serve(args: argparse.Namespace) -> int:
    from vpool import logs

    logs.configure(args.log_level, args.log_format)
    if args.log_format == "json":
        logs.capture_native_stderr()  # gRPC's own lines (TLS handshakes refused) as JSON too
    # Imported here so that the other commands do not load gRPC and the daemon's modules.
    from signer.audit import AuditError
    from signer.backends.base import BackendError
    from signer.config import ConfigError
    from signer.server import serve
    from signer.state import StateError
    from vpool.tls import TlsError

    try:
        return serve(args.config, args.insecure_dev, args.metrics_listen)
    except (ConfigError, StateError, AuditError, BackendError, TlsError) as e:
        print(f"vpool-signer: error: {e}", file=sys.stderr)
        return 1


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the signer daemon (gRPC over mutual TLS)")
    parser.add_argument("--config", type=Path, required=True, help="the signer.toml file")
    parser.add_argument(
        "--insecure-dev",
        action="store_true",
        help="serve plaintext without client authentication (development only; the "
        "configuration must also say server.insecure_dev = true)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (plain HTTP without "
        "authentication: bind it to loopback or a monitoring network; port 0: any free one)",
    )
    add_log_arguments(parser)
    parser.set_defaults(handler=_serve)


# --- the operator's commands on a configured signer (local: its backend and its state) -------


def _load(config_path: Path) -> Any:
    from signer.config import load_config

    return load_config(config_path)


def _xpub(args: argparse.Namespace) -> int:
    """The extended public key at a path, from the configured backend (keystore or device)."""
    from signer.backends import open_backend

    config = _load(args.config)
    path = parse_path(args.path) if args.path else keystore.bip48_account_path(config.network)
    backend = open_backend(config.backend, config.network)
    try:
        xpub, origin = backend.xpub(path)
    finally:
        backend.close()
    key = f"[{origin.to_string()}]{xpub}"
    if args.json:
        print(json.dumps({"origin": origin.to_string(), "xpub": xpub, "key": key}, indent=2))
    else:
        print(key)
    return 0


def _registered(config: Any, series_id: int) -> Any:
    from signer.state import read_registered_series

    found = read_registered_series(config.data_dir, config.network)
    if series_id not in found:
        known = ", ".join(str(i) for i in sorted(found)) or "none"
        raise _NotFound(f"series {series_id} is not registered with this signer (known: {known})")
    return found[series_id]


class _NotFound(Exception):
    pass


def _display_address(args: argparse.Namespace) -> int:
    """The address of a registered series as the backend computes it (and shows it, on a
    device with a screen: compare it with what the coordinator handed out)."""
    from pool.series import CHANGE, RECEIVE
    from signer.backends import open_backend

    config = _load(args.config)
    series = _registered(config, args.series_id)
    backend = open_backend(config.backend, config.network)
    try:
        branch = CHANGE if args.change else RECEIVE
        address, shown = backend.display_address(series, branch, args.index)
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"address": address, "shown_on_device": shown}, indent=2))
    else:
        print(address)
        print(f"shown on the device: {'yes' if shown else 'no (this backend has no screen)'}")
    return 0


def _export_multisig(args: argparse.Namespace) -> int:
    """A registered series for another wallet (signer.export)."""
    from signer.export import export

    config = _load(args.config)
    series = _registered(config, args.series_id)
    sys.stdout.write(export(series, config.network, args.format))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from signer.config import ConfigError

    try:
        config = _load(args.config)
    except ConfigError as e:
        print(f"vpool-signer: error: {args.config}: {e}", file=sys.stderr)
        return 1
    print(
        f"OK: {args.config} (signer {config.signer_id}, {config.network.name}, "
        f"listen {config.server.listen})"
    )
    return 0


def _init(args: argparse.Namespace) -> int:
    from signer.setup import InitOptions, init
    from vpool.devsetup import SetupError
    from vpool.tls import TlsError

    options = InitOptions(
        args.dir, args.signer_id, args.network, args.listen, args.rpc_url, args.rpc_cookie_file,
        args.ca_dir, args.force,
    )  # fmt: skip
    try:
        done = init(options)
    except (SetupError, TlsError) as e:
        print(f"vpool-signer: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in done.written))
    print(f"master fingerprint {done.fingerprint}; account key for the other operators:")
    print(done.xpub)
    print(
        "back up the new mnemonic now: vpool-signer keystore show-mnemonic "
        f"--file {args.dir / 'keystore.json'} --passphrase-file {args.dir / 'passphrase.txt'}"
    )
    return 0


def _add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from signer.export import FORMATS

    def configured(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--config", type=Path, required=True, help="the signer.toml file")
        return parser

    xpub = configured("xpub", "print [origin]xpub from the configured keystore or device")
    xpub.add_argument("--path", help="derivation path (default: m/48h/<coin>h/0h/2h)")
    xpub.add_argument("--json", action="store_true", help="print JSON")
    xpub.set_defaults(handler=_xpub)

    display = configured(
        "display-address", "compute (and show, on a device) an address of a registered series"
    )
    display.add_argument("--series-id", type=_uint32, required=True, help="the series")
    display.add_argument("--index", type=_index, required=True, help="the address index")
    display.add_argument("--change", action="store_true", help="the change branch (/1/*)")
    display.add_argument("--json", action="store_true", help="print JSON")
    display.set_defaults(handler=_display_address)

    export = configured("export-multisig", "write a registered series for another wallet to enroll")
    export.add_argument("--series-id", type=_uint32, required=True, help="the series")
    export.add_argument("--format", choices=FORMATS, default="descriptor", help="the format")
    export.set_defaults(handler=_export_multisig)

    check = configured("check-config", "check a signer.toml (every key, type and bound)")
    check.set_defaults(handler=_check_config)

    init = commands.add_parser(
        "init",
        help="write a commented signer.toml, a keystore with a new mnemonic, and a certificate "
        "(for localhost, 127.0.0.1 and ::1) from the pool's development CA",
    )
    init.add_argument("--dir", type=Path, required=True, help="where to write them")
    init.add_argument("--signer-id", required=True, help="this signer's name, e.g. signer-1")
    init.add_argument("--network", choices=sorted(NETWORKS), default="regtest")
    init.add_argument("--listen", default="127.0.0.1:50051", help="the daemon's host:port")
    init.add_argument(
        "--ca-dir", type=Path,
        help="the pool's development CA (e.g. the coordinator's certs; default: a new one)",
    )  # fmt: skip
    init.add_argument("--rpc-url", default="http://127.0.0.1:18443/", help="your node's RPC")
    init.add_argument("--rpc-cookie-file", default="node.cookie", help="your node's cookie file")
    init.add_argument("--force", action="store_true", help="replace existing files (not the CA)")
    init.set_defaults(handler=_init)


def _uint32(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to {2**32 - 1}, not {value}")
    return value


def _index(text: str) -> int:
    value = _uint32(text)
    if value >= 2**31:
        raise argparse.ArgumentTypeError(f"must be below 2^31, not {value}")
    return value


EXIT_HELP = """exit codes: 0 done; 1 an error (a configuration, keystore or file that cannot be
used: the message names it); 2 bad usage; 3 refused (e.g. show-mnemonic on an xprv keystore);
4 the device did not answer; 5 not found (a series this signer has not registered)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool-signer",
        description="vpool signer daemon: holds one cosigner key of the pool and signs only "
        "what the round manifest and its own policy allow.",
        epilog=EXIT_HELP,
    )
    parser.add_argument("--version", action="version", version=version_text("vpool-signer"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_keystore(commands)
    _add_emulate_jade(commands)
    _add_audit_commands(commands)
    _add_series_checksum(commands)
    _add_serve(commands)
    _add_operator_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    from signer.backends.base import BackendError
    from signer.config import ConfigError
    from signer.state import StateError

    try:
        return handler(args)
    except _NotFound as e:
        print(f"vpool-signer: error: {e}", file=sys.stderr)
        return exitcodes.NOT_FOUND
    except _Usage as e:
        print(f"vpool-signer: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except BackendError as e:
        print(f"vpool-signer: error: the device: {e}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except (keystore.KeystoreError, HDKeyError, EmulatorError, ConfigError, StateError) as e:
        print(f"vpool-signer: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"vpool-signer: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
