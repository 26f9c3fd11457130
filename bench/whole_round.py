"""A whole withdrawal round, end to end: a regtest bcoin node, signer daemons (software keystores,
each checking the round against the node), the coordinator daemon, mutual TLS on loopback.

The pool is funded with deposits (credited: the signers acknowledged them), the withdrawals are
submitted, then the round is timed from RunRoundNow until it is finalized (every transaction has
its m signatures, checked, and was broadcast). The coordinator runs with its default deadlines
and polling (``coordinator.config.RoundsConfig``): the row also says whether they were met.

Beside it, the essential crypto of the same round in this process: m libsecp256k1 signatures and
m verifications per input (coincurve), the least any implementation must compute.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import coincurve
from sqlalchemy import func, select

from bench.common import Row, row, timed
from coordinator.config import RoundsConfig
from coordinator.store.schema import fee_shares, make_engine
from pool.hashes import sha256
from pool.manifest import decode_manifest
from pool.withdrawal import build_round
from tests.coordinator_harness import address
from tests.store_fixtures import throwaway_postgres
from vpool.devnet.pool import CALL_TIMEOUT, DevPool, default_signers
from vpool.v1 import coordinator_pb2 as pb

SAT_PER_UTXO = 1_000_000
FUNDING_ADDRESSES = 20
OUTPUTS_PER_FUNDING = 20
"""Deposits come in funding transactions of this many outputs."""
"""The UTXOs pay this many deposit addresses in turn (each one handed out registers with every
signer, one by one)."""
FINALIZED = ("ROUND_STATUS_SIGNED", "ROUND_STATUS_BROADCAST", "ROUND_STATUS_COMPLETED")


@dataclass(frozen=True)
class Size:
    withdrawals: int
    utxos: int
    signers: int
    m: int

    def describe(self) -> str:
        return (
            f"{self.withdrawals:,} withdrawals, {self.utxos} UTXOs, {self.signers} signer "
            f"processes, {self.m}-of-{self.signers}"
        )


FULL = Size(1_000, 600, 15, 11)
QUICK = Size(100, 60, 5, 4)


@dataclass(frozen=True)
class RoundRun:
    seconds: float
    """From RunRoundNow until the coordinator stored the last transaction finalized."""
    returned: float
    """From RunRoundNow until it returned (the node took the transactions too)."""
    inputs: int
    transactions: int
    status: str
    setup_seconds: float
    store: str


def essential_crypto_seconds(inputs: int, m: int) -> float:
    """m signatures and m verifications per input with libsecp256k1 (coincurve), keys made
    beforehand."""
    keys = [coincurve.PrivateKey(sha256(f"bench key {i}".encode())) for i in range(m)]
    publics = [coincurve.PublicKey(k.public_key.format()) for k in keys]
    digest = sha256(b"bench digest")

    def run() -> None:
        for _ in range(inputs):
            for key, public in zip(keys, publics, strict=True):
                public.verify(key.sign(digest, hasher=None), digest, hasher=None)

    return timed(run)


def run_round(size: Size, directory: Path) -> RoundRun:
    """The small round on SQLite; the full one on a throwaway PostgreSQL database (on SQLite,
    crediting hundreds of deposits acknowledged by 15 signers held the write lock long enough
    for a status read to time out: see the README's benchmark notes)."""
    if size.utxos <= QUICK.utxos:
        return _run_round(size, directory, f"sqlite:///{directory / 'coordinator.db'}")
    with throwaway_postgres("vpool_bench_round") as url:
        return _run_round(size, directory, url)


def _run_round(size: Size, directory: Path, url: str) -> RoundRun:
    defaults = RoundsConfig()
    began = time.perf_counter()
    pool = DevPool(
        directory,
        database_url=url,
        m=size.m,
        signers=default_signers(size.signers, jades=0),
        sign_deadline_seconds=defaults.sign_deadline_seconds,
        round_deadline_seconds=defaults.round_deadline_seconds,
        poll_seconds=defaults.poll_seconds,
    )
    with pool:
        pool.fund(
            [SAT_PER_UTXO] * size.utxos,
            addresses=FUNDING_ADDRESSES,
            per_transaction=OUTPUTS_PER_FUNDING,
        )
        # Spend about nine tenths of the funds: the round needs nearly every UTXO.
        amount = size.utxos * SAT_PER_UTXO * 9 // 10 // size.withdrawals
        client = pool.client()
        for n in range(size.withdrawals):
            client.SubmitWithdrawal(
                pb.SubmitWithdrawalRequest(
                    request_id=f"w{n}", address=address(f"bench round {n}"), amount_sat=amount
                ),
                timeout=CALL_TIMEOUT,
            )
        setup = time.perf_counter() - began
        start, start_unix = time.perf_counter(), time.time()
        response = pool.run_round()
        returned = time.perf_counter() - start
        if not response.round_id:
            raise RuntimeError(f"no round ran: {response.detail}")
        found = pool.admin().GetRound(
            pb.GetRoundRequest(round_id=response.round_id), timeout=CALL_TIMEOUT
        )
        plan = build_round(decode_manifest(found.manifest))
        inputs = sum(len(t.psbt.tx.inputs) for t in plan.transactions)
        status = pb.RoundStatus.Name(found.status)
        txids = [t.txid for t in found.transactions]
        with make_engine(url).connect() as conn:
            finalized_at = conn.execute(
                select(func.max(fee_shares.c.at)).where(fee_shares.c.txid.in_(txids))
            ).scalar()
    seconds = returned if finalized_at is None else float(finalized_at) - start_unix
    store = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    return RoundRun(seconds, returned, inputs, len(plan.transactions), status, setup, store)


def measure(size: Size, repetitions: int) -> list[Row]:
    try:
        with tempfile.TemporaryDirectory(prefix="vpool-bench-round-") as tmp:
            run = run_round(size, Path(tmp))
    except Exception as e:  # one failed row, not a failed suite
        failed = f"the round did not run: {type(e).__name__}: {e}"
        return [
            Row(f"a whole round: {size.describe()}, mTLS on loopback, to finalized",
                0.0, "s", "<= 3", False, failed),
        ]  # fmt: skip
    crypto = [essential_crypto_seconds(run.inputs, size.m) for _ in range(repetitions)]
    essential = statistics.median(crypto)
    defaults = RoundsConfig()
    finalized = run.status in FINALIZED
    common = (
        f"one round of {run.transactions} transactions spending {run.inputs} inputs, from "
        f"RunRoundNow until the coordinator stored every transaction finalized (RunRoundNow "
        f"returned after {run.returned:.2f} s, the round "
        f"{run.status.removeprefix('ROUND_STATUS_').lower()}: the node took them); default "
        f"deadlines (sign {defaults.sign_deadline_seconds:g} s per call, round "
        f"{defaults.round_deadline_seconds:g} s, asked again after {defaults.poll_seconds:g} s)"
        f"{'' if finalized else ': NOT finalized'}; {run.store}; set-up (node, daemons, funding, "
        f"submissions) {run.setup_seconds:.0f} s, not timed; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    rows = [
        row(
            f"a whole round: {size.describe()}, mTLS on loopback, to finalized",
            run.seconds,
            "s",
            "<= 3",
            common,
        ),
        row(
            f"the same round ÷ its essential crypto ({size.m} signatures and {size.m} "
            "verifications per input)",
            run.seconds / essential,
            "×",
            "<= 8",
            f"round {run.seconds:.2f} s; essential crypto {essential * 1000:.0f} ms "
            f"(coincurve in process, {run.inputs} × {size.m} sign + verify, median of "
            f"{len(crypto)}, spread {min(crypto) * 1000:.0f}–{max(crypto) * 1000:.0f} ms)",
        ),
    ]
    return rows if finalized else [replace(r, meets_goal=False) for r in rows]
