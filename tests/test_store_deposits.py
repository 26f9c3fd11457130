"""The deposit, liveness and alert stores, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, insert

from coordinator.store import alerts as astore
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import liveness as lstore
from coordinator.store.deposits import DepositAddress, NewDeposit, Refund, Status
from coordinator.store.schema import round_transactions, rounds, signatures
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, SeriesState
from tests.factories import make_series

NOW = 1_700_000_000.0
SERIES = make_series(1, 2, [1, 2, 3])
NO_REFUND = Refund("", "", None, None)


def script(index: int) -> bytes:
    return SERIES.derive(RECEIVE, index).script_pubkey


def txid(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """One transaction on a store that knows SERIES, with receive indexes 0..9 watched."""
    with engine.begin() as c:
        receive, change = (SERIES.descriptor(b).to_string(REGTEST) for b in (RECEIVE, CHANGE))
        cstore.add_series(c, 1, receive, change, SeriesState.ACTIVE, REGTEST, NOW)
        cstore.ensure_lookahead(c, REGTEST, 10)
        yield c


def hand_out(conn: Connection, index: int, client: str = "alice", user: str = "u1") -> None:
    dstore.record_address(
        conn, DepositAddress(script(index), 1, index, client, user, f"refund-{index}", NOW)
    )


def deposit(
    conn: Connection, n: int, index: int = 0, height: int = 100, value: int = 50_000
) -> dstore.Deposit:
    new = NewDeposit(txid(n), 0, script(index), value, height, f"{height:064x}", b"raw")
    return dstore.add_deposit(conn, new, NOW)


def events(conn: Connection, client: str = "alice") -> list[tuple[str, Status, str]]:
    return [(e.txid, e.status, e.detail) for e in dstore.events_after(conn, client, 0, 1000)]


# --------------------------------------------------------------------------- addresses


def test_deposit_addresses_are_found_by_script_and_by_user(conn: Connection) -> None:
    hand_out(conn, 0)
    hand_out(conn, 1, user="u2")
    hand_out(conn, 2)
    found = dstore.address_of(conn, script(1))
    assert found == DepositAddress(script(1), 1, 1, "alice", "u2", "refund-1", NOW)
    assert [a.index for a in dstore.addresses_of_user(conn, "alice", "u1")] == [0, 2]
    assert dstore.addresses_of_user(conn, "bob", "u1") == []
    assert dstore.address_of(conn, script(5)) is None


# --------------------------------------------------------------------------- deposits


def test_a_new_deposit_is_seen_with_its_owner_and_position(conn: Connection) -> None:
    hand_out(conn, 3)
    d = deposit(conn, 1, index=3)
    assert (d.status, d.client_id, d.user_id, d.series_id, d.index) == (
        Status.SEEN, "alice", "u1", 1, 3,
    )  # fmt: skip
    assert (d.value, d.height, d.deposit_tx, d.registered_refund_address) == (
        50_000, 100, b"raw", "refund-3",
    )  # fmt: skip
    assert events(conn) == [(txid(1), Status.SEEN, "in block 100")]


def test_a_deposit_to_an_address_handed_to_nobody_has_no_owner(conn: Connection) -> None:
    d = deposit(conn, 1, index=4)
    assert (d.client_id, d.user_id, d.registered_refund_address) == ("", "", "")
    assert [e.status for e in dstore.events_after(conn, "", 0, 10)] == [Status.SEEN]


def test_set_status_records_one_event_per_change(conn: Connection) -> None:
    hand_out(conn, 0)
    deposit(conn, 1)
    d = dstore.set_status(conn, txid(1), 0, Status.REFUND_PENDING, NOW, reason="too small")
    assert (d.status, d.reason) == (Status.REFUND_PENDING, "too small")
    dstore.set_status(conn, txid(1), 0, Status.REFUND_PENDING, NOW + 1, reason="too small")
    refund = Refund("bcrt1q...", "registered", 7, txid(9))
    d = dstore.set_status(conn, txid(1), 0, Status.REFUND_PROPOSED, NOW + 2, refund=refund)
    assert (d.reason, d.refund, d.updated_at) == ("too small", refund, NOW + 2)
    assert events(conn) == [
        (txid(1), Status.SEEN, "in block 100"),
        (txid(1), Status.REFUND_PENDING, "too small"),
        (txid(1), Status.REFUND_PROPOSED, ""),
    ]


def test_set_status_of_an_unknown_deposit_is_a_key_error(conn: Connection) -> None:
    with pytest.raises(KeyError):
        dstore.set_status(conn, txid(1), 0, Status.CREDITED, NOW)


@pytest.mark.parametrize(
    ("final", "leaves_to", "refused"),
    [
        (Status.CREDITED, Status.REORGED, Status.CONFIRMING),
        (Status.REFUNDED, Status.REORGED, Status.REFUND_PENDING),
        (Status.DUST, Status.REMOVED, Status.REFUND_PENDING),
    ],
)
def test_a_final_status_is_left_only_for_a_reorganisation(
    conn: Connection, final: Status, leaves_to: Status, refused: Status
) -> None:
    deposit(conn, 1)
    dstore.set_status(conn, txid(1), 0, final, NOW)
    with pytest.raises(dstore.StatusError, match="final"):
        dstore.set_status(conn, txid(1), 0, refused, NOW)
    assert dstore.set_status(conn, txid(1), 0, leaves_to, NOW).status is leaves_to


def test_a_removed_deposit_mined_again_is_seen_again_in_its_new_block(conn: Connection) -> None:
    hand_out(conn, 0)
    deposit(conn, 1)
    dstore.set_status(conn, txid(1), 0, Status.CONFIRMING, NOW)
    dstore.set_status(conn, txid(1), 0, Status.REMOVED, NOW, detail="block 100 left the chain")
    again = deposit(conn, 1, height=101)
    assert (again.status, again.height, again.block_hash) == (Status.SEEN, 101, f"{101:064x}")
    assert events(conn)[-1] == (txid(1), Status.SEEN, "back in block 101")


def test_a_reorged_deposit_mined_again_gets_back_the_status_it_had(conn: Connection) -> None:
    hand_out(conn, 0)
    deposit(conn, 1)
    dstore.set_status(conn, txid(1), 0, Status.CONFIRMING, NOW)
    dstore.set_status(conn, txid(1), 0, Status.CREDITED, NOW)
    dstore.set_status(conn, txid(1), 0, Status.REORGED, NOW)
    assert deposit(conn, 1, height=102).status is Status.CREDITED
    assert events(conn)[-1] == (txid(1), Status.CREDITED, "back in block 102")


def test_a_deposit_on_the_chain_cannot_be_added_twice(conn: Connection) -> None:
    deposit(conn, 1)
    with pytest.raises(ValueError, match="already in block 100"):
        deposit(conn, 1, height=101)


def test_with_status_lists_oldest_first_up_to_a_height(conn: Connection) -> None:
    for n, height in ((1, 12), (2, 10), (3, 11), (4, 10)):
        deposit(conn, n, height=height)
    dstore.set_status(conn, txid(4), 0, Status.CONFIRMING, NOW)
    for n in (1, 2, 3):
        dstore.set_status(conn, txid(n), 0, Status.REFUND_PENDING, NOW, reason="r")
    assert [d.txid for d in dstore.refund_pending(conn)] == [txid(2), txid(3), txid(1)]
    found = dstore.with_status(conn, [Status.REFUND_PENDING, Status.CONFIRMING], max_height=10)
    assert [d.txid for d in found] == [txid(2), txid(4)]


def test_in_block_leaves_out_deposits_taken_off_the_chain(conn: Connection) -> None:
    for n in (1, 2, 3):
        deposit(conn, n)
    dstore.set_status(conn, txid(2), 0, Status.REMOVED, NOW)
    dstore.set_status(conn, txid(3), 0, Status.REORGED, NOW)
    assert [d.txid for d in dstore.in_block(conn, 100)] == [txid(1)]
    assert dstore.in_block(conn, 101) == []


def test_list_deposits_filters_and_pages_newest_first(conn: Connection) -> None:
    hand_out(conn, 0, user="u1")
    hand_out(conn, 1, user="u2")
    hand_out(conn, 2, client="bob")
    for n in range(1, 7):
        deposit(conn, n, index=0 if n % 2 else 1, height=100 + n // 2)
    deposit(conn, 7, index=2)
    dstore.set_status(conn, txid(5), 0, Status.DUST, NOW)
    mine = dstore.list_deposits(conn, client_id="alice", limit=100)
    assert [d.txid for d in mine] == [txid(6), txid(5), txid(4), txid(3), txid(2), txid(1)]
    paged: list[str] = []
    after = None
    while True:
        page = dstore.list_deposits(conn, client_id="alice", limit=4, after=after)
        paged += [d.txid for d in page]
        if len(page) < 4:
            break
        last = page[-1]
        after = dstore.Position(last.height, last.txid, last.vout)
    assert paged == [d.txid for d in mine]
    by_user = dstore.list_deposits(conn, client_id="alice", user_id="u2", limit=100)
    assert [d.txid for d in by_user] == [txid(6), txid(4), txid(2)]
    dust = dstore.list_deposits(conn, client_id="alice", statuses=[Status.DUST], limit=100)
    assert [d.txid for d in dust] == [txid(5)]
    assert [d.txid for d in dstore.list_deposits(conn, client_id="bob", limit=9)] == [txid(7)]
    assert len(dstore.list_deposits(conn, client_id=None, limit=100)) == 7


def test_events_after_a_cursor_are_the_clients_own_in_order(conn: Connection) -> None:
    hand_out(conn, 0)
    hand_out(conn, 1, client="bob")
    deposit(conn, 1, index=0)
    deposit(conn, 2, index=1)
    dstore.set_status(conn, txid(1), 0, Status.CONFIRMING, NOW)
    alice = dstore.events_after(conn, "alice", 0, 100)
    assert [(e.txid, e.status) for e in alice] == [
        (txid(1), Status.SEEN),
        (txid(1), Status.CONFIRMING),
    ]
    later = dstore.events_after(conn, "alice", alice[0].cursor, 100)
    assert [e.cursor for e in later] == [alice[1].cursor]
    assert len(dstore.events_after(conn, "alice", 0, 1)) == 1
    assert [e.txid for e in dstore.events_after(conn, "bob", 0, 100)] == [txid(2)]


def test_refund_signers_are_the_signers_of_the_refund_transaction(conn: Connection) -> None:
    deposit(conn, 1)
    seq = conn.execute(
        insert(rounds)
        .values(manifest_hash="aa", manifest=b"", status="signing", kind="refund", created_at=NOW,
                updated_at=NOW)
        .returning(rounds.c.seq)
    ).scalar_one()  # fmt: skip
    for idx in (0, 1):
        conn.execute(
            insert(round_transactions).values(
                round_seq=seq, idx=idx, txid=txid(50 + idx), psbt=b"", fee=1, status="signed"
            )
        )
    for idx, signer, key in ((0, "s2", b"k2"), (0, "s1", b"k1"), (1, "s3", b"k3")):
        conn.execute(
            insert(signatures).values(
                round_seq=seq, tx_idx=idx, input_idx=0, pubkey=key, signature=b"sig",
                signer_id=signer,
            )
        )  # fmt: skip
    d = dstore.get(conn, txid(1), 0)
    assert d is not None and dstore.refund_signers(conn, d) == []
    refund = Refund("bcrt1q...", "sender", seq, txid(50))
    d = dstore.set_status(conn, txid(1), 0, Status.REFUND_SIGNED, NOW, refund=refund)
    assert dstore.refund_signers(conn, d) == ["s1", "s2"]


# --------------------------------------------------------------------------- alerts


def test_alerts_are_listed_newest_first(conn: Connection) -> None:
    for i in range(3):
        astore.add_alert(conn, "deposit_reorged", f"detail {i}", NOW + i)
    found = astore.recent_alerts(conn, 2)
    assert [str(a) for a in found] == ["deposit_reorged: detail 2", "deposit_reorged: detail 1"]


# --------------------------------------------------------------------------- liveness


def test_signer_records_keep_the_current_state_and_the_history_of_changes(
    conn: Connection,
) -> None:
    first = lstore.SignerRecord("s1", "healthy", NOW, 0, False, NOW, "")
    lstore.save_signer(conn, first)
    lstore.save_signer(conn, lstore.SignerRecord("s1", "healthy", NOW, 1, False, NOW, "timeout"))
    down = lstore.SignerRecord("s1", "down", NOW + 60, 2, False, NOW, "timeout")
    lstore.save_signer(conn, down)
    assert lstore.signer_records(conn) == {"s1": down}
    assert lstore.signer_history(conn, "s1") == [
        lstore.Change("healthy", NOW, ""),
        lstore.Change("down", NOW + 60, "timeout"),
    ]
    assert lstore.signer_history(conn, "s2") == []


def test_quorum_changes_are_recorded_once(conn: Connection) -> None:
    assert lstore.last_quorum(conn) is None
    assert lstore.record_quorum(conn, "degraded", NOW, "1 of 3")
    assert not lstore.record_quorum(conn, "degraded", NOW + 5, "0 of 3")
    assert lstore.record_quorum(conn, "ok", NOW + 10, "3 of 3")
    assert lstore.last_quorum(conn) == lstore.Change("ok", NOW + 10, "3 of 3")
    assert [c.state for c in lstore.quorum_history_of(conn)] == ["degraded", "ok"]
    with pytest.raises(ValueError, match="unknown quorum state"):
        lstore.record_quorum(conn, "bad", NOW, "")


def test_quorum_at_is_the_last_state_recorded_at_or_before_a_time(conn: Connection) -> None:
    assert lstore.quorum_at(conn, NOW) == "ok"  # nothing recorded: ok
    lstore.record_quorum(conn, "degraded", NOW, "")
    lstore.record_quorum(conn, "ok", NOW + 100, "")
    lstore.record_quorum(conn, "degraded", NOW + 100, "")  # the later of one second wins
    assert lstore.quorum_at(conn, NOW - 1) == "ok"
    assert lstore.quorum_at(conn, NOW) == "degraded"
    assert lstore.quorum_at(conn, NOW + 99) == "degraded"
    assert lstore.quorum_at(conn, NOW + 100) == "degraded"
    lstore.record_quorum(conn, "ok", NOW + 200, "")
    assert lstore.quorum_at(conn, NOW + 150) == "degraded"
    assert lstore.quorum_at(conn, NOW + 10_000) == "ok"
