"""The coordinator's Prometheus endpoint: ``GET /metrics`` on ``server.metrics_listen`` (plain
HTTP, no authentication: bind it to loopback or a monitoring network), next to its status page
(coordinator.status_page) when that address is a loopback one.

What the coordinator knows is read at each scrape (``CoordinatorMetrics.collect``: the health
board, the scanner, the store); what happens in the process is counted as it happens
(vpool.metrics.REGISTRY: the latency of every call to a signer). The families, all with
``# HELP`` and ``# TYPE`` (docs/observability.md lists them with the alert rules that use them):

    vpool_health_serving, vpool_quorum_ok, vpool_node_reachable, vpool_rounds_paused
    vpool_signer_healthy{signer}, vpool_signer_state{signer,state},
    vpool_signer_last_seen_timestamp_seconds{signer}, vpool_signer_missed_checks{signer},
    vpool_signer_audit_seq{signer}, vpool_signer_call_seconds{signer,method,result} (histogram)
    vpool_queue_length, vpool_coordinator_active, vpool_withdrawals{status},
    vpool_withdrawals_sat{status}
    vpool_rounds{kind,status}, vpool_round_duration_seconds{kind} (histogram)
    vpool_deposits{status}, vpool_deposits_sat{status}, vpool_refunds{status}
    vpool_balance_sat{series,state}, vpool_utxos{series}
    vpool_chain_tip_height, vpool_scanned_height, vpool_scanner_lag_blocks,
    vpool_last_block_timestamp_seconds
    vpool_unconfirmed_transactions, vpool_oldest_unconfirmed_transaction_age_seconds
    vpool_alerts_recorded_total
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from sqlalchemy import Engine, func, select

from coordinator.config import PoolConfig
from coordinator.health import DOWN, HEALTHY, MAINTENANCE, HealthBoard
from coordinator.store import chain as cstore
from coordinator.store import stats
from coordinator.store.audit_heads import latest_heads
from coordinator.store.liveness import QUORUM_OK
from coordinator.store.schema import alerts
from coordinator.store.settings import rounds_paused
from coordinator.store.withdrawals import queue_length
from pool.networks import Network
from vpool.metrics import REGISTRY, Family, HttpEndpoint, Page, Registry, histogram_family

ROUND_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
"""Seconds from a round built to its last transaction sent: a software pool takes a second or
two, a person at a hardware wallet minutes."""
REFUND_STATUS = {
    "refund_pending": "pending",
    "refund_proposed": "proposed",
    "refund_signed": "signed",
    "refunded": "refunded",
}


class TipSource(Protocol):
    @property
    def node_tip(self) -> tuple[int, str] | None: ...


class CoordinatorMetrics:
    """The collector of the module docstring."""

    def __init__(
        self,
        engine: Engine,
        board: HealthBoard,
        network: Network,
        pool: PoolConfig,
        scanner: TipSource | None = None,
        clock: Callable[[], float] = time.time,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        """``active``: whether this coordinator holds the store's lock (coordinator.leadership);
        ``vpool_coordinator_active`` is 0 on a standby, so exactly one coordinator of a store
        shows 1."""
        self._active = active
        self._engine = engine
        self._board = board
        self._network = network
        self._pool = pool
        self._scanner = scanner
        self._clock = clock

    def collect(self) -> list[Family]:
        now = self._clock()
        with self._engine.connect() as conn:
            tip = cstore.last_block(conn)
            scanned = 0 if tip is None else tip.height
            balances = cstore.balances(
                conn, scanned, self._pool.min_conf, coinbase_maturity=self._pool.coinbase_maturity
            )
            queue = queue_length(conn)
            paused = rounds_paused(conn)
            withdrawals = stats.withdrawals_by_status(conn)
            rounds = stats.rounds_by_status(conn)
            durations = stats.round_durations(conn)
            deposits = stats.deposits_by_status(conn)
            unconfirmed = stats.unconfirmed_transactions(conn)
            block_time = stats.last_block_time(conn)
            heads = latest_heads(conn)
            alert_count = int(conn.execute(select(func.count()).select_from(alerts)).scalar() or 0)
        families = self._health(paused)
        families += self._signers(heads)
        families.append(
            Family("vpool_queue_length", "gauge", "Withdrawals waiting for a round.").add(queue)
        )
        families.append(
            Family(
                "vpool_coordinator_active",
                "gauge",
                "1 on the coordinator that holds the store's lock, 0 on a standby.",
            ).add(int(self._active()))
        )
        families += _by_status("vpool_withdrawals", "Withdrawals by status.", withdrawals, "amount")
        rounds_family = Family("vpool_rounds", "gauge", "Rounds by kind and status (outcome).")
        for (kind, status), count in sorted(rounds.items()):
            rounds_family.add(count, kind=kind, status=status)
        families.append(rounds_family)
        by_kind: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for kind, seconds in durations:
            by_kind.setdefault((("kind", kind),), []).append(seconds)
        families.append(
            histogram_family(
                "vpool_round_duration_seconds",
                "Seconds from a round built to its last transaction sent, by kind.",
                ROUND_BUCKETS,
                by_kind,
            )
        )
        families += _by_status("vpool_deposits", "Deposits by status.", deposits, "value")
        refunds = Family("vpool_refunds", "gauge", "Deposits sent back (refunds) by status.")
        for status, name in REFUND_STATUS.items():
            refunds.add(deposits.get(status, stats.CountSum(0, 0)).count, status=name)
        families.append(refunds)
        families += self._balances(balances)
        families += self._chain(scanned, block_time)
        oldest = min((at for _, at in unconfirmed), default=None)
        families.append(
            Family(
                "vpool_unconfirmed_transactions",
                "gauge",
                "Round transactions sent and not yet in a block.",
            ).add(len(unconfirmed))
        )
        families.append(
            Family(
                "vpool_oldest_unconfirmed_transaction_age_seconds",
                "gauge",
                "Seconds since the oldest unconfirmed round transaction was sent (0: none).",
            ).add(0.0 if oldest is None else max(0.0, now - oldest))
        )
        families.append(
            Family(
                "vpool_alerts_recorded_total",
                "counter",
                "Alerts recorded for an operator (kept for good; GetPoolStatus shows them).",
            ).add(alert_count)
        )
        return families

    def _health(self, paused: bool) -> list[Family]:
        quorum_ok = self._board.quorum().state == QUORUM_OK
        return [
            Family(
                "vpool_health_serving",
                "gauge",
                "1 while CoordinatorService's gRPC health is SERVING (the quorum is ok and the "
                "node answers).",
            ).add(int(self._board.not_serving_reason() is None)),
            Family(
                "vpool_quorum_ok",
                "gauge",
                "1 while enough signers of the active series are healthy (0: degraded).",
            ).add(int(quorum_ok)),
            Family(
                "vpool_node_reachable", "gauge", "1 while the coordinator's node answered last."
            ).add(int(self._board.node_problem() is None)),
            Family("vpool_rounds_paused", "gauge", "1 while an operator paused rounds.").add(
                int(paused)
            ),
        ]

    def _signers(self, heads: Mapping[str, object]) -> list[Family]:
        healthy = Family("vpool_signer_healthy", "gauge", "1 while the signer answers SERVING.")
        state = Family(
            "vpool_signer_state", "gauge", "1 for the signer's state (healthy, down, maintenance)."
        )
        seen = Family(
            "vpool_signer_last_seen_timestamp_seconds",
            "gauge",
            "Unix time the signer last answered a health check (0: never).",
        )
        missed = Family(
            "vpool_signer_missed_checks", "gauge", "Health checks the signer missed in a row."
        )
        audit = Family(
            "vpool_signer_audit_seq",
            "gauge",
            "Entries of the signer's audit log as recorded after the last round.",
        )
        for s in self._board.snapshot():
            healthy.add(int(s.state == HEALTHY), signer=s.signer_id)
            for name in (HEALTHY, DOWN, MAINTENANCE):
                state.add(int(s.state == name), signer=s.signer_id, state=name)
            seen.add(s.last_seen, signer=s.signer_id)
            missed.add(s.missed, signer=s.signer_id)
            head = heads.get(s.signer_id)
            if head is not None:
                audit.add(getattr(head, "seq", 0), signer=s.signer_id)
        return [healthy, state, seen, missed, audit]

    def _balances(self, balances: Mapping[int, cstore.Balance]) -> list[Family]:
        balance = Family(
            "vpool_balance_sat",
            "gauge",
            "The pool's unspent outputs per series, in satoshis: confirmed (may enter a round) "
            "and unconfirmed.",
        )
        utxos = Family("vpool_utxos", "gauge", "The pool's unspent outputs per series.")
        for series_id, b in sorted(balances.items()):
            balance.add(b.confirmed, series=series_id, state="confirmed")
            balance.add(b.unconfirmed, series=series_id, state="unconfirmed")
            utxos.add(b.count, series=series_id)
        return [balance, utxos]

    def _chain(self, scanned: int, block_time: int | None) -> list[Family]:
        node_tip = None if self._scanner is None else self._scanner.node_tip
        families = [
            Family(
                "vpool_scanned_height",
                "gauge",
                "Height of the last block the coordinator processed.",
            ).add(scanned),
            Family(
                "vpool_last_block_timestamp_seconds",
                "gauge",
                "Header time of the last block processed (0: none yet).",
            ).add(block_time or 0),
        ]
        if node_tip is not None:
            families.append(
                Family(
                    "vpool_chain_tip_height", "gauge", "The node's best height as last read."
                ).add(node_tip[0])
            )
            families.append(
                Family(
                    "vpool_scanner_lag_blocks",
                    "gauge",
                    "Blocks the node has that the coordinator has not processed yet.",
                ).add(max(0, node_tip[0] - scanned))
            )
        return families


def _by_status(
    name: str, help: str, counts: Mapping[str, stats.CountSum], what: str
) -> list[Family]:
    count = Family(name, "gauge", help)
    sat = Family(f"{name}_sat", "gauge", f"{help[:-1]}: their {what} in satoshis.")
    for status, found in sorted(counts.items()):
        count.add(found.count, status=status)
        sat.add(found.sat, status=status)
    return [count, sat]


class MetricsServer:
    """``/metrics`` (and the given read-only ``pages``) on ``listen``, on its own thread."""

    def __init__(
        self,
        listen: str,
        collector: CoordinatorMetrics,
        pages: Mapping[str, Page] | None = None,
        registry: Registry | None = None,
    ) -> None:
        if registry is None:
            registry = Registry()
            registry.add_collector(collector.collect)
            registry.add_collector(REGISTRY.families)  # what the process counts
        self._endpoint = HttpEndpoint(listen, registry, pages)

    @property
    def address(self) -> str:
        return self._endpoint.address

    @property
    def host(self) -> str:
        return self._endpoint.host

    def start(self) -> MetricsServer:
        self._endpoint.start()
        return self

    def stop(self) -> None:
        self._endpoint.stop()
