"""``vpool-signer init``: a commented signer.toml, a keystore with a new mnemonic (its passphrase
in a file readable only by its owner), and the signer's certificate from the pool's development
CA (``--ca-dir``, e.g. the coordinator's ``certs``; a new CA otherwise)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from signer import keystore
from vpool import devsetup

CONFIG = "signer.toml"
KEYSTORE = "keystore.json"
PASSPHRASE = "passphrase.txt"
TEMPLATE = """\
# vpool signer configuration, written by `vpool-signer init` (every key is documented in
# docs/signer.example.toml). Check it with `vpool-signer check-config --config {config}`;
# serve with `vpool-signer serve --config {config}`.
# Relative paths are relative to this file. Unknown keys are refused, naming the key.

signer_id = "{signer_id}"
network = "{network}"
# Signing log, registered series and audit log. One daemon per data dir.
data_dir = "data"

[server]
listen = "{listen}"
# The certificate names localhost, 127.0.0.1 and ::1 (and {signer_id}).
cert = "{cert}"
key = "{key}"
ca = "{ca}"
allowed_coordinators = ["coordinator"]
max_message_bytes = 8388608

[backend]
kind = "emulator"
# A new 24-word mnemonic: back it up with
#   vpool-signer keystore show-mnemonic --file {keystore} --passphrase-file {passphrase}
keystore = "{keystore}"
passphrase_file = "{passphrase}"
# For a hardware wallet instead: kind = "hwi" and fingerprint = "..." (docs/signer.example.toml).

[chain]
# This signer's own node (JSON-RPC, with a transaction index): every round is checked against it.
rpc_url = "{rpc_url}"
# Core's cookie file (need not exist before the node starts), or rpc_user with rpc_password_env
# or rpc_password_file.
rpc_cookie_file = "{cookie}"
min_conf = 6
max_tip_lag = 6

[policy]
# The pool's m: no weaker series is registered.
min_threshold = 2
# The series you approved (the checksum `vpool-signer series-checksum` prints), and the pool's
# other keys as each operator's `vpool-signer xpub` prints them.
approved_series = []
cosigners = []
"""


@dataclass(frozen=True)
class InitOptions:
    directory: Path
    signer_id: str
    network: str
    listen: str
    rpc_url: str
    cookie_file: str
    ca_dir: Path | None
    force: bool


@dataclass(frozen=True)
class Initialized:
    written: list[Path]
    fingerprint: str
    xpub: str
    """``[origin]xpub`` of the BIP48 account, for the other operators' ``cosigners``."""


def init(options: InitOptions) -> Initialized:
    directory = options.directory
    directory.mkdir(parents=True, exist_ok=True)
    certs = options.ca_dir if options.ca_dir is not None else directory / "certs"
    ca = devsetup.ensure_ca(certs)
    cert, key = devsetup.issue(certs, "signer", options.signer_id, force=options.force)
    config = directory / CONFIG
    if config.exists() and not options.force:
        raise devsetup.SetupError(f"{config} exists (use --force to replace it)")
    passphrase = devsetup.write_file(
        directory / PASSPHRASE, secrets.token_urlsafe(24) + "\n", force=options.force, mode=0o600
    )
    try:
        unlocked = keystore.create_keystore(
            directory / KEYSTORE,
            keystore.generate_mnemonic(),
            "mnemonic",
            keystore.passphrase_from_file(passphrase),
            options.network,
            overwrite=options.force,
        )
    except keystore.KeystoreError as e:
        raise devsetup.SetupError(str(e)) from None
    origin, xpub = unlocked.xpub_at(keystore.bip48_account_path(unlocked.network))

    def relative(path: Path) -> str:
        return os.path.relpath(path.resolve(), directory.resolve())

    text = TEMPLATE.format(
        config=config,
        signer_id=options.signer_id,
        network=options.network,
        listen=options.listen,
        cert=relative(cert),
        key=relative(key),
        ca=relative(ca),
        keystore=KEYSTORE,
        passphrase=PASSPHRASE,
        rpc_url=options.rpc_url,
        cookie=options.cookie_file,
    )
    devsetup.write_file(config, text, force=options.force)
    return Initialized(
        [ca, cert, key, directory / KEYSTORE, passphrase, config],
        unlocked.master.fingerprint.hex(),
        f"[{origin.to_string()}]{xpub}",
    )
