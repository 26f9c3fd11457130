"""The gRPC services: ``CoordinatorService`` for clients, ``AdminService`` for operators.

The proto's comments are the specification. Callers are authorized before a method runs
(coordinator.server): a method reads the caller's name from its certificate, and a client only
ever sees its own withdrawals, deposits and fees. Bad input raises ``RpcFailure``
INVALID_ARGUMENT naming the field, before any write; every write is one transaction (concurrent
submissions share one: coordinator.submissions), and a change wakes the Watch streams
(coordinator.watch). The deposit calls are in coordinator.deposit_api.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import grpc
from sqlalchemy import Connection, Engine

from coordinator import validation, views
from coordinator.config import CoordinatorConfig
from coordinator.deposit_api import DepositApi, DepositSigners
from coordinator.health import HealthBoard
from coordinator.leadership import ACTIVE, Leadership, standby_reason
from coordinator.refund_api import RefundApi
from coordinator.refund_rounds import RawTransactions, Senders
from coordinator.round_kinds import CancelRefused
from coordinator.scheduler import Outcome, PoolDegraded, RoundBusy, RoundsPaused
from coordinator.signers import Failure, SignerCallError
from coordinator.store import cancels as cancel_store
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import rounds as rstore
from coordinator.store import withdrawals as wstore
from coordinator.store.alerts import recent_alerts
from coordinator.store.audit_heads import latest_heads
from coordinator.store.fees import fee_notices
from coordinator.store.schema import transaction
from coordinator.store.settings import rounds_paused, set_rounds_paused
from coordinator.submissions import SubmissionWriter
from coordinator.watch import ChangeSignal, follow
from pool.networks import Network
from pool.series import CHANGE, RECEIVE, Series, SeriesState
from vpool.rpc import RpcFailure, caller_identity, invalid, series_from_descriptors
from vpool.v1 import coordinator_pb2, coordinator_pb2_grpc, signer_pb2

log = logging.getLogger(__name__)

Clock = Callable[[], float]
WATCH_BATCH = 100
"""Events read from the store at a time by a Watch stream."""
MAX_WATCHES = 32
"""Watch streams at once, of both kinds (each holds a server thread); more: RESOURCE_EXHAUSTED."""
ALERTS_SHOWN = 20
"""GetPoolStatus shows this many of the most recent alerts."""
_MAX_CURSOR = 2**63 - 1
_T = TypeVar("_T")


def _caller_name(context: Any) -> str:
    """The name in the caller's certificate (the gatekeeper has checked its role)."""
    return caller_identity(context)[1]


def _no_withdrawal(request_id: str) -> RpcFailure:
    return RpcFailure(
        grpc.StatusCode.NOT_FOUND, f"request_id: you have no withdrawal {request_id!r}"
    )


def _differences(old: wstore.Withdrawal, new: validation.WithdrawalBody) -> list[str]:
    """The fields in which a resubmitted withdrawal differs from the stored one."""
    fields = (
        ("address", old.script_pubkey, new.script_pubkey),
        ("amount_sat", old.amount, new.amount),
        ("extra_fee_sat", old.extra_fee, new.extra_fee),
    )
    return [name for name, before, after in fields if before != after]


