"""Checks of what clients and operators send, before anything is stored.

Every failure is ``RpcFailure`` INVALID_ARGUMENT whose message starts with the field's name
(``amount_sat: 100 is below the pool's dust limit of 546``). The limits match what a round
manifest accepts (pool.manifest), so a request that passes here can always join a round.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from coordinator.config import PoolConfig
from pool.address import address_to_script_pubkey, script_pubkey_to_address
from pool.errors import AddressError
from pool.manifest import MAX_ID_BYTES, MAX_MONEY
from pool.networks import Network
from vpool.rpc import invalid
from vpool.v1 import coordinator_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_TOKEN_PREFIX = "v1:"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class WithdrawalBody:
    """A checked SubmitWithdrawalRequest."""

    request_id: str
    address: str
    script_pubkey: bytes
    amount: int
    extra_fee: int


@dataclass(frozen=True)
class DepositAddressBody:
    """A checked GetDepositAddressRequest."""

    user_id: str
    refund_address: str
    """Empty when none was given."""


def request_id(value: str, field: str = "request_id") -> str:
    """A client request id (or user id): 1 to 128 UTF-8 bytes, printable characters only."""
    if not value:
        raise invalid(field, "missing")
    size = len(value.encode())
    if size > MAX_ID_BYTES:
        raise invalid(field, f"is {size} bytes long (UTF-8); at most {MAX_ID_BYTES} are allowed")
    if not value.isprintable():
        raise invalid(field, "must contain printable characters only")
    return value


def address(value: str, network: Network, field: str = "address") -> bytes:
    """The scriptPubKey of an address valid for ``network``."""
    if not value:
        raise invalid(field, "missing")
    try:
        return address_to_script_pubkey(value, network)
    except AddressError as e:
        raise invalid(field, str(e)) from None


def canonical_address(value: str, network: Network, field: str = "address") -> str:
    """The address as it is stored and shown: bech32 in lower case (an all-uppercase bech32
    address, as QR codes carry it, is the same address); base58 as given."""
    script_pubkey = address(value, network, field)
    return script_pubkey_to_address(script_pubkey, network) or value


def txid(value: str) -> str:
    """A transaction id: 64 hex digits (returned in lower case)."""
    lowered = value.lower()
    if len(lowered) != 64 or not set(lowered) <= _HEX:
        raise invalid("txid", "must be a transaction id: 64 hex digits")
    return lowered


def withdrawal(
    request: coordinator_pb2.SubmitWithdrawalRequest, pool: PoolConfig, network: Network
) -> WithdrawalBody:
    """Check every field of a withdrawal request (uint64 fields cannot be negative)."""
    rid = request_id(request.request_id)
    script_pubkey = address(request.address, network)
    amount = request.amount_sat
    if amount <= 0:
        raise invalid("amount_sat", "must be positive")
    if amount < pool.dust_limit:
        raise invalid("amount_sat", f"{amount} is below the pool's dust limit of {pool.dust_limit}")
    if amount > MAX_MONEY:
        raise invalid("amount_sat", f"{amount} is above 21,000,000 BTC")
    if request.extra_fee_sat > MAX_MONEY:
        raise invalid("extra_fee_sat", f"{request.extra_fee_sat} is above 21,000,000 BTC")
    canonical = script_pubkey_to_address(script_pubkey, network) or request.address
    return WithdrawalBody(rid, canonical, script_pubkey, amount, request.extra_fee_sat)


def deposit_address(
    request: coordinator_pb2.GetDepositAddressRequest, network: Network
) -> DepositAddressBody:
    """Check a deposit address request: a user id, and a refund address valid for ``network``
    when one is given."""
    user_id = request_id(request.user_id, "user_id")
    refund = ""
    if request.refund_address:
        refund = canonical_address(request.refund_address, network, "refund_address")
    return DepositAddressBody(user_id, refund)


def page_size(value: int) -> int:
    """The default for 0, at most ``MAX_PAGE_SIZE``."""
    return DEFAULT_PAGE_SIZE if value == 0 else min(value, MAX_PAGE_SIZE)


def encode_page_token(position: str) -> str:
    """An opaque token for ``position`` (where the next page starts)."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{position}".encode()).decode()


def decode_page_token(token: str) -> str | None:
    """The position in ``token``; None for an empty token (the first page)."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise invalid("page_token", "not a token returned by this service")
    return text.removeprefix(_TOKEN_PREFIX)


def int_page_token(token: str) -> int | None:
    """The id in a token made by ``encode_page_token(str(id))``."""
    position = decode_page_token(token)
    if position is None:
        return None
    if not position.isdigit():
        raise invalid("page_token", "not a token returned by this service")
    return int(position)
