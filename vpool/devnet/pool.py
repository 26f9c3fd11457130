"""A whole vpool on this machine: a bcoin regtest node, a development CA, n signer daemons (software
keystores and Jade-protocol emulators behind the HWI backend), the coordinator, and gRPC stubs for
its clients and operators. Every part is the real program, started as an operator starts it.

``DevPool`` is what ``make demo`` narrates and what the end-to-end tests drive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from coordinator.config import DepositsConfig
from pool.address import address_to_script_pubkey
from pool.descriptor import DescriptorKey
from pool.hdkeys import KeyOrigin
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, Series, SeriesState
from pool.tx import OutPoint, Transaction
from signer.keystore import bip48_account_path
from vpool.devnet.bcoin import BcoinNode
from vpool.devnet.processes import (
    CoordinatorDaemon,
    JadeEmulator,
    Pki,
    SignerDaemon,
    emulator_backend,
    free_port,
    hwi_backend,
    master_of,
    mnemonic_for,
    node_chain,
    write_config,
    write_keystore,
)
from vpool.devnet.wallet import DevWallet
from vpool.v1 import coordinator_pb2, coordinator_pb2_grpc

CLIENTS = ("exchange-a", "custodian-b")
ADMIN = "ops"
SERIES_ID = 1
CALL_TIMEOUT = 30.0
BTC = 100_000_000
SIGNER_POLICY = {
    "max_request_amount": 10 * BTC,
    "max_round_amount": 500 * BTC,
    "max_daily_amount": 1000 * BTC,
}
START_BLOCKS = 500
"""Mined at the start: past segwit activation (block 432), and mature coins for the wallet."""
T = TypeVar("T")
WAIT_SECONDS = 180.0
"""How long a condition of the pool is awaited before giving up (tests run on loaded machines)."""


@dataclass(frozen=True)
class SignerSpec:
    """One cosigner: ``kind`` is "emulator" (software keystore) or "jade" (HWI over the Jade
    emulator)."""

    signer_id: str
    kind: str
    words: str


def default_signers(n: int = 3, jades: int = 1) -> tuple[SignerSpec, ...]:
    """``n`` signers, the last ``jades`` of them behind Jade-protocol emulators."""
    return tuple(
        SignerSpec(
            f"signer-{i}",
            "jade" if i > n - jades else "emulator",
            mnemonic_for(f"vpool devnet signer {i}"),
        )
        for i in range(1, n + 1)
    )


@dataclass
class DevPool:
    """Start with ``start()``, stop with ``stop()`` (or use it as a context manager)."""

    directory: Path
    m: int = 2
    signers: tuple[SignerSpec, ...] = field(default_factory=default_signers)
    database_url: str = ""
    pool_settings: dict[str, int] = field(
        default_factory=lambda: {"min_conf": 1, "maturation": 3, "dust_limit": 546}
    )
    deposit_settings: dict[str, int | str] = field(default_factory=dict)
    """The coordinator's [deposits] table (its defaults where empty)."""
    liveness_settings: dict[str, int | float | str] = field(default_factory=dict)
    """The coordinator's [liveness] table (its defaults where empty)."""
    rounds_settings: dict[str, int | float] = field(default_factory=dict)
    """More keys of the coordinator's [rounds] table (e.g. withdrawal_expiry_seconds)."""
    ladder_settings: dict[str, int] = field(default_factory=dict)
    """The coordinator's [ladder] table (the fee ladder; its defaults, no ladder, where empty)."""
    chain_settings: dict[str, int] = field(default_factory=dict)
    """More keys of the coordinator's [chain] table (e.g. fee_floor, fee_ceiling)."""
    signer_policy: dict[str, Any] = field(default_factory=lambda: dict(SIGNER_POLICY))
    """Every signer's [policy] table; ``write_config`` adds min_threshold (the series' m), the
    series' keys as cosigners and its checksum as the one approved series."""
    round_interval_seconds: float = 3600.0
    """The coordinator's rounds.interval_seconds: a withdrawal round at least this often."""
    sign_deadline_seconds: float = 20.0
    round_deadline_seconds: float = 60.0
    poll_seconds: float = 1.0
    """The coordinator's rounds.poll_seconds: pause between two SignRound calls to a signer
    that has not answered for good."""
    own_nodes: bool = False
    """Give every signer a bcoin node of its own, peered with the coordinator's (``signer_nodes``);
    by default they all ask the coordinator's node."""
    jade_approve_after: float = 0.0
    """Seconds the Jade emulators' user takes to approve a transaction (a person at a device)."""
    jade_backend: dict[str, Any] = field(default_factory=dict)
    """More keys of the Jade signers' [backend] table (e.g. max_reviewed_payments)."""
    metrics: bool = False
    """Serve /metrics on every daemon (loopback, free ports) and the coordinator's status page;
    ``coordinator_http`` is then the coordinator's base URL."""
    say: Callable[[str], None] = lambda _text: None

    node: BcoinNode = field(init=False)
    wallet: DevWallet = field(init=False)
    pki: Pki = field(init=False)
    series: Series = field(init=False)
    jades: dict[str, JadeEmulator] = field(init=False, default_factory=dict)
    daemons: dict[str, SignerDaemon] = field(init=False, default_factory=dict)
    signer_nodes: dict[str, BcoinNode] = field(init=False, default_factory=dict)
    coordinator: CoordinatorDaemon | None = field(init=False, default=None)
    funded: int = field(init=False, default=0)
    _next_receive: int = field(init=False, default=0)
    """Numbers the funding users."""
    _coordinator_config: Path = field(init=False)
    coordinator_http: str = field(init=False, default="")
    """``http://127.0.0.1:PORT`` of the coordinator's /metrics and status page (``metrics``)."""

    # ------------------------------------------------------------------------------ start/stop

    def start(self) -> DevPool:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.say("starting a bcoin regtest node and mining past segwit activation (block 432)")
        self.node = BcoinNode(listen=self.own_nodes).start()
        self.wallet = DevWallet()
        self._mine_start_blocks()
        self.pki = Pki(self.directory / "pki")
        self.series = self._make_series()
        self.say(
            f"series {SERIES_ID}: {self.m}-of-{len(self.signers)} "
            f"{self.series.descriptor(RECEIVE).to_string(REGTEST)[:48]}..."
        )
        for spec in self.signers:
            self._start_signer(spec)
        self._coordinator_config = self._write_coordinator_config()
        self.start_coordinator()
        self.admin().AddSeries(
            coordinator_pb2.AddSeriesRequest(
                series_id=SERIES_ID,
                receive_descriptor=self.series.descriptor(RECEIVE).to_string(REGTEST),
                change_descriptor=self.series.descriptor(CHANGE).to_string(REGTEST),
            ),
            timeout=CALL_TIMEOUT,
        )
        self.say(
            "series registered on every signer (each checked that it holds its key, meets its "
            "min_threshold and is in its operator's approved_series first)"
        )
        self.wait_until(self._quorum_recorded_ok, "the coordinator to see its signers")

    def _quorum_recorded_ok(self) -> bool | None:
        """True once a check found every signer healthy and recorded the quorum ok."""
        status = self.status()
        healthy = all(s.state == "healthy" for s in status.signers)
        return (healthy and status.quorum == "ok") or None

    def _mine_start_blocks(self) -> None:
        """Mine ``START_BLOCKS`` with the node's clock set back: a block's time is at least one
        second past the median of the 11 before it, so a burst of blocks at the real time would
        leave the chain's clock a minute and more ahead of the real one (and deposits are judged
        by the quorum at their block's time)."""
        self.node.rpc("setmocktime", int(time.time()) - START_BLOCKS // 4)
        self.wallet.mine(self.node, START_BLOCKS)
        self.node.rpc("setmocktime", int(time.time()))

    def _make_series(self) -> Series:
        path = bip48_account_path(REGTEST)
        keys = []
        for spec in self.signers:
            master = master_of(spec.words)
            keys.append(
                DescriptorKey(
                    KeyOrigin(master.fingerprint, path), master.derive_path(path).public()
                )
            )
        return Series(SERIES_ID, self.m, tuple(keys), SeriesState.ACTIVE)

    def _start_signer(self, spec: SignerSpec) -> None:
        base = self.directory / spec.signer_id
        base.mkdir(parents=True, exist_ok=True)
        if spec.kind == "jade":
            jade = JadeEmulator(
                base / "jade",
                spec.words,
                require_previous_tx=True,
                approve_after=self.jade_approve_after,
            )
            self.jades[spec.signer_id] = jade
            backend = {**hwi_backend(jade.port, jade.fingerprint), **self.jade_backend}
            what = f"HWI backend driving a Jade-protocol emulator on port {jade.port}"
        else:
            keystore = write_keystore(base / "keystore.json", master_of(spec.words))
            backend = emulator_backend(keystore)
            what = "software keystore (emulator backend)"
        node = self.node
        if self.own_nodes:
            node = BcoinNode(peers=[self.node.p2p_address]).start()
            self.signer_nodes[spec.signer_id] = node
            self.wait_until(self._nodes_synced, f"{spec.signer_id}'s node to sync")
            what += f", its own bcoin node peered with the coordinator's ({node.rpc_url})"
        config = write_config(
            base,
            self.pki,
            spec.signer_id,
            backend,
            {"deposit_confirmations": self._deposit_confirmations(), **self.signer_policy},
            series=[self.series],
            listen=f"127.0.0.1:{free_port()}",  # fixed, so that a restarted signer is found again
            chain=node_chain(base, node.rpc_url, *node.credentials),
        )
        args = ["--metrics-listen", "127.0.0.1:0"] if self.metrics else []
        self.daemons[spec.signer_id] = SignerDaemon(config, args)
        self.say(f"{spec.signer_id}: {what}, serving on {self.daemons[spec.signer_id].address}")

    def _write_coordinator_config(self) -> Path:
        if self.metrics:
            self.coordinator_http = f"http://127.0.0.1:{free_port()}"
        directory = self.directory / "coordinator"
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.pki.issue("coordinator", "coordinator")
        for client in CLIENTS:
            self.pki.issue("client", client)
        self.pki.issue("admin", ADMIN)
        user, password = self.node.credentials
        tip = self.node.chain.tip()[0]
        signers = "".join(
            f'\n[[signers]]\nid = "{sid}"\naddress = "{daemon.address}"\n'
            for sid, daemon in self.daemons.items()
        )
        pool = _toml_table(self.pool_settings)
        deposits = _toml_table(self.deposit_settings)
        liveness = _toml_table(self.liveness_settings)
        rounds = _toml_table(self.rounds_settings)
        ladder = _toml_table(self.ladder_settings)
        chain = _toml_table(self.chain_settings)
        path = directory / "coordinator.toml"
        metrics = f'metrics_listen = "{self.coordinator_http[7:]}"\n' if self.metrics else ""
        path.write_text(
            f"""network = "regtest"
data_dir = "data"
database_url = "{self.database_url}"

[server]
listen = "127.0.0.1:0"
{metrics}clients = [{", ".join(f'"{c}"' for c in CLIENTS)}]
admins = ["{ADMIN}"]

[server.tls]
cert = "{cert}"
key = "{key}"
ca = "{self.pki.ca_path}"

[chain]
rpc_url = "{self.node.rpc_url}"
rpc_user = "{user}"
rpc_password = "{password}"
poll_seconds = 0.2
scan_start_height = {tip}
{chain}
[pool]
{pool}
[ladder]
{ladder}
[deposits]
{deposits}
[liveness]
{liveness}
[rounds]
interval_seconds = {self.round_interval_seconds}
queue_threshold = 100000
sign_deadline_seconds = {self.sign_deadline_seconds}
round_deadline_seconds = {self.round_deadline_seconds}
poll_seconds = {self.poll_seconds}
{rounds}{signers}""",
            encoding="utf-8",
        )
        return path

    @property
    def coordinator_config(self) -> Path:
        """The coordinator's coordinator.toml (a second daemon on it is a standby)."""
        return self._coordinator_config

    def start_coordinator(self, env: dict[str, str] | None = None) -> CoordinatorDaemon:
        """(Re)start the coordinator daemon, with extra environment variables if given."""
        self.coordinator = CoordinatorDaemon(self._coordinator_config, env=env)
        self.say(f"coordinator serving on {self.coordinator.address}")
        return self.coordinator

    def stop_signer(self, signer_id: str) -> None:
        self.daemons[signer_id].stop()
        self.say(f"{signer_id} stopped")

    def restart_signer(self, signer_id: str) -> None:
        """Restart the signer; with the coordinator running, return once the coordinator has
        had an answer from the new process."""
        self.daemons[signer_id] = self.daemons[signer_id].restart()
        self.say(f"{signer_id} restarted on {self.daemons[signer_id].address}")
        if self.coordinator is not None and self.coordinator.proc.poll() is None:
            self.wait_for_signers([signer_id])

    def wait_for_signers(self, signer_ids: Sequence[str], timeout: float = WAIT_SECONDS) -> None:
        """Until the coordinator's last health check of each signer was answered after now."""
        since = int(time.time())

        def answered() -> bool | None:
            by_id = {s.signer_id: s for s in self.status().signers}
            return (
                all(
                    by_id[i].state == "healthy"
                    and not by_id[i].detail
                    and by_id[i].last_seen_unix >= since
                    for i in signer_ids
                )
                or None
            )

        self.wait_until(answered, f"the coordinator to hear from {', '.join(signer_ids)}", timeout)

    def stop(self) -> None:
        if self.coordinator is not None:
            self.coordinator.stop()
        for daemon in self.daemons.values():
            daemon.stop()
        for jade in self.jades.values():
            jade.stop()
        for node in self.signer_nodes.values():
            node.stop()
        if hasattr(self, "node"):
            self.node.stop()

    def __enter__(self) -> DevPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ gRPC

    def _channel(self, name: str) -> grpc.Channel:
        assert self.coordinator is not None, "the coordinator is not running"
        return grpc.secure_channel(self.coordinator.address, self.pki.credentials(name))

    def client(self, name: str = CLIENTS[0]) -> coordinator_pb2_grpc.CoordinatorServiceStub:
        return coordinator_pb2_grpc.CoordinatorServiceStub(self._channel(name))  # type: ignore[no-untyped-call]

    def admin(self) -> coordinator_pb2_grpc.AdminServiceStub:
        return coordinator_pb2_grpc.AdminServiceStub(self._channel(ADMIN))  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------------------ chain

    def _deposit_confirmations(self) -> int:
        """The coordinator's deposit confirmations (every signer requires as many)."""
        return int(self.deposit_settings.get("confirmations", DepositsConfig().confirmations))

    def fund(
        self,
        amounts: Sequence[int],
        addresses: int | None = None,
        per_transaction: int | None = None,
    ) -> str:
        """Pay ``amounts`` to fresh deposit addresses of the pool's operator (GetDepositAddress
        for user "funding": registered with every signer) and mine until the coordinator credits
        them (``deposits.confirmations`` blocks, then the signers' acknowledgements); the txid.

        ``addresses``: pay the amounts in turn to only this many fresh addresses (each address
        handed out registers with every signer: many outputs fund faster so).
        ``per_transaction``: at most this many outputs per funding transaction (deposits come
        in transactions of a few outputs each; the txid returned is the last one's)."""
        count = len(amounts) if addresses is None else max(1, min(addresses, len(amounts)))
        scripts = []
        for _ in range(count):
            address = self.deposit_address(f"funding-{self._next_receive}")
            self._next_receive += 1
            scripts.append(address_to_script_pubkey(address, REGTEST))
        outputs = [(scripts[i % count], amount) for i, amount in enumerate(amounts)]
        step = per_transaction or len(outputs)
        for first in range(0, len(outputs), step):
            txid = self.wallet.fund(self.node, outputs[first : first + step])
        self.mine(self._deposit_confirmations())
        self.funded += sum(amounts)
        self.wait_until(
            lambda: self.confirmed_balance() >= self.funded or None,
            "the coordinator to credit the funding",
            timeout=60.0 + len(amounts),
        )
        return txid

    def mine(self, blocks: int) -> list[str]:
        """Mine on the coordinator's node; wait until the signers' own nodes have the blocks."""
        hashes = self.wallet.mine(self.node, blocks)
        self.wait_until(self._nodes_synced, "the signers' nodes to sync")
        return hashes

    def _nodes_synced(self) -> bool | None:
        tip = self.node.chain.tip()
        return all(n.chain.tip() == tip for n in self.signer_nodes.values()) or None

    def status(self) -> coordinator_pb2.PoolStatus:
        status: coordinator_pb2.PoolStatus = self.client().GetPoolStatus(
            coordinator_pb2.GetPoolStatusRequest(), timeout=CALL_TIMEOUT
        )
        return status

    def confirmed_balance(self) -> int:
        return sum(s.confirmed_sat for s in self.status().series)

    def pool_balance(self) -> int:
        return sum(s.confirmed_sat + s.unconfirmed_sat for s in self.status().series)

    def transaction(self, txid: str) -> Transaction:
        """A transaction from the node (its mempool, or its chain: bcoin indexes them)."""
        raw = self.node.chain.raw_transaction(txid)
        if raw is None:
            raise KeyError(f"the node has no transaction {txid}")
        return Transaction.parse(raw)

    def received_by(self, script_pubkey: bytes, from_height: int) -> int:
        """Satoshis paid to ``script_pubkey`` in blocks from ``from_height`` to the tip, read
        from the node's blocks."""
        chain = self.node.chain
        tip = chain.tip()[0]
        total = 0
        for height in range(from_height, tip + 1):
            block = chain.block(chain.block_hash(height))
            for tx in block.transactions:
                total += sum(o.value for o in tx.outputs if o.script_pubkey == script_pubkey)
        return total

    # ------------------------------------------------------------------------------ deposits

    def deposit_address(self, user: str, refund_address: str = "", client: str = CLIENTS[0]) -> str:
        """A deposit address for a client's user (CoordinatorService.GetDepositAddress)."""
        request = coordinator_pb2.GetDepositAddressRequest(
            user_id=user, refund_address=refund_address
        )
        answer: coordinator_pb2.DepositAddress = self.client(client).GetDepositAddress(
            request, timeout=CALL_TIMEOUT
        )
        return answer.address

    def pay(self, payments: dict[str, int]) -> dict[str, OutPoint]:
        """Pay each address its amount from the wallet, in one transaction (not mined yet);
        address → the output paying it."""
        scripts = {address: address_to_script_pubkey(address, REGTEST) for address in payments}
        txid = self.wallet.fund(self.node, [(scripts[a], v) for a, v in payments.items()])
        outputs = [o.script_pubkey for o in self.transaction(txid).outputs]
        return {a: OutPoint.from_hex(txid, outputs.index(s)) for a, s in scripts.items()}

    def deposit(
        self, user: str, outpoint: OutPoint, client: str = CLIENTS[0]
    ) -> coordinator_pb2.Deposit | None:
        """The user's deposit at ``outpoint`` as the coordinator reports it (None: not seen)."""
        found = self.client(client).ListDeposits(
            coordinator_pb2.ListDepositsRequest(user_id=user), timeout=CALL_TIMEOUT
        )
        key = (outpoint.txid_hex, outpoint.vout)
        return next((d for d in found.deposits if (d.txid, d.vout) == key), None)

    def wait_for_deposit(
        self, user: str, outpoint: OutPoint, status: int, client: str = CLIENTS[0]
    ) -> coordinator_pb2.Deposit:
        """Wait until the user's deposit at ``outpoint`` has ``status`` (a DepositStatus)."""

        def check() -> coordinator_pb2.Deposit | None:
            found = self.deposit(user, outpoint, client)
            return found if found is not None and found.status == status else None

        name = coordinator_pb2.DepositStatus.Name(status)
        return self.wait_until(check, f"deposit {outpoint} to be {name}")

    # ------------------------------------------------------------------------------ helpers

    @staticmethod
    def wait_until(check: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS) -> T:
        """Poll ``check`` until it returns something other than None; ``timeout`` only says
        when to give up on a condition that never comes (a loaded machine is slow, not wrong)."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def run_round(self) -> coordinator_pb2.RunRoundNowResponse:
        """RunRoundNow; asked again while the scheduler's own tick is running a round (its
        refund round runs at every tick: "a round is already running")."""

        def run() -> coordinator_pb2.RunRoundNowResponse | None:
            try:
                response: Any = self.admin().RunRoundNow(
                    coordinator_pb2.RunRoundNowRequest(), timeout=CALL_TIMEOUT * 4
                )
            except grpc.RpcError as exc:
                busy = exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                if busy and "already running" in (exc.details() or ""):
                    return None
                raise
            return response  # type: ignore[no-any-return]

        return self.wait_until(run, "the scheduler to finish the round it runs")


def _toml_table(settings: dict[str, Any]) -> str:
    """``key = value`` lines (strings quoted) for a coordinator.toml table."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
