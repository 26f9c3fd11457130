"""Deposits are credited only once the signers witnessed them (docs/deposits-and-refunds.md).

A deposit with its confirmations is ``confirmed`` (coordinator.deposits.confirm_ready). ``Credits``
asks the signers holding keys of its series to acknowledge it (SignerService.AcknowledgeDeposits:
each checks it on its own node and records the acknowledgement, after which it refuses every
refund of it), stores every answer, and credits the deposit once n - m + 1 distinct keys of its
series acknowledged it. A refund needs m signatures, and m + (n - m + 1) > n: any m signers
include one that acknowledged the deposit and refuses its refund, so a credited deposit can
never be refunded.

Each run asks every holder whose acknowledgement is missing, all at once with one deadline, in
one batch per signer (oldest deposits first, at most ``MAX_CLAIMS_PER_CALL``, the others at the
next runs); a signer is not asked about a deposit to an address whose registration it missed
until that registration is replayed to it (coordinator.registrations). A signer that is down,
slow, or refuses for a reason that is not final (its node is behind, the deposit lacks the
signer's own confirmations) is asked again at the next run; a final refusal is recorded with
an alert and not asked again. Only ``confirmed`` deposits are ever asked about: never one
classified for a refund.

Keys are counted by the master fingerprint each signer reports (GetInfo, learnt by the health
checks). A fingerprint that two configured signers claim counts for neither, and their answers are
not asked for: one signer cannot pose as another to make up the count.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from typing import Protocol

from sqlalchemy import Connection, Engine

from coordinator.crash_points import AFTER_DEPOSIT_CREDITED, crash_point
from coordinator.deposits import required_acknowledgements
from coordinator.health import SignerState
from coordinator.signers import (
    MAX_CLAIMS_PER_CALL,
    AcknowledgeResult,
    DepositClaim,
)
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import registrations as regstore
from coordinator.store.alerts import add_alert
from coordinator.store.deposits import Acknowledgement, Deposit, Status
from coordinator.store.schema import transaction
from pool.networks import Network
from pool.series import Series
from pool.vocabulary import Finality, finality

log = logging.getLogger(__name__)

REFUSED_ALERT = "deposit_not_acknowledged"


class AcknowledgingSigners(Protocol):
    """The part of ``coordinator.signers.SignerPool`` crediting uses."""

    def acknowledge_deposits_each(
        self, network: Network, claims: Mapping[str, Sequence[DepositClaim]], deadline: float
    ) -> Iterator[tuple[str, AcknowledgeResult]]: ...


class Liveness(Protocol):
    """The part of ``coordinator.health.HealthBoard`` crediting uses (the fingerprints)."""

    def snapshot(self) -> list[SignerState]: ...


def key_fingerprints(series: Series) -> set[str]:
    return {key.origin.fingerprint.hex() for key in series.keys}


def acknowledging_keys(answers: Sequence[Acknowledgement], series: Series) -> set[str]:
    """The keys of ``series`` (fingerprints) that acknowledged, counting a fingerprint that two
    signers answered with for neither."""
    claimed = Counter(a.fingerprint for a in answers)
    return {
        a.fingerprint
        for a in answers
        if a.acknowledged
        and claimed[a.fingerprint] == 1
        and a.fingerprint in key_fingerprints(series)
    }


def credit_acknowledged(conn: Connection, network: Network, now: float) -> list[Deposit]:
    """Credit the confirmed deposits that n - m + 1 keys of their series acknowledged; the ones
    credited."""
    series = {s.id: s for s in cstore.all_series(conn, network)}
    credited = []
    for d in dstore.with_status(conn, [Status.CONFIRMED]):
        answers = dstore.acknowledgements(conn, d.txid, d.vout)
        keys = acknowledging_keys(answers, series[d.series_id])
        needed = required_acknowledgements(series[d.series_id])
        if len(keys) < needed:
            continue
        by = ", ".join(a.signer_id for a in answers if a.acknowledged and a.fingerprint in keys)
        detail = f"acknowledged by {len(keys)} signers ({by}); {needed} needed"
        credited.append(
            dstore.set_status(conn, d.txid, d.vout, Status.CREDITED, now, detail=detail)
        )
        log.info(
            "deposit %s:%d credited: %s",
            d.txid,
            d.vout,
            detail,
            extra={"outpoint": f"{d.txid}:{d.vout}", "amount_sat": d.value,
                   "client_id": d.client_id, "user_id": d.user_id, "series_id": d.series_id},
        )  # fmt: skip
    return credited


class Credits:
    """Asks the signers to acknowledge confirmed deposits and credits them; see the module
    docstring. ``run`` is one step of the daemon's loop."""

    def __init__(
        self,
        engine: Engine,
        network: Network,
        signers: AcknowledgingSigners,
        liveness: Liveness,
        deadline: float,
        clock: Callable[[], float],
    ) -> None:
        self._engine = engine
        self._network = network
        self._signers = signers
        self._liveness = liveness
        self._deadline = deadline
        self._clock = clock

    def run(self) -> list[Deposit]:
        """Credit what is acknowledged, ask for the missing acknowledgements, credit again; the
        deposits credited."""
        with transaction(self._engine) as conn:
            credited = credit_acknowledged(conn, self._network, self._clock())
        if credited:
            crash_point(AFTER_DEPOSIT_CREDITED)
        with self._engine.connect() as conn:
            waiting = dstore.with_status(conn, [Status.CONFIRMED])
            series = {s.id: s for s in cstore.all_series(conn, self._network)}
            answers = {d.outpoint: dstore.acknowledgements(conn, *d.outpoint) for d in waiting}
            unregistered = regstore.pending(conn)
        if not waiting:
            return credited
        holders = self._holders()
        claims = _claims(waiting, series, holders, answers, unregistered)
        if not claims:
            return credited
        by_outpoint = {d.outpoint: d for d in waiting}
        for signer_id, result in self._signers.acknowledge_deposits_each(
            self._network, claims, self._deadline
        ):
            if result.error is not None:
                continue  # asked again at the next run
            with transaction(self._engine) as conn:
                self._record(conn, signer_id, holders[signer_id], result, by_outpoint, series)
        with transaction(self._engine) as conn:
            more = credit_acknowledged(conn, self._network, self._clock())
        if more:
            crash_point(AFTER_DEPOSIT_CREDITED)
        credited += more
        return credited

    def _holders(self) -> dict[str, str]:
        """Signer id → fingerprint of the signers whose fingerprint is known and claimed by no
        other signer."""
        known = {s.signer_id: s.fingerprint for s in self._liveness.snapshot() if s.fingerprint}
        claimed = Counter(known.values())
        for signer_id, fingerprint in known.items():
            if claimed[fingerprint] > 1:
                log.warning(
                    "signer %s reports fingerprint %s, as another signer does: neither is asked "
                    "to acknowledge deposits",
                    signer_id,
                    fingerprint,
                )
        return {sid: fp for sid, fp in known.items() if claimed[fp] == 1}

    def _record(
        self,
        conn: Connection,
        signer_id: str,
        fingerprint: str,
        result: AcknowledgeResult,
        deposits: Mapping[tuple[str, int], Deposit],
        series: Mapping[int, Series],
    ) -> None:
        """Store one signer's verdicts; an event per new acknowledgement, an alert per final
        refusal."""
        now = self._clock()
        for answer in result.answers:
            deposit = deposits[(answer.txid, answer.vout)]
            before = {a.signer_id: a for a in dstore.acknowledgements(conn, *deposit.outpoint)}
            new = dstore.record_acknowledgement(
                conn,
                Acknowledgement(
                    answer.txid, answer.vout, signer_id, fingerprint, answer.acknowledged,
                    answer.reason_code, answer.message, now,
                ),
            )  # fmt: skip
            key = f"{answer.txid}:{answer.vout}"
            if new:
                answers = dstore.acknowledgements(conn, *deposit.outpoint)
                count = len(acknowledging_keys(answers, series[deposit.series_id]))
                needed = required_acknowledgements(series[deposit.series_id])
                detail = (
                    f"acknowledged by {signer_id}; awaiting acknowledgements: {count} of {needed}"
                )
                dstore.note(conn, answer.txid, answer.vout, detail, now)
                log.info("deposit %s acknowledged by %s (%d of %d)", key, signer_id, count, needed)
                continue
            previous = before.get(signer_id)
            if _final(answer.reason_code) and (
                previous is None or previous.reason_code != answer.reason_code
            ):
                alert = f"signer {signer_id} refuses to acknowledge deposit {key}: {answer.message}"
                add_alert(conn, REFUSED_ALERT, alert, now)
                log.warning("%s: %s", REFUSED_ALERT, alert)


