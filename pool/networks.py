"""Bitcoin network parameters: address prefixes, BIP32 versions, BIP44/48 coin type."""

from __future__ import annotations

from dataclasses import dataclass

from pool.errors import VpoolError


@dataclass(frozen=True)
class Network:
    name: str
    bech32_hrp: str
    p2pkh_prefix: int
    p2sh_prefix: int
    xpub_version: bytes
    xprv_version: bytes
    coin_type: int
    """The coin type of BIP44/BIP48 paths: 0 on mainnet, 1 on every test network."""


_XPUB, _XPRV = bytes.fromhex("0488b21e"), bytes.fromhex("0488ade4")
_TPUB, _TPRV = bytes.fromhex("043587cf"), bytes.fromhex("04358394")

MAINNET = Network("mainnet", "bc", 0x00, 0x05, _XPUB, _XPRV, 0)
TESTNET = Network("testnet", "tb", 0x6F, 0xC4, _TPUB, _TPRV, 1)
SIGNET = Network("signet", "tb", 0x6F, 0xC4, _TPUB, _TPRV, 1)
REGTEST = Network("regtest", "bcrt", 0x6F, 0xC4, _TPUB, _TPRV, 1)

NETWORKS: dict[str, Network] = {n.name: n for n in (MAINNET, TESTNET, SIGNET, REGTEST)}

# Numeric codes used by the manifest encoding; never reuse a number.
NETWORK_CODES: dict[str, int] = {"mainnet": 0, "testnet": 1, "signet": 2, "regtest": 3}


def get_network(name: str) -> Network:
    try:
        return NETWORKS[name]
    except KeyError:
        known = ", ".join(NETWORKS)
        raise VpoolError(f"unknown network {name!r} (known: {known})") from None