class CoordinatorApi(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """What clients call; see proto/vpool/v1/coordinator.proto."""

    def __init__(
        self,
        config: CoordinatorConfig,
        engine: Engine,
        board: HealthBoard,
        signers: DepositSigners,
        changes: ChangeSignal,
        clock: Clock,
        leadership: Leadership | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._board = board
        self._leadership = leadership
        """None: this coordinator is the only one, always active."""
        self._changes = changes
        self._clock = clock
        self._deposits = DepositApi(config, engine, board, signers, clock)
        self._watch_slots = threading.BoundedSemaphore(MAX_WATCHES)
        self._submissions = SubmissionWriter(engine, config.pool, clock, changes.notify)

    def SubmitWithdrawal(
        self, request: coordinator_pb2.SubmitWithdrawalRequest, context: Any
    ) -> coordinator_pb2.Withdrawal:
        body = validation.withdrawal(request, self._config.pool, self._config.network)
        client_id = _caller_name(context)
        stored, message = self._submissions.submit(client_id, body)
        differing = _differences(stored, body)
        if differing:
            raise RpcFailure(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id: {body.request_id!r} was submitted before with another "
                f"{', '.join(differing)}",
            )
        return message

    def GetWithdrawal(
        self, request: coordinator_pb2.GetWithdrawalRequest, context: Any
    ) -> coordinator_pb2.Withdrawal:
        request_id = validation.request_id(request.request_id)
        with self._engine.connect() as conn:
            found = wstore.get_by_request(conn, _caller_name(context), request_id)
            if found is None:
                raise _no_withdrawal(request_id)
            return views.WithdrawalViews(conn).message(found)

    def ListWithdrawals(
        self, request: coordinator_pb2.ListWithdrawalsRequest, context: Any
    ) -> coordinator_pb2.ListWithdrawalsResponse:
        statuses = []
        for i, code in enumerate(request.statuses):
            if code not in views.STATUS_OF_CODE:
                raise invalid(f"statuses[{i}]", f"unknown withdrawal status {code}")
            statuses.append(views.STATUS_OF_CODE[code])
        size = validation.page_size(request.page_size)
        before = validation.int_page_token(request.page_token)
        with self._engine.connect() as conn:
            found = wstore.list_for_client(conn, _caller_name(context), statuses, size + 1, before)
            page = found[:size]
            build = views.WithdrawalViews(conn)
            response = coordinator_pb2.ListWithdrawalsResponse(
                withdrawals=[build.message(w) for w in page]
            )
        if len(found) > size:
            response.next_page_token = validation.encode_page_token(str(page[-1].id))
        return response

    def CancelWithdrawal(
        self, request: coordinator_pb2.CancelWithdrawalRequest, context: Any
    ) -> coordinator_pb2.Withdrawal:
        request_id = validation.request_id(request.request_id)
        client_id = _caller_name(context)
        with transaction(self._engine) as conn:
            found = wstore.lock_request(conn, client_id, request_id)
            if found is None:
                raise _no_withdrawal(request_id)
            changed = found.status in wstore.QUEUED
            in_transaction = found.status in (wstore.Status.SIGNED, wstore.Status.BROADCAST)
            if changed:
                wstore.set_status(
                    conn, [found.id], wstore.Status.CANCELLED, self._clock(), detail="by the client"
                )
            elif in_transaction and found.round_seq is not None:
                # Cancel and replace (coordinator.cancels): a cancel round replaces its
                # transaction by one without it, if the signers accept it; until one of the
                # two confirms, it stays as it is.
                changed = cancel_store.request_cancel(
                    conn, found.id, found.round_seq, self._clock()
                )
                if changed:
                    wstore.set_status(
                        conn,
                        [found.id],
                        found.status,
                        self._clock(),
                        detail="cancel requested: its transaction is to be replaced by one "
                        "without it; it is cancelled if the replacement confirms, completed if "
                        "the original does",
                    )
            elif found.status is not wstore.Status.CANCELLED:
                raise RpcFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"request_id: withdrawal {request_id!r} is {found.status.value}; only "
                    "pending, deferred, signed or broadcast withdrawals can be cancelled",
                )
            cancelled = wstore.get_by_id(conn, found.id)
            assert cancelled is not None
            message = views.WithdrawalViews(conn).message(cancelled)
        if changed:
            log.info("client %s: withdrawal %r cancelled", client_id, request_id)
            self._changes.notify()
        return message

    def WatchWithdrawals(
        self, request: coordinator_pb2.WatchWithdrawalsRequest, context: Any
    ) -> Iterator[coordinator_pb2.WithdrawalEvent]:
        """Streams until the client goes away or the server stops; see coordinator.watch.

        Each event carries the status it recorded and the withdrawal as it is when the event is
        sent (not as it was then): a client catching up sees the current round, outputs and
        confirmations with every old event.
        """
        client_id = _caller_name(context)

        def read(cursor: int) -> list[tuple[int, coordinator_pb2.WithdrawalEvent]]:
            with self._engine.connect() as conn:
                events = wstore.events_after(conn, client_id, cursor, WATCH_BATCH)
                build = views.WithdrawalViews(conn)
                return [(event.cursor, build.event(event)) for event in events]

        yield from self._stream(request.after_cursor, context, read)

    def _stream(
        self,
        after_cursor: int,
        context: Any,
        read: Callable[[int], list[tuple[int, _T]]],
    ) -> Iterator[_T]:
        """A Watch stream from ``after_cursor`` (coordinator.watch.follow), holding one of the
        ``MAX_WATCHES`` slots while it runs."""
        if not self._watch_slots.acquire(blocking=False):
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_WATCHES} Watch streams are open; retry later",
            )
        try:
            cursor = min(after_cursor, _MAX_CURSOR)
            yield from follow(self._changes, context, cursor, read, WATCH_BATCH)
        finally:
            self._watch_slots.release()

    def GetPoolStatus(
        self, request: coordinator_pb2.GetPoolStatusRequest, context: Any
    ) -> coordinator_pb2.PoolStatus:
        network, pool = self._config.network, self._config.pool
        with self._engine.connect() as conn:
            tip = views.tip_height(conn)
            series = cstore.all_series(conn, network)
            balances = cstore.balances(
                conn, tip, pool.min_conf, coinbase_maturity=pool.coinbase_maturity
            )
            queue = wstore.queue_length(conn)
            last = rstore.list_rounds(conn, 1)
            paused = rounds_paused(conn)
            alerts = recent_alerts(conn, ALERTS_SHOWN)
            waiting, awaiting = rstore.signing_notes(
                conn, self._config.rounds.round_deadline_seconds, self._clock()
            )
            heads = latest_heads(conn)
        status = coordinator_pb2.PoolStatus(
            network=views.network_code(network),
            tip_height=tip,
            series=[views.series_balance(s, balances[s.id]) for s in series],
            signers=[
                views.signer_health(s, heads.get(s.signer_id)) for s in self._board.snapshot()
            ],
            quorum=self._board.quorum().state,
            queue_length=queue,
            rounds_paused=paused,
            alerts=waiting + [str(alert) for alert in alerts],
            awaiting=awaiting,
        )
        reason = self._board.not_serving_reason()
        status.role, status.active_coordinator = ACTIVE, ""
        if self._leadership is not None:
            status.role = self._leadership.role
            status.active_coordinator = self._leadership.active_name() or ""
            if status.role != ACTIVE:
                reason = standby_reason(self._leadership)
        status.health = "SERVING" if reason is None else "NOT_SERVING"
        status.health_detail = reason or ""
        if last:
            status.last_round.CopyFrom(views.round_summary(last[0]))
        return status

    def GetDepositAddress(
        self, request: coordinator_pb2.GetDepositAddressRequest, context: Any
    ) -> coordinator_pb2.DepositAddress:
        return self._deposits.get_address(request, _caller_name(context))

    def ListDeposits(
        self, request: coordinator_pb2.ListDepositsRequest, context: Any
    ) -> coordinator_pb2.ListDepositsResponse:
        return self._deposits.list(request, _caller_name(context))

    def WatchDeposits(
        self, request: coordinator_pb2.WatchDepositsRequest, context: Any
    ) -> Iterator[coordinator_pb2.DepositEvent]:
        """As WatchWithdrawals, for the caller's deposits."""
        client_id = _caller_name(context)

        def read(cursor: int) -> list[tuple[int, coordinator_pb2.DepositEvent]]:
            with self._engine.connect() as conn:
                events = dstore.events_after(conn, client_id, cursor, WATCH_BATCH)
                build = views.DepositViews(conn, self._config.network)
                return [(event.cursor, build.event(event)) for event in events]

        yield from self._stream(request.after_cursor, context, read)

    def GetFeeStatement(
        self, request: coordinator_pb2.GetFeeStatementRequest, context: Any
    ) -> coordinator_pb2.FeeStatement:
        size = validation.page_size(request.page_size)
        after = _fee_position(validation.decode_page_token(request.page_token))
        with self._engine.connect() as conn:
            found = fee_notices(conn, _caller_name(context), size + 1, after)
        page = found[:size]
        statement = coordinator_pb2.FeeStatement(
            notices=[
                coordinator_pb2.FeeNotice(
                    round_id=n.round_id, txid=n.txid, fee_sat=n.amount, at_unix=int(n.at)
                )
                for n in page
            ],
            total_sat=sum(n.amount for n in page),
        )
        if len(found) > size:
            last = page[-1]
            statement.next_page_token = validation.encode_page_token(
                f"{last.round_seq}:{last.txid}"
            )
        return statement


