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
from coordinator.config import PoolConfig
from coordinator.store import chain as cstore
from coordinator.store import withdrawals as wstore
from vpool.rpc import RpcFailure


def spendable_balance(conn: Connection, pool: PoolConfig) -> tuple[int, int, int]:
    """(spendable, confirmed, claimed): the pool's confirmed balance over all series, what the
    withdrawals not yet sent claim, and the difference (never negative)."""
    balances = cstore.balances(
        conn, views.tip_height(conn), pool.min_conf, coinbase_maturity=pool.coinbase_maturity
    )
    confirmed = sum(b.confirmed for b in balances.values())
    claimed = wstore.claimed_amount(conn)
    return max(0, confirmed - claimed), confirmed, claimed


class Budget:
    """What new withdrawals may still claim, read once (a batch of submissions shares one)."""

    def __init__(self, conn: Connection, pool: PoolConfig) -> None:
        self._limit = pool.max_withdrawal
        self._spendable, self._confirmed, self._claimed = spendable_balance(conn, pool)

    def take(self, amount: int, extra_fee: int) -> None:
        """Claim a new withdrawal's amount and extra fee, or refuse it (``FAILED_PRECONDITION``,
        naming the limit) and claim nothing."""
        if amount > self._limit:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"amount_sat: {amount} is above the pool's maximum withdrawal "
                f"(pool.max_withdrawal) of {self._limit} sat",
            )
        if amount + extra_fee > self._spendable:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"amount_sat: {amount} (plus extra fee {extra_fee}) is above the pool's "
                f"spendable balance of {self._spendable} sat (confirmed {self._confirmed} sat "
                f"minus {self._claimed} sat claimed by withdrawals not yet sent)",
            )
        self._spendable -= amount + extra_fee
        self._claimed += amount + extra_fee
