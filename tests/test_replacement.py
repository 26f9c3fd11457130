"""The safe-replacement rule (pool.replacement) against the replacements a hostile coordinator
would ask for: each one that could make a payment twice, or none at all, or is no bump, is
refused and names why."""

from __future__ import annotations

from dataclasses import dataclass

from pool.replacement import Coin, check_replacement
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from pool.weights import multisig_input_weight
from tests.factories import p2wpkh

WEIGHT = multisig_input_weight(2, 3)
COIN = 100_000_000


def outpoint(n: int) -> OutPoint:
    return OutPoint(bytes([n]) * 32, 0)


COINS = {outpoint(n): Coin(COIN, WEIGHT) for n in range(6)}
CHANGE = b"\x00\x20" + b"\xcc" * 32


@dataclass(frozen=True)
class Signed:
    tx: Transaction
    change_vout: int | None

    @property
    def txid_hex(self) -> str:
        return self.tx.txid_hex


def tx(coins: list[int], payments: list[tuple[str, int]], change: int | None) -> Transaction:
    outputs = [TxOut(value, p2wpkh(who)) for who, value in payments]
    if change is not None:
        outputs.append(TxOut(change, CHANGE))
    inputs = tuple(TxIn(outpoint(n), 0xFFFFFFFD) for n in coins)
    return Transaction(2, inputs, tuple(outputs), 100)


def signed(coins: list[int], payments: list[tuple[str, int]], change: int) -> Signed:
    return Signed(tx(coins, payments, change), len(payments))


PAYS = [("alice", 30_000_000), ("bob", 20_000_000)]
ORIGINAL = signed([0], PAYS, COIN - 50_000_000 - 500)
"""A signed transaction paying alice and bob, 500 sat fee."""


def why(candidate: Transaction, *replaced: Signed, change_vout: int | None = 2) -> str | None:
    verdict = check_replacement(list(replaced), candidate, change_vout, COINS)
    return None if verdict.problem is None else verdict.problem[1]


def test_a_fee_bump_with_the_same_inputs_and_payments_is_a_safe_replacement() -> None:
    assert why(tx([0], PAYS, COIN - 50_000_000 - 5_000), ORIGINAL) is None


def test_a_replacement_that_adds_a_payment_reports_only_that_payment_as_added() -> None:
    candidate = tx([0], [*PAYS, ("carol", 1_000_000)], COIN - 51_000_000 - 5_000)
    verdict = check_replacement([ORIGINAL], candidate, 3, COINS)
    assert (verdict.problem, verdict.added) == (None, frozenset({2}))


def test_a_replacement_that_drops_a_payment_is_refused() -> None:
    candidate = tx([0], PAYS[:1], COIN - 30_000_000 - 5_000)
    assert "does not pay its output 1" in (why(candidate, ORIGINAL, change_vout=1) or "")


def test_a_replacement_that_redirects_a_payment_is_refused() -> None:
    candidate = tx([0], [PAYS[0], ("mallory", 20_000_000)], COIN - 50_000_000 - 5_000)
    assert "does not pay its output 1" in (why(candidate, ORIGINAL) or "")


def test_a_replacement_that_pays_a_payment_less_is_refused() -> None:
    candidate = tx([0], [PAYS[0], ("bob", 19_999_000)], COIN - 50_000_000 - 5_000)
    assert "does not pay its output 1" in (why(candidate, ORIGINAL) or "")


def test_a_replacement_that_moves_a_payment_into_its_change_is_refused() -> None:
    """The change output is free, so a payment hidden as the change is not paid."""
    candidate = tx([0], [PAYS[0]], 20_000_000)
    candidate = Transaction(
        2, candidate.inputs, (*candidate.outputs, TxOut(COIN - 50_005_000, CHANGE)), 100
    )
    assert why(candidate, ORIGINAL, change_vout=1) is not None


def test_a_replacement_paying_two_payments_with_one_output_is_refused() -> None:
    twice = signed([0], [("alice", 1_000), ("alice", 1_000)], COIN - 2_000 - 500)
    candidate = tx([0], [("alice", 1_000)], COIN - 1_000 - 5_000)
    assert why(candidate, twice, change_vout=1) is not None


def test_a_replacement_with_a_lower_fee_is_refused() -> None:
    candidate = tx([0], PAYS, COIN - 50_000_000 - 400)
    assert "is not above" in (why(candidate, ORIGINAL) or "")


def test_a_replacement_with_the_same_fee_rate_is_refused() -> None:
    assert "is not above" in (why(ORIGINAL.tx, ORIGINAL) or "")


def test_a_larger_replacement_with_a_higher_fee_but_a_lower_fee_rate_is_refused() -> None:
    candidate = tx([0, 1], PAYS, 2 * COIN - 50_000_000 - 600)
    assert "is not above" in (why(candidate, ORIGINAL) or "")


def test_a_replacement_that_leaves_an_input_unspent_is_refused() -> None:
    two_coins = signed([0, 1], PAYS, 2 * COIN - 50_000_000 - 500)
    candidate = tx([0, 2], PAYS, 2 * COIN - 50_000_000 - 5_000)
    assert "does not spend its input" in (why(candidate, two_coins) or "")


def test_a_replacement_spending_a_coin_of_another_pool_transaction_must_replace_it_too() -> None:
    other = signed([1, 2], [("carol", 10_000_000)], 2 * COIN - 10_000_000 - 500)
    candidate = tx([0, 1], PAYS, 2 * COIN - 50_000_000 - 5_000)
    verdict = check_replacement([ORIGINAL, other], candidate, 2, COINS)
    assert verdict.problem is not None
    assert verdict.problem[0] == other.txid_hex


def test_a_replacement_of_two_transactions_must_pay_the_payments_of_both() -> None:
    other = signed([1], [("carol", 10_000_000)], COIN - 10_000_000 - 500)
    both = tx([0, 1], [*PAYS, ("carol", 10_000_000)], 2 * COIN - 60_000_000 - 5_000)
    only_one = tx([0, 1], PAYS, 2 * COIN - 50_000_000 - 5_000)
    assert check_replacement([ORIGINAL, other], both, 3, COINS).problem is None
    assert check_replacement([ORIGINAL, other], only_one, 2, COINS).problem is not None


def test_a_dropped_payment_passes_only_where_may_drop_allows_that_very_payment() -> None:
    candidate = tx([0], PAYS[:1], COIN - 30_000_000 - 5_000)
    allowed = check_replacement(
        [ORIGINAL], candidate, 1, COINS, may_drop=lambda t, v: (t, v) == (ORIGINAL.txid_hex, 1)
    )
    other = check_replacement(
        [ORIGINAL], candidate, 1, COINS, may_drop=lambda t, v: (t, v) == (ORIGINAL.txid_hex, 0)
    )
    assert (allowed.problem, allowed.dropped) == (None, ((ORIGINAL.txid_hex, 1),))
    assert other.problem is not None
