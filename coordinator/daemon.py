"""The coordinator daemon: the store, the chain, the signers, the rounds and the API, wired.

``serve`` opens (and migrates) the store, creates the configured series on first start, serves
the API, and runs one background loop: check the signers' health every
``liveness.health_interval_seconds`` (and at once when the active series changes) and replay
to each signer back the deposit address registrations it missed (coordinator.registrations),
follow the chain (scanner: deposits are classified against the quorum the checks record), credit the
confirmed deposits the signers acknowledged (coordinator.credits), check the pool's unconfirmed
transactions against the node at each new block (coordinator.watcher: re-sends, refusals,
reorganisations, conflicts), expire withdrawals deferred too long (coordinator.expiry), follow
the open rounds (track), start a withdrawal round when one is due, and a refund round when
deposits wait for one (coordinator.scheduler).
Before that loop starts, a coordinator that was stopped longer than two health intervals records
the quorum of that gap from the signers' own serving intervals (coordinator.outage).
Only the active coordinator runs that loop and accepts writes (coordinator.leadership): a
second one on the same store is a standby that serves reads until it takes the store's lock.
Rounds resume from the store first (``RoundEngine.resume``), in that loop, so the server is
ready at once. SIGTERM or SIGINT stops it cleanly; a round cut short is resumed at the next start
(every step of a round is persisted before its side effect).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import Engine

from coordinator.api import AdminApi, CoordinatorApi
from coordinator.audit_heads import AuditHeads
from coordinator.chain import BitcoinRPC, ChainError
from coordinator.config import CoordinatorConfig, load_config
from coordinator.credits import Credits
from coordinator.expiry import Expiry
from coordinator.health import HealthBoard
from coordinator.leadership import EXIT_STEPPED_DOWN, Leadership, install_fence, open_lock
from coordinator.metrics import CoordinatorMetrics, MetricsServer
from coordinator.outage import OutageJudge
from coordinator.registrations import Registrations
from coordinator.rounds import RoundEngine
from coordinator.scanner import Scanner
from coordinator.scheduler import RoundScheduler
from coordinator.server import start_server
from coordinator.signers import SignerPool
from coordinator.status_page import StatusPage, is_loopback, refused_page
from coordinator.store import chain as cstore
from coordinator.store.schema import make_engine, migrate, transaction
from coordinator.watch import ChangeSignal
from coordinator.watcher import TransactionWatcher

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0
"""On shutdown: how long running calls, and the loop's current step, may take to finish."""
HEALTH_TIMEOUT_SECONDS = 5.0
"""Deadline of one signer's health check (at most the check interval)."""
ACKNOWLEDGE_TIMEOUT_SECONDS = 10.0
"""Deadline of one AcknowledgeDeposits call (at most the SignRound deadline): no device is asked,
only the signer's node; a signer that overruns it is asked again at the next step."""


def open_store(config: CoordinatorConfig) -> Engine:
    """The migrated store; an SQLite file's directory is created when missing."""
    if config.database_url.startswith("sqlite"):
        config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url)
    version = migrate(engine)
    log.info("store %s at schema version %d", engine.url.render_as_string(), version)
    return engine


def prepare_addresses(config: CoordinatorConfig, engine: Engine) -> None:
    """The address lookahead of every series, to the configured depth (series themselves come
    through AdminService.AddSeries only, which registers them on the signers first)."""
    with transaction(engine) as conn:
        cstore.ensure_lookahead(conn, config.network, config.pool.address_lookahead)


