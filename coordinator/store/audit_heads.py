"""The signers' audit log heads as the coordinator read them after each round."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select

from coordinator.store.schema import signer_audit_heads


@dataclass(frozen=True)
class AuditHead:
    signer_id: str
    round_id: str
    """The round after which it was read."""
    seq: int
    head: str
    at: float

    def __str__(self) -> str:
        """``SEQ:HASH``, as ``vpool-signer audit verify --against`` takes it."""
        return f"{self.seq}:{self.head}"


def record_head(conn: Connection, head: AuditHead) -> None:
    conn.execute(
        insert(signer_audit_heads).values(
            signer_id=head.signer_id,
            round_id=head.round_id,
            seq=head.seq,
            head=head.head,
            at=head.at,
        )
    )


def latest_heads(conn: Connection) -> dict[str, AuditHead]:
    """Each signer's last recorded head."""
    last = (
        select(func.max(signer_audit_heads.c.id))
        .group_by(signer_audit_heads.c.signer_id)
        .scalar_subquery()
    )
    rows = conn.execute(select(signer_audit_heads).where(signer_audit_heads.c.id.in_(last))).all()
    return {
        str(r.signer_id): AuditHead(
            str(r.signer_id), str(r.round_id), int(r.seq), str(r.head), float(r.at)
        )
        for r in rows
    }