def _claims(
    waiting: Sequence[Deposit],
    series: Mapping[int, Series],
    holders: Mapping[str, str],
    answers: Mapping[tuple[str, int], Sequence[Acknowledgement]],
    unregistered: Set[tuple[bytes, str]] = frozenset(),
) -> dict[str, list[DepositClaim]]:
    """Signer id → the deposits it holds a key of and has neither acknowledged nor finally
    refused, oldest first, at most ``MAX_CLAIMS_PER_CALL``. Not a deposit to an address whose
    registration the signer missed and has not been replayed yet (``unregistered``: it would
    refuse, for good, DEPOSIT_ADDRESS_NOT_REGISTERED)."""
    claims: dict[str, list[DepositClaim]] = {}
    for d in waiting:
        fingerprints = key_fingerprints(series[d.series_id])
        settled = {
            a.signer_id for a in answers[d.outpoint] if a.acknowledged or _final(a.reason_code)
        }
        for signer_id, fingerprint in holders.items():
            if fingerprint not in fingerprints or signer_id in settled:
                continue
            if (d.script_pubkey, signer_id) in unregistered:
                continue
            wanted = claims.setdefault(signer_id, [])
            if len(wanted) < MAX_CLAIMS_PER_CALL:
                wanted.append(DepositClaim(d.series_id, d.index, d.txid, d.vout, d.value))
    return claims


def _final(reason_code: str) -> bool:
    """Asking this signer again cannot change its answer about the deposit."""
    return finality(reason_code) is Finality.REQUEST
