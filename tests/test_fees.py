"""Largest-remainder fee allocation and the weight arithmetic behind fees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pool.fees import largest_remainder
from pool.weights import fee_for_weight, multisig_input_weight, output_weight, tx_weight, vsize


def test_shares_are_proportional_when_they_divide_evenly() -> None:
    assert largest_remainder(300, {"a": 1, "b": 2}) == {"a": 100, "b": 200}


def test_leftover_satoshis_go_to_the_largest_remainders() -> None:
    # 100 * 1/3 = 33.33, 100 * 2/3 = 66.67: the remainder goes to b
    assert largest_remainder(100, {"a": 1, "b": 2}) == {"a": 33, "b": 67}


def test_equal_remainders_are_broken_by_client_id() -> None:
    assert largest_remainder(2, {"b": 1, "a": 1, "c": 1}) == {"a": 1, "b": 1, "c": 0}


def test_zero_weights_split_evenly() -> None:
    assert largest_remainder(5, {"a": 0, "b": 0}) == {"a": 3, "b": 2}


def test_negative_total_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        largest_remainder(-1, {"a": 1})


@given(
    st.integers(0, 10**12),
    st.dictionaries(
        st.text(min_size=1, max_size=5), st.integers(0, 10**10), min_size=1, max_size=8
    ),
)
def test_shares_always_add_up_to_the_total(total: int, weights: dict[str, int]) -> None:
    shares = largest_remainder(total, weights)
    assert sum(shares.values()) == total
    assert set(shares) == set(weights)


def test_two_of_three_input_weight() -> None:
    # 41 bytes of base data (164 WU) + witness: 1 + 1 + 2 * 73 + 1 + 105
    assert multisig_input_weight(2, 3) == 164 + 254


def test_fifteen_key_witness_script_needs_a_three_byte_length() -> None:
    assert multisig_input_weight(15, 15) == 164 + 1 + 1 + 15 * 73 + 3 + 513


def test_p2wsh_output_weight() -> None:
    assert output_weight(34) == 172


def test_input_count_above_252_grows_the_count_prefix() -> None:
    assert tx_weight(253, 1, 0, 0) - tx_weight(252, 1, 0, 0) == 4 * 2


def test_fee_rounds_vsize_and_satoshis_up() -> None:
    assert vsize(401) == 101
    assert fee_for_weight(401, 1_500) == 152  # 101 vB * 1.5 sat/vB = 151.5 -> 152
