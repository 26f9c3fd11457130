"""Series: canonical key order, validation, branches and construction from descriptors."""

from __future__ import annotations

import pytest

from pool.descriptor import DescriptorKey, MultisigDescriptor
from pool.errors import DescriptorError, VpoolError
from pool.hdkeys import ExtendedPrivateKey, KeyOrigin, parse_path
from pool.networks import REGTEST
from pool.series import CHANGE, RECEIVE, Series, SeriesState

ACCOUNT_PATH = parse_path("48h/1h/0h/2h")


def _account_key(seed_byte: int) -> DescriptorKey:
    master = ExtendedPrivateKey.from_seed(bytes([seed_byte]) * 32)
    return DescriptorKey(
        KeyOrigin(master.fingerprint, ACCOUNT_PATH), master.derive_path(ACCOUNT_PATH).public()
    )


KEYS = tuple(_account_key(i) for i in (1, 2, 3))
OTHER_KEY = _account_key(4)


def _series(keys: tuple[DescriptorKey, ...] = KEYS, m: int = 2, series_id: int = 7) -> Series:
    return Series(series_id, m, keys, SeriesState.ACTIVE)


def _descriptor_text(branch: int, keys: tuple[DescriptorKey, ...] = KEYS, m: int = 2) -> str:
    return MultisigDescriptor(m, keys, branch).to_string(REGTEST)


def test_series_state_values_are_lowercase_words() -> None:
    assert [state.value for state in SeriesState] == ["active", "retiring"]


def test_branch_constants() -> None:
    assert (RECEIVE, CHANGE) == (0, 1)


def test_keys_are_stored_in_canonical_order() -> None:
    stored = _series(KEYS[::-1]).keys
    assert [key.xpub.public_key for key in stored] == sorted(key.xpub.public_key for key in KEYS)


def test_series_from_permuted_keys_are_equal() -> None:
    assert _series(KEYS) == _series((KEYS[1], KEYS[2], KEYS[0]))


def test_n_counts_the_keys() -> None:
    assert _series().n == 3


@pytest.mark.parametrize("series_id", [-1, 2**32])
def test_series_id_outside_32_bits_is_refused(series_id: int) -> None:
    with pytest.raises(VpoolError, match=rf"series id {series_id} outside 0..2\^32-1"):
        _series(series_id=series_id)


def test_largest_series_id_is_accepted() -> None:
    assert _series(series_id=2**32 - 1).id == 2**32 - 1


def test_threshold_above_key_count_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"threshold m=4 exceeds the number of keys n=3"):
        _series(m=4)


def test_threshold_zero_is_refused() -> None:
    with pytest.raises(DescriptorError, match=r"threshold m=0 must be at least 1"):
        _series(m=0)


def test_more_than_15_keys_are_refused() -> None:
    keys = tuple(_account_key(i) for i in range(10, 26))
    with pytest.raises(DescriptorError, match=r"multisig has 16 keys, at most 15"):
        _series(keys)


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(DescriptorError, match=r"key 3 duplicates key 2"):
        _series((KEYS[0], KEYS[1], KEYS[1]))


def test_state_must_be_a_series_state() -> None:
    with pytest.raises(VpoolError, match=r"series state must be a SeriesState"):
        Series(1, 2, KEYS, "paused")  # type: ignore[arg-type]


@pytest.mark.parametrize("branch", [RECEIVE, CHANGE])
def test_descriptor_uses_the_branch_and_canonical_keys(branch: int) -> None:
    series = _series(KEYS[::-1])
    assert series.descriptor(branch) == MultisigDescriptor(2, series.keys, branch)


@pytest.mark.parametrize("branch", [-1, 2])
def test_branch_other_than_receive_or_change_is_refused(branch: int) -> None:
    with pytest.raises(
        DescriptorError, match=rf"branch must be 0 \(receive\) or 1 \(change\), got {branch}"
    ):
        _series().derive(branch, 0)


def test_derive_matches_the_branch_descriptor() -> None:
    series = _series()
    assert series.derive(CHANGE, 9) == MultisigDescriptor(2, KEYS, CHANGE).derive(9)


def test_address_matches_the_derived_script() -> None:
    series = _series()
    assert series.address(RECEIVE, 3, REGTEST) == series.derive(RECEIVE, 3).address(REGTEST)


def test_receive_and_change_addresses_differ() -> None:
    series = _series()
    assert series.address(RECEIVE, 0, REGTEST) != series.address(CHANGE, 0, REGTEST)


def test_address_does_not_depend_on_key_order() -> None:
    assert _series(KEYS).address(RECEIVE, 5, REGTEST) == _series(KEYS[::-1]).address(
        RECEIVE, 5, REGTEST
    )


def test_from_descriptors_builds_the_series() -> None:
    series = Series.from_descriptors(
        7,
        _descriptor_text(RECEIVE),
        _descriptor_text(CHANGE, KEYS[::-1]),
        SeriesState.ACTIVE,
        REGTEST,
    )
    assert series == _series()


def test_from_descriptors_keeps_the_state() -> None:
    series = Series.from_descriptors(
        3, _descriptor_text(RECEIVE), _descriptor_text(CHANGE), SeriesState.RETIRING, REGTEST
    )
    assert series.state is SeriesState.RETIRING


def test_from_descriptors_refuses_receive_on_change_branch() -> None:
    with pytest.raises(DescriptorError, match=r"^receive descriptor must use branch 0, found 1$"):
        Series.from_descriptors(
            1, _descriptor_text(CHANGE), _descriptor_text(CHANGE), SeriesState.ACTIVE, REGTEST
        )


def test_from_descriptors_refuses_change_on_receive_branch() -> None:
    with pytest.raises(DescriptorError, match=r"^change descriptor must use branch 1, found 0$"):
        Series.from_descriptors(
            1, _descriptor_text(RECEIVE), _descriptor_text(RECEIVE), SeriesState.ACTIVE, REGTEST
        )


def test_from_descriptors_refuses_different_thresholds() -> None:
    with pytest.raises(DescriptorError, match=r"different thresholds \(2 and 3\)"):
        Series.from_descriptors(
            1, _descriptor_text(RECEIVE), _descriptor_text(CHANGE, m=3), SeriesState.ACTIVE, REGTEST
        )


def test_from_descriptors_refuses_different_keys() -> None:
    change = _descriptor_text(CHANGE, (KEYS[0], KEYS[1], OTHER_KEY))
    with pytest.raises(
        DescriptorError, match=r"^receive and change descriptors have different keys$"
    ):
        Series.from_descriptors(1, _descriptor_text(RECEIVE), change, SeriesState.ACTIVE, REGTEST)


def test_from_descriptors_refuses_a_bad_descriptor() -> None:
    receive = _descriptor_text(RECEIVE)
    corrupted = receive[:-1] + ("q" if receive[-1] != "q" else "p")
    with pytest.raises(DescriptorError, match=r"bad descriptor checksum"):
        Series.from_descriptors(1, corrupted, _descriptor_text(CHANGE), SeriesState.ACTIVE, REGTEST)
