"""A coordinator process for the crash tests: one round of the round engine on a pickled config.

``python -m tests.round_engine_child CONFIG_PICKLE [KIND]`` opens the store, the node and the
signers of the configuration and runs one round of ``KIND`` ("withdrawal", the default, or
"refund"); with ``VPOOL_CRASH_AT`` set the process kills itself at that step (see
coordinator.rounds). Exit status 0 means the round ran to its end.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

from coordinator.chain import BitcoinRPC
from coordinator.config import CoordinatorConfig
from coordinator.crash_points import CRASH_ENV
from coordinator.rounds import RoundEngine
from coordinator.signers import SignerPool
from coordinator.store.schema import make_engine
from pool.vocabulary import RoundKind
from vpool.devnet.processes import ROOT


def main(config_path: Path, kind: RoundKind) -> int:
    config: CoordinatorConfig = pickle.loads(config_path.read_bytes())
    engine = make_engine(config.database_url)
    with SignerPool.from_config(config) as signers:
        rounds = RoundEngine(config, engine, BitcoinRPC.from_config(config.chain), signers)
        outcome = rounds.run_refunds() if kind is RoundKind.REFUND else rounds.run_round()
    print(f"round {outcome.round_id}: {outcome.detail}", flush=True)
    return 0


def run_child(
    config: CoordinatorConfig, kind: RoundKind, crash_at: str, directory: Path
) -> subprocess.CompletedProcess[str]:
    """Run this module on ``config`` (pickled into ``directory``), one round of ``kind``, the
    process killing itself at ``crash_at``."""
    path = directory / "config.pickle"
    path.write_bytes(pickle.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "tests.round_engine_child", str(path), kind.value],
        cwd=ROOT,
        env={**os.environ, CRASH_ENV: crash_at},
        capture_output=True,
        text=True,
        timeout=120,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1]), RoundKind(sys.argv[2] if len(sys.argv) > 2 else "withdrawal")))
