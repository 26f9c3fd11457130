"""Crash points: the coordinator killed (SIGKILL) at each named step of coordinator.crash_points,
restarted, run to quiescence, then checked against the regtest node.

One whole pool for the module (a bcoin node, three signer daemons, one behind the Jade emulator,
the coordinator daemon on SQLite). Each scenario (point × seed) runs a seeded workload through a
coordinator started with ``VPOOL_CRASH_AT`` set: withdrawals from both clients, deposits to be
credited and one small enough to be refunded, a round, the mempool emptied under a broadcast
transaction (so the watcher sends it again), blocks to maturation. The process must die at the
point (a scenario that never reaches it fails). The coordinator is restarted without the hook,
the clients submit again what they had not heard back about (their idempotent retry), and the
pool runs until every withdrawal is completed and every deposit credited or refunded. Then,
over everything the module did so far, against the node's blocks:

- every accepted withdrawal is paid exactly once, with its exact amount;
- no outpoint is spent by two transactions the coordinator signed;
- every deposit is credited or refunded, exactly once (a refund pays its refund address once;
  a credited deposit's refund address is paid nothing);
- the store's unspent outputs and balance equal the chain's (outputs paying the series'
  scripts, unspent at the tip).

``make test`` runs one point with one seed; ``make reliability`` every point with 3 seeds.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import grpc
import pytest
from sqlalchemy import Engine, select

from coordinator.config import load_config
from coordinator.crash_points import CRASH_ENV, POINTS
from coordinator.store import schema
from pool.address import address_to_script_pubkey, encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE
from pool.tx import Transaction
from tests.reliability.conftest import Rows
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.v1 import coordinator_pb2 as pb

MATURATION = 2
REFUND_POINTS = ("refund:after_round_persisted", "refund:after_broadcast")
ALL_POINTS = (*POINTS, *REFUND_POINTS)
SEEDS = (1, 2, 3)
SMALL_DEPOSIT = 5_000
"""Under deposits.min_deposit (10,000) and over refund_threshold (2,000): refunded."""
DONE_DEPOSIT = (pb.DEPOSIT_STATUS_CREDITED, pb.DEPOSIT_STATUS_REFUNDED)
SCRIPTS_PER_BRANCH = 400


def address_for(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


@dataclass
class Ledger:
    """What the module's scenarios did, checked as a whole after each one."""

    start_height: int
    """The coordinator's scan start: the pool's whole history is after it."""
    withdrawals: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    """(client, request id) → (destination, amount), once accepted."""
    deposits: dict[tuple[str, int], tuple[str, str, bool]] = field(default_factory=dict)
    """outpoint → (user, refund address, expected refunded)."""
    blocks: dict[str, list[Transaction]] = field(default_factory=dict)
    scenarios: int = 0
    """Scenarios run: numbers each one's tags (request ids, users, addresses)."""
    outcomes: dict[str, list[str]] = field(default_factory=dict)
    """point → one line per seed: 'ok' or the violations."""


@pytest.fixture(scope="module")
def crash_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    pool = DevPool(
        tmp_path_factory.mktemp("crash"),
        round_deadline_seconds=20,
        sign_deadline_seconds=10,
        poll_seconds=0.5,
        deposit_settings={"confirmations": 1},
    )
    pool.pool_settings["maturation"] = MATURATION
    with pool:
        pool.fund([5 * BTC] * 12)
        yield pool


@pytest.fixture(scope="module")
def ledger(crash_pool: DevPool) -> Ledger:
    config = load_config(crash_pool.directory / "coordinator" / "coordinator.toml")
    return Ledger(config.chain.scan_start_height)


def alive(pool: DevPool) -> bool:
    return pool.coordinator is not None and pool.coordinator.proc.poll() is None


def _attempt(pool: DevPool, action: Callable[[], object]) -> bool:
    """Run a call to the coordinator; False when it failed because the process died."""
    try:
        action()
    except (grpc.RpcError, TimeoutError):
        if alive(pool):
            time.sleep(0.5)  # the process may be dying: its answer was cut
            if alive(pool):
                raise
        return False
    return alive(pool)


def _until_dead_or(pool: DevPool, check: Callable[[], bool], what: str) -> bool:
    """Wait until ``check`` holds (True) or the coordinator died (False)."""

    def done() -> bool | None:
        if not alive(pool):
            return False
        try:
            return True if check() else None
        except grpc.RpcError:
            return None if alive(pool) else False

    return pool.wait_until(done, what, timeout=90)


