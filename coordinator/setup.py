"""``vpool-coordinator init``: a commented coordinator.toml, a development CA, the coordinator's
certificate and one client's and one admin's, with a `vpool` profile for each of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vpool import devsetup

CONFIG = "coordinator.toml"
CERTS = "certs"
TEMPLATE = """\
# vpool coordinator configuration, written by `vpool-coordinator init` (every key is documented
# in docs/coordinator.example.toml). Check it with `vpool-coordinator check-config --config
# {config}`; serve with `vpool-coordinator serve --config {config}`.
# Relative paths are relative to this file. Unknown keys are refused, naming the key.

# mainnet, testnet, signet or regtest.
network = "{network}"
# The SQLite store (data_dir/coordinator.db); or database_url = "postgresql+psycopg://...".
data_dir = "data"
database_url = ""

[server]
# host:port of the gRPC API. The certificate below names localhost, 127.0.0.1 and ::1.
listen = "{listen}"
# Certificate names allowed to call CoordinatorService (role client) and AdminService (admin).
clients = ["{client}"]
admins = ["{admin}"]
max_message_bytes = 16777216
# metrics_listen = "127.0.0.1:9460"

[server.tls]
# A development CA (certs/ca.pem). Give its ca.pem and ca.key to `vpool-signer init --ca-dir`
# so the signers trust this coordinator and it trusts them.
cert = "certs/coordinator.pem"
key = "certs/coordinator.key"
ca = "certs/ca.pem"

[chain]
# Your node's JSON-RPC (Bitcoin Core, or bcoin with its --index-tx and --index-address).
rpc_url = "{rpc_url}"
{credentials}
poll_seconds = 2.0
fee_target_blocks = 6
fee_floor = 1000
fee_ceiling = 50000
timeout_seconds = 30.0
# First block scanned on a new store: the height at which the pool was created.
scan_start_height = 0

[pool]
min_conf = 6
maturation = 6
dust_limit = 546
max_weight = 400000
max_withdrawal = 1000000000
address_lookahead = 100
coinbase_maturity = 100

[rounds]
interval_seconds = 60.0
queue_threshold = 100
sign_deadline_seconds = 30.0
round_deadline_seconds = 120.0

# One table per signer daemon (`vpool-signer init` prints its address). tls_name defaults to
# its id, which its development certificate carries.
# [[signers]]
# id = "signer-1"
# address = "127.0.0.1:50051"

# Series: add them with `vpool admin add-series` once the signers run (it registers them on
# every signer first).

[deposits]
confirmations = 3
min_deposit = 10000
refund_threshold = 2000
outage_deposits = "refund"
retired_grace_blocks = 4032

[liveness]
health_interval_seconds = 30.0
down_after_missed = 2
quorum_fraction = "2/3"
"""


def _credentials(cookie_file: str) -> str:
    if cookie_file:
        comment = '# The node\'s cookie file ("user:password"), read at each call.'
        return f'{comment}\ncookie_file = "{cookie_file}"'
    return (
        'rpc_user = "vpool"\nrpc_password = "change-me"\n'
        '# or: cookie_file = "/var/lib/bitcoind/regtest/.cookie" (instead of user and password)'
    )


@dataclass(frozen=True)
class InitOptions:
    directory: Path
    network: str
    listen: str
    rpc_url: str
    client: str
    admin: str
    force: bool
    rpc_cookie_file: str = ""
    """The node's cookie file (``user:password``); without it, a user and password to edit."""


def init(options: InitOptions) -> list[Path]:
    """Write the files; the paths written (an existing CA is reused)."""
    directory = options.directory
    certs = directory / CERTS
    ca = devsetup.ensure_ca(certs)
    written = [ca]
    written += devsetup.issue(certs, "coordinator", "coordinator", force=options.force)
    config = directory / CONFIG
    text = TEMPLATE.format(
        config=config,
        network=options.network,
        listen=options.listen,
        rpc_url=options.rpc_url,
        credentials=_credentials(options.rpc_cookie_file),
        client=options.client,
        admin=options.admin,
    )
    written.append(devsetup.write_file(config, text, force=options.force))
    for role, name in (("client", options.client), ("admin", options.admin)):
        cert, key = devsetup.issue(certs, role, name, force=options.force)
        profile = devsetup.client_profile(
            options.listen, cert.relative_to(directory), key.relative_to(directory),
            ca.relative_to(directory),
        )  # fmt: skip
        written += [cert, key]
        written.append(
            devsetup.write_file(directory / f"{name}.profile.toml", profile, force=options.force)
        )
    return written