class Loop:
    """The background thread: scan, track, health checks, rounds; see the module docstring."""

    def __init__(
        self,
        config: CoordinatorConfig,
        scanner: Scanner,
        credits: Credits,
        scheduler: RoundScheduler,
        signers: SignerPool,
        board: HealthBoard,
        changes: ChangeSignal,
        set_serving: Callable[[str | None], None],
        watcher: TransactionWatcher,
        expiry: Expiry,
        registrations: Registrations,
    ) -> None:
        self._registrations = registrations
        self._set_serving = set_serving
        self._watcher = watcher
        self._expiry = expiry
        self._poll = config.chain.poll_seconds
        self._health_interval = config.liveness.health_interval_seconds
        self._scanner = scanner
        self._credits = credits
        self._scheduler = scheduler
        self._signers = signers
        self._board = board
        self._changes = changes
        self._failing: dict[str, str] = {}
        """What each failing step last failed with."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordinator-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Ask the loop to stop and wait up to ``timeout`` seconds for its current step."""
        self._stop.set()
        if self._thread.ident is None:
            return  # never started (a standby)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "the loop is still busy after %g s; exiting (it resumes next start)", timeout
            )

    def _run(self) -> None:
        self._step("resuming rounds", self._scheduler.resume)
        next_health = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_health or self._board.series_changed():
                self._step("checking signers", self._check_signers)
                self._step("replaying registrations", self._registrations.replay)
                next_health = time.monotonic() + self._health_interval
            self._step("scanning the chain", self._sync)
            self._step("crediting deposits", self._credits.run)
            self._step("watching transactions", self._watch)
            self._step("expiring withdrawals", self._expire)
            self._changes.notify()
            self._step("running rounds", self._scheduler.tick)
            self._step("publishing the health", lambda: self._board.publish(self._set_serving))
            self._stop.wait(self._poll)

    def _sync(self) -> None:
        """Follow the chain; whether the node answered goes to the health board."""
        try:
            self._scanner.sync()
        except ChainError as e:
            self._board.note_node(str(e))
            raise
        self._board.note_node(None)

    def _watch(self) -> None:
        self._scheduler.exclusive(self._watcher.check)

    def _expire(self) -> None:
        if self._expiry.run():
            self._changes.notify()

    def _check_signers(self) -> None:
        self._board.check(self._signers, min(HEALTH_TIMEOUT_SECONDS, self._health_interval))

    def _step(self, what: str, step: Callable[[], object]) -> None:
        """Run one step; a failure is logged (once while it repeats) and the loop goes on."""
        try:
            step()
        except Exception as e:
            failure = f"{e.__class__.__name__}: {e}"
            if self._failing.get(what) != failure:
                self._failing[what] = failure
                if isinstance(e, ChainError):
                    log.warning("%s: chain backend: %s", what, e)
                else:
                    log.exception("%s failed", what)
            return
        if self._failing.pop(what, None) is not None:
            log.info("%s: working again", what)


def start_http(
    config: CoordinatorConfig,
    engine: Engine,
    board: HealthBoard,
    scanner: Scanner,
    active: Callable[[], bool],
) -> MetricsServer:
    """``/metrics`` on ``server.metrics_listen``, and the status page at ``/`` when that address
    is a loopback one (coordinator.status_page); ``active``: whether this coordinator holds the
    store's lock."""
    collector = CoordinatorMetrics(
        engine, board, config.network, config.pool, scanner, active=active
    )
    host = config.server.metrics_listen.rpartition(":")[0]
    page = StatusPage(config, engine, board, scanner)
    status = page.page if is_loopback(host) else refused_page(host)
    metrics = MetricsServer(config.server.metrics_listen, collector, {"/": status}).start()
    url = f"http://{metrics.address}"
    log.info(
        "metrics on %s/metrics, status page on %s/%s",
        url,
        url,
        "" if is_loopback(host) else " (refused: not a loopback address)",
        extra={"event": "http_listening", "metrics_url": f"{url}/metrics", "status_url": url},
    )
    return metrics


