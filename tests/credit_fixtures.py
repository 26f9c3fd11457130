"""TEST DOUBLE for the signers' deposit acknowledgements, for tests that need credited deposits
but are about something else (the scanner's classification, rounds spending deposits).

``credit_as_if_every_signer_acknowledged`` records, for every ``confirmed`` deposit, an
acknowledgement from each key of its series, then runs the real credit stage
(``coordinator.credits.credit_acknowledged``). It stands in for the signers only: the real path,
signer daemons checking each deposit on their own node over mutual TLS before the coordinator
credits it, is tested in tests/test_credits.py and end to end in tests/test_refunds_e2e.py.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

from coordinator.credits import credit_acknowledged
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store.deposits import Acknowledgement, Deposit, Status
from pool.networks import REGTEST, Network


def credit_as_if_every_signer_acknowledged(
    engine: Engine, network: Network = REGTEST
) -> list[Deposit]:
    """Acknowledge every confirmed deposit from each key of its series and credit it; the
    deposits credited."""
    now = time.time()
    with engine.begin() as conn:
        series = {s.id: s for s in cstore.all_series(conn, network)}
        for d in dstore.with_status(conn, [Status.CONFIRMED]):
            for key in series[d.series_id].keys:
                fingerprint = key.origin.fingerprint.hex()
                dstore.record_acknowledgement(
                    conn,
                    Acknowledgement(
                        d.txid, d.vout, f"test-double-{fingerprint}", fingerprint, True, "", "",
                        now,
                    ),
                )  # fmt: skip
        return credit_acknowledged(conn, network, now)
