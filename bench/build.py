"""The round build: manifest + plan over N pending withdrawals, its growth, and its memory.

Also the signer's side of it: ``signer.policy.evaluate_round`` rebuilding the same round. Both
call into ``pool.withdrawal.build_round`` as the coordinator and the signer do.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bench.common import Comparison, Row, compare, row, timed
from pool.manifest import Manifest, Utxo, decode_manifest, encode_manifest
from pool.networks import REGTEST
from pool.series import RECEIVE
from pool.tx import OutPoint
from pool.withdrawal import build_round
from signer.policy import PolicyConfig, evaluate_round, series_checksum
from tests.factories import BTC, make_series, manifest, master_key, request
from tests.signer_harness import MemoryHistory

SERIES = make_series(1, 2, [0, 1, 2])
REQUEST_AMOUNT = 1_000_000
"""0.01 BTC per withdrawal."""
REPO = Path(__file__).resolve().parent.parent


def pending_manifest(pending: int, funded: bool = True) -> Manifest:
    """``pending`` withdrawals of 0.01 BTC; UTXOs of 1 BTC enough for all of them, or (not
    ``funded``) for a tenth of them, so that the rest are deferred."""
    covered = pending if funded else pending // 10
    count = covered * REQUEST_AMOUNT * 11 // (10 * BTC) + 2  # 10% more than paid
    utxos = [
        Utxo(OutPoint(n.to_bytes(32, "big"), 0), BTC, SERIES.id, RECEIVE, n, 900)
        for n in range(count)
    ]
    return manifest(
        [SERIES],
        utxos,
        [request(f"client{n % 50}", f"w{n}", REQUEST_AMOUNT) for n in range(pending)],
        max_weight=400_000,
    )


def _manifest_and_plan(m: Manifest) -> float:
    """What the coordinator computes for a round: the manifest (normalized and validated), its
    encoding, and the plan."""

    def run() -> None:
        built = replace(m)  # __post_init__: canonical order and validation, as for a new one
        encode_manifest(built)
        build_round(built)

    return timed(run)


def manifest_and_plan(pending: int, repetitions: int) -> Row:
    m = pending_manifest(pending)
    times = [_manifest_and_plan(m) for _ in range(repetitions)]
    plan = build_round(m)
    inputs = sum(len(t.inputs) for t in plan.transactions)
    value = sorted(times)[len(times) // 2]
    return row(
        f"manifest + plan with {pending:,} pending",
        value,
        "s",
        "<= 2",
        f"{len(plan.transactions)} transactions, {inputs} inputs; in process, pool.manifest + "
        f"pool.withdrawal.build_round (the round engine's persisting is not included); "
        f"median of {len(times)}, spread {min(times):.3g}–{max(times):.3g} s",
    )


def growth(
    small: int, large: int, repetitions: int, funded: bool = True, budget: float | None = None
) -> tuple[Row, Comparison]:
    """build_round at ``large`` pending ÷ at ``small``, interleaved. With a ``budget`` (seconds),
    fewer repetitions (never under 3) when one pair of builds would not fit it."""
    a, b = pending_manifest(large, funded), pending_manifest(small, funded)
    # What the rows before left alive is frozen out of the collector's scans: the growth of the
    # build is measured, not that of the garbage collector walking earlier rows' objects.
    gc.collect()
    gc.freeze()
    try:
        return _growth(a, b, small, large, repetitions, funded, budget)
    finally:
        gc.unfreeze()


def _growth(
    a: Manifest,
    b: Manifest,
    small: int,
    large: int,
    repetitions: int,
    funded: bool,
    budget: float | None,
) -> tuple[Row, Comparison]:
    first = (timed(lambda: build_round(a)), timed(lambda: build_round(b)))
    reps = repetitions
    if budget is not None:
        reps = max(3, min(repetitions, int(budget // sum(first)) + 1))
    rest = compare(
        lambda: timed(lambda: build_round(a)),
        lambda: timed(lambda: build_round(b)),
        reps - 1,
        warmup=False,
    )
    comparison = Comparison((first[0], *rest.a), (first[1], *rest.b))
    factor = large / small
    what = "" if funded else ", funds for a tenth of them (the rest deferred)"
    cut = "" if reps == repetitions else f" (only {reps}: one pair took {sum(first):.0f} s)"
    return (
        row(
            f"growth of build_round, {small:,} → {large:,} pending{what}",
            comparison.ratio,
            f"× per {factor:g}×",
            f"<= {factor * 1.1:g}",
            f"{comparison.median_b:.3g} s → {comparison.median_a:.3g} s; linear is {factor:g}×; "
            f"{comparison.spread()}{cut}",
        ),
        comparison,
    )


def signer_rebuild(pending: int, repetitions: int) -> Row:
    """The signer's policy over the round: decode, rebuild, compare, log and limits."""
    m = pending_manifest(pending)
    plan = build_round(m)
    data = encode_manifest(m)
    psbts = [t.psbt.serialize() for t in plan.transactions]
    policy = PolicyConfig(
        approved_series=frozenset({series_checksum(SERIES, REGTEST)}),
        max_request_amount=BTC,
        max_round_amount=10**15,
        max_daily_amount=10**15,
        max_destination_daily_amount=10**15,
        max_psbts=10_000,
        max_manifest_bytes=100_000_000,
    )
    fingerprint = master_key(1).fingerprint
    registered = {SERIES.id: SERIES}

    def run() -> None:
        result = evaluate_round(
            policy, fingerprint, REGTEST, registered, data, psbts, MemoryHistory(), 0.0
        )
        assert not isinstance(result, list), f"refused: {result}"

    times = [timed(run) for _ in range(repetitions)]
    value = sorted(times)[len(times) // 2]
    return row(
        f"signer's rebuild (signer.policy.evaluate_round), {pending:,} pending",
        value,
        "s",
        "<= 2",
        f"{len(psbts)} PSBTs; decode, series, build_round, byte comparison, signing log (in "
        f"memory), limits; median of {len(times)}, spread {min(times):.3g}–{max(times):.3g} s",
    )


def peak_memory(pending: int) -> Row:
    """In a fresh process: the manifest of ``pending`` withdrawals, then build_round."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.build", str(pending)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    peak = found["peak_rss_mb"]
    return row(
        f"peak memory building a round over {pending:,} pending",
        peak,
        "MB",
        "<= 300",
        f"peak RSS of a fresh process during build_round (VmHWM, reset after the manifest was "
        f"decoded: {found['reset']}), the whole process: {found['before_rss_mb']:.0f} MB with "
        f"the interpreter, vpool and the decoded manifest, {peak:.0f} MB at the build's peak "
        f"({found['seconds']:.1f} s, {found['transactions']} transactions)",
    )


def _peak_rss_mb() -> float:
    """The process's peak RSS since the last ``_reset_peak`` (Linux VmHWM), else ru_maxrss."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Start the peak RSS over from the current RSS (Linux: ``5`` to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _child(pending: int) -> None:
    import gc

    m = decode_manifest(encode_manifest(pending_manifest(pending)))
    gc.collect()
    reset = _reset_peak()
    before = _peak_rss_mb()
    holder = []
    seconds = timed(lambda: holder.append(build_round(m)))
    peak = _peak_rss_mb()
    doc = {
        "before_rss_mb": before,
        "peak_rss_mb": peak,
        "reset": reset,
        "seconds": seconds,
        "transactions": len(holder[0].transactions),
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    _child(int(sys.argv[1]))
