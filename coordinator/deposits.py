"""Deposits as the scanner meets them: classified when their block is processed, credited after
their confirmations, taken back by reorganisations (rules: docs/deposits-and-refunds.md).

Classification, in this order: ``dust`` below ``refund_threshold``; ``refund_pending`` below
``min_deposit``, or paying a series retired more than ``retired_grace_blocks`` before the block,
or mined while the pool was degraded (the quorum recorded at the time the block was mined:
coordinator.store.chain.mined_time) with ``outage_deposits = "refund"``; otherwise
``confirming``; ``confirmed`` once it has ``confirmations`` confirmations; and ``credited`` once
n - m + 1 signers of its series acknowledged it (coordinator.credits). With
``outage_deposits = "credit"``, a deposit mined while the pool was degraded stays ``confirming``
until the quorum is ok again, then goes on as usual.

A reorganisation that takes away a deposit's block marks it ``removed`` when the pool did
nothing with it yet (seen, confirming, refund pending, dust), and ``reorged`` with an alert when
it was credited or refunded (or its refund was under way): never a silent change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from coordinator.config import DepositsConfig
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import liveness as lstore
from coordinator.store.alerts import add_alert
from coordinator.store.chain import BlockRecord
from coordinator.store.deposits import Deposit, NewDeposit, Status
from pool.networks import Network
from pool.series import Series

log = logging.getLogger(__name__)

REORG_ALERT = "deposit_reorged"


@dataclass(frozen=True)
class Classification:
    status: Status
    reason: str
    """Why it is refunded or dust (stored with the deposit)."""
    detail: str = ""
    """What its event says besides the reason."""


def classify(
    config: DepositsConfig, value: int, *, series_id: int, past_grace: bool, degraded: bool
) -> Classification:
    """The status of a deposit when its block is processed (module docstring)."""
    if value < config.refund_threshold:
        return Classification(
            Status.DUST, f"{value} sat is below the refund threshold of {config.refund_threshold}"
        )
    if value < config.min_deposit:
        return Classification(
            Status.REFUND_PENDING,
            f"{value} sat is below the minimum deposit of {config.min_deposit}",
        )
    if past_grace:
        return Classification(
            Status.REFUND_PENDING,
            f"pays series {series_id}, retired more than {config.retired_grace_blocks} blocks "
            "before",
        )
    if degraded and config.outage_deposits == "refund":
        return Classification(Status.REFUND_PENDING, "mined while the pool was degraded")
    if degraded:
        return Classification(
            Status.CONFIRMING, "", "mined while the pool was degraded: credited once quorum is ok"
        )
    return Classification(Status.CONFIRMING, "")


def on_deposit(
    conn: Connection,
    config: DepositsConfig,
    new: NewDeposit,
    series_id: int,
    mined_at: float,
    now: float,
) -> Deposit:
    """Record an output paying a receive address of ``series_id`` and classify it."""
    deposit = dstore.add_deposit(conn, new, now)
    if deposit.status is not Status.SEEN:
        return deposit  # a reorged deposit back on the chain keeps the status it had
    retired = cstore.retirement_heights(conn).get(series_id)
    verdict = classify(
        config,
        new.value,
        series_id=series_id,
        past_grace=retired is not None and new.height > retired + config.retired_grace_blocks,
        degraded=lstore.quorum_at(conn, mined_at) == lstore.QUORUM_DEGRADED,
    )
    detail = "; ".join(part for part in (verdict.reason, verdict.detail) if part)
    return dstore.set_status(
        conn, new.txid, new.vout, verdict.status, now, reason=verdict.reason, detail=detail
    )


def required_acknowledgements(series: Series) -> int:
    """How many signers of ``series`` must acknowledge a deposit before it is credited:
    n - m + 1, so that the m signers a refund needs always include one that acknowledged it
    (and refuses the refund)."""
    return len(series.keys) - series.m + 1


def confirm_ready(
    conn: Connection, config: DepositsConfig, network: Network, tip_height: int, now: float
) -> list[Deposit]:
    """The confirming deposits with ``config.confirmations`` at ``tip_height`` become
    ``confirmed``: they wait for the signers' acknowledgements (coordinator.credits); the ones
    confirmed. In "credit" mode, outage deposits wait while the quorum is degraded."""
    ready = dstore.with_status(
        conn, [Status.CONFIRMING], max_height=tip_height - config.confirmations + 1
    )
    last = lstore.last_quorum(conn)
    if ready and last is not None and last.state == lstore.QUORUM_DEGRADED:
        times = cstore.mined_times(conn, {d.height for d in ready})
        ready = [d for d in ready if lstore.quorum_at(conn, times[d.height]) == lstore.QUORUM_OK]
    series = {s.id: s for s in cstore.all_series(conn, network)}
    confirmed = []
    for d in ready:
        confirmations = tip_height - d.height + 1
        needed = required_acknowledgements(series[d.series_id])
        detail = f"{confirmations} confirmations; awaiting acknowledgements: 0 of {needed}"
        confirmed.append(
            dstore.set_status(conn, d.txid, d.vout, Status.CONFIRMED, now, detail=detail)
        )
    return confirmed


def forget_block(conn: Connection, block: BlockRecord, now: float) -> None:
    """Before the scanner undoes ``block``: its deposits are removed, or reorged with an alert."""
    where = f"block {block.height} {block.hash} left the chain"
    for d in dstore.in_block(conn, block.height):
        if d.status in dstore.REMOVABLE:
            dstore.set_status(conn, d.txid, d.vout, Status.REMOVED, now, detail=where)
            continue
        dstore.set_status(conn, d.txid, d.vout, Status.REORGED, now, detail=where)
        alert = (
            f"deposit {d.txid}:{d.vout} of {d.value} sat (client {d.client_id or '-'}, user "
            f"{d.user_id or '-'}) was {d.status.value}, and its {where}"
        )
        add_alert(conn, REORG_ALERT, alert, now)
        log.warning("%s: %s", REORG_ALERT, alert)
