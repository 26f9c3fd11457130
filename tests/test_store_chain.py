"""The chain follower's store: series, lookahead, the UTXO set, blocks; SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, update

from coordinator.store import chain as store
from coordinator.store.chain import BlockRecord, PoolAddress
from coordinator.store.deposits import Status as DepositStatus
from coordinator.store.schema import addresses, deposits, round_transactions, rounds, utxos
from pool.errors import DescriptorError
from pool.manifest import Utxo
from pool.networks import MAINNET, REGTEST
from pool.series import CHANGE, RECEIVE, Series, SeriesState
from tests.factories import make_series

NOW = 1_700_000_000.0
S1 = make_series(1, 2, [1, 2, 3])
S2 = make_series(2, 2, [4, 5, 6])


def descriptors(s: Series) -> tuple[str, str]:
    return s.descriptor(RECEIVE).to_string(REGTEST), s.descriptor(CHANGE).to_string(REGTEST)


def add(conn: Connection, s: Series, state: SeriesState = SeriesState.ACTIVE) -> Series:
    return store.add_series(conn, s.id, *descriptors(s), state, REGTEST, NOW)


def txid(n: int) -> str:
    return f"{n:064x}"


def add_utxo(
    conn: Connection,
    n: int,
    value: int,
    height: int,
    *,
    series_id: int = 1,
    coinbase: bool = False,
    vout: int = 0,
    deposit: DepositStatus | None = None,
) -> None:
    """A pool output: change, or a receive output that is a deposit in status ``deposit``."""
    address = PoolAddress(series_id, CHANGE if deposit is None else RECEIVE, n)
    store.add_utxo(conn, txid(n), vout, value, b"\x00\x20" + bytes(32), address, height, coinbase)
    if deposit is not None:
        conn.execute(
            insert(deposits).values(
                txid=txid(n), vout=vout, script_pubkey=b"\x00\x20" + bytes(32), value=value,
                height=height, block_hash="", deposit_tx=b"", status=deposit.value,
                created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip


def add_round_tx(conn: Connection, tx: str) -> None:
    seq = conn.execute(
        insert(rounds)
        .values(manifest_hash=tx, manifest=b"", status="broadcast", created_at=NOW, updated_at=NOW)
        .returning(rounds.c.seq)
    ).scalar_one()
    conn.execute(
        insert(round_transactions).values(
            round_seq=seq, idx=0, txid=tx, psbt=b"", fee=1, status="broadcast"
        )
    )


def block(height: int) -> BlockRecord:
    return BlockRecord(height, f"{height:064x}", f"{height - 1:064x}")


def outpoints(utxo_list: list[Utxo]) -> list[tuple[str, int]]:
    return [(u.outpoint.txid_hex, u.outpoint.vout) for u in utxo_list]


# --------------------------------------------------------------------------- series


def test_add_series_returns_the_series_of_its_descriptors(engine: Engine) -> None:
    with engine.begin() as conn:
        assert add(conn, S1) == S1


def test_all_series_reads_back_every_series_with_its_state(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add(conn, S2, SeriesState.RETIRING)
        assert store.all_series(conn, REGTEST) == [
            S1,
            make_series(2, 2, [4, 5, 6], SeriesState.RETIRING),
        ]


def test_a_new_active_series_retires_the_active_one(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add(conn, S2)
        states = {s.id: s.state for s in store.all_series(conn, REGTEST)}
    assert states == {1: SeriesState.RETIRING, 2: SeriesState.ACTIVE}


def test_a_new_retiring_series_leaves_the_active_one(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add(conn, S2, SeriesState.RETIRING)
        states = {s.id: s.state for s in store.all_series(conn, REGTEST)}
    assert states == {1: SeriesState.ACTIVE, 2: SeriesState.RETIRING}


def test_activate_series_switches_the_active_series(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add(conn, S2)
        store.activate_series(conn, 1)
        states = {s.id: s.state for s in store.all_series(conn, REGTEST)}
    assert states == {1: SeriesState.ACTIVE, 2: SeriesState.RETIRING}


def test_activate_series_refuses_an_unknown_series(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(KeyError):
        store.activate_series(conn, 9)


def test_add_series_refuses_a_known_id(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        with pytest.raises(store.SeriesExists, match="series_id: series 1 already exists"):
            store.add_series(conn, 1, *descriptors(S2), SeriesState.ACTIVE, REGTEST, NOW)


def test_add_series_refuses_the_keys_of_another_series(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        with pytest.raises(store.SeriesExists, match="same threshold and keys"):
            store.add_series(conn, 7, *descriptors(S1), SeriesState.ACTIVE, REGTEST, NOW)


def test_add_series_refuses_swapped_descriptors(engine: Engine) -> None:
    receive, change = descriptors(S1)
    with engine.begin() as conn, pytest.raises(DescriptorError):
        store.add_series(conn, 1, change, receive, SeriesState.ACTIVE, REGTEST, NOW)


def test_add_series_refuses_descriptors_of_another_network(engine: Engine) -> None:
    mainnet = make_series(1, 2, [1, 2, 3], network="mainnet")
    receive = mainnet.descriptor(RECEIVE).to_string(MAINNET)
    change = mainnet.descriptor(CHANGE).to_string(MAINNET)
    with engine.begin() as conn, pytest.raises(DescriptorError):
        store.add_series(conn, 1, receive, change, SeriesState.ACTIVE, REGTEST, NOW)


# --------------------------------------------------------------------------- indexes, lookahead


def test_a_new_series_starts_both_indexes_at_zero(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        assert (store.next_index(conn, 1, RECEIVE), store.next_index(conn, 1, CHANGE)) == (0, 0)


def test_advance_index_raises_the_index(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.advance_index(conn, 1, CHANGE, 5)
        assert store.next_index(conn, 1, CHANGE) == 5


def test_advance_index_never_goes_back(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.advance_index(conn, 1, RECEIVE, 5)
        store.advance_index(conn, 1, RECEIVE, 3)
        assert store.next_index(conn, 1, RECEIVE) == 5


def test_take_index_hands_out_each_index_once(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.advance_index(conn, 1, RECEIVE, 2)
        assert [store.take_index(conn, 1, RECEIVE) for _ in range(3)] == [2, 3, 4]
        assert store.next_index(conn, 1, RECEIVE) == 5
        with pytest.raises(KeyError):
            store.take_index(conn, 9, RECEIVE)


def test_a_retired_series_gets_the_height_of_the_next_processed_block(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.stamp_retirements(conn, 10)
        assert store.retirement_heights(conn) == {}  # S1 is active
        add(conn, S2)  # retires S1
        store.stamp_retirements(conn, 11)
        store.stamp_retirements(conn, 12)
        assert store.retirement_heights(conn) == {1: 11}
        store.activate_series(conn, 1)
        assert store.retirement_heights(conn) == {}  # S2 retired: stamped at the next block


def test_next_index_of_an_unknown_series_is_a_key_error(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(KeyError):
        store.next_index(conn, 9, RECEIVE)


def test_ensure_lookahead_watches_lookahead_scripts_of_each_branch(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        assert store.ensure_lookahead(conn, REGTEST, 4) == 8
        for branch in (RECEIVE, CHANGE):
            for i in range(4):
                script = S1.derive(branch, i).script_pubkey
                assert store.lookup_script(conn, script) == PoolAddress(1, branch, i)
        assert store.lookup_script(conn, S1.derive(RECEIVE, 4).script_pubkey) is None


def test_ensure_lookahead_twice_adds_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.ensure_lookahead(conn, REGTEST, 4)
        assert store.ensure_lookahead(conn, REGTEST, 4) == 0
        assert conn.execute(select(func.count()).select_from(addresses)).scalar_one() == 8


def test_ensure_lookahead_extends_past_an_advanced_index(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.ensure_lookahead(conn, REGTEST, 4)
        store.advance_index(conn, 1, CHANGE, 3)
        assert store.ensure_lookahead(conn, REGTEST, 4) == 3
        last = S1.derive(CHANGE, 6).script_pubkey
        assert store.lookup_script(conn, last) == PoolAddress(1, CHANGE, 6)


def test_ensure_lookahead_covers_a_series_added_later(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        store.ensure_lookahead(conn, REGTEST, 2)
        add(conn, S2)
        assert store.ensure_lookahead(conn, REGTEST, 2) == 4
        script = S2.derive(RECEIVE, 1).script_pubkey
        assert store.lookup_script(conn, script) == PoolAddress(2, RECEIVE, 1)


def test_lookup_scripts_returns_only_watched_scripts(engine: Engine) -> None:
    watched = S1.derive(RECEIVE, 0).script_pubkey
    with engine.begin() as conn:
        add(conn, S1)
        store.ensure_lookahead(conn, REGTEST, 1)
        found = store.lookup_scripts(conn, [watched, b"\x00\x14" + bytes(20)])
    assert found == {watched: PoolAddress(1, RECEIVE, 0)}


# --------------------------------------------------------------------------- utxos


def test_add_utxo_stores_an_unspent_unreserved_output(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 7, 5_000, 10, coinbase=True, vout=2)
        row = store.get_utxo(conn, txid(7), 2)
    assert row is not None
    assert (row.value, row.address, row.height, row.coinbase) == (
        5_000,
        PoolAddress(1, CHANGE, 7),
        10,
        True,
    )
    assert (row.spent_txid, row.spent_height, row.reserved_round) == (None, None, None)


def test_spend_utxo_records_the_spending_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 10)
        assert store.spend_utxo(conn, txid(1), 0, txid(99), 12)
        row = store.get_utxo(conn, txid(1), 0)
    assert row is not None and (row.spent_txid, row.spent_height) == (txid(99), 12)


def test_spend_utxo_of_an_unknown_or_spent_output_is_false(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 10)
        store.spend_utxo(conn, txid(1), 0, txid(99), 12)
        assert not store.spend_utxo(conn, txid(1), 0, txid(98), 13)
        assert not store.spend_utxo(conn, txid(2), 0, txid(98), 13)


def test_unspent_outpoints_lists_unspent_outputs_of_the_given_txids(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 10, vout=0)
        add_utxo(conn, 1, 5_000, 10, vout=1)
        add_utxo(conn, 2, 5_000, 10)
        store.spend_utxo(conn, txid(1), 1, txid(99), 12)
        assert store.unspent_outpoints(conn, [txid(1), txid(3)]) == {(txid(1), 0)}


def test_utxo_to_manifest_utxo_keeps_outpoint_and_position(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 3, 5_000, 10, vout=1)
        row = store.get_utxo(conn, txid(3), 1)
    assert row is not None
    utxo = row.to_manifest_utxo()
    assert (utxo.outpoint.txid_hex, utxo.outpoint.vout, utxo.value) == (txid(3), 1, 5_000)
    assert (utxo.series_id, utxo.branch, utxo.index, utxo.height) == (1, CHANGE, 3, 10)


# --------------------------------------------------------------------------- eligibility


def test_eligible_utxos_need_min_conf_confirmations(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 95)  # 6 confirmations at 100
        add_utxo(conn, 2, 5_000, 96)  # 5
        assert outpoints(store.eligible_utxos(conn, 100, 6, 100)) == [(txid(1), 0)]


def test_eligible_utxos_skip_reserved_outputs(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 10)
        add_utxo(conn, 2, 5_000, 10)
        conn.execute(update(utxos).where(utxos.c.txid == txid(2)).values(reserved_round=4))
        assert outpoints(store.eligible_utxos(conn, 100, 1, 100)) == [(txid(1), 0)]


def test_eligible_utxos_skip_spent_outputs(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 10)
        add_utxo(conn, 2, 5_000, 10)
        store.spend_utxo(conn, txid(2), 0, txid(99), 20)
        assert outpoints(store.eligible_utxos(conn, 100, 1, 100)) == [(txid(1), 0)]


def test_eligible_coinbase_outputs_need_coinbase_maturity(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 1, 5_000, 101, coinbase=True)  # 100 confirmations at 200
        add_utxo(conn, 2, 5_000, 102, coinbase=True)  # 99
        add_utxo(conn, 3, 5_000, 190)  # not coinbase: min_conf is enough
        eligible = store.eligible_utxos(conn, 200, 6, 100)
    assert outpoints(eligible) == [(txid(1), 0), (txid(3), 0)]


def test_eligible_receive_outputs_are_credited_deposits_only(engine: Engine) -> None:
    with engine.begin() as conn:
        for n, status in enumerate(DepositStatus, 1):
            add_utxo(conn, n, 5_000, 10, deposit=status)
        add_utxo(conn, 99, 5_000, 10)  # change
        eligible = store.eligible_utxos(conn, 100, 1, 100)
    credited = list(DepositStatus).index(DepositStatus.CREDITED) + 1
    assert outpoints(eligible) == sorted([(txid(credited), 0), (txid(99), 0)])


def test_eligible_utxos_come_in_height_txid_vout_order(engine: Engine) -> None:
    with engine.begin() as conn:
        add_utxo(conn, 2, 5_000, 10, vout=1)
        add_utxo(conn, 1, 5_000, 11)
        add_utxo(conn, 2, 5_000, 10, vout=0)
        add_utxo(conn, 3, 5_000, 10)
        eligible = store.eligible_utxos(conn, 100, 1, 100)
    assert outpoints(eligible) == [(txid(2), 0), (txid(2), 1), (txid(3), 0), (txid(1), 0)]


# --------------------------------------------------------------------------- balances


def test_balances_split_confirmed_and_unconfirmed_value(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add_utxo(conn, 1, 1_000, 95)
        add_utxo(conn, 2, 20_000, 96)
        assert store.balances(conn, 100, 6) == {1: store.Balance(1_000, 20_000, 2)}


def test_balances_leave_out_spent_outputs(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add_utxo(conn, 1, 1_000, 10)
        add_utxo(conn, 2, 20_000, 10)
        store.spend_utxo(conn, txid(2), 0, txid(99), 11)
        assert store.balances(conn, 100, 6) == {1: store.Balance(1_000, 0, 1)}


def test_balances_count_reserved_outputs(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add_utxo(conn, 1, 1_000, 10)
        conn.execute(update(utxos).values(reserved_round=3))
        assert store.balances(conn, 100, 6) == {1: store.Balance(1_000, 0, 1)}


def test_balances_count_immature_coinbase_as_unconfirmed(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add_utxo(conn, 1, 1_000, 50, coinbase=True)
        totals = store.balances(conn, 100, 6, coinbase_maturity=100)
    assert totals == {1: store.Balance(0, 1_000, 1)}


def test_balances_count_deposits_being_confirmed_as_unconfirmed_and_leave_out_refunds(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add_utxo(conn, 1, 1_000, 10, deposit=DepositStatus.CREDITED)
        add_utxo(conn, 2, 20_000, 10, deposit=DepositStatus.CONFIRMING)
        for n, status in enumerate(
            [DepositStatus.REFUND_PENDING, DepositStatus.DUST, DepositStatus.REFUND_PROPOSED], 3
        ):
            add_utxo(conn, n, 300_000, 10, deposit=status)
        assert store.balances(conn, 100, 6) == {1: store.Balance(1_000, 20_000, 2)}


def test_balances_list_every_series_and_keep_series_apart(engine: Engine) -> None:
    with engine.begin() as conn:
        add(conn, S1)
        add(conn, S2)
        add_utxo(conn, 1, 1_000, 10, series_id=2)
        totals = store.balances(conn, 100, 6)
    assert totals == {1: store.Balance(0, 0, 0), 2: store.Balance(1_000, 0, 1)}


# --------------------------------------------------------------------------- blocks and undo


def test_last_block_is_the_highest_processed_block(engine: Engine) -> None:
    with engine.begin() as conn:
        assert store.last_block(conn) is None
        store.add_block(conn, block(1), NOW, header_time=1)
        store.add_block(conn, block(2), NOW, header_time=2)
        assert store.last_block(conn) == block(2)


def test_blocks_were_mined_at_their_header_time_unless_processed_before(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(1), NOW, header_time=int(NOW) - 600)
        store.add_block(conn, block(2), NOW + 0.5, header_time=int(NOW) + 90)
        assert store.mined_times(conn, [2, 1, 3]) == {1: NOW - 600, 2: NOW + 0.5}


def test_block_at_finds_a_processed_block_by_height(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(1), NOW, header_time=1)
        assert (store.block_at(conn, 1), store.block_at(conn, 2)) == (block(1), None)


def test_confirm_round_transactions_records_the_block(engine: Engine) -> None:
    with engine.begin() as conn:
        add_round_tx(conn, txid(5))
        add_round_tx(conn, txid(6))
        store.confirm_round_transactions(conn, [txid(5)], 3, block(3).hash)
        assert store.unconfirmed_round_txids(conn) == {txid(6)}
        row = conn.execute(
            select(round_transactions.c.block_height, round_transactions.c.block_hash).where(
                round_transactions.c.txid == txid(5)
            )
        ).one()
    assert tuple(row) == (3, block(3).hash)


def test_undo_block_deletes_the_outputs_it_created(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(10), NOW, header_time=10)
        store.add_block(conn, block(11), NOW, header_time=11)
        add_utxo(conn, 1, 1_000, 10)
        add_utxo(conn, 2, 1_000, 11)
        store.undo_block(conn, block(11))
        assert store.get_utxo(conn, txid(2), 0) is None
        assert store.get_utxo(conn, txid(1), 0) is not None


def test_undo_block_unspends_the_outputs_it_spent(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(11), NOW, header_time=11)
        add_utxo(conn, 1, 1_000, 10)
        store.spend_utxo(conn, txid(1), 0, txid(99), 11)
        store.undo_block(conn, block(11))
        row = store.get_utxo(conn, txid(1), 0)
    assert row is not None and (row.spent_txid, row.spent_height) == (None, None)


def test_undo_block_clears_the_round_transactions_it_confirmed(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(11), NOW, header_time=11)
        add_round_tx(conn, txid(5))
        store.confirm_round_transactions(conn, [txid(5)], 11, block(11).hash)
        store.undo_block(conn, block(11))
        assert store.unconfirmed_round_txids(conn) == {txid(5)}


def test_undo_block_moves_the_cursor_back(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(10), NOW, header_time=10)
        store.add_block(conn, block(11), NOW, header_time=11)
        store.undo_block(conn, block(11))
        assert store.last_block(conn) == block(10)


def test_undo_block_refuses_a_block_below_the_tip(engine: Engine) -> None:
    with engine.begin() as conn:
        store.add_block(conn, block(10), NOW, header_time=10)
        store.add_block(conn, block(11), NOW, header_time=11)
        with pytest.raises(ValueError, match="not the last processed block"):
            store.undo_block(conn, block(10))
