"""`vpool-signer`: the signer daemon's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pool.errors import HDKeyError
from pool.hdkeys import parse_path
from pool.networks import NETWORKS
from signer import keystore


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
        print("the new mnemonic exists only in this keystore: back up the file and passphrase")
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

    show = sub.add_parser("show-xpub", help="print [origin]xpub, ready for a descriptor")
    _add_common(show)
    show.add_argument("--path", help="derivation path (default: m/48h/<coin>h/0h/2h)")
    show.set_defaults(handler=_keystore_show_xpub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpool-signer",
        description="vpool signer daemon: holds one cosigner key of the pool and signs only "
        "what the round manifest and its own policy allow.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_keystore(commands)
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
    except (keystore.KeystoreError, HDKeyError) as e:
        print(f"vpool-signer: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"vpool-signer: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
