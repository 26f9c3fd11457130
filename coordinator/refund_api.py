"""AdminService's refund calls, ProposeRefund and ListRefunds (AdminApi delegates to
``RefundApi``).

An operator proposes where a deposit is refunded only when the coordinator has no destination
for it: no refund address was registered with its deposit address and its sender cannot be
derived (coordinator.refund_rounds), or the signers refused its refund. The proposal is stored
with the deposit (source ``operator``, a status event too) and the next refund round takes it;
each signer signs it only if its own policy allows operator-chosen refunds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from sqlalchemy import Engine

from coordinator import validation, views
from coordinator.chain import ChainError
from coordinator.config import CoordinatorConfig
from coordinator.deposit_api import deposit_page
from coordinator.refund_rounds import (
    Senders,
    base_reason,
    needs_sender,
    outpoint_key,
    refusals_of,
)
from coordinator.store import deposits as dstore
from coordinator.store.deposits import Deposit, Refund, Status
from coordinator.store.schema import transaction
from pool.address import script_pubkey_to_address
from pool.refunds import RefundSource
from vpool.rpc import RpcFailure
from vpool.v1 import coordinator_pb2

log = logging.getLogger(__name__)

REFUND_STATUSES = (
    Status.REFUND_PENDING,
    Status.REFUND_PROPOSED,
    Status.REFUND_SIGNED,
    Status.REFUNDED,
    Status.DUST,
)
"""What ListRefunds lists: deposits that are or were to be refunded, and those not worth it."""


class RefundApi:
    def __init__(
        self,
        config: CoordinatorConfig,
        engine: Engine,
        senders: Senders,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._engine = engine
        self._senders = senders
        self._clock = clock

    def propose(
        self, request: coordinator_pb2.ProposeRefundRequest, admin: str
    ) -> coordinator_pb2.Deposit:
        """Store an operator's refund destination for a deposit that has none."""
        txid, vout = validation.txid(request.txid), request.vout
        destination = validation.canonical_address(request.address, self._config.network)
        with self._engine.connect() as conn:
            found = dstore.get(conn, txid, vout)
        if found is None:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"txid, vout: no deposit {txid}:{vout}")
        sender = self._sender(found)  # the node, before the transaction
        with transaction(self._engine) as conn:
            deposit = dstore.get(conn, txid, vout, for_update=True)
            assert deposit is not None  # deposits are never deleted
            self._check_open(deposit, refusals_of(conn, deposit), sender)
            changed = dstore.set_status(
                conn,
                txid,
                vout,
                Status.REFUND_PENDING,
                self._clock(),
                reason=base_reason(deposit.reason),
                detail=f"refund to {destination} proposed by operator {admin}",
                refund=Refund(destination, RefundSource.OPERATOR.value, None, None),
            )
            message = views.DepositViews(conn, self._config.network).message(changed)
        log.info("admin %s: refund of deposit %s:%d proposed", admin, txid, vout)
        return message

    def _sender(self, deposit: Deposit) -> str:
        """The address of the deposit's sender ("" when it cannot be derived)."""
        if not needs_sender(deposit) or not deposit.deposit_tx:
            return ""
        try:
            sender = self._senders.lookup(deposit.deposit_tx)
        except ChainError as e:
            raise RpcFailure(
                grpc.StatusCode.UNAVAILABLE, f"the node cannot tell the deposit's sender: {e}"
            ) from None
        if sender is None:
            return ""
        return script_pubkey_to_address(sender.script_pubkey, self._config.network) or ""

    @staticmethod
    def _check_open(deposit: Deposit, refused: list[str], sender: str) -> None:
        """FAILED_PRECONDITION unless the deposit waits for a refund destination."""
        name = f"deposit {outpoint_key(deposit)}"
        if deposit.status is not Status.REFUND_PENDING:
            why = f"{name} is {deposit.status.value}; only a refund_pending deposit takes one"
        elif refused:
            return  # the signers refused its refund: the operator decides
        elif deposit.registered_refund_address:
            why = (
                f"{name} is refunded to the refund address registered with its deposit "
                f"address, {deposit.registered_refund_address}"
            )
        elif sender:
            why = f"{name} is refunded to its sender, {sender} (its first input's address)"
        else:
            return
        raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, why)

    def list(
        self, request: coordinator_pb2.ListRefundsRequest
    ) -> coordinator_pb2.ListRefundsResponse:
        """Every client's deposits with a refund reason, newest first."""
        deposits, token = deposit_page(
            self._engine,
            self._config.network,
            request.page_size,
            request.page_token,
            client_id=None,
            statuses=REFUND_STATUSES,
        )
        return coordinator_pb2.ListRefundsResponse(deposits=deposits, next_page_token=token)
