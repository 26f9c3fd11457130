"""The signer's persistent state: signing log, amounts signed, series registry, data dir lock."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.manifest import Manifest
from pool.networks import MAINNET, REGTEST, Network
from pool.refunds import build_refunds
from pool.series import CHANGE, RECEIVE, Series
from pool.tx import OutPoint
from pool.withdrawal import build_round
from signer.policy import AcknowledgedDeposit, Approval, DepositClaim
from signer.state import _MIGRATIONS, DB_FILE, SCHEMA_VERSION, SignerState, StateError
from tests.factories import BTC, make_series, manifest, request, utxo
from tests.refund_factories import deposit, refund_manifest

S1 = make_series(1, 2, (0, 1, 2))
NOW = 1_700_000_000.0
REFUND = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
OTHER_REFUND = "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry"


def approval(m: Manifest) -> Approval:
    """The approval the policy would give for the round of ``m``."""
    plan = build_round(m)
    payments = sum(
        out.value
        for t in plan.transactions
        for vout, out in enumerate(t.psbt.tx.outputs)
        if t.change is None or vout != t.change.vout
    )
    return Approval(
        manifest_hash=plan.manifest_hash,
        psbts=tuple(t.psbt for t in plan.transactions),
        txids=tuple(t.txid_hex for t in plan.transactions),
        change_vouts=tuple(None if t.change is None else t.change.vout for t in plan.transactions),
        payments=payments,
    )


def one_payment(amount: int = BTC // 2, fee_rate: int = 2000) -> Approval:
    return approval(
        manifest([S1], [utxo(1, BTC, 10)], [request("c1", "r1", amount)], fee_rate=fee_rate)
    )


def two_transactions() -> Approval:
    """Two requests that do not fit in one transaction of weight 4000: two PSBTs."""
    utxos = [utxo(i, BTC // 10, 10 + i) for i in range(20)]
    requests = [request("c1", "r1", BTC // 2), request("c2", "r1", BTC // 2)]
    result = approval(manifest([S1], utxos, requests, max_weight=4000))
    assert len(result.psbts) == 2
    return result


def refund_approval(fee_rate: int = 2000) -> Approval:
    """The approval of a refund round of one deposit: no change, no payments counted."""
    plan = build_refunds(refund_manifest([S1], [deposit("d", S1, 3, BTC)], fee_rate=fee_rate))
    return Approval(
        manifest_hash=plan.manifest_hash,
        psbts=tuple(t.psbt for t in plan.transactions),
        txids=tuple(t.txid_hex for t in plan.transactions),
        change_vouts=(None,),
        payments=0,
    )


def first_outpoint(signed: Approval) -> OutPoint:
    return signed.psbts[0].tx.inputs[0].prevout


def descriptors(series: Series, network: Network = REGTEST) -> tuple[str, str]:
    receive = series.descriptor(RECEIVE).to_string(network)
    return receive, series.descriptor(CHANGE).to_string(network)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SignerState]:
    with SignerState(tmp_path / "data") as opened:
        yield opened


# --------------------------------------------------------------------------- signing log


def test_signed_spend_returns_the_signed_transaction_and_its_change_vout(
    state: SignerState,
) -> None:
    signed = one_payment()
    state.record_signed(signed, NOW)
    tx = signed.psbts[0].tx
    before = state.signed_spend(tx.inputs[0].prevout)
    assert before is not None
    assert (before.txid_hex, before.tx) == (signed.txids[0], tx)
    assert signed.change_vouts[0] is not None
    assert before.change_vout == signed.change_vouts[0]


def test_signed_spend_is_none_for_an_outpoint_never_signed(state: SignerState) -> None:
    state.record_signed(one_payment(), NOW)
    assert state.signed_spend(utxo(99, BTC, 10).outpoint) is None


def test_every_input_of_every_psbt_is_logged_with_its_own_transaction(
    state: SignerState,
) -> None:
    signed = two_transactions()
    state.record_signed(signed, NOW)
    for psbt, txid in zip(signed.psbts, signed.txids, strict=True):
        for txin in psbt.tx.inputs:
            before = state.signed_spend(txin.prevout)
            assert before is not None
            assert before.txid_hex == txid


def test_change_vout_is_none_for_a_transaction_without_change(state: SignerState) -> None:
    signed = one_payment(amount=BTC - 600)
    assert signed.change_vouts[0] is None
    state.record_signed(signed, NOW)
    before = state.signed_spend(first_outpoint(signed))
    assert before is not None
    assert before.change_vout is None


def test_fee_bump_replaces_the_signing_log_entry(state: SignerState) -> None:
    original, bump = one_payment(fee_rate=2000), one_payment(fee_rate=5000)
    state.record_signed(original, NOW)
    state.record_signed(bump, NOW + 600)
    before = state.signed_spend(first_outpoint(original))
    assert before is not None
    assert before.txid_hex == bump.txids[0] != original.psbts[0].tx.txid_hex


def test_psbts_that_are_not_the_plans_transactions_are_refused(state: SignerState) -> None:
    signed = two_transactions()
    swapped = dataclasses.replace(signed, psbts=signed.psbts[::-1])
    with pytest.raises(StateError, match="PSBT 0 is not transaction 0"):
        state.record_signed(swapped, NOW)
    assert state.signed_spend(first_outpoint(signed)) is None


def test_record_signed_is_all_or_nothing(state: SignerState) -> None:
    broken = dataclasses.replace(one_payment(), payments=-1)  # the spends row fails its CHECK
    with pytest.raises(sqlite3.IntegrityError):
        state.record_signed(broken, NOW)
    assert state.signed_spend(first_outpoint(broken)) is None


def test_a_signed_refund_is_logged_without_change_and_counts_nothing(state: SignerState) -> None:
    signed = refund_approval()
    state.record_signed(signed, NOW)
    before = state.signed_spend(first_outpoint(signed))
    assert before is not None
    assert (before.txid_hex, before.change_vout) == (signed.txids[0], None)
    assert state.amount_signed_since(0) == 0


# --------------------------------------------------------------------------- amounts signed


def test_amount_signed_since_counts_rounds_at_or_after_since(state: SignerState) -> None:
    early, late = one_payment(BTC // 4), two_transactions()
    state.record_signed(early, NOW)
    state.record_signed(late, NOW + 100)
    assert state.amount_signed_since(NOW) == early.payments + late.payments
    assert state.amount_signed_since(NOW + 100) == late.payments
    assert state.amount_signed_since(NOW + 100.001) == 0


def test_amount_signed_since_is_zero_before_any_signature(state: SignerState) -> None:
    assert state.amount_signed_since(0) == 0


def test_recording_the_same_round_twice_counts_its_amount_once(state: SignerState) -> None:
    signed = one_payment()
    state.record_signed(signed, NOW)
    state.record_signed(signed, NOW + 60)
    assert state.amount_signed_since(0) == signed.payments == BTC // 2


def test_signed_spend_carries_the_manifest_it_was_signed_under(state: SignerState) -> None:
    signed = one_payment()
    state.record_signed(signed, NOW)
    before = state.signed_spend(first_outpoint(signed))
    assert before is not None and before.manifest_hash == signed.manifest_hash


def with_flows(signed: Approval, **flows: object) -> Approval:
    return dataclasses.replace(signed, **flows)  # type: ignore[arg-type]


DEST_A, DEST_B = b"\x00\x14" + bytes(20), b"\x00\x14" + bytes([1] * 20)


def test_payments_per_destination_are_summed_over_the_window(state: SignerState) -> None:
    first = with_flows(one_payment(), destinations=((DEST_A, 3), (DEST_B, 5)))
    second = with_flows(two_transactions(), destinations=((DEST_A, 7),))
    state.record_signed(first, NOW)
    state.record_signed(second, NOW + 100)
    assert state.amount_paid_to_since(DEST_A, NOW) == 10
    assert state.amount_paid_to_since(DEST_A, NOW + 1) == 7
    assert state.amount_paid_to_since(DEST_B, NOW) == 5
    assert state.amount_paid_to_since(b"\x00", 0) == 0


def test_refunds_and_moves_are_counted_in_their_own_windows(state: SignerState) -> None:
    state.record_signed(with_flows(refund_approval(), refunds=BTC), NOW)
    state.record_signed(with_flows(one_payment(), moves=2 * BTC), NOW + 100)
    assert (state.amount_refunded_since(NOW), state.amount_moved_since(NOW)) == (BTC, 2 * BTC)
    assert (state.amount_refunded_since(NOW + 1), state.amount_moved_since(NOW + 101)) == (0, 0)
    assert state.amount_signed_since(NOW) == one_payment().payments


def test_recording_the_same_round_twice_counts_no_window_twice(state: SignerState) -> None:
    signed = with_flows(one_payment(), destinations=((DEST_A, 3),), moves=4, refunds=0)
    state.record_signed(signed, NOW)
    state.record_signed(signed, NOW + 60)
    assert (state.amount_paid_to_since(DEST_A, 0), state.amount_moved_since(0)) == (3, 4)


# --------------------------------------------------------------------------- persistence


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    signed = one_payment()
    outpoint = first_outpoint(signed)
    with SignerState(tmp_path) as state:
        state.record_signed(signed, NOW)
        state.register_series(1, "regtest", *descriptors(S1), NOW)
        state.record_signed(with_flows(refund_approval(), refunds=BTC), NOW)
        answers = (state.signed_spend(outpoint), state.amount_signed_since(0))
    with SignerState(tmp_path) as reopened:
        assert (reopened.signed_spend(outpoint), reopened.amount_signed_since(0)) == answers
        assert reopened.amount_refunded_since(0) == BTC
        assert reopened.series_descriptors(REGTEST) == {1: descriptors(S1)}


def test_database_uses_the_wal_journal(tmp_path: Path) -> None:
    SignerState(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_a_signed_transaction_is_stored_once_however_many_inputs_it_has(tmp_path: Path) -> None:
    utxos = [utxo(i, BTC // 10, 10 + i) for i in range(8)]
    signed = approval(manifest([S1], utxos, [request("c1", "r1", BTC // 2)]))
    inputs = len(signed.psbts[0].tx.inputs)
    assert inputs > 1
    with SignerState(tmp_path) as state:
        state.record_signed(signed, NOW)
        for txin in signed.psbts[0].tx.inputs:
            before = state.signed_spend(txin.prevout)
            assert before is not None and before.tx == signed.psbts[0].tx
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        log_rows = db.execute("SELECT count(*) FROM signing_log").fetchone()[0]
        stored = db.execute("SELECT count(*) FROM signed_transactions").fetchone()[0]
        columns = {row[1] for row in db.execute("PRAGMA table_info(signing_log)")}
    finally:
        db.close()
    assert (log_rows, stored) == (inputs, 1)
    assert "tx" not in columns


def test_migrations_create_the_schema_from_an_empty_directory(tmp_path: Path) -> None:
    SignerState(tmp_path / "new").close()
    db = sqlite3.connect(tmp_path / "new" / DB_FILE)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert tables == {
        "signing_log",
        "spends",
        "series",
        "deposit_addresses",
        "destination_payments",
        "acknowledged_deposits",
        "round_answers",
        "signed_transactions",
        "serving_intervals",
        "cancelled_requests",
    }


def database_of_schema(path: Path, version: int, signed: Approval) -> None:
    """A database as a signer of schema ``version`` left it, holding the round ``signed``
    (its signing log rows and its payments)."""
    db = sqlite3.connect(path / DB_FILE)
    for statements in _MIGRATIONS[:version]:
        for statement in statements:
            db.execute(statement)
    psbt = signed.psbts[0]
    for txin in psbt.tx.inputs:
        db.execute(
            "INSERT INTO signing_log VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                txin.prevout.txid,
                txin.prevout.vout,
                signed.txids[0],
                psbt.tx.serialize_without_witness(),
                signed.change_vouts[0],
                signed.manifest_hash,
                NOW,
            ),
        )
    db.execute("INSERT INTO spends VALUES (?, ?, ?)", (signed.manifest_hash, signed.payments, NOW))
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_database_is_migrated_and_keeps_its_records(tmp_path: Path, version: int) -> None:
    signed = one_payment()
    database_of_schema(tmp_path, version, signed)
    with SignerState(tmp_path) as migrated:
        before = migrated.signed_spend(first_outpoint(signed))
        assert before is not None and before.manifest_hash == signed.manifest_hash
        assert migrated.amount_signed_since(NOW) == signed.payments
        assert (migrated.amount_refunded_since(0), migrated.amount_moved_since(0)) == (0, 0)
        assert migrated.register_deposit_address("regtest", 1, 0, REFUND, NOW) is True
        assert migrated.refund_address("regtest", 1, 0) == REFUND
        migrated.record_signed(dataclasses.replace(refund_approval(), refunds=BTC), NOW)
        assert migrated.amount_refunded_since(NOW) == BTC
        claim = DepositClaim(first_outpoint(signed), 1, 0, 1_000)
        assert migrated.acknowledged_deposit(claim.outpoint) is None
        assert not migrated.record_acknowledgement(
            "regtest", claim, 100, NOW
        )  # its spend was signed


def test_an_acknowledgement_is_recorded_once_and_read_back(tmp_path: Path) -> None:
    claim = DepositClaim(OutPoint.from_hex("cd" * 32, 2), 1, 5, 70_000)
    with SignerState(tmp_path) as state:
        assert state.record_acknowledgement("regtest", claim, 120, NOW) is True
        assert state.record_acknowledgement("regtest", claim, 121, NOW + 1) is False
    with SignerState(tmp_path) as reopened:
        assert reopened.acknowledged_deposit(claim.outpoint) == AcknowledgedDeposit(claim, 120, NOW)


def test_a_database_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match="newer than this signer"):
        SignerState(tmp_path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(StateError, match=DB_FILE):
        SignerState(tmp_path)


# --------------------------------------------------------------------------- data dir lock


def test_a_second_opener_of_the_data_dir_is_refused(state: SignerState, tmp_path: Path) -> None:
    with pytest.raises(StateError, match="in use by another signer"):
        SignerState(tmp_path / "data")


def test_closing_releases_the_data_dir(tmp_path: Path) -> None:
    SignerState(tmp_path).close()
    SignerState(tmp_path).close()


def test_the_refusal_names_the_process_holding_the_lock(state: SignerState, tmp_path: Path) -> None:
    with pytest.raises(StateError, match=f"pid {os.getpid()} holds"):
        SignerState(tmp_path / "data")


# --------------------------------------------------------------------------- series registry


def test_registering_a_new_series_returns_true(state: SignerState) -> None:
    assert state.register_series(1, "regtest", *descriptors(S1), NOW) is True


def test_registering_the_same_series_again_returns_false(state: SignerState) -> None:
    state.register_series(1, "regtest", *descriptors(S1), NOW)
    assert state.register_series(1, "regtest", *descriptors(S1), NOW + 1) is False


def test_registered_series_parse_back_with_the_same_keys_and_threshold(
    state: SignerState,
) -> None:
    state.register_series(1, "regtest", *descriptors(S1), NOW)
    assert state.registered_series(REGTEST) == {1: S1}


def test_the_same_keys_in_another_order_are_the_same_series(state: SignerState) -> None:
    keys = ",".join(f"{k.to_string(REGTEST)}/0/*" for k in reversed(S1.keys))
    state.register_series(1, "regtest", *descriptors(S1), NOW)
    receive = f"wsh(sortedmulti(2,{keys}))"
    change = receive.replace("/0/*", "/1/*")
    assert state.register_series(1, "regtest", receive, change, NOW) is False
    assert state.registered_series(REGTEST) == {1: S1}


def test_another_series_under_a_registered_id_is_refused(state: SignerState) -> None:
    state.register_series(7, "regtest", *descriptors(S1), NOW)
    other = make_series(7, 2, (0, 1, 3))
    with pytest.raises(StateError, match="series 7 is already registered"):
        state.register_series(7, "regtest", *descriptors(other), NOW)
    assert state.registered_series(REGTEST) == {7: make_series(7, 2, (0, 1, 2))}


def test_a_registered_series_cannot_change_its_threshold(state: SignerState) -> None:
    state.register_series(1, "regtest", *descriptors(S1), NOW)
    with pytest.raises(StateError, match="series 1"):
        state.register_series(1, "regtest", *descriptors(make_series(1, 3, (0, 1, 2))), NOW)


def test_series_are_registered_per_network(state: SignerState) -> None:
    mainnet = make_series(1, 2, (0, 1, 2), network="mainnet")
    state.register_series(1, "regtest", *descriptors(S1), NOW)
    assert state.register_series(1, "mainnet", *descriptors(mainnet, MAINNET), NOW) is True
    assert state.registered_series(MAINNET) == {1: mainnet}
    assert state.registered_series(REGTEST) == {1: S1}


# --------------------------------------------------------------------------- deposit addresses


def test_a_deposit_address_is_registered_once_and_read_back(state: SignerState) -> None:
    assert state.register_deposit_address("regtest", 1, 4, REFUND, NOW) is True
    assert state.register_deposit_address("regtest", 1, 4, REFUND, NOW + 1) is False
    assert state.refund_address("regtest", 1, 4) == REFUND


def test_a_deposit_address_without_refund_address_reads_back_empty(state: SignerState) -> None:
    state.register_deposit_address("regtest", 1, 4, "", NOW)
    assert state.refund_address("regtest", 1, 4) == ""


def test_a_deposit_address_never_registered_has_no_refund_address(state: SignerState) -> None:
    state.register_deposit_address("regtest", 1, 4, REFUND, NOW)
    assert state.refund_address("regtest", 1, 5) is None
    assert state.refund_address("regtest", 2, 4) is None
    assert state.refund_address("mainnet", 1, 4) is None


@pytest.mark.parametrize("second", [OTHER_REFUND, ""])
def test_the_first_registration_of_a_deposit_address_wins(state: SignerState, second: str) -> None:
    state.register_deposit_address("regtest", 1, 4, REFUND, NOW)
    with pytest.raises(StateError, match="deposit address 4 of series 1 on regtest"):
        state.register_deposit_address("regtest", 1, 4, second, NOW + 1)
    assert state.refund_address("regtest", 1, 4) == REFUND


def test_deposit_addresses_survive_close_and_reopen(tmp_path: Path) -> None:
    with SignerState(tmp_path) as state:
        state.register_deposit_address("regtest", 1, 4, REFUND, NOW)
    with SignerState(tmp_path) as reopened:
        assert reopened.refund_address("regtest", 1, 4) == REFUND


def test_a_signed_cancel_is_recorded_for_good(state: SignerState) -> None:
    approval = Approval(
        manifest_hash=b"\x07" * 32,
        psbts=(),
        txids=(),
        change_vouts=(),
        payments=0,
        cancels=(("bob", "1"),),
    )
    state.record_signed(approval, 1.0)
    state.record_signed(approval, 2.0)  # the same round again changes nothing
    assert state.cancelled_request("bob", "1")
    assert not state.cancelled_request("bob", "2")


def _recorded(state: SignerState, digest: int, **fields: Any) -> None:
    approval = Approval(
        manifest_hash=bytes([digest]) * 32,
        psbts=(),
        txids=(),
        change_vouts=(),
        payments=0,
        **fields,
    )
    state.record_signed(approval, float(digest))


def test_an_operator_cancel_is_recorded_with_its_replacements_until_paid_again_once(
    state: SignerState,
) -> None:
    _recorded(state, 7, requeues=(("bob", "1", ("aa" * 32, "bb" * 32)),))
    _recorded(state, 7, requeues=(("bob", "1", ("aa" * 32, "bb" * 32)),))  # asked again
    assert state.requeued_cancel("bob", "1") == ("aa" * 32, "bb" * 32)
    assert not state.cancelled_request("bob", "1")  # payable again (once the chain says so)
    assert not state.transaction_confirmed("aa" * 32)  # the store alone never says so
    _recorded(state, 8, repaid=(("bob", "1"),))
    assert state.requeued_cancel("bob", "1") == ()
    assert state.cancelled_request("bob", "1")  # never a third time


def test_a_client_cancel_after_an_operator_cancel_makes_it_final(state: SignerState) -> None:
    _recorded(state, 7, requeues=(("bob", "1", ("aa" * 32,)),))
    _recorded(state, 8, cancels=(("bob", "1"),))
    assert state.cancelled_request("bob", "1") and state.requeued_cancel("bob", "1") == ()


def test_a_request_paid_again_may_be_operator_cancelled_again(state: SignerState) -> None:
    """Its first replacement confirmed (that let it be paid again): the new record replaces it."""
    _recorded(state, 7, requeues=(("bob", "1", ("aa" * 32,)),))
    _recorded(state, 8, repaid=(("bob", "1"),))
    _recorded(state, 9, requeues=(("bob", "1", ("cc" * 32,)),))
    assert state.requeued_cancel("bob", "1") == ("cc" * 32,)
    assert not state.cancelled_request("bob", "1")
