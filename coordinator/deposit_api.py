"""CoordinatorService's deposit calls, GetDepositAddress and ListDeposits (CoordinatorApi
delegates to ``DepositApi``; WatchDeposits streams from coordinator.api).

A deposit address is handed out once at least n - m + 1 of the signers holding the active
series' n keys have registered it with its refund address (SignerService.RegisterDepositAddress,
first registration wins on each signer) and derived the same address: any m signers then include
one that holds the refund address, so no m signers can later be taught another one. Each signer
that missed the registration (down, or failing) is recorded, and coordinator.registrations
replays the registration to it when it answers again, before it is asked to acknowledge a
deposit to that address.

No receive index is burnt by a refusal that can be known in advance: the index is taken only
once enough signers are up (not down on the health board, and their fingerprint known). Only a
signer that fails between that check and the registration, leaving fewer than n - m + 1, costs an
index (skipped, never handed out later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc
from sqlalchemy import Engine

from coordinator import validation, views
from coordinator.config import CoordinatorConfig
from coordinator.health import DOWN, SignerState
from coordinator.signers import Failure, SignerCallError
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import registrations as regstore
from coordinator.store.schema import transaction
from pool.networks import Network
from pool.series import RECEIVE, Series, SeriesState
from vpool.rpc import RpcFailure, invalid
from vpool.v1 import coordinator_pb2, signer_pb2

log = logging.getLogger(__name__)


class DepositSigners(Protocol):
    """The part of ``coordinator.signers.SignerPool`` GetDepositAddress uses."""

    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo: ...

    def register_deposit_address(
        self,
        signer_id: str,
        network: Network,
        series_id: int,
        index: int,
        refund_address: str,
        timeout: float,
    ) -> signer_pb2.RegisterDepositAddressResponse: ...

    def display_address(
        self, signer_id: str, network: Network, series_id: int, branch: int, index: int,
        timeout: float,
    ) -> signer_pb2.DisplayAddressResponse: ...  # fmt: skip


class Liveness(Protocol):
    """The part of ``coordinator.health.HealthBoard`` GetDepositAddress uses."""

    def degraded_reason(self) -> str | None: ...

    def snapshot(self) -> list[SignerState]: ...


def _fingerprints(series: Series) -> set[str]:
    return {key.origin.fingerprint.hex() for key in series.keys}


def _signer_failure(e: SignerCallError, index: int, series_id: int) -> RpcFailure:
    code = (
        grpc.StatusCode.UNAVAILABLE
        if e.error.failure in (Failure.DOWN, Failure.TIMEOUT)
        else grpc.StatusCode.FAILED_PRECONDITION
    )
    return RpcFailure(
        code,
        f"{e}; the address was not handed out (receive index {index} of series {series_id} "
        "is skipped)",
    )


class DepositApi:
    def __init__(
        self,
        config: CoordinatorConfig,
        engine: Engine,
        liveness: Liveness,
        signers: DepositSigners,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._engine = engine
        self._liveness = liveness
        self._signers = signers
        self._clock = clock
        self._fingerprints: dict[str, str] = {}
        """Each signer's master fingerprint, as last learnt."""

    def get_address(
        self, request: coordinator_pb2.GetDepositAddressRequest, client_id: str
    ) -> coordinator_pb2.DepositAddress:
        network = self._config.network
        body = validation.deposit_address(request, network)
        degraded = self._liveness.degraded_reason()
        if degraded is not None:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{degraded}; no deposit address is handed out until it is ok",
            )
        series = self._active_series()
        holders = self._reachable_holders(series)
        index = self._take_index(series)
        registered = self._register(holders, series, index, body.refund_address)
        verified = self._verify(registered, series, index) if request.verify_on_signers else []
        record = dstore.DepositAddress(
            script_pubkey=series.derive(RECEIVE, index).script_pubkey,
            series_id=series.id,
            index=index,
            client_id=client_id,
            user_id=body.user_id,
            refund_address=body.refund_address,
            created_at=self._clock(),
        )
        missed = [
            signer_id
            for signer_id in self._signers.signer_ids
            if signer_id not in registered and self._may_hold(signer_id, series)
        ]
        with transaction(self._engine) as conn:
            dstore.record_address(conn, record)
            regstore.record_missed(conn, record.script_pubkey, missed, record.created_at)
        log.info(
            "client %s: deposit address %d/%d handed out (registered by %s%s)",
            client_id,
            series.id,
            index,
            ", ".join(registered),
            f"; to replay to {', '.join(missed)}" if missed else "",
        )
        return coordinator_pb2.DepositAddress(
            address=series.address(RECEIVE, index, network),
            user_id=body.user_id,
            series_id=series.id,
            index=index,
            refund_address=body.refund_address,
            verified_by=verified,
        )

    def _active_series(self) -> Series:
        with self._engine.connect() as conn:
            series = cstore.all_series(conn, self._config.network)
        active = next((s for s in series if s.state is SeriesState.ACTIVE), None)
        if active is None:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "there is no active series")
        return active

    def _take_index(self, series: Series) -> int:
        """The series' next receive index, taken (watched from now on)."""
        network = self._config.network
        with transaction(self._engine) as conn:
            active = cstore.active_series_id(conn)
            if active != series.id:
                raise RpcFailure(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the active series changed from {series.id} to {active}; ask again",
                )
            index = cstore.take_index(conn, series.id, RECEIVE)
            cstore.ensure_lookahead(conn, network, self._config.pool.address_lookahead)
        return index

    def _may_hold(self, signer_id: str, series: Series) -> bool:
        """False only for a signer known to hold none of the series' keys."""
        fingerprint = self._fingerprints.get(signer_id, "")
        return not fingerprint or fingerprint in _fingerprints(series)

    def _reachable_holders(self, series: Series) -> list[str]:
        """The configured signers, not down, holding keys of ``series`` (fingerprints from the
        health checks, else asked); refused, before any index is taken, when they hold fewer
        than n - m + 1 of its keys."""
        wanted = _fingerprints(series)
        needed = len(series.keys) - series.m + 1
        states = {s.signer_id: s for s in self._liveness.snapshot()}
        timeout = self._config.rounds.sign_deadline_seconds
        holders: list[str] = []
        found: set[str] = set()
        missing: list[str] = []
        for signer_id in self._signers.signer_ids:
            state = states.get(signer_id)
            fingerprint = state.fingerprint if state is not None else ""
            if state is not None and state.state == DOWN:
                missing.append(f"{signer_id} is down")
                continue
            if not fingerprint:
                try:
                    fingerprint = self._signers.get_info(signer_id, timeout).master_fingerprint
                except SignerCallError as e:
                    missing.append(str(e))
                    continue
            self._fingerprints[signer_id] = fingerprint
            if fingerprint in wanted:
                holders.append(signer_id)
                found.add(fingerprint)
        if len(found) < needed:
            why = f" ({'; '.join(missing)})" if missing else ""
            raise RpcFailure(
                grpc.StatusCode.UNAVAILABLE,
                f"a deposit address needs its refund address recorded by at least {needed} of "
                f"the {len(series.keys)} signers of series {series.id}; {len(found)} can be "
                f"asked now{why}; no address index was taken",
            )
        return holders

    def _register(self, holders: list[str], series: Series, index: int, refund: str) -> list[str]:
        """Register the address and its refund address on every holder at once; the holders
        that did and derived the same address. Fewer than n - m + 1 keys: refused (the index
        is skipped)."""
        network, timeout = self._config.network, self._config.rounds.sign_deadline_seconds
        ours = series.address(RECEIVE, index, network)
        needed = len(series.keys) - series.m + 1

        def ask(signer_id: str) -> str | None:
            """None when it registered our address, else what went wrong."""
            try:
                theirs = self._signers.register_deposit_address(
                    signer_id, network, series.id, index, refund, timeout
                ).address
            except SignerCallError as e:
                return str(e)
            if theirs != ours:
                return f"signer {signer_id} registered {theirs!r}, not {ours!r}"
            return None

        with ThreadPoolExecutor(max_workers=max(1, len(holders))) as pool:
            answers = dict(zip(holders, pool.map(ask, holders), strict=True))
        registered = [signer_id for signer_id, problem in answers.items() if problem is None]
        keys = {self._fingerprints[signer_id] for signer_id in registered}
        problems = [problem for problem in answers.values() if problem is not None]
        for problem in problems:
            log.warning("deposit address %d/%d: %s", series.id, index, problem)
        if len(keys) < needed:
            raise RpcFailure(
                grpc.StatusCode.UNAVAILABLE,
                f"{'; '.join(problems)}; the address was not handed out (receive index {index} "
                f"of series {series.id} is skipped)",
            )
        return registered

    def _verify(self, holders: list[str], series: Series, index: int) -> list[str]:
        """Every holder's device computes (and shows, if it can) the address; the holders."""
        network, timeout = self._config.network, self._config.rounds.sign_deadline_seconds
        self._ask_each(
            holders,
            series,
            index,
            "computed",
            lambda signer_id: (
                self._signers.display_address(
                    signer_id, network, series.id, RECEIVE, index, timeout
                ).address
            ),
        )
        return holders

    def _ask_each(
        self,
        holders: list[str],
        series: Series,
        index: int,
        how: str,
        ask: Callable[[str], str],
    ) -> None:
        """Ask every holder for receive address ``index`` of ``series`` (``ask``); each must
        answer with ours."""
        ours = series.address(RECEIVE, index, self._config.network)
        for signer_id in holders:
            try:
                theirs = ask(signer_id)
            except SignerCallError as e:
                raise _signer_failure(e, index, series.id) from None
            if theirs != ours:
                raise RpcFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"signer {signer_id} {how} {theirs!r} for receive index {index} of series "
                    f"{series.id}, not {ours!r}; the address was not handed out",
                )

    def list(
        self, request: coordinator_pb2.ListDepositsRequest, client_id: str
    ) -> coordinator_pb2.ListDepositsResponse:
        user_id = validation.request_id(request.user_id, "user_id") if request.user_id else ""
        statuses = []
        for i, code in enumerate(request.statuses):
            if code not in views.DEPOSIT_STATUS_OF_CODE:
                raise invalid(f"statuses[{i}]", f"unknown deposit status {code}")
            statuses.append(views.DEPOSIT_STATUS_OF_CODE[code])
        deposits, token = deposit_page(
            self._engine,
            self._config.network,
            request.page_size,
            request.page_token,
            client_id=client_id,
            user_id=user_id,
            statuses=statuses,
        )
        return coordinator_pb2.ListDepositsResponse(deposits=deposits, next_page_token=token)


