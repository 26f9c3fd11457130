"""docs/operators.md, run as written: every ```sh block, in order, in one bash shell, on free
ports and in a temporary directory (its POOL_DIR, COORDINATOR_PORT and SIGNER_PORTS). From
nothing to a paid withdrawal: a bcoin regtest node, `vpool-coordinator init`, three `vpool-signer
init`, the series approved and added, a deposit funded from the node and credited, a withdrawal
run, mined and completed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from vpool.devnet.processes import ROOT, free_port

DOC = ROOT / "docs" / "operators.md"
TIMEOUT = 600


def shell_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def test_the_walkthrough_has_a_block_per_step() -> None:
    assert len(shell_blocks()) >= 9


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not on PATH")
def test_the_operators_walkthrough_runs_from_nothing_to_a_paid_withdrawal(tmp_path: Path) -> None:
    if not (ROOT / "node_modules" / "bcoin").is_dir():
        pytest.skip("bcoin is not installed: make node_modules")
    coordinator, *signers = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPOOL_")}
    env.update(
        POOL_DIR=str(tmp_path / "pool-dir"),
        COORDINATOR_PORT=str(coordinator),
        SIGNER_PORTS=" ".join(str(p) for p in signers),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    script = "set -euo pipefail\nset -x\n" + "\n".join(shell_blocks())
    transcript = tmp_path / "transcript.txt"
    with transcript.open("w") as out_file:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=out_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the daemons it starts, stopped with it whatever happens
        )
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    out = transcript.read_text(errors="replace")
    logs = "\n".join(
        f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted((tmp_path / "pool-dir").glob("*/serve.log"))
    )
    assert process.returncode == 0, f"{out[-6000:]}\n{logs}"  # -15: it ran out of time
    assert "status: completed" in out
    assert re.search(r"credited\s", out), out[-3000:]