def serve(config_path: Path) -> int:
    """Run the coordinator until SIGTERM or SIGINT; the exit status (``EXIT_STEPPED_DOWN`` when
    it lost the store's lock: restart it, it comes back as a standby)."""
    config = load_config(config_path)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stepped_down = threading.Event()
    with ExitStack() as stack:
        engine = open_store(config)
        stack.callback(engine.dispose)
        leadership = Leadership(config.standby.poll_seconds)
        install_fence(engine, leadership)
        chain = BitcoinRPC.from_config(config.chain)
        chain.before_send = leadership.confirm
        signers = stack.enter_context(SignerPool.from_config(config))
        board = HealthBoard(engine, config.liveness, config.network, signers.signer_ids)
        changes = ChangeSignal()
        stack.callback(changes.close)
        heads = AuditHeads(engine, signers, time.time)
        rounds = RoundEngine(
            config,
            engine,
            chain,
            signers,
            time.time,
            device_limits=signers.device_limits,
            after_round=heads.record,
        )
        scheduler = RoundScheduler(
            rounds,
            engine,
            config.rounds,
            changes,
            board,
            refund_while_degraded=config.deposits.refund_while_degraded,
        )
        running = start_server(
            config.server,
            CoordinatorApi(config, engine, board, signers, changes, time.time, leadership),
            AdminApi(config, engine, scheduler, signers, board, chain, time.time),
            refuse_writes=leadership.refuse_if_standby,
        )
        running.set_serving("a standby: another coordinator holds the store's lock")
        name = f"{config.standby.name or socket.gethostname()} at {running.address}"
        leadership.attach(open_lock(engine, name), name)
        stack.callback(leadership.close)
        scanner = Scanner(
            engine,
            chain,
            config.network,
            config.pool,
            config.deposits,
            start_height=config.chain.scan_start_height,
        )
        deadline = min(ACKNOWLEDGE_TIMEOUT_SECONDS, config.rounds.sign_deadline_seconds)
        credits = Credits(engine, config.network, signers, board, deadline, time.time)
        watcher = TransactionWatcher(config, engine, chain, rounds, time.time)
        expiry = Expiry(engine, config.rounds.withdrawal_expiry_seconds, time.time)
        loop = Loop(
            config,
            scanner,
            credits,
            scheduler,
            signers,
            board,
            changes,
            running.set_serving,
            watcher,
            expiry,
            Registrations(engine, config.network, signers, board, deadline, time.time),
        )
        if config.server.metrics_listen:
            metrics = start_http(config, engine, board, scanner, leadership.holds)
            stack.callback(metrics.stop)

        def lost() -> None:
            running.set_serving("stepped down: this coordinator lost the store's lock")
            stepped_down.set()
            stop.set()

        def take_over() -> None:
            board.reload()  # what the coordinator before this one recorded
            prepare_addresses(config, engine)
            # Before any block is scanned: the quorum while no coordinator checked the signers.
            OutageJudge(engine, config.network, config.liveness, signers, deadline, time.time).run()
            board.publish(running.set_serving)  # the quorum recorded before a restart holds
            loop.start()
            leadership.watch(lost, stop)

        def standby() -> None:
            if not leadership.wait_active(stop, board.reload):
                return
            try:
                take_over()
            except Exception:
                log.exception("taking over failed; stepping down")
                lost()

        if leadership.try_take():
            take_over()  # at once: a lone coordinator starts as it always did
        else:
            board.reload()
            log.warning(
                "standby: %s holds the store's lock; serving reads, trying it every %g s",
                leadership.active_name() or "another coordinator",
                config.standby.poll_seconds,
            )
            threading.Thread(target=standby, name="standby", daemon=True).start()
        print(f"vpool-coordinator serving on {running.address}", flush=True)
        stop.wait()
        log.info("stopping: no new calls, up to %g s for the running ones", GRACE_SECONDS)
        changes.close()  # WatchWithdrawals streams end
        running.stop(GRACE_SECONDS)
        loop.stop(GRACE_SECONDS)
    return EXIT_STEPPED_DOWN if stepped_down.is_set() else 0
