"""Admission: which withdrawals SubmitWithdrawal takes into the queue.

A withdrawal the pool can never pay is refused at submission with ``FAILED_PRECONDITION``
naming the limit, instead of waiting ``deferred`` for ever:

- above ``pool.max_withdrawal``;
- above the pool's spendable balance: the confirmed balance of all its series (outputs with
  ``pool.min_conf`` confirmations, credited deposits and change, reserved ones included: what
  ``GetPoolStatus`` shows as confirmed) minus what the withdrawals not yet sent already claim
  (``pending``, ``deferred``, ``in_round``, ``signed``: amount plus extra fee). The amount plus
  its extra fee must fit; the round's network fee is not known yet, so a withdrawal that fits
  may still be deferred by a round, and then expires (coordinator.expiry) if funds never come.

A resubmission of a stored request id is answered from the store, never refused here.
"""

from __future__ import annotations

import grpc
from sqlalchemy import Connection

from coordinator import views
from coordinator.config import CoordinatorConfig
from coordinator.store import chain as cstore
from coordinator.store import withdrawals as wstore
from vpool.rpc import RpcFailure


def spendable_balance(conn: Connection, config: CoordinatorConfig) -> tuple[int, int, int]:
    """(spendable, confirmed, claimed): the pool's confirmed balance over all series, what the
    withdrawals not yet sent claim, and the difference (never negative)."""
    pool = config.pool
    balances = cstore.balances(
        conn, views.tip_height(conn), pool.min_conf, coinbase_maturity=pool.coinbase_maturity
    )
    confirmed = sum(b.confirmed for b in balances.values())
    claimed = wstore.claimed_amount(conn)
    return max(0, confirmed - claimed), confirmed, claimed


def admit(conn: Connection, config: CoordinatorConfig, amount: int, extra_fee: int) -> None:
    """Refuse (``FAILED_PRECONDITION``, naming the limit) a new withdrawal the pool cannot pay."""
    limit = config.pool.max_withdrawal
    if amount > limit:
        raise RpcFailure(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"amount_sat: {amount} is above the pool's maximum withdrawal "
            f"(pool.max_withdrawal) of {limit} sat",
        )
    spendable, confirmed, claimed = spendable_balance(conn, config)
    if amount + extra_fee > spendable:
        raise RpcFailure(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"amount_sat: {amount} (plus extra fee {extra_fee}) is above the pool's spendable "
            f"balance of {spendable} sat (confirmed {confirmed} sat minus {claimed} sat claimed "
            "by withdrawals not yet sent)",
        )
