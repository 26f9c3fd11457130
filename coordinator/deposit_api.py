"""CoordinatorService's deposit calls, GetDepositAddress and ListDeposits (CoordinatorApi
delegates to ``DepositApi``; WatchDeposits streams from coordinator.api).

A deposit address is handed out only once every signer holding a key of the active series has
registered it with its refund address (SignerService.RegisterDepositAddress) and derived the same
address: a coordinator cannot later change where its deposits are refunded. When a signer fails,
the address is not handed out and its receive index is skipped (never handed out later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
from sqlalchemy import Engine

from coordinator import validation, views
from coordinator.config import CoordinatorConfig
from coordinator.health import SignerState
from coordinator.signers import Failure, SignerCallError
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
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
        series, index = self._take_index()
        holders = self._holders(series, index)
        self._register(holders, series, index, body.refund_address)
        verified = self._verify(holders, series, index) if request.verify_on_signers else []
        record = dstore.DepositAddress(
            script_pubkey=series.derive(RECEIVE, index).script_pubkey,
            series_id=series.id,
            index=index,
            client_id=client_id,
            user_id=body.user_id,
            refund_address=body.refund_address,
            created_at=self._clock(),
        )
        with transaction(self._engine) as conn:
            dstore.record_address(conn, record)
        log.info("client %s: deposit address %d/%d handed out", client_id, series.id, index)
        return coordinator_pb2.DepositAddress(
            address=series.address(RECEIVE, index, network),
            user_id=body.user_id,
            series_id=series.id,
            index=index,
            refund_address=body.refund_address,
            verified_by=verified,
        )

    def _take_index(self) -> tuple[Series, int]:
        """The active series and its next receive index, taken (watched from now on)."""
        network = self._config.network
        with transaction(self._engine) as conn:
            series = cstore.all_series(conn, network)
            active = next((s for s in series if s.state is SeriesState.ACTIVE), None)
            if active is None:
                raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "there is no active series")
            index = cstore.take_index(conn, active.id, RECEIVE)
            cstore.ensure_lookahead(conn, network, self._config.pool.address_lookahead)
        return active, index

    def _holders(self, series: Series, index: int) -> list[str]:
        """The configured signers holding keys of ``series`` (fingerprints from the health
        checks, else asked); every key must have one."""
        wanted = {key.origin.fingerprint.hex() for key in series.keys}
        known = {s.signer_id: s.fingerprint for s in self._liveness.snapshot()}
        timeout = self._config.rounds.sign_deadline_seconds
        holders, found, failures = [], set(), []
        for signer_id in self._signers.signer_ids:
            fingerprint = known.get(signer_id, "")
            if not fingerprint:
                try:
                    fingerprint = self._signers.get_info(signer_id, timeout).master_fingerprint
                except SignerCallError as e:
                    failures.append(e)
                    continue
            if fingerprint in wanted:
                holders.append(signer_id)
                found.add(fingerprint)
        if found != wanted:
            if failures:
                raise _signer_failure(failures[0], index, series.id)
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no configured signer holds the key(s) with fingerprint "
                f"{', '.join(sorted(wanted - found))}",
            )
        return holders

    def _register(self, holders: list[str], series: Series, index: int, refund: str) -> None:
        """Register the address and its refund address on every holder; each must derive the
        same address."""
        network, timeout = self._config.network, self._config.rounds.sign_deadline_seconds
        self._ask_each(
            holders,
            series,
            index,
            "registered",
            lambda signer_id: (
                self._signers.register_deposit_address(
                    signer_id, network, series.id, index, refund, timeout
                ).address
            ),
        )

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
