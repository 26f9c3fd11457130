"""Signer liveness and the pool's quorum (docs/deposits-and-refunds.md, "Liveness").

The daemon loop calls ``HealthBoard.check`` every ``liveness.health_interval_seconds``, and at
once when the active series changes; GetPoolStatus, GetDepositAddress and the round scheduler
read the board without calling any signer. A signer is

- ``healthy`` while it answers SERVING (missing fewer than ``down_after_missed`` checks in a row
  leaves it healthy, with the error in its detail);
- ``down`` once it missed ``down_after_missed`` checks in a row, and until it first answers;
- ``maintenance`` from AdminService.SetSignerMaintenance until the operator ends it, whatever
  the checks say (it counts as not healthy, without alarms).

The gRPC health of CoordinatorService (and the overall health, service "") is NOT_SERVING
while the quorum is degraded or the coordinator's node does not answer (``publish``, after every
step of the daemon loop); the reason is logged at each change and shown in GetPoolStatus
(``health``, ``health_detail``). AdminService stays SERVING: the operator acts on a sick pool.

The quorum is ``ok`` while the healthy signers holding keys of the active series are at least m
and at least ``quorum_fraction`` of n, i.e. no more than 1/3 of them down by default (the
Peerplays rule: the pool degrades when more than 1/3 of its signers are down); ``degraded``
otherwise (also without an active series). A 2-of-3 pool with one signer down stays ``ok``.
Every change of a signer's state and of the quorum is recorded (coordinator.store.liveness): the
quorum recorded last is the pool's quorum, across restarts, until a check says otherwise.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Protocol

from sqlalchemy import Connection, Engine

from coordinator.config import LivenessConfig
from coordinator.signers import SignerCallError
from coordinator.store import chain as cstore
from coordinator.store import liveness as lstore
from coordinator.store.liveness import QUORUM_DEGRADED, QUORUM_OK, SignerRecord
from coordinator.store.schema import transaction
from pool.networks import Network
from pool.series import Series, SeriesState
from vpool.v1 import signer_pb2

log = logging.getLogger(__name__)

HEALTHY = "healthy"
DOWN = "down"
MAINTENANCE = "maintenance"


@dataclass(frozen=True)
class SignerState:
    signer_id: str
    state: str
    """``healthy``, ``down`` or ``maintenance``."""
    fingerprint: str
    """Master key fingerprint (hex) from the signer's GetInfo, once known in this process."""
    last_seen: float
    """When it last answered (0: never)."""
    detail: str
    """The last error, if any."""
    missed: int = 0
    """Checks missed in a row."""
    maintenance: bool = False
    since: float = 0.0
    """When it entered ``state``."""

    def record(self) -> SignerRecord:
        return SignerRecord(
            signer_id=self.signer_id,
            state=self.state,
            since=self.since,
            missed=self.missed,
            maintenance=self.maintenance,
            last_seen=self.last_seen or None,
            detail=self.detail,
        )


@dataclass(frozen=True)
class Quorum:
    state: str
    """``ok`` or ``degraded``."""
    detail: str
    """How many signers are healthy and how many are needed."""


def quorum(active: Series | None, states: Iterable[SignerState], fraction: Fraction) -> Quorum:
    """The quorum rule of the module docstring; each key holder counts once."""
    if active is None:
        return Quorum(QUORUM_DEGRADED, "there is no active series")
    holders = {key.origin.fingerprint.hex() for key in active.keys}
    healthy = len({s.fingerprint for s in states if s.state == HEALTHY} & holders)
    state = QUORUM_OK if healthy >= active.m and healthy >= fraction * active.n else QUORUM_DEGRADED
    detail = (
        f"{healthy} of {active.n} signers of series {active.id} healthy; needs at least "
        f"{active.m}, and at least {fraction} of {active.n}"
    )
    return Quorum(state, detail)


