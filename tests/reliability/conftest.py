"""The reliability suite (``make reliability``): each module is one part, measuring its figures
into bench-format rows (``{"name", "value", "unit", "goal", "meets_goal", "detail"}``) that it
writes to ``build/reliability/<part>.json``; ``scripts/reliability_report.py`` assembles them into
``docs/reliability.md``.

``make test`` runs each part's fast subset only: a test marked ``reliability_full`` runs only when
``VPOOL_RELIABILITY=full`` is set (as ``make reliability`` does), and rows are written in that mode
only, so that a fast run never overwrites the figures of a full one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import Row, row

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "reliability"
FULL = os.environ.get("VPOOL_RELIABILITY") == "full"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    skip = pytest.mark.skip(reason="the full reliability suite: make reliability")
    for item in items:
        if "reliability_full" in item.keywords:
            item.add_marker(skip)


class Rows:
    """The rows of one part, written to build/reliability/<part>.json at the module's end."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.rows: list[Row] = []

    def add(self, name: str, value: float, unit: str, goal: str, detail: str) -> Row:
        found = row(name, value, unit, goal, detail)
        self.rows = [r for r in self.rows if r.name != name] + [found]
        return found

    def write(self) -> None:
        if not FULL or not self.rows:
            return
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{self.part}.json"
        path.write_text(
            json.dumps([r.to_json() for r in self.rows], indent=2) + "\n", encoding="utf-8"
        )


@pytest.fixture(scope="module")
def rows(request: pytest.FixtureRequest) -> Iterator[Rows]:
    """This part's rows (the part is the module's name without ``test_``)."""
    part = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    found = Rows(part)
    yield found
    found.write()
