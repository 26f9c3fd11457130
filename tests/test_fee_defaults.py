"""The coordinator's default fee ceiling leaves room under the signers' default fee limit: a
transaction without change (its dust remainder left to the fee) built at the ceiling is signed.
With the ceiling equal to the signers' limit, as it once was, the same transaction is refused."""

from __future__ import annotations

from dataclasses import replace

from coordinator.config import ChainConfig
from pool.manifest import Manifest, encode_manifest
from pool.networks import REGTEST
from pool.vocabulary import Reason
from pool.withdrawal import build_round
from signer.policy import Approval, PolicyConfig, Refusal, evaluate_round, series_checksum
from tests.factories import BTC, make_series, manifest, master_key, request, utxo
from tests.signer_harness import MemoryHistory, reasons

S1 = make_series(1, 2, (0, 1, 2))
DUST = 546


def _changeless(fee_rate: int) -> Manifest:
    """One 1 BTC coin paying one request that leaves a change of dust_limit − 1 to the fee."""
    probe = manifest([S1], [utxo(0, BTC, 100)], [request("a", "1", BTC // 2)], fee_rate=fee_rate)
    [t] = build_round(probe).transactions
    amount = BTC - t.fee - (DUST - 1)
    m = replace(probe, requests=(request("a", "1", amount),))
    [t] = build_round(m).transactions
    assert t.change is None
    return m


def _signer_judges(m: Manifest) -> Approval | list[Refusal]:
    config = PolicyConfig(approved_series=frozenset({series_checksum(S1, REGTEST)}))
    psbts = [t.psbt.serialize() for t in build_round(m).transactions]
    history = MemoryHistory()
    return evaluate_round(
        config, master_key(0).fingerprint, REGTEST, {1: S1}, encode_manifest(m), psbts, history, 0
    )


def test_a_changeless_transaction_at_the_default_ceiling_passes_the_default_signer_limit() -> None:
    ceiling = ChainConfig(rpc_url="http://127.0.0.1:1").fee_ceiling
    assert isinstance(_signer_judges(_changeless(ceiling)), Approval)


def test_at_a_ceiling_equal_to_the_signer_limit_the_same_transaction_is_refused() -> None:
    m = _changeless(PolicyConfig().max_fee_rate)
    assert reasons(_signer_judges(m)) == [Reason.TX_FEE_RATE_ABOVE_LIMIT]
