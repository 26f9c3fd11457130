"""The quorum while this coordinator itself was stopped, from the signers' own records.

A coordinator records the quorum from its health checks; while it is stopped it checks nothing,
and the last state it recorded would otherwise hold for the whole gap: signers that went down
meanwhile would go unnoticed, and a deposit mined then credited instead of refunded. So when it
starts again after more than two health intervals (``liveness.health_interval_seconds``) since
its last check, before it scans a block, it asks every signer for the intervals in which it was
serving (``SignerInfo.serving``, kept in the signer's own store), and records the quorum those
intervals give over the gap (``store.liveness.record_past_quorum``), with the same rule as the
health checks (``coordinator.health.quorum``). The scanner then judges each deposit mined in the
gap by its block's time, as always.

Conservative where it cannot know: a signer that does not answer now counts as not serving for
the whole gap; a serving interval counts from its first whole second after it began to the whole
second before it ended (block times have whole seconds).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Protocol

from sqlalchemy import Engine

from coordinator.config import LivenessConfig
from coordinator.health import DOWN, HEALTHY, SignerState, quorum
from coordinator.signers import SignerCallError
from coordinator.store import chain as cstore
from coordinator.store import liveness as lstore
from coordinator.store.schema import transaction
from pool.networks import Network
from pool.series import Series, SeriesState
from vpool.v1 import signer_pb2

log = logging.getLogger(__name__)

Interval = tuple[float, float]


class ServingSource(Protocol):
    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo: ...


def quorum_changes(
    active: Series,
    fraction: Fraction,
    serving: Mapping[str, tuple[str, Sequence[Interval]]],
    since: float,
    until: float,
    before: str,
) -> list[tuple[float, str, str]]:
    """(time, state, detail) of each change of the quorum from ``since`` to ``until``, given
    each signer's (fingerprint, serving intervals) and the state ``before`` ``since``."""
    spans = {
        signer_id: (fingerprint, [(math.ceil(a), math.floor(b)) for a, b in intervals])
        for signer_id, (fingerprint, intervals) in serving.items()
    }
    moments = {float(math.floor(since))}
    for _, intervals in spans.values():
        for a, b in intervals:
            moments.update(t for t in (a, b + 1) if since < t < until)
    changes = []
    state = before
    for moment in sorted(moments):
        states = [
            SignerState(
                signer_id,
                HEALTHY if any(a <= moment <= b for a, b in intervals) else DOWN,
                fingerprint,
                0.0,
                "",
            )
            for signer_id, (fingerprint, intervals) in spans.items()
        ]
        found = quorum(active, states, fraction)
        if found.state != state:
            changes.append((moment, found.state, found.detail))
            state = found.state
    return changes


class OutageJudge:
    def __init__(
        self,
        engine: Engine,
        network: Network,
        config: LivenessConfig,
        signers: ServingSource,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._engine = engine
        self._network = network
        self._config = config
        self._signers = signers
        self._timeout = timeout
        self._clock = clock

    def run(self) -> int:
        """Record the quorum over the gap since the last health check, if there was one; how
        many changes were recorded."""
        with self._engine.connect() as conn:
            since = lstore.last_checked(conn)
            last = lstore.last_quorum(conn)
            active = next(
                (
                    s
                    for s in cstore.all_series(conn, self._network)
                    if s.state is SeriesState.ACTIVE
                ),
                None,
            )
        now = self._clock()
        if since is None or last is None or active is None:
            return 0
        if now - since <= 2 * self._config.health_interval_seconds:
            return 0
        serving = self._ask_all()
        changes = quorum_changes(
            active, self._config.quorum_fraction, serving, since, now, last.state
        )
        gap = f"this coordinator was stopped from {since:.0f} to {now:.0f}"
        with transaction(self._engine) as conn:
            for at, state, detail in changes:
                lstore.record_past_quorum(
                    conn, state, at, f"{detail} (by the signers' serving intervals; {gap})"
                )
        for at, state, detail in changes:
            log.warning("while stopped: quorum %s from %.0f: %s", state, at, detail)
        log.info("%s: %d quorum change(s) from the signers' serving intervals", gap, len(changes))
        return len(changes)

    def _ask_all(self) -> dict[str, tuple[str, list[Interval]]]:
        ids = self._signers.signer_ids

        def ask(signer_id: str) -> tuple[str, list[Interval]] | None:
            try:
                info = self._signers.get_info(signer_id, self._timeout)
            except SignerCallError as e:
                log.warning("%s: no serving intervals (%s); counted as not serving", signer_id, e)
                return None
            return info.master_fingerprint, [(i.from_unix, i.until_unix) for i in info.serving]

        with ThreadPoolExecutor(max_workers=max(1, len(ids))) as pool:
            answers = dict(zip(ids, pool.map(ask, ids), strict=True))
        return {signer_id: answer for signer_id, answer in answers.items() if answer is not None}
