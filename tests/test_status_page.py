"""The status page (coordinator.status_page) rendered from a store, on SQLite and PostgreSQL:
every section is there, and it stays well-formed on a new pool; the page in a real Chromium
against a running pool is in tests/test_observability_e2e.py."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from coordinator.config import LivenessConfig
from coordinator.health import HealthBoard
from coordinator.status_page import StatusPage, balance_chart
from coordinator.store import chain as cstore
from coordinator.store.chain import BlockRecord, PoolAddress
from coordinator.store.schema import transaction
from coordinator.store.stats import balance_history
from pool.networks import REGTEST
from tests.coordinator_harness import make_config
from tests.factories import make_series
from tests.store_fixtures import add_active_series
from vpool.devnet.processes import Pki

SERIES = make_series(1, 2, [0, 1, 2])
SECTIONS = ("alerts", "balance", "signers", "queue", "rounds", "deposits")


def page(engine: Engine, pki: Pki, tmp_path: Path, store_url: str) -> str:
    config = make_config(pki, tmp_path, store_url)
    board = HealthBoard(engine, LivenessConfig(), REGTEST, ("signer-0", "signer-1"))
    return StatusPage(config, engine, board, clock=lambda: 1_700_000_000.0).render()


def test_a_new_pool_has_every_section_and_says_what_is_empty(
    engine: Engine, pki: Pki, tmp_path: Path, store_url: str
) -> None:
    html = page(engine, pki, tmp_path, store_url)
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "No block processed yet." in html
    assert "No withdrawal waits." in html and "No round yet." in html
    assert html.count("<tr>") >= 3  # the two signers (not checked yet: down) and a header
    assert "<script" not in html.lower()


def test_the_balance_history_follows_outputs_received_and_spent(engine: Engine) -> None:
    add_active_series(engine, SERIES)
    with transaction(engine) as conn:
        for height in range(100, 104):
            prev = "00" * 32 if height == 100 else f"{height - 1:064x}"
            block = BlockRecord(height, f"{height:064x}", prev)
            cstore.add_block(conn, block, 0.0, header_time=1_700_000_000 + height)
        spk, where = b"\x00\x20" + bytes(32), PoolAddress(SERIES.id, 0, 0)
        cstore.add_utxo(conn, "aa" * 32, 0, 5000, spk, where, 101, coinbase=False)
        cstore.add_utxo(conn, "bb" * 32, 0, 7000, spk, where, 102, coinbase=False)
        cstore.spend_utxo(conn, "aa" * 32, 0, spent_txid="cc" * 32, spent_height=103)
    with engine.connect() as conn:
        history = balance_history(conn)
    assert [(h, v) for h, _, v in history] == [(100, 0), (101, 5000), (102, 12000), (103, 7000)]
    chart = balance_chart(history)
    assert chart.startswith("<svg") and chart.count(",") >= 4
