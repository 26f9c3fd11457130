"""What the round engine (coordinator.rounds) asks of each kind of round.

The engine is one machine for every kind: it persists a round before anything leaves the
process, asks the signers, verifies and stores their signatures, finalizes, broadcasts, follows
the transactions to maturation and resumes all of it after a crash. What differs between kinds
is small and lives in a ``RoundBuilder``: which requests wait (queued withdrawals, deposits to
refund), the manifest and PSBTs they make, where those requests stand as their transactions
move, and what a signer's refusal of one request does to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from coordinator.store.rounds import NewRound, RoundRecord
from pool.vocabulary import RoundKind

RequestKey = tuple[str, str]
"""A request as signers name it in a refusal: (client id, request id) of a withdrawal, or
("", "txid:vout") of a deposit to refund."""


class CancelRefused(Exception):
    """AdminService.CancelRound cannot abandon the round; the message says why."""


@dataclass(frozen=True)
class ChainState:
    """What the engine reads from the node before a build: the tip to pin and the fee rate."""

    tip_height: int
    tip_hash: str
    """Display hex."""
    fee_rate: int
    """Satoshis per 1000 vB."""


@dataclass
class RefusedRequest:
    """The per-request refusals of one request in a round."""

    final: bool
    """Some signer refused it for a reason that does not go away (a withdrawal is rejected)."""
    reasons: list[str]


@dataclass(frozen=True)
class BuiltRound:
    """A round a builder made, ready to persist."""

    new: NewRound
    claim: Callable[[Connection, int], None]
    """Moves the round's requests into it, given its sequence number (same transaction)."""
    summary: str
    """One line for the log."""


class RoundBuilder(Protocol):
    """The kind-specific steps of a round; every method but ``ready`` runs inside the engine's
    database transaction (which has taken ``store.rounds.lock_for_build`` of the kind) and
    must not call out of the process."""

    @property
    def kind(self) -> RoundKind: ...

    def ready(self, now: float) -> bool:
        """Before a new round, outside the build's transaction (it may read the chain, and
        record what it learnt in a transaction of its own): is there anything to build?"""
        ...

    def build(
        self,
        conn: Connection,
        chain: ChainState,
        exclude: set[RequestKey],
        rebuilt_from: int | None,
        now: float,
    ) -> BuiltRound | str:
        """The round to persist from what waits (leaving out ``exclude``), or why there is
        none. ``rebuilt_from``: the round this one replaces, which the build may take its
        pinned tip and fee rate from."""
        ...

    def follow(self, conn: Connection, seq: int, now: float) -> None:
        """Bring the round's requests to where its transactions are."""
        ...

    def apply_refusals(
        self, conn: Connection, seq: int, refused: Mapping[RequestKey, RefusedRequest], now: float
    ) -> set[RequestKey]:
        """Take the refused requests out of the round; the ones to leave out of its rebuild."""
        ...

    def give_up(self, conn: Connection, record: RoundRecord, detail: str, now: float) -> int:
        """Abandon the round (inputs released) and put its requests back; how many went back."""
        ...