def _after_check(
    old: SignerState, answered: bool, fingerprint: str, detail: str, now: float, down_after: int
) -> SignerState:
    """A signer's state after one check."""
    if answered:
        missed, last_seen, state = 0, now, HEALTHY
    else:
        missed, last_seen = old.missed + 1, old.last_seen
        state = DOWN if missed >= down_after or old.state == DOWN else HEALTHY
    if old.maintenance:
        state = MAINTENANCE
    return replace(
        old,
        state=state,
        fingerprint=fingerprint or old.fingerprint,
        last_seen=last_seen,
        detail=detail,
        missed=missed,
        since=old.since if state == old.state else now,
    )


class HealthSource(Protocol):
    """The part of ``coordinator.signers.SignerPool`` the checks use."""

    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def health(self, signer_id: str, timeout: float) -> bool: ...

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo: ...


class HealthBoard:
    """Every configured signer's state and the pool's quorum; safe to use from any thread."""

    def __init__(
        self,
        engine: Engine,
        config: LivenessConfig,
        network: Network,
        signer_ids: Iterable[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._config = config
        self._network = network
        self._clock = clock
        self._lock = threading.Lock()
        with engine.connect() as conn:
            records = lstore.signer_records(conn)
        self._states = {
            signer_id: _from_record(records.get(signer_id), signer_id) for signer_id in signer_ids
        }
        self._series_id: int | None = None
        """The active series at the last quorum evaluation (None: none yet)."""
        self._node_problem: str | None = None
        """Why the last look at the chain failed (None: it worked, or none yet)."""
        self._published: str | None = None
        """The not-serving reason last given to the gRPC health (None: SERVING)."""

    def reload(self) -> None:
        """Every signer's state as the store holds it (a standby follows what the active
        coordinator records; the active one keeps its own)."""
        with self._engine.connect() as conn:
            records = lstore.signer_records(conn)
        with self._lock:
            self._states = {i: _from_record(records.get(i), i) for i in self._states}

    def snapshot(self) -> list[SignerState]:
        """Every signer, in configuration order."""
        with self._lock:
            return list(self._states.values())

    def quorum(self) -> Quorum:
        """The quorum recorded last ("ok" before the first record)."""
        with self._engine.connect() as conn:
            last = lstore.last_quorum(conn)
        if last is None:
            return Quorum(QUORUM_OK, "no quorum recorded yet")
        return Quorum(last.state, last.detail)

    def degraded_reason(self) -> str | None:
        """Why the pool is degraded, or None while its quorum is ok."""
        current = self.quorum()
        return None if current.state == QUORUM_OK else f"the pool is degraded: {current.detail}"

    def signers_up(self) -> bool:
        """At least m key holders of the active series were healthy at the last check (the pool
        may still be degraded: fewer than ``quorum_fraction`` of n); each key counts once."""
        with self._engine.connect() as conn:
            active = _active(conn, self._network)
        if active is None:
            return False
        holders = {key.origin.fingerprint.hex() for key in active.keys}
        healthy = {s.fingerprint for s in self.snapshot() if s.state == HEALTHY}
        return len(healthy & holders) >= active.m

    def note_node(self, problem: str | None) -> None:
        """What the last look at the node gave: None when it answered, else why it did not."""
        with self._lock:
            self._node_problem = problem

    def node_problem(self) -> str | None:
        """Why the last look at the node failed (None: it answered, or none yet)."""
        with self._lock:
            return self._node_problem

    def not_serving_reason(self) -> str | None:
        """Why CoordinatorService must not be used now (the pool is degraded, or its node does
        not answer), or None while it is usable."""
        with self._lock:
            node = self._node_problem
        reasons = [self.degraded_reason()]
        if node is not None:
            reasons.append(f"the node does not answer: {node}")
        found = [r for r in reasons if r is not None]
        return "; ".join(found) if found else None

    def publish(self, set_serving: Callable[[str | None], None]) -> str | None:
        """Give the gRPC health what ``not_serving_reason`` says (logging each change); the
        reason, or None while serving."""
        reason = self.not_serving_reason()
        with self._lock:
            changed, self._published = reason != self._published, reason
        if changed:
            if reason is None:
                log.info("health: SERVING")
            else:
                log.warning("health: NOT_SERVING: %s", reason)
        set_serving(reason)
        return reason

    def series_changed(self) -> bool:
        """True when the active series is not the one of the last quorum evaluation."""
        with self._engine.connect() as conn:
            active = cstore.active_series_id(conn)
        with self._lock:
            return self._series_id != active

    def check(self, signers: HealthSource, timeout: float) -> None:
        """Ask every signer at once (learning each one's fingerprint the first time it answers),
        then record what changed and the quorum."""
        ids = signers.signer_ids
        with ThreadPoolExecutor(max_workers=max(1, len(ids)), thread_name_prefix="health") as ex:
            asked = ex.map(lambda i: self._ask(signers, i, timeout), ids)
            answers = dict(zip(ids, asked, strict=True))
        now, down_after = self._clock(), self._config.down_after_missed
        with self._lock:
            states = {
                signer_id: _after_check(state, *answers[signer_id], now, down_after)
                if signer_id in answers
                else state
                for signer_id, state in self._states.items()
            }
            self._commit(states, now)

    def set_maintenance(self, signer_id: str, maintenance: bool) -> SignerState:
        """Start or end a signer's maintenance; ``KeyError`` for an unknown signer."""
        now = self._clock()
        with self._lock:
            old = self._states[signer_id]
            if maintenance:
                state = MAINTENANCE
            elif old.last_seen and old.missed < self._config.down_after_missed:
                state = HEALTHY
            else:
                state = DOWN
            since = old.since if state == old.state else now
            new = replace(old, state=state, maintenance=maintenance, since=since)
            self._commit({**self._states, signer_id: new}, now)
            return new

    def _commit(self, states: dict[str, SignerState], now: float) -> None:
        """Record the signers that changed and the quorum they make, then keep them. Called
        with the lock held."""
        with transaction(self._engine) as conn:
            for signer_id, state in states.items():
                if state != self._states[signer_id]:
                    lstore.save_signer(conn, state.record())
            active = _active(conn, self._network)
            current = quorum(active, states.values(), self._config.quorum_fraction)
            # Whole seconds: block header times, which deposits are judged by, have no more.
            changed = lstore.record_quorum(conn, current.state, math.floor(now), current.detail)
            lstore.note_checked(conn, now)
        for signer_id, state in states.items():
            if state.state != self._states[signer_id].state:
                level = logging.INFO if state.state == HEALTHY else logging.WARNING
                log.log(level, "signer %s is %s %s", signer_id, state.state, state.detail)
        if changed:
            level = logging.INFO if current.state == QUORUM_OK else logging.WARNING
            log.log(level, "quorum %s: %s", current.state, current.detail)
        self._states = states
        self._series_id = None if active is None else active.id

    def _ask(self, signers: HealthSource, signer_id: str, timeout: float) -> tuple[bool, str, str]:
        """(answered, fingerprint learnt, error) of one signer."""
        try:
            if not signers.health(signer_id, timeout):
                return False, "", "not serving"
            with self._lock:
                known = self._states[signer_id].fingerprint
            fingerprint = known or signers.get_info(signer_id, timeout).master_fingerprint
        except SignerCallError as e:
            return False, "", str(e.error)
        return True, fingerprint, ""


def _from_record(record: SignerRecord | None, signer_id: str) -> SignerState:
    if record is None:
        return SignerState(signer_id, DOWN, "", 0.0, "not checked yet")
    return SignerState(
        signer_id=signer_id,
        state=record.state,
        fingerprint="",
        last_seen=record.last_seen or 0.0,
        detail=record.detail,
        missed=record.missed,
        maintenance=record.maintenance,
        since=record.since,
    )


def _active(conn: Connection, network: Network) -> Series | None:
    return next(
        (s for s in cstore.all_series(conn, network) if s.state is SeriesState.ACTIVE), None
    )
