"""Builders of keys, series and manifests shared by the tests and the vector generator.

Keys come from fixed, published seeds: they are test keys, never to hold real funds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pool.descriptor import DescriptorKey
from pool.hashes import hash160, sha256
from pool.hdkeys import HARDENED, ExtendedPrivateKey, KeyOrigin
from pool.manifest import Manifest, Utxo, WithdrawalRequest
from pool.networks import get_network
from pool.psbt import Psbt
from pool.refunds import RefundManifest
from pool.roles import combine, extract, finalize, sign_psbt
from pool.series import Series, SeriesState
from pool.tx import OutPoint, Transaction

BTC = 100_000_000
TIP_HASH = sha256(b"vpool vectors tip")


def master_key(i: int) -> ExtendedPrivateKey:
    """Test key i: BIP32 master from SHA256("vpool test key <i>")."""
    return ExtendedPrivateKey.from_seed(sha256(f"vpool test key {i}".encode()))


def account_path(coin_type: int, account: int = 0) -> tuple[int, ...]:
    return (48 | HARDENED, coin_type | HARDENED, account | HARDENED, 2 | HARDENED)


def make_series(
    series_id: int,
    m: int,
    key_ids: Sequence[int],
    state: SeriesState = SeriesState.ACTIVE,
    network: str = "regtest",
    account: int = 0,
) -> Series:
    path = account_path(get_network(network).coin_type, account)
    keys = []
    for i in key_ids:
        master = master_key(i)
        xpub = master.derive_path(path).public()
        keys.append(DescriptorKey(KeyOrigin(master.fingerprint, path), xpub))
    return Series(series_id, m, tuple(keys), state)


def utxo(
    n: int, value: int, height: int, series: int = 1, branch: int = 0, index: int = 0, vout: int = 0
) -> Utxo:
    return Utxo(OutPoint(sha256(f"utxo {n}".encode()), vout), value, series, branch, index, height)


def p2wpkh(tag: str) -> bytes:
    return b"\x00\x14" + hash160(tag.encode())


def p2tr(tag: str) -> bytes:
    return b"\x51\x20" + sha256(tag.encode())


def p2pkh(tag: str) -> bytes:
    return b"\x76\xa9\x14" + hash160(tag.encode()) + b"\x88\xac"


def p2sh(tag: str) -> bytes:
    return b"\xa9\x14" + hash160(tag.encode()) + b"\x87"


def request(
    client: str, rid: str, amount: int, extra_fee: int = 0, script: Callable[[str], bytes] = p2wpkh
) -> WithdrawalRequest:
    return WithdrawalRequest(client, rid, script(f"{client}/{rid}"), amount, extra_fee)


def manifest(
    series: Sequence[Series],
    utxos: Sequence[Utxo],
    requests: Sequence[WithdrawalRequest],
    *,
    network: str = "regtest",
    tip_height: int = 1000,
    fee_rate: int = 2000,
    change_index: Sequence[tuple[int, int]] = ((1, 0),),
    dust_limit: int = 546,
    max_weight: int = 400_000,
    min_conf: int = 6,
    max_tx_inputs: int = 0,
    max_tx_payments: int = 0,
) -> Manifest:
    return Manifest(
        network=network,
        series=tuple(series),
        utxos=tuple(utxos),
        tip_height=tip_height,
        tip_hash=TIP_HASH,
        fee_rate=fee_rate,
        change_index=tuple(change_index),
        dust_limit=dust_limit,
        max_weight=max_weight,
        min_conf=min_conf,
        requests=tuple(requests),
        max_tx_inputs=max_tx_inputs,
        max_tx_payments=max_tx_payments,
    )


def sign_first_m(psbt: Psbt, m: Manifest | RefundManifest) -> Transaction:
    """Sign with the first m keys (canonical order) of each series spent, finalize, extract."""
    by_fingerprint = {master_key(i).fingerprint: master_key(i) for i in range(20)}
    spent = {k.fingerprint for inp in psbt.inputs for k in inp.bip32_derivations.values()}
    signers: list[ExtendedPrivateKey] = []
    for series in m.series:
        if not spent & {key.origin.fingerprint for key in series.keys}:
            continue
        for key in series.keys[: series.m]:
            signer = by_fingerprint[key.origin.fingerprint]
            if signer not in signers:
                signers.append(signer)
    signed = [
        sign_psbt(psbt, k.fingerprint, lambda path, k=k: k.derive_path(path).private_key)
        for k in signers
    ]
    return extract(finalize(combine(signed)))