def _status(pool: DevPool, client: str, request_id: str) -> int:
    found = pool.client(client).GetWithdrawal(
        pb.GetWithdrawalRequest(request_id=request_id), timeout=CALL_TIMEOUT
    )
    return int(found.status)


def run_scenario(pool: DevPool, ledger: Ledger, point: str, seed: int) -> list[str]:
    """One crash at ``point``: the violations found afterwards (empty when none)."""
    rng = random.Random(f"{point}/{seed}")
    ledger.scenarios += 1
    tag = f"s{ledger.scenarios}-{point}-{seed}"
    wanted = {
        (CLIENTS[rng.randrange(2)], f"{tag}-w{i}"): (
            address_for(f"{pool.directory}/{tag}/{i}"),
            rng.randrange(1_000_000, 10_000_000),
        )
        for i in range(rng.randint(2, 5))
    }
    big = [rng.randrange(20_000, 3_000_000) for _ in range(rng.randint(1, 2))]
    deposits = {f"{tag}-d{i}": (v, False) for i, v in enumerate(big)}
    deposits[f"{tag}-small"] = (SMALL_DEPOSIT, True)
    refund_to = {user: address_for(f"{pool.directory}/{tag}/refund/{user}") for user in deposits}
    addresses = {
        user: pool.deposit_address(user, refund_to[user]) for user in deposits
    }  # before the crash: GetDepositAddress registers with every signer

    assert pool.coordinator is not None
    pool.coordinator.stop()
    with contextlib.suppress(RuntimeError):  # it died before it served: a start-up point
        pool.start_coordinator(env={CRASH_ENV: point})
    _drive(pool, wanted, deposits, addresses, refund_to, ledger)
    crashed = not alive(pool)
    if alive(pool):
        assert pool.coordinator is not None
        pool.coordinator.stop()
    pool.start_coordinator()
    _recover(pool, wanted, ledger)
    violations = [] if crashed else [f"never reached {point}"]
    return violations + check(pool, ledger)


def _drive(
    pool: DevPool,
    wanted: dict[tuple[str, str], tuple[str, int]],
    deposits: dict[str, tuple[int, bool]],
    addresses: dict[str, str],
    refund_to: dict[str, str],
    ledger: Ledger,
) -> None:
    """The workload, step by step, until the coordinator dies (or it all ran)."""
    if not alive(pool):
        return
    for (client, request_id), (address, amount) in wanted.items():
        request = pb.SubmitWithdrawalRequest(
            request_id=request_id, address=address, amount_sat=amount
        )
        stub = pool.client(client)
        if not _attempt(pool, partial(stub.SubmitWithdrawal, request, timeout=CALL_TIMEOUT)):
            return
    paid = pool.pay({addresses[user]: value for user, (value, _) in deposits.items()})
    for user, (_, refunded) in deposits.items():
        outpoint = paid[addresses[user]]
        ledger.deposits[(outpoint.txid_hex, outpoint.vout)] = (user, refund_to[user], refunded)
    pool.mine(1)
    ready = _until_dead_or(
        pool,
        lambda: all(
            (d := pool.deposit(u, paid[addresses[u]])) is not None and d.status in DONE_DEPOSIT
            for u, (_, r) in deposits.items()
            if not r
        ),
        "the deposits to be credited",
    )
    if not ready or not _attempt(pool, pool.run_round):
        return
    if not _until_dead_or(
        pool,
        lambda: all(_status(pool, c, r) >= pb.WITHDRAWAL_STATUS_BROADCAST for c, r in wanted),
        "the round to be broadcast",
    ):
        return
    pool.node.drop_mempool()  # the watcher finds the round's transaction gone and sends it again
    pool.mine(1)
    if not _until_dead_or(
        pool,
        lambda: bool(pool.node.rpc("getrawmempool")) or _all_paid_out(pool, wanted),
        "the watcher to send the round again",
    ):
        return
    for _ in range(MATURATION + 1):
        pool.mine(1)
        if not _until_dead_or(pool, partial(_followed, pool), "the coordinator to follow"):
            return
        _until_dead_or(pool, lambda: _refunds_moved(pool, ledger), "the refund round")


def _followed(pool: DevPool) -> bool:
    return pool.status().tip_height >= pool.node.chain.tip()[0]


