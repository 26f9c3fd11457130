"""The coordinator records every signer's audit head after each round (coordinator.audit_heads),
on SQLite and PostgreSQL, with stand-in signers whose GetInfo the tests choose; the daemon's
end-to-end test is in tests/test_observability_e2e.py."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from coordinator.audit_heads import ALERT_KIND, AuditHeads
from coordinator.signers import CallError, Failure, SignerCallError
from coordinator.store.alerts import recent_alerts
from coordinator.store.audit_heads import latest_heads
from vpool.v1 import signer_pb2

IDS = ("signer-0", "signer-1")
NOW = 1_700_000_000.0


class Signers:
    """signer-i answers GetInfo with the head the test sets; ``down`` ones do not answer."""

    signer_ids = IDS

    def __init__(self) -> None:
        self.heads = {i: (0, "0" * 64) for i in IDS}
        self.down: set[str] = set()

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo:
        if signer_id in self.down:
            raise SignerCallError(signer_id, CallError(Failure.DOWN, "UNAVAILABLE", "refused"))
        seq, head = self.heads[signer_id]
        return signer_pb2.SignerInfo(signer_id=signer_id, audit_seq=seq, audit_head=head)


@pytest.fixture
def signers() -> Signers:
    return Signers()


def test_each_signers_head_is_recorded_after_a_round(engine: Engine, signers: Signers) -> None:
    signers.heads["signer-0"] = (3, "aa" * 32)
    AuditHeads(engine, signers, lambda: NOW).record("r1")
    with engine.connect() as conn:
        heads = latest_heads(conn)
    assert str(heads["signer-0"]) == f"3:{'aa' * 32}"
    assert (heads["signer-0"].round_id, heads["signer-0"].at) == ("r1", NOW)
    assert str(heads["signer-1"]) == f"0:{'0' * 64}"


def test_the_latest_record_per_signer_wins(engine: Engine, signers: Signers) -> None:
    heads = AuditHeads(engine, signers, lambda: NOW)
    signers.heads["signer-0"] = (1, "aa" * 32)
    heads.record("r1")
    signers.heads["signer-0"] = (2, "bb" * 32)
    heads.record("r2")
    with engine.connect() as conn:
        assert latest_heads(conn)["signer-0"].head == "bb" * 32


def test_a_signer_that_does_not_answer_keeps_its_last_head(
    engine: Engine, signers: Signers
) -> None:
    heads = AuditHeads(engine, signers, lambda: NOW)
    signers.heads["signer-1"] = (5, "cc" * 32)
    heads.record("r1")
    signers.down.add("signer-1")
    assert [h.signer_id for h in heads.record("r2")] == ["signer-0"]
    with engine.connect() as conn:
        assert latest_heads(conn)["signer-1"].round_id == "r1"


def test_a_log_that_went_back_raises_an_alert_naming_the_recorded_head(
    engine: Engine, signers: Signers
) -> None:
    heads = AuditHeads(engine, signers, lambda: NOW)
    signers.heads["signer-0"] = (7, "dd" * 32)
    heads.record("r1")
    signers.heads["signer-0"] = (6, "ee" * 32)  # the last entry was cut
    heads.record("r2")
    with engine.connect() as conn:
        [alert] = recent_alerts(conn, 10)
    assert alert.kind == ALERT_KIND
    assert f"--against 7:{'dd' * 32}" in alert.detail


def test_a_log_replaced_at_the_same_length_raises_an_alert(
    engine: Engine, signers: Signers
) -> None:
    heads = AuditHeads(engine, signers, lambda: NOW)
    signers.heads["signer-0"] = (4, "dd" * 32)
    heads.record("r1")
    signers.heads["signer-0"] = (4, "ff" * 32)
    heads.record("r2")
    with engine.connect() as conn:
        assert [a.kind for a in recent_alerts(conn, 10)] == [ALERT_KIND]


def test_a_log_that_grew_raises_no_alert(engine: Engine, signers: Signers) -> None:
    heads = AuditHeads(engine, signers, lambda: NOW)
    signers.heads["signer-0"] = (4, "dd" * 32)
    heads.record("r1")
    signers.heads["signer-0"] = (9, "ab" * 32)
    heads.record("r2")
    with engine.connect() as conn:
        assert recent_alerts(conn, 10) == []
