#!/usr/bin/env python3
"""Measure how the rebuild of a round grows with its number of requests.

For each size N, four manifests (fixed seeds, so every run measures the same ones):

- ``funded``: N requests of 10,000..1,000,000 sat, and enough 1 BTC UTXOs to pay them all;
- ``short``: N requests of 10,000..1,000,000 sat, and UTXOs worth half of them (deferral: the
  shortcut of rule D1 defers most of what must be deferred);
- ``fees``: N requests of 546..1,092 sat at 100 sat/vB, and UTXOs worth as much as the requests
  ask, so that only the fees make funds short (before the lower bound of rule D1's packs, each
  deferral needed a pack of its own);
- ``waste``: the worst case of rule D1 (see ``waste``): quadratic, reported, not checked;

and prints the best of a few runs of ``pool.withdrawal.build_round`` and of
``signer.policy.evaluate_round`` (decoding, rebuild, byte comparison, limits: the honest PSBTs,
so the round is approved unless a limit refuses it), in seconds.

The growth check compares each time with the time at half the size (sizes N and 2N both
measured): an O(N log N) rebuild is a little above 2; a quadratic one near 4. With ``--check``,
the script exits 1 if a ratio is above ``--max-ratio`` (default 3.5); timings need a quiet
machine: on a busy one, raise ``--repeat``.

Usage: python scripts/rebuild_cost.py [--check] [--max-ratio R] [--budget S] [--repeat K]
                                      [--only SCENARIO]... [N ...]
       (default sizes: 500 1000 1500 2000 3000 5000 10000)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pool.manifest import Manifest, Utxo, WithdrawalRequest, encode_manifest
from pool.networks import REGTEST
from pool.withdrawal import build_round
from signer.policy import Approval, PolicyConfig, evaluate_round
from tests.factories import BTC, make_series, manifest, master_key, p2wpkh, request, utxo
from tests.signer_harness import MemoryHistory

SERIES = make_series(1, 2, (0, 1, 2))
OURS = master_key(0).fingerprint
REPETITIONS = 3
"""Runs of each measurement; the best counts (``--repeat``)."""
CONFIG = PolicyConfig(
    max_request_amount=21_000_000 * BTC,
    max_round_amount=21_000_000 * BTC,
    max_daily_amount=21_000_000 * BTC,
    max_fee=21_000_000 * BTC,
    max_psbts=10_000,
    max_requests=10**9,
    max_inputs=10**9,
)
"""Limits and caps out of the way: the measurement is of the rebuild, not of a refusal."""


def _requests(n: int, low: int, high: int, seed: int) -> list[WithdrawalRequest]:
    rng = random.Random(seed)
    return [
        request(f"client{k % 50}", f"r{k}", rng.randint(low, high), script=p2wpkh) for k in range(n)
    ]


def _utxos(total: int, value: int) -> list[Utxo]:
    count = max(1, -(-total // value))
    return [utxo(i, value, 100 + i % 800, index=i) for i in range(count)]


def funded(n: int) -> Manifest:
    reqs = _requests(n, 10_000, 1_000_000, seed=n)
    return manifest([SERIES], _utxos(sum(r.amount for r in reqs) + BTC, BTC), reqs)


def short(n: int) -> Manifest:
    reqs = _requests(n, 10_000, 1_000_000, seed=n)
    return manifest([SERIES], _utxos(sum(r.amount for r in reqs) // 2, BTC // 10), reqs)


def fees(n: int) -> Manifest:
    reqs = _requests(n, 546, 1_092, seed=n)
    return manifest([SERIES], _utxos(sum(r.amount for r in reqs), 200_000), reqs, fee_rate=100_000)


def waste(n: int) -> Manifest:
    """The worst case of rule D1: small transactions (``max_weight`` 4,000) that each leave much
    change, so that the lower bound of the deferral is far from the truth, and the largest
    requests first in processing order, so that every pack starts from the first request."""
    reqs = sorted(
        (WithdrawalRequest(f"client{k % 50}", f"r{k}", p2wpkh(f"w{k}"), 1) for k in range(n)),
        key=lambda r: r.key,
    )
    amounts = [1_092 - (546 * i) // n for i in range(n)]
    reqs = [
        WithdrawalRequest(r.client_id, r.request_id, r.script_pubkey, a)
        for r, a in zip(reqs, amounts, strict=True)
    ]
    return manifest([SERIES], _utxos(sum(amounts), 60_000), reqs, fee_rate=10_000, max_weight=4_000)


SCENARIOS: dict[str, Callable[[int], Manifest]] = {
    "funded": funded,
    "short": short,
    "fees": fees,
    "waste": waste,
}
WORST_CASES = {"waste"}
"""Quadratic by design of rule D1 (one pack per deferral); not part of the growth check."""


def best_of(run: Callable[[], object], repetitions: int) -> float:
    best = float("inf")
    for _ in range(repetitions):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(m: Manifest, budget: float, repetitions: int) -> tuple[float, float, str]:
    """(build_round seconds, evaluate_round seconds, verdict)."""
    start = time.perf_counter()
    plan = build_round(m)
    once = time.perf_counter() - start
    if once > budget:
        return once, float("nan"), "skipped (over budget)"
    build = min(once, best_of(lambda: build_round(m), repetitions - 1))
    data = encode_manifest(m)
    psbts = [t.psbt.serialize() for t in plan.transactions]

    def evaluate() -> object:
        return evaluate_round(CONFIG, OURS, REGTEST, {1: SERIES}, data, psbts, MemoryHistory(), 0.0)

    verdict = evaluate()
    deferred = sum(1 for o in plan.requests if not o.outputs)
    text = "approved" if isinstance(verdict, Approval) else "refused"
    return (
        build,
        best_of(evaluate, repetitions),
        f"{text}, {len(plan.transactions)} tx, {deferred} deferred",
    )


def _projected(times: dict[int, tuple[float, float]], n: int) -> float:
    """The build time at n requests if it grew quadratically from the largest size measured."""
    last = max(times)
    return times[last][0] * (n / last) ** 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "sizes", nargs="*", type=int, default=[500, 1000, 1500, 2000, 3000, 5000, 10000]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a growth ratio is too high")
    parser.add_argument("--max-ratio", type=float, default=3.5)
    parser.add_argument(
        "--budget", type=float, default=30.0, help="skip sizes projected slower than this"
    )
    parser.add_argument("--repeat", type=int, default=REPETITIONS, help="runs, the best counts")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="scenarios")
    args = parser.parse_args()
    failed = False
    for name, make in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        times: dict[int, tuple[float, float]] = {}
        for n in sorted(args.sizes):
            if times and _projected(times, n) > args.budget:
                print(f"{name:7} {n:6} requests: skipped (projected over the budget)")
                continue
            build, evaluate, verdict = measure(make(n), args.budget, args.repeat)
            times[n] = (build, evaluate)
            line = f"{name:7} {n:6} requests: build_round {build:8.3f} s  evaluate_round "
            line += f"{evaluate:8.3f} s  ({verdict})"
            if n // 2 in times and n % 2 == 0:
                half_build, half_eval = times[n // 2]
                ratios = (build / half_build, evaluate / half_eval)
                line += f"  x2 size: {ratios[0]:.2f} / {ratios[1]:.2f}"
                if name not in WORST_CASES:
                    failed = failed or max(ratios) > args.max_ratio
            print(line, flush=True)
    if args.check and failed:
        print(f"growth ratio above {args.max_ratio}: the rebuild is not near-linear")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