def _fee_position(position: str | None) -> tuple[int, str] | None:
    """``(round_seq, txid)`` of a fee statement page token's position."""
    if position is None:
        return None
    seq, sep, txid = position.partition(":")
    if not (sep and seq.isdigit() and txid):
        raise invalid("page_token", "not a token returned by this service")
    return int(seq), txid


class RoundRunner(Protocol):
    """The part of ``coordinator.scheduler.RoundScheduler`` that RunRoundNow and CancelRound
    use."""

    def run_now(self) -> Outcome: ...

    def cancel_round(self, round_id: str) -> Outcome: ...


class SeriesSigners(Protocol):
    """The part of ``coordinator.signers.SignerPool`` that AddSeries uses."""

    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo: ...

    def register_series(
        self, signer_id: str, network: Network, series: Series, timeout: float
    ) -> signer_pb2.RegisterSeriesResponse: ...


class AdminApi(coordinator_pb2_grpc.AdminServiceServicer):
    """What the pool's operators call; see proto/vpool/v1/coordinator.proto."""

    def __init__(
        self,
        config: CoordinatorConfig,
        engine: Engine,
        runner: RoundRunner,
        signers: SeriesSigners,
        board: HealthBoard,
        chain: RawTransactions,
        clock: Clock,
    ) -> None:
        self._config = config
        self._engine = engine
        self._runner = runner
        self._signers = signers
        self._board = board
        self._clock = clock
        self._refunds = RefundApi(config, engine, Senders(chain), clock)

    def ListRounds(
        self, request: coordinator_pb2.ListRoundsRequest, context: Any
    ) -> coordinator_pb2.ListRoundsResponse:
        size = validation.page_size(request.page_size)
        before = validation.int_page_token(request.page_token)
        with self._engine.connect() as conn:
            found = rstore.list_rounds(conn, size + 1, before)
            page = found[:size]
            response = coordinator_pb2.ListRoundsResponse(
                rounds=[views.round_summary(r) for r in page]
            )
            if len(found) > size:
                seq = rstore.round_seq_of(conn, page[-1].round_id)
                response.next_page_token = validation.encode_page_token(str(seq))
        return response

    def GetRound(
        self, request: coordinator_pb2.GetRoundRequest, context: Any
    ) -> coordinator_pb2.Round:
        if not request.round_id:
            raise invalid("round_id", "missing")
        with self._engine.connect() as conn:
            view = rstore.round_view(conn, request.round_id.lower())
            if view is None:
                raise RpcFailure(
                    grpc.StatusCode.NOT_FOUND, f"round_id: no round {request.round_id!r}"
                )
            return views.round_message(view, views.tip_height(conn))

    def RunRoundNow(
        self, request: coordinator_pb2.RunRoundNowRequest, context: Any
    ) -> coordinator_pb2.RunRoundNowResponse:
        log.info("admin %s: run a round now", _caller_name(context))
        try:
            outcome = self._runner.run_now()
        except (RoundsPaused, RoundBusy, PoolDegraded) as e:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from None
        except Exception as e:
            log.exception("RunRoundNow: the round failed")
            raise RpcFailure(
                grpc.StatusCode.INTERNAL,
                f"the round failed ({e.__class__.__name__}); the coordinator's log says why",
            ) from None
        return coordinator_pb2.RunRoundNowResponse(
            round_id=outcome.round_id or "", detail=outcome.detail
        )

    def CancelRound(
        self, request: coordinator_pb2.CancelRoundRequest, context: Any
    ) -> coordinator_pb2.Round:
        round_id = request.round_id.lower()
        if not round_id:
            raise invalid("round_id", "missing")
        log.info("admin %s: cancel round %s", _caller_name(context), round_id)
        try:
            self._runner.cancel_round(round_id)
        except KeyError:
            raise RpcFailure(
                grpc.StatusCode.NOT_FOUND, f"round_id: no round {request.round_id!r}"
            ) from None
        except CancelRefused as e:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, f"round_id: {e}") from None
        return self.GetRound(coordinator_pb2.GetRoundRequest(round_id=round_id), context)

    def PauseRounds(
        self, request: coordinator_pb2.PauseRoundsRequest, context: Any
    ) -> coordinator_pb2.RoundsState:
        return self._set_paused(True, context)

    def ResumeRounds(
        self, request: coordinator_pb2.ResumeRoundsRequest, context: Any
    ) -> coordinator_pb2.RoundsState:
        return self._set_paused(False, context)

    def _set_paused(self, paused: bool, context: Any) -> coordinator_pb2.RoundsState:
        with transaction(self._engine) as conn:
            set_rounds_paused(conn, paused)
        log.info("admin %s: rounds %s", _caller_name(context), "paused" if paused else "resumed")
        return coordinator_pb2.RoundsState(paused=paused)

    def AddSeries(
        self, request: coordinator_pb2.AddSeriesRequest, context: Any
    ) -> coordinator_pb2.SeriesInfo:
        series = self._parse_series(request)
        network = self._config.network
        with self._engine.connect() as conn:
            stored = self._same_series(conn, series)
            if stored is None:
                self._check_new_id(conn, series.id)
        self._register_on_signers(series)
        if stored is not None:
            # The repair of a series the store holds and its signers may not (e.g. one created
            # by a configuration file of an older version): registered again, nothing stored.
            log.info("admin %s: series %d registered again", _caller_name(context), series.id)
            return coordinator_pb2.SeriesInfo(
                series_id=stored.id,
                state=stored.state.value,
                receive_descriptor=stored.descriptor(RECEIVE).to_string(network),
                change_descriptor=stored.descriptor(CHANGE).to_string(network),
            )
        with transaction(self._engine) as conn:
            self._check_new_id(conn, series.id)
            try:
                cstore.add_series(
                    conn,
                    series.id,
                    request.receive_descriptor,
                    request.change_descriptor,
                    SeriesState.ACTIVE,
                    network,
                    self._clock(),
                )
            except cstore.SeriesExists as e:
                raise RpcFailure(grpc.StatusCode.ALREADY_EXISTS, str(e)) from None
            cstore.ensure_lookahead(conn, network, self._config.pool.address_lookahead)
        log.info("admin %s: series %d added and active", _caller_name(context), series.id)
        return coordinator_pb2.SeriesInfo(
            series_id=series.id,
            state=SeriesState.ACTIVE.value,
            receive_descriptor=series.descriptor(RECEIVE).to_string(network),
            change_descriptor=series.descriptor(CHANGE).to_string(network),
        )

    def SetSignerMaintenance(
        self, request: coordinator_pb2.SetSignerMaintenanceRequest, context: Any
    ) -> coordinator_pb2.SignerHealth:
        if not request.signer_id:
            raise invalid("signer_id", "missing")
        try:
            state = self._board.set_maintenance(request.signer_id, request.maintenance)
        except KeyError:
            raise RpcFailure(
                grpc.StatusCode.NOT_FOUND, f"signer_id: no configured signer {request.signer_id!r}"
            ) from None
        log.info(
            "admin %s: signer %s %s maintenance",
            _caller_name(context),
            request.signer_id,
            "in" if request.maintenance else "out of",
        )
        return views.signer_health(state)

    def ProposeRefund(
        self, request: coordinator_pb2.ProposeRefundRequest, context: Any
    ) -> coordinator_pb2.Deposit:
        return self._refunds.propose(request, _caller_name(context))

    def ListRefunds(
        self, request: coordinator_pb2.ListRefundsRequest, context: Any
    ) -> coordinator_pb2.ListRefundsResponse:
        return self._refunds.list(request)

    def _parse_series(self, request: coordinator_pb2.AddSeriesRequest) -> Series:
        return series_from_descriptors(
            request.series_id,
            request.receive_descriptor,
            request.change_descriptor,
            self._config.network,
        )

    def _same_series(self, conn: Connection, series: Series) -> Series | None:
        """The stored series of ``series.id`` when it has the same threshold and keys; None when
        the id is new. Another series under that id is ALREADY_EXISTS."""
        for stored in cstore.all_series(conn, self._config.network):
            if stored.id == series.id:
                if (stored.m, stored.keys) != (series.m, series.keys):
                    raise RpcFailure(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"series_id: series {series.id} exists with other keys or threshold",
                    )
                return stored
        return None

    def _check_new_id(self, conn: Connection, series_id: int) -> None:
        known = [s.id for s in cstore.all_series(conn, self._config.network)]
        if known and series_id <= max(known):
            raise invalid("series_id", f"must be greater than {max(known)}, the newest series")

    def _register_on_signers(self, series: Series) -> None:
        """Register the series on each configured signer that holds one of its keys; every key
        must have such a signer. Nothing is stored when one of them fails."""
        timeout = self._config.rounds.sign_deadline_seconds
        holders = {key.origin.fingerprint.hex() for key in series.keys}
        registered: set[str] = set()
        for signer_id in self._signers.signer_ids:
            try:
                fingerprint = self._signers.get_info(signer_id, timeout).master_fingerprint
                if fingerprint in holders:
                    self._signers.register_series(signer_id, self._config.network, series, timeout)
                    registered.add(fingerprint)
            except SignerCallError as e:
                code = (
                    grpc.StatusCode.UNAVAILABLE
                    if e.error.failure in (Failure.DOWN, Failure.TIMEOUT)
                    else grpc.StatusCode.FAILED_PRECONDITION
                )
                raise RpcFailure(code, f"{e}; the series was not added") from None
        missing = sorted(holders - registered)
        if missing:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no configured signer holds the key(s) with fingerprint {', '.join(missing)}; "
                "the series was not added",
            )
