"""The coordinator's status page: one read-only HTML page for an operator, ``GET /`` next to
``/metrics`` on ``server.metrics_listen``, served only while that address is a loopback one
(127.0.0.0/8, ::1, localhost): it shows amounts, addresses and who asked for what, so it is not
for a monitoring network. Elsewhere ``/`` answers 403 and says why; reach it through an SSH
tunnel to the loopback port.

Server-side HTML with inline CSS and an inline SVG chart; no JavaScript, no build step, nothing
fetched from elsewhere; it reloads itself every ``REFRESH_SECONDS``. It shows: the health (and
why it is not serving), the alerts, the pool balance over the processed blocks, each signer's
health and last recorded audit head, the withdrawal queue, the recent rounds with their
transactions and what each signer answered, and the deposits and refunds that wait.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from sqlalchemy import Connection, Engine

from coordinator.config import CoordinatorConfig
from coordinator.health import HEALTHY, HealthBoard
from coordinator.metrics import TipSource
from coordinator.store import chain as cstore
from coordinator.store import deposits as dstore
from coordinator.store import rounds as rstore
from coordinator.store import stats
from coordinator.store import withdrawals as wstore
from coordinator.store.alerts import recent_alerts
from coordinator.store.audit_heads import latest_heads
from coordinator.store.deposits import Status as DepositStatus
from coordinator.store.settings import rounds_paused
from vpool.metrics import Page

REFRESH_SECONDS = 15
ROUNDS_SHOWN = 8
QUEUE_SHOWN = 25
ALERTS_SHOWN = 10
WAITING_DEPOSITS = (
    DepositStatus.SEEN,
    DepositStatus.CONFIRMING,
    DepositStatus.CONFIRMED,
    DepositStatus.REFUND_PENDING,
    DepositStatus.REFUND_PROPOSED,
    DepositStatus.REFUND_SIGNED,
)
HTML = "text/html; charset=utf-8"
SAT = 100_000_000


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refused_page(host: str) -> Page:
    """The page served instead on an address that is not loopback."""
    body = (
        "<!doctype html><title>vpool status: not here</title><p>The status page is served on a "
        f"loopback address only; this endpoint listens on {escape(host)}. Set "
        "<code>server.metrics_listen</code> to 127.0.0.1:PORT and reach it through an SSH "
        "tunnel.</p>"
    ).encode()
    return lambda: (403, HTML, body)


def btc(sat: int) -> str:
    return f"{sat / SAT:,.8f}"


def _ago(now: float, then: float) -> str:
    if not then:
        return "never"
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


def _short(text: str, keep: int = 12) -> str:
    return text if len(text) <= keep + 1 else f"{text[:keep]}…"


def _code(text: str, keep: int = 12) -> str:
    return f'<code title="{escape(text)}">{escape(_short(text, keep))}</code>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str, cls: str) -> str:
    if not rows:
        return f'<p class="empty {cls}">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def balance_chart(
    history: Sequence[tuple[int, int, int]], width: int = 720, height: int = 200
) -> str:
    """An inline SVG area chart of (height, time, satoshis)."""
    if not history:
        return '<p class="empty chart">No block processed yet.</p>'
    pad_left, pad_bottom, pad_top = 90, 28, 10
    plot_w, plot_h = width - pad_left - 10, height - pad_bottom - pad_top
    heights = [h for h, _, _ in history]
    values = [v for _, _, v in history]
    low_h, high_h = heights[0], max(heights[-1], heights[0] + 1)
    top = max(max(values), 1)

    def x(h: int) -> float:
        return pad_left + (h - low_h) / (high_h - low_h) * plot_w

    def y(v: int) -> float:
        return pad_top + plot_h - v / top * plot_h

    points = " ".join(f"{x(h):.1f},{y(v):.1f}" for h, _, v in history)
    area = f"{x(heights[0]):.1f},{y(0):.1f} {points} {x(heights[-1]):.1f},{y(0):.1f}"
    grid = "".join(
        f'<line x1="{pad_left}" x2="{pad_left + plot_w}" y1="{y(int(top * f)):.1f}" '
        f'y2="{y(int(top * f)):.1f}" class="grid"/>'
        f'<text x="{pad_left - 6}" y="{y(int(top * f)) + 4:.1f}" text-anchor="end">'
        f"{btc(int(top * f))}</text>"
        for f in (0, 0.5, 1)
    )
    return (
        f'<svg id="balance-chart" role="img" aria-label="pool balance over blocks" '
        f'width="100%" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">'
        f"<title>Pool balance (BTC) from block {low_h} to {heights[-1]}</title>{grid}"
        f'<polygon points="{area}" class="area"/>'
        f'<polyline points="{points}" class="line"/>'
        f'<text x="{pad_left}" y="{height - 8}">block {low_h}</text>'
        f'<text x="{pad_left + plot_w}" y="{height - 8}" text-anchor="end">'
        f"block {heights[-1]}</text></svg>"
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1c2430}
header{background:#1c2430;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:center}
header h1{font-size:18px;margin:0}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px;padding:16px}
section{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px #0002}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{font-weight:600;color:#55606e}
code{font-size:12px}
.badge{padding:2px 8px;border-radius:10px;font-weight:600;font-size:12px}
.ok,.healthy,.signed,.completed{background:#d9f2e1;color:#17643a}
.bad,.down,.refused,.abandoned,.faulty{background:#fbdcdc;color:#8a1c1c}
.warn,.maintenance,.pending,.signing,.broadcast,.timeout{background:#fdf0d0;color:#7a5300}
.empty{color:#6b7685;font-style:italic}
ul.alerts li{margin-bottom:4px}
svg{display:block;max-width:100%;height:auto}
svg text{font-size:11px;fill:#55606e}
svg .grid{stroke:#e4e7eb}
svg .area{fill:#cfe0f7}
svg .line{fill:none;stroke:#2f6fd6;stroke-width:2}
.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _badge(text: str, cls: str | None = None) -> str:
    return f'<span class="badge {escape(cls or text)}">{escape(text)}</span>'


@dataclass(frozen=True)
class StatusPage:
    """Renders the page from the health board, the scanner and the store."""

    config: CoordinatorConfig
    engine: Engine
    board: HealthBoard
    scanner: TipSource | None = None
    clock: Callable[[], float] = time.time

    def page(self) -> tuple[int, str, bytes]:
        return 200, HTML, self.render().encode()

    def render(self) -> str:
        now = self.clock()
        # The board reads the store itself: ask it before holding a connection (an SQLite
        # connection holds the writer lock, and a second one would wait for it).
        reason = self.board.not_serving_reason()
        quorum = self.board.quorum()
        with self.engine.connect() as conn:
            parts = self._sections(conn, now, reason)
        health = _badge("SERVING", "ok") if reason is None else _badge("NOT SERVING", "bad")
        network = self.config.network.name
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
            f"<title>vpool status ({escape(network)})</title><style>{STYLE}</style></head><body>"
            f"<header><h1>vpool coordinator · {escape(network)}</h1>"
            f'<span id="health">health {health}</span>'
            f"<span>quorum {_badge(quorum.state, 'ok' if quorum.state == 'ok' else 'bad')}</span>"
            f"<span>{parts['chain']}</span><span>updated {escape(_utc(now))}</span></header>"
            f"<main>{parts['alerts']}{parts['balance']}{parts['signers']}{parts['queue']}"
            f"{parts['rounds']}{parts['deposits']}</main></body></html>"
        )

    def _sections(self, conn: Connection, now: float, reason: str | None) -> dict[str, str]:
        network, pool = self.config.network, self.config.pool
        tip = cstore.last_block(conn)
        scanned = 0 if tip is None else tip.height
        node_tip = None if self.scanner is None else self.scanner.node_tip
        chain = f"block {scanned}" + ("" if node_tip is None else f" of {node_tip[0]}")
        balances = cstore.balances(
            conn, scanned, pool.min_conf, coinbase_maturity=pool.coinbase_maturity
        )
        return {
            "chain": escape(chain),
            "alerts": self._alerts(conn, now, reason),
            "balance": self._balance(conn, balances, network.name),
            "signers": self._signers(conn, now),
            "queue": self._queue(conn, now),
            "rounds": self._rounds(conn, now, scanned),
            "deposits": self._deposits(conn, now),
        }

    def _alerts(self, conn: Connection, now: float, reason: str | None) -> str:
        items = []
        if reason is not None:
            items.append(f"<li>{_badge('not serving', 'bad')} {escape(reason)}</li>")
        if rounds_paused(conn):
            items.append(f"<li>{_badge('paused', 'warn')} rounds are paused by an operator</li>")
        waiting, _ = rstore.signing_notes(conn, self.config.rounds.round_deadline_seconds, now)
        items += [f"<li>{_badge('round', 'warn')} {escape(note)}</li>" for note in waiting]
        items += [
            f"<li>{_badge(alert.kind, 'bad')} {escape(alert.detail)} "
            f"<small>({escape(_ago(now, alert.at))})</small></li>"
            for alert in recent_alerts(conn, ALERTS_SHOWN)
        ]
        body = (
            f'<ul class="alerts">{"".join(items)}</ul>'
            if items
            else ('<p class="empty alerts">No alerts.</p>')
        )
        return f'<section id="alerts"><h2>Alerts</h2>{body}</section>'

    def _balance(self, conn: Connection, balances: dict[int, cstore.Balance], net: str) -> str:
        history = stats.balance_history(conn)
        rows = [
            [str(series_id), f'<span class="num">{btc(b.confirmed)}</span>',
             f'<span class="num">{btc(b.unconfirmed)}</span>', str(b.count)]
            for series_id, b in sorted(balances.items())
        ]  # fmt: skip
        table = _table(
            ["series", "confirmed BTC", "unconfirmed BTC", "outputs"],
            rows,
            "No series yet.",
            "balances",
        )
        return (
            f'<section id="balance"><h2>Pool balance over time ({escape(net)})</h2>'
            f"{balance_chart(history)}{table}</section>"
        )

    def _signers(self, conn: Connection, now: float) -> str:
        heads = latest_heads(conn)
        rows = []
        for s in self.board.snapshot():
            head = heads.get(s.signer_id)
            audit = "-" if head is None else _code(str(head), 20)
            rows.append(
                [
                    escape(s.signer_id),
                    _badge(s.state, s.state if s.state != HEALTHY else "healthy"),
                    _code(s.fingerprint or "-", 8),
                    escape(_ago(now, s.last_seen)),
                    str(s.missed),
                    audit,
                    escape(s.detail),
                ]
            )
        table = _table(
            ["signer", "state", "fingerprint", "last answer", "missed", "audit head", "detail"],
            rows,
            "No signers configured.",
            "signers",
        )
        return f'<section id="signers"><h2>Signers</h2>{table}</section>'

    def _queue(self, conn: Connection, now: float) -> str:
        queued = wstore.queued(conn)
        rows = [
            [escape(f"{w.client_id}/{w.request_id}"), f'<span class="num">{btc(w.amount)}</span>',
             _code(w.address, 24), _badge(w.status.value, "warn"), escape(_ago(now, w.created_at))]
            for w in queued[:QUEUE_SHOWN]
        ]  # fmt: skip
        table = _table(
            ["withdrawal", "BTC", "destination", "status", "queued"],
            rows,
            "No withdrawal waits.",
            "queue",
        )
        more = len(queued) - len(rows)
        extra = f"<p>… and {more} more.</p>" if more > 0 else ""
        return (
            f'<section id="queue"><h2>Queue: {len(queued)} withdrawals waiting</h2>'
            f"{table}{extra}</section>"
        )

    def _rounds(self, conn: Connection, now: float, scanned: int) -> str:
        rows = []
        for summary in rstore.list_rounds(conn, ROUNDS_SHOWN):
            seq = rstore.round_seq_of(conn, summary.round_id)
            assert seq is not None
            txs = rstore.transactions(conn, seq)
            outcomes = rstore.outcomes(conn, seq)
            tx_text = "<br>".join(
                f"{_code(tx.txid)} {_badge(tx.status.value, tx.status.value)}"
                f" fee {tx.fee} sat, {tx.confirmations(scanned)} conf"
                for tx in txs
            )
            who = " ".join(_badge(f"{o.signer_id}: {o.outcome}", str(o.outcome)) for o in outcomes)
            rows.append(
                [
                    _code(summary.round_id),
                    _badge(summary.status.value, summary.status.value),
                    str(summary.withdrawals),
                    tx_text or "-",
                    who or "-",
                    escape(_ago(now, summary.created_at)),
                ]
            )
        table = _table(
            ["round", "status", "requests", "transactions", "signers", "built"],
            rows,
            "No round yet.",
            "rounds",
        )
        return f'<section id="rounds"><h2>Recent rounds</h2>{table}</section>'

    def _deposits(self, conn: Connection, now: float) -> str:
        waiting = dstore.with_status(conn, list(WAITING_DEPOSITS))
        rows = [
            [_code(f"{d.txid}:{d.vout}", 16), f'<span class="num">{btc(d.value)}</span>',
             escape(f"{d.client_id}/{d.user_id}" if d.client_id else "-"),
             _badge(d.status.value, "warn"),
             _code(d.refund.address, 24) if d.refund.address else "-",
             escape(d.reason or "-"), escape(_ago(now, d.created_at))]
            for d in waiting[:QUEUE_SHOWN]
        ]  # fmt: skip
        table = _table(
            ["deposit", "BTC", "client/user", "status", "refund to", "reason", "seen"],
            rows,
            "No deposit or refund waits.",
            "deposits",
        )
        return (
            f'<section id="deposits"><h2>Deposits and refunds waiting: {len(waiting)}</h2>'
            f"{table}</section>"
        )
