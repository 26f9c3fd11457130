"""`make demo` runs the whole regtest pool end to end and exits 0 (guarded here, in CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vpool.devnet.processes import ROOT


def test_the_demo_runs_to_its_summary_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vpool.devnet.demo", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "destinations hold exactly their amounts" in result.stdout
    assert "= funding - payments - fees" in result.stdout
    assert "GetDepositAddress refused: FAILED_PRECONDITION" in result.stdout
    assert "sat fee =" in result.stdout  # the outage deposit's refund, read from the node
    assert "demo finished: exit 0" in result.stdout
