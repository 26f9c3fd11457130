"""Which version of a transaction with a fee ladder is live (coordinator.store.rounds
.live_versions): the withdrawals, the round, GetWithdrawal's outputs and the fee statements
follow it, and the watcher never sends the others again."""

from __future__ import annotations

from coordinator.store.rounds import TxRecord, TxStatus, is_superseded, live_versions


def version(
    idx: int,
    rung: int = 0,
    status: TxStatus = TxStatus.SIGNED,
    sent: bool = False,
    block: int | None = None,
    base: int | None = None,
) -> TxRecord:
    return TxRecord(
        round_seq=1,
        idx=idx,
        txid=f"tx{idx}",
        psbt=b"",
        final_tx=b"raw",
        fee=100 * (rung + 1),
        status=status,
        block_height=block,
        block_hash=None if block is None else "00" * 32,
        broadcast_at=1.0 if sent else None,
        base_idx=base if rung else None,
        rung=rung,
    )


BASE = version(0, status=TxStatus.BROADCAST, sent=True)
RUNG1 = version(2, rung=1, base=0)
RUNG2 = version(3, rung=2, base=0)
OTHER = version(1, status=TxStatus.BROADCAST, sent=True)


def test_before_any_rung_is_sent_the_transaction_itself_is_live() -> None:
    live = live_versions([BASE, OTHER, RUNG1, RUNG2])
    assert (live[0].txid, live[1].txid) == ("tx0", "tx1")


def test_the_highest_rung_sent_is_live_even_before_the_node_took_it() -> None:
    sent = version(2, rung=1, base=0, sent=True)
    assert live_versions([BASE, OTHER, sent, RUNG2])[0] is sent
    assert is_superseded(BASE, [BASE, OTHER, sent, RUNG2])


def test_a_higher_rung_the_node_took_wins_over_a_lower_one() -> None:
    one = version(2, rung=1, base=0, status=TxStatus.BROADCAST, sent=True)
    two = version(3, rung=2, base=0, status=TxStatus.BROADCAST, sent=True)
    assert live_versions([BASE, one, two])[0] is two


def test_the_version_in_a_block_is_live_whatever_was_sent_after_it() -> None:
    mined = version(0, status=TxStatus.CONFIRMED, sent=True, block=700)
    two = version(3, rung=2, base=0, status=TxStatus.BROADCAST, sent=True)
    assert live_versions([mined, RUNG1, two])[0] is mined
    assert is_superseded(two, [mined, RUNG1, two])


def test_rungs_never_sent_are_never_live() -> None:
    assert not any(v.rung for v in live_versions([BASE, RUNG1, RUNG2]).values())
