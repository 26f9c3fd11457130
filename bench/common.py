"""Rows, interleaved repetitions and the statistics every row reports."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    """One line of bench/results.json and of the table."""

    name: str
    value: float
    unit: str
    goal: str
    """Written as the comparison the value must meet, e.g. ``<= 1.5``."""
    meets_goal: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def meets(value: float, goal: str) -> bool:
    """``goal`` is ``<= x`` or ``>= x``."""
    op, _, number = goal.partition(" ")
    bound = float(number.replace(",", ""))
    if op == "<=":
        return value <= bound
    if op == ">=":
        return value >= bound
    raise ValueError(f"goal {goal!r}: expected '<= x' or '>= x'")


def row(name: str, value: float, unit: str, goal: str, detail: str) -> Row:
    return Row(name, value, unit, goal, meets(value, goal), detail)


def timed(action: Callable[[], object]) -> float:
    """Seconds taken by one call of ``action``."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Comparison:
    """Interleaved repetitions of two measurements: ``a`` and ``b`` seconds, ratio a/b each."""

    a: tuple[float, ...]
    b: tuple[float, ...]

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def median_a(self) -> float:
        return statistics.median(self.a)

    @property
    def median_b(self) -> float:
        return statistics.median(self.b)

    def spread(self) -> str:
        r = self.ratios
        return f"ratio median of {len(r)} interleaved repetitions, spread {min(r):.3g}–{max(r):.3g}"


def compare(
    a: Callable[[], float], b: Callable[[], float], repetitions: int, warmup: bool = True
) -> Comparison:
    """Run ``a`` then ``b`` (each returns the seconds it measured), ``repetitions`` times,
    alternating which goes first so that neither always runs on a warmer machine."""
    if warmup:
        a()
        b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(repetitions):
        if i % 2 == 0:
            times_a.append(a())
            times_b.append(b())
        else:
            times_b.append(b())
            times_a.append(a())
    return Comparison(tuple(times_a), tuple(times_b))


def spread_of(values: Sequence[float], unit: str = "s") -> str:
    return f"median of {len(values)}, spread {min(values):.3g}–{max(values):.3g} {unit}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
