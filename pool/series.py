"""Series: one signer set (m of n account xpubs) and the addresses it owns.

Receive addresses are at ``/0/i`` and change at ``/1/i`` below each account xpub. A series holds
its keys in a canonical order, so the same signer set is the same series whatever the order in
which its keys were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from pool.descriptor import (
    DerivedScript,
    DescriptorKey,
    MultisigDescriptor,
    validate_multisig_keys,
)
from pool.errors import DescriptorError, VpoolError
from pool.networks import Network

RECEIVE = 0
CHANGE = 1
_MAX_SERIES_ID = 0xFFFFFFFF


class SeriesState(StrEnum):
    ACTIVE = "active"
    """Gives out new addresses."""
    RETIRING = "retiring"
    """Still spendable; its funds are swept to the active series."""


def _canonical_order(key: DescriptorKey) -> tuple[bytes, bytes]:
    return key.xpub.public_key, key.xpub.chain_code


@dataclass(frozen=True)
class Series:
    """A numbered signer set. Its keys are kept sorted by (public key, chain code), so the same
    keys given in any order make equal series."""

    id: int
    m: int
    keys: tuple[DescriptorKey, ...]
    state: SeriesState

    def __post_init__(self) -> None:
        if not 0 <= self.id <= _MAX_SERIES_ID:
            raise VpoolError(f"series id {self.id} outside 0..2^32-1")
        if not isinstance(self.state, SeriesState):
            raise VpoolError(f"series state must be a SeriesState, got {self.state!r}")
        validate_multisig_keys(self.m, self.keys)
        object.__setattr__(self, "keys", tuple(sorted(self.keys, key=_canonical_order)))

    @property
    def n(self) -> int:
        return len(self.keys)

    def descriptor(self, branch: int) -> MultisigDescriptor:
        """The descriptor of the receive (0) or change (1) branch."""
        if branch not in (RECEIVE, CHANGE):
            raise DescriptorError(
                f"branch must be {RECEIVE} (receive) or {CHANGE} (change), got {branch}"
            )
        return MultisigDescriptor(self.m, self.keys, branch)

    def derive(self, branch: int, index: int) -> DerivedScript:
        return self.descriptor(branch).derive(index)

    def address(self, branch: int, index: int, network: Network) -> str:
        return self.derive(branch, index).address(network)

    @classmethod
    def from_descriptors(
        cls, id: int, receive: str, change: str, state: SeriesState, network: Network
    ) -> Series:
        """The series of a receive (``/0/*``) and a change (``/1/*``) descriptor of one key set."""
        recv = MultisigDescriptor.parse(receive, network)
        chg = MultisigDescriptor.parse(change, network)
        if recv.branch != RECEIVE:
            raise DescriptorError(
                f"receive descriptor must use branch {RECEIVE}, found {recv.branch}"
            )
        if chg.branch != CHANGE:
            raise DescriptorError(f"change descriptor must use branch {CHANGE}, found {chg.branch}")
        if recv.m != chg.m:
            raise DescriptorError(
                f"receive and change descriptors have different thresholds ({recv.m} and {chg.m})"
            )
        if set(recv.keys) != set(chg.keys):
            raise DescriptorError("receive and change descriptors have different keys")
        return cls(id, recv.m, recv.keys, state)


@lru_cache(maxsize=1024)
def parsed_series(
    series_id: int, receive: str, change: str, state: SeriesState, network: Network
) -> Series:
    """``Series.from_descriptors``, parsed (and checksummed) once per process for each stored
    spelling: the coordinator and the signers read their series at every round and every batch
    of submissions. A ``Series`` is immutable."""
    return Series.from_descriptors(series_id, receive, change, state, network)