def _all_paid_out(pool: DevPool, wanted: dict[tuple[str, str], tuple[str, int]]) -> bool:
    return all(_status(pool, c, r) >= pb.WITHDRAWAL_STATUS_CONFIRMED for c, r in wanted)


def _refunds_moved(pool: DevPool, ledger: Ledger) -> bool:
    """No refund waits for its round (pending) any more."""
    for (txid, vout), (user, _, refunded) in ledger.deposits.items():
        if not refunded:
            continue
        found = _deposit(pool, user, txid, vout)
        if found is None or found.status == pb.DEPOSIT_STATUS_REFUND_PENDING:
            return False
    return True


def _deposit(pool: DevPool, user: str, txid: str, vout: int) -> pb.Deposit | None:
    found = pool.client().ListDeposits(pb.ListDepositsRequest(user_id=user), timeout=CALL_TIMEOUT)
    return next((d for d in found.deposits if (d.txid, d.vout) == (txid, vout)), None)


def _recover(pool: DevPool, wanted: dict[tuple[str, str], tuple[str, int]], ledger: Ledger) -> None:
    """The restarted coordinator: the clients submit again, rounds and blocks until quiet."""
    for (client, request_id), (address, amount) in wanted.items():
        request = pb.SubmitWithdrawalRequest(
            request_id=request_id, address=address, amount_sat=amount
        )
        pool.client(client).SubmitWithdrawal(request, timeout=CALL_TIMEOUT)
        ledger.withdrawals[(client, request_id)] = (address, amount)

    def quiet() -> bool | None:
        statuses = [_status(pool, c, r) for c, r in ledger.withdrawals]
        if any(s == pb.WITHDRAWAL_STATUS_PENDING for s in statuses):
            pool.run_round()
        deposits = [_deposit(pool, u, t, v) for (t, v), (u, _, _) in ledger.deposits.items()]
        done = all(s == pb.WITHDRAWAL_STATUS_COMPLETED for s in statuses) and all(
            d is not None and d.status in DONE_DEPOSIT for d in deposits
        )
        if done and not pool.node.rpc("getrawmempool"):
            return True
        pool.mine(1)
        tip = pool.node.chain.tip()[0]
        pool.wait_until(lambda: pool.status().tip_height >= tip or None, "the coordinator")
        return None

    pool.wait_until(quiet, "the pool to settle after the restart", timeout=240)


# --------------------------------------------------------------------------- the checks


def check(pool: DevPool, ledger: Ledger) -> list[str]:
    """Every invariant of the module docstring over what the module did; the violations."""
    tip = pool.node.chain.tip()[0]
    blocks = [_block(pool, ledger, h) for h in range(ledger.start_height, tip + 1)]
    outputs: dict[bytes, list[int]] = {}
    for block in blocks:
        for tx in block:
            for out in tx.outputs:
                outputs.setdefault(out.script_pubkey, []).append(out.value)
    found = []
    for (client, request_id), (address, amount) in ledger.withdrawals.items():
        paid = outputs.get(address_to_script_pubkey(address, REGTEST), [])
        status = _status(pool, client, request_id)
        if paid != [amount] or status != pb.WITHDRAWAL_STATUS_COMPLETED:
            found.append(f"withdrawal {request_id}: paid {paid} for {amount}, status {status}")
    for (txid, vout), (user, refund_address, refunded) in ledger.deposits.items():
        deposit = _deposit(pool, user, txid, vout)
        back = outputs.get(address_to_script_pubkey(refund_address, REGTEST), [])
        status = deposit.status if deposit is not None else None
        expected = pb.DEPOSIT_STATUS_REFUNDED if refunded else pb.DEPOSIT_STATUS_CREDITED
        if status != expected or len(back) != (1 if refunded else 0):
            found.append(f"deposit {txid}:{vout}: status {status}, refund outputs {back}")
    found += _double_spends(pool)
    found += _balances(pool, blocks)
    return found


def _block(pool: DevPool, ledger: Ledger, height: int) -> list[Transaction]:
    chain = pool.node.chain
    block_hash = chain.block_hash(height)
    if block_hash not in ledger.blocks:
        ledger.blocks[block_hash] = list(chain.block(block_hash).transactions)
    return ledger.blocks[block_hash]


def _store_engine(pool: DevPool) -> Engine:
    config = load_config(pool.directory / "coordinator" / "coordinator.toml")
    return schema.make_engine(config.database_url)


