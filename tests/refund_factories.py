"""Builders of deposits and refund manifests shared by the refund tests and the vector generator.

A deposit is made of two made-up transactions: a *funding* transaction whose output pays the
sender's script, and the *deposit* transaction, whose first input spends it and whose output
``vout`` pays a receive address of a pool series. Both carry a (fake) witness, as they would in
a block.
"""

from __future__ import annotations

from collections.abc import Sequence

from pool.hashes import sha256
from pool.refunds import RefundManifest, RefundRequest, RefundSource
from pool.series import RECEIVE, Series
from pool.tx import OutPoint, Transaction, TxIn, TxOut
from tests.factories import TIP_HASH, p2wpkh

FAKE_WITNESS = (b"\x30" * 71, b"\x02" * 33)
"""A witness stack shaped like a P2WPKH spend; never verified."""


def funding_tx(tag: str, script_pubkey: bytes, value: int, vout: int = 0) -> Transaction:
    """A transaction whose output ``vout`` pays ``value`` to ``script_pubkey``."""
    fillers = tuple(TxOut(1_000 + k, p2wpkh(f"{tag}/filler {k}")) for k in range(vout))
    return Transaction(
        2,
        (TxIn(OutPoint(sha256(f"{tag}/coin".encode()), 0), 0xFFFFFFFF),),
        (*fillers, TxOut(value, script_pubkey)),
        0,
        (FAKE_WITNESS,),
    )


def deposit_tx(
    funding: Transaction, funding_vout: int, script_pubkey: bytes, value: int, vout: int = 0
) -> Transaction:
    """A transaction spending ``funding:funding_vout`` whose output ``vout`` pays the pool."""
    fillers = tuple(TxOut(2_000 + k, p2wpkh(f"change {k}")) for k in range(vout))
    return Transaction(
        2,
        (TxIn(OutPoint(funding.txid, funding_vout), 0xFFFFFFFD),),
        (*fillers, TxOut(value, script_pubkey)),
        0,
        (FAKE_WITNESS,),
    )


def deposit(
    tag: str,
    series: Series,
    index: int,
    value: int,
    *,
    source: RefundSource = RefundSource.REGISTERED,
    sender: bytes | None = None,
    destination: bytes | None = None,
    vout: int = 0,
) -> RefundRequest:
    """A refund of a new deposit of ``value`` to receive address ``index`` of ``series``.

    The sender's script defaults to a P2WPKH of ``tag``; the destination to the sender for a
    ``SENDER`` refund, else to another P2WPKH of ``tag``.
    """
    sender = p2wpkh(f"{tag}/sender") if sender is None else sender
    funding = funding_tx(tag, sender, value + 10_000)
    pool_script = series.derive(RECEIVE, index).script_pubkey
    tx = deposit_tx(funding, 0, pool_script, value, vout)
    if destination is None:
        destination = sender if source is RefundSource.SENDER else p2wpkh(f"{tag}/refund")
    return RefundRequest(
        outpoint=OutPoint(tx.txid, vout),
        value=value,
        series_id=series.id,
        index=index,
        deposit_tx=tx.serialize(),
        prev_tx=funding.serialize() if source is RefundSource.SENDER else b"",
        destination=destination,
        source=source,
    )


def refund_manifest(
    series: Sequence[Series],
    refunds: Sequence[RefundRequest],
    *,
    network: str = "regtest",
    tip_height: int = 1000,
    fee_rate: int = 2000,
    dust_limit: int = 546,
) -> RefundManifest:
    return RefundManifest(
        network=network,
        series=tuple(series),
        tip_height=tip_height,
        tip_hash=TIP_HASH,
        fee_rate=fee_rate,
        dust_limit=dust_limit,
        refunds=tuple(refunds),
    )
