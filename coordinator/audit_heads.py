"""After every round: each signer's audit log head, read from its GetInfo and recorded.

A signer's audit log (signer.audit) is hash-chained: an entry changed, removed or reordered is
seen by ``vpool-signer audit verify``, but a cut tail is not, unless its head was kept elsewhere.
The coordinator keeps it: after each round it asks every signer for ``audit_seq`` and
``audit_head`` and records them (coordinator.store.audit_heads); GetPoolStatus and the status
page show the last one per signer, ``SEQ:HASH``, for ``vpool-signer audit verify --against``.

A signer whose log went backwards since the last record (a lower seq, or the same seq with
another hash) raises an alert at once: its log was cut or replaced. A signer that does not answer
is skipped (its head is read after the next round).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy import Engine

from coordinator.signers import SignerCallError
from coordinator.store import audit_heads as hstore
from coordinator.store.alerts import add_alert
from coordinator.store.schema import transaction
from vpool.v1 import signer_pb2

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
ALERT_KIND = "audit_log_went_back"


class InfoSource(Protocol):
    @property
    def signer_ids(self) -> tuple[str, ...]: ...

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo: ...


class AuditHeads:
    """Reads and records the signers' heads; ``record(round_id)`` after each round."""

    def __init__(
        self,
        engine: Engine,
        signers: InfoSource,
        clock: Callable[[], float],
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._engine = engine
        self._signers = signers
        self._clock = clock
        self._timeout = timeout

    def record(self, round_id: str) -> list[hstore.AuditHead]:
        """Ask every signer at once; record what the ones that answered said."""
        ids = self._signers.signer_ids
        with ThreadPoolExecutor(max_workers=max(1, len(ids)), thread_name_prefix="heads") as ex:
            infos = list(ex.map(self._info, ids))
        now = self._clock()
        heads = [
            hstore.AuditHead(signer_id, round_id, int(info.audit_seq), info.audit_head, now)
            for signer_id, info in zip(ids, infos, strict=True)
            if info is not None and info.audit_head
        ]
        with transaction(self._engine) as conn:
            before = hstore.latest_heads(conn)
            for head in heads:
                previous = before.get(head.signer_id)
                if previous is not None and _went_back(previous, head):
                    detail = (
                        f"the audit log of signer {head.signer_id} went back from {previous} "
                        f"(after round {previous.round_id}) to {head}: its tail was cut or it "
                        "was replaced; check it with `vpool-signer audit verify --against "
                        f"{previous}`"
                    )
                    add_alert(conn, ALERT_KIND, detail, now)
                    log.error(
                        "audit log went back",
                        extra={"signer_id": head.signer_id, "round_id": round_id,
                               "recorded": str(previous), "reported": str(head)},
                    )  # fmt: skip
                hstore.record_head(conn, head)
        for head in heads:
            log.info(
                "signer audit head recorded",
                extra={"signer_id": head.signer_id, "round_id": round_id, "audit_head": str(head)},
            )
        return heads

    def _info(self, signer_id: str) -> signer_pb2.SignerInfo | None:
        try:
            return self._signers.get_info(signer_id, self._timeout)
        except SignerCallError as e:
            log.warning(
                "audit head not read: %s",
                e.error,
                extra={"signer_id": signer_id},
            )
            return None


def _went_back(previous: hstore.AuditHead, current: hstore.AuditHead) -> bool:
    return current.seq < previous.seq or (
        current.seq == previous.seq and current.head != previous.head
    )
