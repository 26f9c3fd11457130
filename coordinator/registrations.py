"""Replaying the deposit address registrations a signer missed (coordinator.deposit_api hands an
address out once n - m + 1 signers registered it; the others are recorded in
``missed_registrations``).

At each step of the daemon's loop, every signer the health board shows healthy gets its missed
registrations again (SignerService.RegisterDepositAddress with the address's refund address),
oldest first, a batch at a time. A registration the signer now holds (or already held: the call
is idempotent) is done. A signer that is unreachable again keeps the rest for later. A signer
that refuses (for example because it holds another refund address for that deposit address) or
derives another address is an operator's problem: an alert says so and the row goes (asking
again would get the same answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine

from coordinator.deposit_api import DepositSigners, Liveness
from coordinator.health import HEALTHY
from coordinator.signers import Failure, SignerCallError
from coordinator.store import alerts as astore
from coordinator.store import chain as cstore
from coordinator.store import registrations as regstore
from coordinator.store.deposits import DepositAddress
from coordinator.store.schema import transaction
from pool.networks import Network
from pool.series import RECEIVE, Series

log = logging.getLogger(__name__)

BATCH = 200
"""Registrations replayed to one signer per step."""
ALERT_KIND = "registration"


class Registrations:
    def __init__(
        self,
        engine: Engine,
        network: Network,
        signers: DepositSigners,
        liveness: Liveness,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._engine = engine
        self._network = network
        self._signers = signers
        self._liveness = liveness
        self._timeout = timeout
        self._clock = clock

    def replay(self) -> int:
        """Replay what the healthy signers missed; how many registrations they now hold."""
        with self._engine.connect() as conn:
            pending = regstore.signers_missing(conn)
            series = {s.id: s for s in cstore.all_series(conn, self._network)}
        done = 0
        for state in self._liveness.snapshot():
            if state.signer_id in pending and state.state == HEALTHY:
                with self._engine.connect() as conn:
                    missed = regstore.missed_by(conn, state.signer_id, BATCH)
                for address in missed:
                    outcome = self._replay_one(state.signer_id, address, series)
                    if outcome is None:
                        break  # unreachable again: later
                    done += outcome
        return done

    def _replay_one(
        self, signer_id: str, address: DepositAddress, series: dict[int, Series]
    ) -> int | None:
        """1 when the signer now holds the registration, 0 when it never will (alerted), None
        when it could not be asked."""
        where = f"deposit address {address.index} of series {address.series_id}"
        one = series.get(address.series_id)
        problem = None
        if one is None:
            problem = f"{where}: the series is not in the store"
        else:
            try:
                theirs = self._signers.register_deposit_address(
                    signer_id,
                    self._network,
                    one.id,
                    address.index,
                    address.refund_address,
                    self._timeout,
                ).address
            except SignerCallError as e:
                if e.error.failure in (Failure.DOWN, Failure.TIMEOUT):
                    return None
                problem = f"{where}: replaying its registration failed: {e}"
            else:
                ours = one.address(RECEIVE, address.index, self._network)
                if theirs != ours:
                    problem = f"{where}: signer {signer_id} registered {theirs!r}, not {ours!r}"
        with transaction(self._engine) as conn:
            regstore.replayed(conn, address.script_pubkey, signer_id)
            if problem is not None:
                astore.add_alert(conn, ALERT_KIND, problem, self._clock())
        if problem is not None:
            log.error("%s", problem)
            return 0
        log.info("%s: registration replayed to %s", where, signer_id)
        return 1
