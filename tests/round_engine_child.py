"""A coordinator process for the crash tests: one round of the round engine on a pickled config.

``python -m tests.round_engine_child CONFIG_PICKLE [KIND]`` opens the store, the node and the
signers of the configuration and runs one round of ``KIND`` ("withdrawal", the default, or
"refund"); with ``VPOOL_CRASH_AT`` set the process kills itself at that step (see
coordinator.rounds). Exit status 0 means the round ran to its end.
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

from coordinator.chain import BitcoinRPC
from coordinator.config import CoordinatorConfig
from coordinator.rounds import RoundEngine
from coordinator.signers import RoundKind, SignerPool
from coordinator.store.schema import make_engine


def main(config_path: Path, kind: RoundKind) -> int:
    config: CoordinatorConfig = pickle.loads(config_path.read_bytes())
    engine = make_engine(config.database_url)
    with SignerPool.from_config(config) as signers:
        rounds = RoundEngine(config, engine, BitcoinRPC.from_config(config.chain), signers)
        outcome = rounds.run_refunds() if kind is RoundKind.REFUND else rounds.run_round()
    print(f"round {outcome.round_id}: {outcome.detail}", flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1]), RoundKind(sys.argv[2] if len(sys.argv) > 2 else "withdrawal")))
