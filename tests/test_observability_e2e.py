"""What an operator sees of a running pool, end to end: the audit heads the coordinator records
after a round, the daemons' JSON log lines, both /metrics endpoints against the alert rules and
the dashboard in docs/, and the status page in a real headless Chromium.

Real parts: a bcoin regtest node, three signer daemons (one behind the Jade-protocol emulator),
the coordinator daemon on SQLite, mutual TLS; Debian's chromium driven by Playwright. One pool
for the module: funded through deposits (credited), one withdrawal round paid and completed, one
refused call from a peer that is not a client.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pool.address import encode_segwit_address
from pool.hashes import sha256
from pool.networks import REGTEST
from signer.audit import audit_path
from vpool.devnet.pool import BTC, CALL_TIMEOUT, CLIENTS, DevPool
from vpool.devnet.processes import Pki
from vpool.metrics import parse_exposition
from vpool.v1 import coordinator_pb2 as pb
from vpool.v1 import coordinator_pb2_grpc, signer_pb2

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_ENV = "VPOOL_STATUS_SCREENSHOT"
"""Set to a path (docs/status-page.png) to keep the status page's screenshot there."""
MATURATION = 2
AMOUNT = 12_345_678


def destination(tag: str) -> str:
    return encode_segwit_address(REGTEST, 0, sha256(tag.encode())[:20])


class Story:
    """The pool and what was done to it."""

    def __init__(self, pool: DevPool) -> None:
        self.pool = pool
        self.address = destination(f"{pool.directory}/observed")
        pool.client(CLIENTS[0]).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(request_id="observed-1", address=self.address,
                                       amount_sat=AMOUNT),
            timeout=CALL_TIMEOUT,
        )  # fmt: skip
        response = pool.run_round()
        assert response.round_id, response.detail
        self.round_id = response.round_id
        pool.client(CLIENTS[1]).SubmitWithdrawal(
            pb.SubmitWithdrawalRequest(request_id="queued-1", address=destination("queued"),
                                       amount_sat=BTC // 10),
            timeout=CALL_TIMEOUT,
        )  # fmt: skip  # no round runs by itself here: it waits in the queue
        pool.mine(MATURATION)
        pool.wait_until(lambda: self._completed() or None, "the withdrawal to complete")
        self.refused = self._call_as_a_signer()

    def _completed(self) -> bool:
        found = self.pool.client(CLIENTS[0]).GetWithdrawal(
            pb.GetWithdrawalRequest(request_id="observed-1"), timeout=CALL_TIMEOUT
        )
        return bool(found.status == pb.WITHDRAWAL_STATUS_COMPLETED)

    def _call_as_a_signer(self) -> grpc.RpcError:
        """A peer with a certificate of the pool's CA that is not a client calls the client
        API: refused, and logged."""
        assert self.pool.coordinator is not None
        self.pool.pki.issue("client", "mallory")  # of the pool's CA, not in server.clients
        channel = grpc.secure_channel(
            self.pool.coordinator.address, self.pool.pki.credentials("mallory")
        )
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
        channel.close()
        return refused.value


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    pool = DevPool(tmp_path_factory.mktemp("observed"), metrics=True)
    pool.pool_settings["maturation"] = MATURATION
    with pool:
        pool.fund([2 * BTC, 2 * BTC])
        yield Story(pool)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT) as answer:
        text: str = answer.read().decode()
        return text


def coordinator_metrics(story: Story) -> str:
    return scrape(f"{story.pool.coordinator_http}/metrics")


def signer_metrics(story: Story, signer_id: str) -> str:
    url = story.pool.daemons[signer_id].metrics_url()
    assert url is not None, story.pool.daemons[signer_id].log_text()
    return scrape(url)


def samples(text: str) -> set[str]:
    return {line for line in text.splitlines() if not line.startswith("#")}


# --- audit heads ---------------------------------------------------------------------------------


def test_the_coordinator_records_each_signers_audit_head_after_the_round(story: Story) -> None:
    recorded = {s.signer_id: s for s in story.pool.status().signers}
    for signer_id, daemon in story.pool.daemons.items():
        info = daemon.stub(story.pool.pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=30)
        assert info.audit_seq >= 1
        head = recorded[signer_id]
        assert (head.audit_seq, head.audit_head) == (info.audit_seq, info.audit_head)
        assert head.audit_recorded_unix > 0


def test_a_signers_log_cut_after_the_round_fails_against_the_recorded_head(
    story: Story, tmp_path: Path
) -> None:
    signer = story.pool.daemons["signer-1"]
    head = next(s for s in story.pool.status().signers if s.signer_id == "signer-1")
    copy = tmp_path / "audit.jsonl"
    copy.write_bytes(b"".join(audit_path(signer.data_dir).read_bytes().splitlines(True)[:-1]))
    command = [sys.executable, "-m", "signer.cli", "audit", "verify", "--file", str(copy)]
    anchored = [*command, "--against", f"{head.audit_seq}:{head.audit_head}"]
    assert subprocess.run(command, cwd=ROOT, capture_output=True, check=False).returncode == 0
    cut = subprocess.run(anchored, cwd=ROOT, capture_output=True, text=True, check=False)
    assert cut.returncode == 1
    assert "its tail was cut" in cut.stdout