def _double_spends(pool: DevPool) -> list[str]:
    """Outpoints spent by two different signed transactions of the store."""
    engine = _store_engine(pool)
    try:
        with engine.connect() as conn:
            table = schema.round_transactions
            finals = conn.execute(
                select(table.c.txid, table.c.final_tx).where(table.c.final_tx.is_not(None))
            ).all()
    finally:
        engine.dispose()
    spent: dict[tuple[str, int], str] = {}
    found = []
    for txid, raw in finals:
        for txin in Transaction.parse(raw).inputs:
            key = (txin.prevout.txid_hex, txin.prevout.vout)
            if key in spent and spent[key] != txid:
                found.append(f"input {key[0]}:{key[1]} signed in {spent[key]} and {txid}")
            spent[key] = txid
    return found


def _balances(pool: DevPool, blocks: list[list[Transaction]]) -> list[str]:
    """The store's unspent outputs and balance against the chain's, at the tip."""
    scripts = {
        pool.series.derive(branch, i).script_pubkey
        for branch in (RECEIVE, CHANGE)
        for i in range(SCRIPTS_PER_BRANCH)
    }
    unspent: dict[tuple[str, int], int] = {}
    for block in blocks:
        for tx in block:
            for txin in tx.inputs:
                unspent.pop((txin.prevout.txid_hex, txin.prevout.vout), None)
            for vout, out in enumerate(tx.outputs):
                if out.script_pubkey in scripts:
                    unspent[(tx.txid_hex, vout)] = out.value
    engine = _store_engine(pool)
    try:
        with engine.connect() as conn:
            stored = {
                (t, v): value
                for t, v, value in conn.execute(
                    select(schema.utxos.c.txid, schema.utxos.c.vout, schema.utxos.c.value).where(
                        schema.utxos.c.spent_txid.is_(None)
                    )
                ).all()
            }
    finally:
        engine.dispose()
    found = []
    if stored != unspent:
        only_store = sorted(set(stored) - set(unspent))[:3]
        only_chain = sorted(set(unspent) - set(stored))[:3]
        found.append(f"unspent outputs differ: store only {only_store}, chain only {only_chain}")
    if pool.pool_balance() != sum(unspent.values()):
        found.append(f"balance {pool.pool_balance()} != chain {sum(unspent.values())}")
    return found


# --------------------------------------------------------------------------- the tests


def test_a_crash_after_a_round_is_persisted_loses_nothing_and_pays_once(
    crash_pool: DevPool, ledger: Ledger
) -> None:
    """The fast subset (make test): one point, one seed."""
    assert run_scenario(crash_pool, ledger, "after_round_persisted", 1) == []


@pytest.mark.reliability_full
@pytest.mark.parametrize("point", ALL_POINTS)
def test_a_crash_at_each_point_loses_nothing_and_pays_once(
    crash_pool: DevPool, ledger: Ledger, rows: Rows, point: str
) -> None:
    outcomes = ledger.outcomes.setdefault(point, [])
    for seed in SEEDS:
        violations = run_scenario(crash_pool, ledger, point, seed)
        outcomes.append("; ".join(violations) or "ok")
    _report(ledger, rows)
    assert outcomes == ["ok"] * len(SEEDS), outcomes


def _report(ledger: Ledger, rows: Rows) -> None:
    runs = sum(len(o) for o in ledger.outcomes.values())
    bad = {p: o for p, o in ledger.outcomes.items() if any(x != "ok" for x in o)}
    violations = sum(x != "ok" for o in bad.values() for x in o)
    rows.add(
        "crash points × seeds run",
        runs,
        "crashes",
        f">= {len(ALL_POINTS) * len(SEEDS)}",
        f"{len(ledger.outcomes)} points ({', '.join(ledger.outcomes)}) × seeds "
        f"{', '.join(map(str, SEEDS))}; each a SIGKILL at the point, a restart, the pool run to "
        f"quiescence on the regtest node; {len(ledger.withdrawals)} withdrawals and "
        f"{len(ledger.deposits)} deposits in all",
    )
    rows.add(
        "violations after a crash",
        violations,
        "scenarios",
        "<= 0",
        "withdrawal paid other than exactly once, input signed twice, deposit not credited or "
        "refunded exactly once, store's unspent outputs or balance unlike the chain's"
        + (f": {bad}" if bad else ""),
    )