def deposit_page(
    engine: Engine,
    network: Network,
    page_size: int,
    page_token: str,
    *,
    client_id: str | None,
    user_id: str = "",
    statuses: Sequence[dstore.Status],
) -> tuple[list[coordinator_pb2.Deposit], str]:
    """A ListDeposits (or ListRefunds) page, newest first, and the token of the next one ("" on
    the last page); the filters are those of ``store.deposits.list_deposits``."""
    size = validation.page_size(page_size)
    after = _page_position(validation.decode_page_token(page_token))
    with engine.connect() as conn:
        found = dstore.list_deposits(
            conn,
            client_id=client_id,
            user_id=user_id,
            statuses=statuses,
            limit=size + 1,
            after=after,
        )
        page = found[:size]
        build = views.DepositViews(conn, network)
        messages = [build.message(d) for d in page]
    if len(found) <= size:
        return messages, ""
    last = page[-1]
    return messages, validation.encode_page_token(f"{last.height}:{last.txid}:{last.vout}")


def _page_position(token: str | None) -> dstore.Position | None:
    """The (height, txid, vout) of a token made by ``deposit_page``."""
    if token is None:
        return None
    height, _, rest = token.partition(":")
    txid, _, vout = rest.partition(":")
    if not (height.isdigit() and vout.isdigit() and txid):
        raise invalid("page_token", "not a token returned by this service")
    return dstore.Position(int(height), txid, int(vout))