def test_the_signers_audit_entry_shows_the_payment_it_signed(story: Story) -> None:
    import json

    signer = story.pool.daemons["signer-1"]
    entries = [json.loads(line) for line in audit_path(signer.data_dir).read_bytes().splitlines()]
    signed = [e for e in entries if e["decision"] == "signed" and e["kind"] == "withdrawal"]
    outputs = [o for e in signed for t in e["transactions"] for o in t["outputs"]]
    assert {"address": story.address, "amount": AMOUNT} in outputs


# --- logs --------------------------------------------------------------------------------------


def test_every_coordinator_log_line_is_json_with_time_level_and_message(story: Story) -> None:
    assert story.pool.coordinator is not None
    lines = story.pool.coordinator.log_lines()
    assert lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_the_coordinator_logs_blocks_scanned_deposits_credited_and_withdrawals_completed(
    story: Story,
) -> None:
    assert story.pool.coordinator is not None
    lines = story.pool.coordinator.log_lines()
    scanned = [line for line in lines if line["message"] == "blocks scanned"]
    assert scanned and all(isinstance(line["height"], int) for line in scanned)
    credited = [
        line
        for line in lines
        if str(line["message"]).startswith("deposit") and "credited" in str(line["message"])
    ]
    assert {line["amount_sat"] for line in credited} == {2 * BTC}
    [completed] = [
        line
        for line in lines
        if line["message"] == "withdrawal completed"
        and line.get("withdrawal_id") == f"{CLIENTS[0]}/observed-1"
    ]
    assert (completed["amount_sat"], completed["destination"]) == (AMOUNT, story.address)
    assert any(line.get("round_id") == story.round_id for line in lines)


def test_the_signer_logs_the_amounts_and_destinations_it_signs(story: Story) -> None:
    lines = story.pool.daemons["signer-1"].log_lines()
    signed = [line for line in lines if line.get("decision") == "signed"]
    assert signed, story.pool.daemons["signer-1"].log_text()
    mine = [line for line in signed if line["round_id"] == story.round_id]
    assert mine and story.address in mine[0]["destinations"]  # type: ignore[operator]
    assert {"address": story.address, "amount": AMOUNT} in mine[0]["outputs"]  # type: ignore[operator]


def test_a_refused_peer_is_logged_with_its_address(story: Story) -> None:
    assert story.refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert story.pool.coordinator is not None
    refused = [
        line for line in story.pool.coordinator.log_lines() if line.get("event") == "peer_refused"
    ]
    assert refused and "127.0.0.1" in str(refused[-1]["peer"])
    assert "the client mallory is not in server.clients" in str(refused[-1]["message"])


def test_a_peer_whose_certificate_the_pool_did_not_sign_is_logged_as_json(
    story: Story, tmp_path: Path
) -> None:
    assert story.pool.coordinator is not None
    stranger = Pki(tmp_path / "stranger")  # another CA
    cert, key = stranger.issue("client", CLIENTS[0])
    credentials = grpc.ssl_channel_credentials(  # it trusts the pool's CA, the pool not its
        story.pool.pki.ca_path.read_bytes(), key.read_bytes(), cert.read_bytes()
    )
    channel = grpc.secure_channel(story.pool.coordinator.address, credentials)
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError):
        stub.GetPoolStatus(pb.GetPoolStatusRequest(), timeout=CALL_TIMEOUT)
    channel.close()
    coordinator = story.pool.coordinator
    story.pool.wait_until(
        lambda: (
            any(line.get("event") == "tls_handshake_failed" for line in coordinator.log_lines())
            or None
        ),
        "the refused handshake in the coordinator's log",
    )


def test_no_log_line_holds_a_secret(story: Story) -> None:
    _user, password = story.pool.node.credentials
    from vpool.devnet.processes import PASSPHRASE

    for daemon in [story.pool.coordinator, *story.pool.daemons.values()]:
        assert daemon is not None
        text = daemon.log.read_text(errors="replace")
        assert password not in text
        assert PASSPHRASE not in text


# --- metrics -----------------------------------------------------------------------------------

COORDINATOR_FAMILIES = {
    "vpool_queue_length": "gauge",
    "vpool_rounds": "gauge",
    "vpool_round_duration_seconds": "histogram",
    "vpool_signer_healthy": "gauge",
    "vpool_signer_call_seconds": "histogram",
    "vpool_deposits": "gauge",
    "vpool_refunds": "gauge",
    "vpool_balance_sat": "gauge",
    "vpool_chain_tip_height": "gauge",
    "vpool_scanner_lag_blocks": "gauge",
    "vpool_quorum_ok": "gauge",
    "vpool_alerts_recorded_total": "counter",
}
SIGNER_FAMILIES = {
    "vpool_signer_sign_requests_total": "counter",
    "vpool_signer_device_sign_seconds": "histogram",
    "vpool_signer_serving": "gauge",
    "vpool_signer_device_usable": "gauge",
    "vpool_signer_chain_tip_height": "gauge",
}


