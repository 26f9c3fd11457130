"""Real coins for the signer tests: pool outputs funded and mined on the bcoin regtest node, and
manifests pinned at the node's tip, so that signers checking their own node sign them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from pool.manifest import Manifest, Utxo, WithdrawalRequest
from pool.refunds import RefundManifest, RefundRequest, RefundSource
from pool.series import RECEIVE, Series
from pool.tx import OutPoint, Transaction
from tests.factories import manifest, p2wpkh
from tests.regtest_fixtures import Regtest
from vpool.devnet.processes import node_chain

_next_index = [1000]


def fresh_indexes(count: int) -> list[int]:
    """Address indexes no other test of the session used (coins never collide)."""
    start = _next_index[0]
    _next_index[0] += count
    return list(range(start, start + count))


class Node(Protocol):
    """What a signer's ``[chain]`` table names: a ``BcoinNode``, or a stand-in at some URL."""

    @property
    def rpc_url(self) -> str: ...

    @property
    def credentials(self) -> tuple[str, str]: ...


def signer_chain(directory: Path, node: Node, **rules: Any) -> dict[str, Any]:
    """The ``[chain]`` table of a signer asking ``node``."""
    return node_chain(directory, node.rpc_url, *node.credentials, **rules)


def fund(
    regtest: Regtest,
    series: Series,
    values: Sequence[int],
    *,
    branch: int = RECEIVE,
    confirmations: int = 1,
) -> list[Utxo]:
    """Pool outputs of ``values`` at fresh addresses of ``series``, in one transaction mined
    ``confirmations`` deep; their snapshot entries."""
    indexes = fresh_indexes(len(values))
    scripts = [series.derive(branch, i).script_pubkey for i in indexes]
    txid = regtest.wallet.fund(regtest.node, list(zip(scripts, values, strict=True)))
    regtest.wallet.mine(regtest.node, confirmations)
    height = regtest.node.chain.tip()[0] - confirmations + 1
    raw = regtest.node.chain.raw_transaction(txid)
    assert raw is not None
    tx = Transaction.parse(raw)
    return [
        Utxo(OutPoint(tx.txid, vout), value, series.id, branch, index, height)
        for vout, (index, value) in enumerate(zip(indexes, values, strict=True))
    ]


def tip(regtest: Regtest) -> tuple[int, bytes]:
    height, block_hash = regtest.node.chain.tip()
    return height, bytes.fromhex(block_hash)


def pinned(
    regtest: Regtest,
    series: Sequence[Series],
    utxos: Sequence[Utxo],
    requests: Sequence[WithdrawalRequest],
    **settings: Any,
) -> Manifest:
    """A withdrawal manifest pinned at the node's tip (its inputs need 1 confirmation)."""
    height, block_hash = tip(regtest)
    settings.setdefault("change_index", ((series[0].id, 0),))
    m = manifest(series, utxos, requests, tip_height=height, min_conf=1, **settings)
    return replace(m, tip_hash=block_hash)


def real_deposit(
    regtest: Regtest, series: Series, value: int, destination: bytes | None = None
) -> RefundRequest:
    """A deposit of ``value`` to a fresh receive address, mined; its refund (to a registered
    refund address's script, ``destination``)."""
    [coin] = fund(regtest, series, [value])
    raw = regtest.node.chain.raw_transaction(coin.outpoint.txid_hex)
    assert raw is not None
    return RefundRequest(
        outpoint=coin.outpoint,
        value=value,
        series_id=series.id,
        index=coin.index,
        deposit_tx=raw,
        prev_tx=b"",
        destination=p2wpkh(f"refund {coin.outpoint}") if destination is None else destination,
        source=RefundSource.REGISTERED,
    )


def pinned_refunds(
    regtest: Regtest, series: Sequence[Series], refunds: Sequence[RefundRequest]
) -> RefundManifest:
    height, block_hash = tip(regtest)
    return RefundManifest(
        network="regtest",
        series=tuple(series),
        tip_height=height,
        tip_hash=block_hash,
        fee_rate=2000,
        dust_limit=546,
        refunds=tuple(refunds),
    )
