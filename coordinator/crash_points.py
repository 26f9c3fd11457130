"""Named crash points: the test hook by which the reliability suite kills the coordinator at one
exact step (tests/reliability/test_crash_points.py).

When the environment variable ``VPOOL_CRASH_AT`` names a point, the process kills itself with
SIGKILL the first time it reaches it: nothing after that step runs, no ``finally`` block, no
database rollback beyond what SQLite or PostgreSQL do for an open transaction. The restarted
process must lose nothing and pay nothing twice. Never set it in production.

A round step's point fires in a round of any kind under its plain name
(``after_round_persisted``), or in one kind only under ``KIND:NAME``
(``refund:after_broadcast``).
"""

from __future__ import annotations

import logging
import os
import signal

from pool.vocabulary import RoundKind

log = logging.getLogger(__name__)

CRASH_ENV = "VPOOL_CRASH_AT"

AFTER_WITHDRAWAL_STORED = "after_withdrawal_stored"
"""Submission: a batch of withdrawals committed, the clients not answered yet."""
AFTER_INPUTS_RESERVED = "after_inputs_reserved"
"""Round persistence: the round written and its inputs reserved, the database transaction not
committed yet (so it is rolled back)."""
AFTER_ROUND_PERSISTED = "after_round_persisted"
"""The round committed (inputs reserved, requests in it), no signer asked yet."""
AFTER_SIGNER_ANSWER_STORED = "after_signer_answer_stored"
"""Signature collection: one signer's signatures stored, the others not asked or not stored."""
AFTER_SIGNATURES_PERSISTED = "after_signatures_persisted"
"""m signatures of a transaction stored, the transaction not finalized yet."""
AFTER_FINALIZED = "after_finalized"
"""Finalization: the signed transactions stored, none sent yet."""
BEFORE_BROADCAST = "before_broadcast"
"""The intent to broadcast stored, the transaction not handed to the node yet."""
AFTER_BROADCAST = "after_broadcast"
"""The node has the transaction, its status ``broadcast`` not stored yet."""
WATCHER_BEFORE_RESEND = "watcher_before_resend"
"""The transaction watcher found a transaction in neither mempool nor chain, before it sends
it again."""
AFTER_CONFIRMED = "after_confirmed"
"""Confirmation: a transaction's status ``confirmed`` stored."""
AFTER_COMPLETED = "after_completed"
"""Maturation: a transaction's status ``completed`` stored."""
AFTER_DEPOSIT_CREDITED = "after_deposit_credited"
"""Deposit crediting: deposits credited and committed."""

AFTER_CANCEL_RECORDED = "after_cancel_recorded"
"""AdminService.CancelRound of a signed or broadcast round: the operator's cancels committed, no
cancel round built yet. Not in ``POINTS`` (the crash matrix's scenario never cancels a round):
tests/test_operator_cancel_e2e.py reaches it."""

POINTS = (
    AFTER_WITHDRAWAL_STORED,
    AFTER_INPUTS_RESERVED,
    AFTER_ROUND_PERSISTED,
    AFTER_SIGNER_ANSWER_STORED,
    AFTER_SIGNATURES_PERSISTED,
    AFTER_FINALIZED,
    BEFORE_BROADCAST,
    AFTER_BROADCAST,
    WATCHER_BEFORE_RESEND,
    AFTER_CONFIRMED,
    AFTER_COMPLETED,
    AFTER_DEPOSIT_CREDITED,
)
"""Every point, in the order a withdrawal meets them."""


def crash_point(name: str, kind: RoundKind | None = None) -> None:
    """Kill this process when ``VPOOL_CRASH_AT`` is ``name`` (or ``KIND:name`` for a round of
    ``kind``)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    if wanted == name or (kind is not None and wanted == f"{kind.value}:{name}"):
        log.warning("%s=%s: killing this process", CRASH_ENV, wanted)
        os.kill(os.getpid(), signal.SIGKILL)
