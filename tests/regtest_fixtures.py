"""Regtest fixtures: one bcoin node per test session, and a wallet with mature coins.

The node needs Node.js and ``node_modules`` (``make node_modules``). Without Node.js, or without
npm to install bcoin, the regtest tests skip and say why; with npm but no ``node_modules`` they
fail and say what to run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vpool.devnet.bcoin import SEGWIT_HEIGHT, BcoinNode, bcoin_script
from vpool.devnet.wallet import DevWallet

START_BLOCKS = 500
"""Mined to the wallet at the start: past ``SEGWIT_HEIGHT``, and 400 mature coinbases."""


@dataclass(frozen=True)
class Regtest:
    node: BcoinNode
    wallet: DevWallet


@pytest.fixture(scope="session")
def regtest() -> Iterator[Regtest]:
    if shutil.which("node") is None:
        pytest.skip("regtest tests need Node.js (node) on PATH to run bcoin")
    if not bcoin_script().is_file():
        if shutil.which("npm") is None:
            pytest.skip("regtest tests need bcoin, and npm is not on PATH to install it")
        pytest.fail("node_modules/bcoin is missing: run `make node_modules`")
    with BcoinNode() as node:
        wallet = DevWallet()
        wallet.mine(node, START_BLOCKS)
        assert START_BLOCKS > SEGWIT_HEIGHT and node.segwit_active()
        yield Regtest(node, wallet)


@pytest.fixture
def bcoin_node(regtest: Regtest) -> BcoinNode:
    return regtest.node


@pytest.fixture
def dev_wallet(regtest: Regtest) -> DevWallet:
    return regtest.wallet
