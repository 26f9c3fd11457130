"""The quorum of a time the coordinator was stopped, from the signers' serving intervals
(coordinator.outage), and the signer's record of those intervals (signer.serving) on its real
store."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from coordinator.outage import quorum_changes
from signer.serving import ServingLog
from signer.state import SignerState
from tests.factories import make_series, master_key

SERIES = make_series(1, 2, [0, 1, 2])
FINGERPRINTS = [master_key(i).fingerprint.hex() for i in range(3)]
TWO_THIRDS = Fraction(2, 3)


def serving(
    *intervals: list[tuple[float, float]],
) -> dict[str, tuple[str, list[tuple[float, float]]]]:
    return {f"signer-{i}": (FINGERPRINTS[i], spans) for i, spans in enumerate(intervals)}


def test_two_of_three_signers_down_in_the_gap_make_it_degraded_until_one_returns() -> None:
    changes = quorum_changes(
        SERIES,
        TWO_THIRDS,
        serving([(0, 1000)], [(0, 200.5), (600.2, 1000)], [(0, 300.9)]),
        since=100.4,
        until=1000,
        before="ok",
    )
    assert [(at, state) for at, state, _ in changes] == [(301, "degraded"), (601, "ok")]
    assert (
        changes[0][2]
        == "1 of 3 signers of series 1 healthy; needs at least 2, and at least 2/3 of 3"
    )


def test_a_signer_that_does_not_answer_counts_as_not_serving() -> None:
    answers = serving([(0, 1000)], [(0, 1000)])  # signer-2 gave no intervals
    assert quorum_changes(SERIES, TWO_THIRDS, answers, 100, 1000, "ok") == []
    del answers["signer-1"]
    assert [(at, state) for at, state, _ in quorum_changes(
        SERIES, TWO_THIRDS, answers, 100, 1000, "ok"
    )] == [(100, "degraded")]  # fmt: skip


def test_a_gap_in_which_nothing_changed_records_nothing() -> None:
    assert quorum_changes(SERIES, TWO_THIRDS, serving(*[[(0.0, 1000.0)]] * 3), 100, 900, "ok") == []


def test_the_signer_records_its_serving_intervals_in_its_store(tmp_path: Path) -> None:
    now = [1000.0]
    with SignerState(tmp_path) as state:
        log = ServingLog(state, lambda: now[0], heartbeat=2.0)
        log.note(True)
        now[0] = 1001.0
        log.note(True)  # within the heartbeat: nothing written
        now[0] = 1003.0
        log.note(True)
        now[0] = 1004.0
        log.note(False)
        now[0] = 1010.0
        log.note(True)
        now[0] = 1015.0
        assert log.intervals() == [(1000.0, 1003.0), (1010.0, 1015.0)]
    with SignerState(tmp_path) as state:  # after a restart: as stored (the last one as written)
        assert ServingLog(state, lambda: 2000.0).intervals() == [
            (1000.0, 1003.0),
            (1010.0, 1010.0),
        ]
