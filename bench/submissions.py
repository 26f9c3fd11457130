"""SubmitWithdrawal throughput and p99 latency: 32 concurrent clients against the real
coordinator daemon (``vpool-coordinator serve``) over mutual TLS on loopback, on SQLite and on
PostgreSQL.

The clients run in 4 processes of 8 threads, each thread with its own channel (its own TLS
connection), so that the clients' own Python does not share the daemon's interpreter. Every
request is new (a fresh request id); each call is answered after the withdrawal is committed.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import Row, row
from coordinator.store.schema import make_engine, migrate
from tests.coordinator_harness import CLIENTS, address, fund_pool, write_daemon_config
from tests.factories import make_series
from tests.store_fixtures import add_active_series, throwaway_postgres
from vpool.devnet.processes import CoordinatorDaemon, Pki, client_credentials

PROCESSES = 4
THREADS = 8
CLIENT_COUNT = PROCESSES * THREADS
BURSTS = 5
CLOSED_PORT_URL = "http://127.0.0.1:9"
"""The chain: nothing listens there (rounds cannot run; submissions do not need the chain)."""
SERIES = make_series(1, 2, [0, 1, 2])
DESTINATION = address("bench destination")


@dataclass(frozen=True)
class Burst:
    seconds: float
    latencies: tuple[float, ...]
    errors: int
    client_cpu: float
    """CPU seconds the client processes spent in the burst."""


def _client_process(
    target: str,
    ca: Path,
    creds: list[tuple[Path, Path]],
    per_thread: int,
    bursts: int,
    tag: str,
    barrier: multiprocessing.synchronize.Barrier,  # type: ignore[name-defined]
    results: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    import grpc

    from vpool.v1 import coordinator_pb2, coordinator_pb2_grpc

    stubs = []
    for cert, key in creds:
        channel = grpc.secure_channel(target, client_credentials(ca, cert, key))
        stubs.append(coordinator_pb2_grpc.CoordinatorServiceStub(channel))  # type: ignore[no-untyped-call]

    def submit(stub: object, rid: str) -> float:
        start = time.perf_counter()
        stub.SubmitWithdrawal(  # type: ignore[attr-defined]
            coordinator_pb2.SubmitWithdrawalRequest(
                request_id=rid, address=DESTINATION, amount_sat=100_000
            ),
            timeout=30,
        )
        return time.perf_counter() - start

    for t, stub in enumerate(stubs):  # warm: TLS handshakes done before the clock starts
        submit(stub, f"{tag}-warm-{t}")
    for b in range(bursts):
        latencies: list[list[float]] = [[] for _ in stubs]
        errors = [0]

        def work(
            t: int, b: int = b, latencies: list[list[float]] = latencies, errors: list[int] = errors
        ) -> None:
            for n in range(per_thread):
                try:
                    latencies[t].append(submit(stubs[t], f"{tag}-{b}-{t}-{n}"))
                except grpc.RpcError:
                    errors[0] += 1

        threads = [threading.Thread(target=work, args=(t,)) for t in range(len(stubs))]
        barrier.wait()
        start, cpu = time.time(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        end, cpu = time.time(), time.process_time() - cpu
        results.put((b, start, end, [x for lat in latencies for x in lat], errors[0], cpu))


def run_load(target: str, pki: Pki, requests_per_burst: int, bursts: int) -> list[Burst]:
    """``bursts`` bursts of ``requests_per_burst`` submissions by 32 concurrent clients."""
    per_thread = max(1, requests_per_burst // CLIENT_COUNT)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = []
    for p in range(PROCESSES):
        creds = [pki.issue("client", CLIENTS[(p * THREADS + t) % 2]) for t in range(THREADS)]
        tag = f"{uuid.uuid4().hex[:8]}-{p}"
        args = (target, pki.ca_path, creds, per_thread, bursts, tag, barrier, results)
        proc = ctx.Process(target=_client_process, args=args)
        proc.start()
        procs.append(proc)
    got: dict[int, list[tuple[float, float, list[float], int, float]]] = {}
    for _ in range(PROCESSES * bursts):
        b, start, end, lats, errors, cpu = results.get(timeout=600)
        got.setdefault(b, []).append((start, end, lats, errors, cpu))
    for proc in procs:
        proc.join(timeout=60)
    bursts_out = []
    for b in sorted(got):
        parts = got[b]
        seconds = max(p[1] for p in parts) - min(p[0] for p in parts)
        bursts_out.append(
            Burst(
                seconds,
                tuple(x for p in parts for x in p[2]),
                sum(p[3] for p in parts),
                sum(p[4] for p in parts),
            )
        )
    return bursts_out


def postgres_url() -> AbstractContextManager[str]:
    """A throwaway database on the machine's PostgreSQL."""
    return throwaway_postgres("vpool_bench")


@contextmanager
def sqlite_url(directory: Path) -> Iterator[str]:
    yield f"sqlite:///{directory / 'coordinator.db'}"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(store: str, requests_per_burst: int, bursts: int = BURSTS) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="vpool-bench-submit-") as tmp:
        directory = Path(tmp)
        pki = Pki(directory / "pki")
        urls = postgres_url() if store == "PostgreSQL" else sqlite_url(directory)
        with urls as url:
            engine = make_engine(url)
            migrate(engine)
            add_active_series(engine, SERIES)  # series come only through AddSeries now
            engine.dispose()
            config = write_daemon_config(directory / "coordinator", pki, url, CLOSED_PORT_URL)
            daemon = CoordinatorDaemon(config)
            fund_pool(make_engine(url), 10**15)  # admission takes every withdrawal of the load
            try:
                cpu_before = _cpu_seconds(daemon.proc.pid)
                result = run_load(daemon.address, pki, requests_per_burst, bursts)
                cpu = _cpu_seconds(daemon.proc.pid) - cpu_before
            finally:
                daemon.stop()
    rates = [len(b.latencies) / b.seconds for b in result]
    calls = sum(len(b.latencies) for b in result) + CLIENT_COUNT  # and the warm-up calls
    latencies = [x for b in result for x in b.latencies]
    errors = sum(b.errors for b in result)
    rate = statistics.median(rates)
    measured = sum(len(b.latencies) for b in result)
    daemon_ms = cpu / calls * 1000
    client_ms = sum(b.client_cpu for b in result) / measured * 1000
    cores = os.cpu_count() or 1
    ceiling = cores / (daemon_ms + client_ms) * 1000
    p99 = percentile(latencies, 0.99)
    p50 = percentile(latencies, 0.50)
    common = (
        f"{CLIENT_COUNT} clients ({PROCESSES} processes × {THREADS} threads, a TLS connection "
        f"each), {bursts} bursts of {len(result[0].latencies)} new withdrawals, {errors} errors"
    )
    return [
        row(
            f"SubmitWithdrawal throughput, 32 concurrent clients, {store}",
            rate,
            "/s",
            ">= 1000",
            f"vpool-coordinator serve over mutual TLS on loopback; {common}; median of "
            f"{len(rates)} bursts, spread {min(rates):.0f}–{max(rates):.0f}/s; CPU per call: "
            f"the daemon {daemon_ms:.2f} ms, the clients {client_ms:.2f} ms, so {cores} idle "
            f"cores could serve at most {ceiling:.0f}/s; the machine's load average at the "
            f"end: {os.getloadavg()[0]:.1f}",
        ),
        row(
            f"SubmitWithdrawal p99 latency, 32 concurrent clients, {store}",
            p99 * 1000,
            "ms",
            "<= 50",
            f"over all {len(latencies)} calls of the bursts above (p50 {p50 * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.0f} ms)",
        ),
    ]