def test_the_coordinator_exposes_its_families_with_help_and_type(story: Story) -> None:
    families = parse_exposition(coordinator_metrics(story))
    for name, kind in COORDINATOR_FAMILIES.items():
        assert families[name][0] == kind, name
        assert families[name][1], name


def test_the_coordinator_metrics_count_what_happened(story: Story) -> None:
    found = samples(coordinator_metrics(story))
    for sample in (
        'vpool_rounds{kind="withdrawal",status="completed"} 1',
        'vpool_round_duration_seconds_count{kind="withdrawal"} 1',
        'vpool_deposits{status="credited"} 2',
        "vpool_queue_length 1",
        "vpool_quorum_ok 1",
        "vpool_scanner_lag_blocks 0",
    ):
        assert sample in found, sorted(found)
    assert any(s.startswith('vpool_balance_sat{series="1",state="confirmed"}') for s in found)
    # the coordinator's calls to its signers, as the signers' latency seen from it
    assert any(
        s.startswith("vpool_signer_call_seconds_count{")
        and 'method="SignRound"' in s
        and 'result="ok"' in s
        for s in found
    )


def test_each_signer_exposes_its_families_and_its_signed_requests(story: Story) -> None:
    for signer_id in story.pool.daemons:
        text = signer_metrics(story, signer_id)
        families = parse_exposition(text)
        for name, kind in SIGNER_FAMILIES.items():
            assert families[name][0] == kind, (signer_id, name)
        assert any(
            s.startswith('vpool_signer_sign_requests_total{kind="withdrawal",decision="signed"')
            for s in samples(text)
        ), signer_id
        assert "vpool_signer_serving 1" in samples(text)


def _names_in(text: str) -> set[str]:
    names = set(re.findall(r"\bvpool_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_the_alert_rules_and_the_dashboard_use_only_exposed_metric_names(story: Story) -> None:
    exposed = set(parse_exposition(coordinator_metrics(story)))
    exposed |= set(parse_exposition(signer_metrics(story, "signer-1")))
    rules = (DOCS / "prometheus-alerts.yml").read_text()
    expressions = "\n".join(re.findall(r"^\s*expr:(.*)$", rules, flags=re.M))
    assert _names_in(expressions) <= exposed, _names_in(expressions) - exposed
    for alert in ("PoolDegraded", "SignerDown", "RoundAbandoned", "TransactionStuck",
                  "ScannerBehind"):  # fmt: skip
        assert f"alert: Vpool{alert}" in rules
    dashboard = (DOCS / "grafana-dashboard.json").read_text()
    assert _names_in(dashboard) <= exposed, _names_in(dashboard) - exposed


# --- status page -------------------------------------------------------------------------------


def test_the_status_page_is_html_without_script(story: Story) -> None:
    page = scrape(f"{story.pool.coordinator_http}/")
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    for section in ("alerts", "balance", "signers", "queue", "rounds", "deposits"):
        assert f'id="{section}"' in page


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: `make browser-deps` installs it (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_status_page_in_chromium_shows_every_part_of_the_pool(
    story: Story, browser: object, tmp_path: Path
) -> None:
    from PIL import Image
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    answer = page.goto(f"{story.pool.coordinator_http}/", wait_until="load")
    assert answer is not None and answer.status == 200
    assert page.title().startswith("vpool status")
    assert "SERVING" in page.inner_text("#health")
    assert page.locator("#signers tbody tr").count() == len(story.pool.daemons)
    assert page.locator("#signers .badge.healthy").count() == len(story.pool.daemons)
    assert page.locator("#queue tbody tr").count() == 1
    rounds = page.inner_text("#rounds")
    assert story.round_id[:12] in rounds and "completed" in rounds
    assert "signer-1: signed" in rounds
    points = page.get_attribute("#balance-chart polyline", "points")
    assert points is not None and len(points.split()) >= 2
    box = page.locator("#balance-chart").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    assert errors == []
    shot = page.screenshot(full_page=True)
    (tmp_path / "status-page.png").write_bytes(shot)
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.width >= 1400 and image.height >= 600
    colours = image.resize((140, 100)).getcolors(maxcolors=140 * 100)
    assert colours is not None and len(colours) > 20, "the page is (nearly) blank"
    page.close()


def test_a_broken_page_would_fail_the_screenshot_check(browser: object) -> None:
    """The blank-page check of the test above catches an empty page."""
    from PIL import Image
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_content("<!doctype html><body></body>")
    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    colours = image.resize((140, 100)).getcolors(maxcolors=140 * 100)
    assert colours is not None and len(colours) <= 20
    page.close()


def test_the_status_page_is_refused_on_an_address_that_is_not_loopback() -> None:
    from coordinator.status_page import is_loopback, refused_page

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    status, _, body = refused_page("0.0.0.0")()
    assert status == 403 and b"loopback" in body


def test_the_metrics_endpoint_serves_no_admin_action(story: Story) -> None:
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(f"{story.pool.coordinator_http}/", data=b"x", timeout=10)
    assert posted.value.code == 405
