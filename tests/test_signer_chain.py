"""Signers check each round's facts against their own node: real signer daemons over mutual TLS,
each asking the bcoin regtest node, and the test playing a compromised coordinator.

The signers hold test keys 0, 1 and 2 of a 2-of-3 series; the coins are funded and mined on the
node. Every hostile manifest below rebuilds to exactly the PSBTs it is sent with (the attacker
holds the coordinator's certificate and builds honestly from a lying manifest), so only the
chain checks stand between it and a signature.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pool.address import script_pubkey_to_address
from pool.hashes import sha256
from pool.manifest import Manifest, Utxo
from pool.networks import REGTEST
from pool.psbt import Psbt
from pool.roles import combine, extract, finalize
from pool.series import CHANGE, RECEIVE
from pool.tx import OutPoint
from pool.withdrawal import build_round
from tests.chain_harness import (
    fresh_indexes,
    fund,
    pinned,
    pinned_refunds,
    signer_chain,
    tip,
)
from tests.factories import BTC, make_series, master_key, p2wpkh, request
from tests.refund_factories import deposit
from tests.regtest_fixtures import Regtest
from tests.signer_harness import (
    CALL_TIMEOUT,
    deposit_address_request,
    refund_round_request,
    register_request,
    round_request,
    with_signatures,
)
from vpool.devnet.pool import DevPool
from vpool.devnet.processes import (
    Pki,
    SignerDaemon,
    emulator_backend,
    free_port,
    write_config,
    write_keystore,
)
from vpool.jsonrpc import JsonRpcClient
from vpool.v1 import signer_pb2, signer_pb2_grpc

SERIES = make_series(7, 2, [0, 1, 2])
POLICY = {"max_request_amount": 10 * BTC, "max_round_amount": 50 * BTC, "max_fee": BTC}
Stub = signer_pb2_grpc.SignerServiceStub


@dataclass
class Signers:
    pki: Pki
    daemons: list[SignerDaemon]

    def stub(self, i: int) -> Stub:
        return self.daemons[i].stub(self.pki)


def _start_signer(
    directory: Path, pki: Pki, key: int, chain: dict[str, Any], name: str | None = None
) -> SignerDaemon:
    keystore = write_keystore(directory / "keystore.json", master_key(key))
    config = write_config(
        directory,
        pki,
        name or f"signer-{key}",
        emulator_backend(keystore),
        POLICY,
        series=[SERIES],
        chain=chain,
    )
    daemon = SignerDaemon(config)
    daemon.stub(pki).RegisterSeries(register_request(SERIES), timeout=CALL_TIMEOUT)
    return daemon


@pytest.fixture(scope="module")
def signers(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest
) -> Iterator[Signers]:
    daemons: list[SignerDaemon] = []
    try:
        for key in range(3):
            directory = tmp_path_factory.mktemp(f"signer{key}")
            daemons.append(
                _start_signer(directory, pki, key, signer_chain(directory, regtest.node))
            )
        yield Signers(pki, daemons)
    finally:
        for daemon in daemons:
            daemon.stop()


def _sign(stub: Stub, m: Manifest) -> signer_pb2.SignRoundResponse:
    response: signer_pb2.SignRoundResponse = stub.SignRound(round_request(m), timeout=CALL_TIMEOUT)
    return response


def _refused(response: signer_pb2.SignRoundResponse) -> list[tuple[str, int, int]]:
    """(reason, PSBT index, input index) of each refusal; nothing was signed."""
    assert not response.signed_all and not response.signed_psbts
    return [(r.reason_code, r.psbt_index, r.input_index) for r in response.refusals]


def _reasons(response: signer_pb2.SignRoundResponse) -> list[str]:
    return [reason for reason, _, _ in _refused(response)]


def _input_index(m: Manifest, coin: Utxo) -> int:
    [planned] = build_round(m).transactions
    return [i.prevout for i in planned.psbt.tx.inputs].index(coin.outpoint)


def _with_value(m: Manifest, coin: Utxo, value: int) -> Manifest:
    """``m`` claiming ``value`` for ``coin``."""
    utxos = tuple(replace(u, value=value) if u == coin else u for u in m.utxos)
    return replace(m, utxos=utxos)


def _broadcast(regtest: Regtest, m: Manifest, answers: list[signer_pb2.SignRoundResponse]) -> str:
    [planned] = build_round(m).transactions
    signed = [with_signatures(planned.psbt, a.signed_psbts[0]) for a in answers]
    return regtest.node.chain.send_raw_transaction(extract(finalize(combine(signed))).serialize())


# --- an honest round ---------------------------------------------------------------------------


def test_an_honest_round_on_real_coins_is_signed_and_mined(
    signers: Signers, regtest: Regtest
) -> None:
    coins = fund(regtest, SERIES, [BTC, BTC])
    m = pinned(regtest, [SERIES], coins, [request("alice", "honest", BTC + BTC // 2)])
    answers = [_sign(signers.stub(i), m) for i in (0, 1)]
    assert all(a.signed_all and not a.refusals for a in answers)
    txid = _broadcast(regtest, m, answers)
    regtest.wallet.mine(regtest.node, 1)
    assert regtest.node.rpc("gettxout", txid, 0, False)["confirmations"] == 1


# --- the amount lie (segwit v0 fee attack) ------------------------------------------------------


def test_two_manifests_understating_different_inputs_of_one_transaction_are_each_refused(
    signers: Signers, regtest: Regtest
) -> None:
    a, b = fund(regtest, SERIES, [BTC, BTC])
    honest = pinned(regtest, [SERIES], [a, b], [request("alice", "lie2", BTC)])
    lies = [_with_value(honest, coin, BTC // 2) for coin in (a, b)]
    txids = {build_round(m).transactions[0].txid_hex for m in lies}
    assert len(txids) == 1  # the same transaction, each manifest lying about another input
    for i in range(3):  # every signer is sent both manifests
        for m, coin in zip(lies, (a, b), strict=True):
            refused = _refused(_sign(signers.stub(i), m))
            assert refused == [("INPUT_AMOUNT_MISMATCH", 0, _input_index(m, coin))]


def test_three_manifests_understating_different_inputs_of_one_transaction_are_each_refused(
    signers: Signers, regtest: Regtest
) -> None:
    coins = fund(regtest, SERIES, [BTC, BTC, BTC])
    amount = 2 * BTC + BTC // 5  # all three coins are needed, whichever is under-stated
    honest = pinned(regtest, [SERIES], coins, [request("alice", "lie3", amount)])
    lies = [_with_value(honest, coin, BTC * 7 // 10) for coin in coins]
    assert len({build_round(m).transactions[0].txid_hex for m in lies}) == 1
    for i, (m, coin) in enumerate(zip(lies, coins, strict=True)):  # one lie to each signer
        refused = _refused(_sign(signers.stub(i), m))
        assert refused == [("INPUT_AMOUNT_MISMATCH", 0, _input_index(m, coin))]
    assert all(_sign(signers.stub(i), honest).signed_all for i in range(3))


# --- freezes: nothing unminable is signed, so nothing blocks the honest spend ------------------


def _foreign_coin(regtest: Regtest) -> Utxo:
    """A real output that pays no pool script, claimed as a pool coin at a fresh address."""
    txid = regtest.wallet.fund(regtest.node, [(p2wpkh("foreign"), BTC)])
    regtest.wallet.mine(regtest.node, 1)
    [index] = fresh_indexes(1)
    return Utxo(OutPoint.from_hex(txid, 0), BTC, SERIES.id, RECEIVE, index, tip(regtest)[0])


Lie = Callable[[Regtest, Manifest], Manifest]


def _understate(regtest: Regtest, m: Manifest) -> Manifest:
    return _with_value(m, m.utxos[0], m.utxos[0].value - 10_000)


def _overstate(regtest: Regtest, m: Manifest) -> Manifest:
    return _with_value(m, m.utxos[0], m.utxos[0].value + 10_000)


def _foreign(regtest: Regtest, m: Manifest) -> Manifest:
    foreign = _foreign_coin(regtest)
    height, block_hash = tip(regtest)
    utxos = (foreign, *m.utxos[1:])
    return replace(m, utxos=utxos, tip_height=height, tip_hash=block_hash)


def _other_index(regtest: Regtest, m: Manifest) -> Manifest:
    first = m.utxos[0]
    return replace(m, utxos=(replace(first, index=first.index + 1), *m.utxos[1:]))


def _other_branch(regtest: Regtest, m: Manifest) -> Manifest:
    first = m.utxos[0]
    return replace(m, utxos=(replace(first, branch=CHANGE), *m.utxos[1:]))


def _invented_coin(regtest: Regtest, m: Manifest) -> Manifest:
    made_up = replace(m.utxos[0], outpoint=OutPoint(sha256(b"invented"), 0))
    return replace(m, utxos=(made_up, *m.utxos[1:]))


def _future_tip(regtest: Regtest, m: Manifest) -> Manifest:
    return replace(m, tip_height=m.tip_height + 1000, tip_hash=sha256(b"future"))


def _tip_off_chain(regtest: Regtest, m: Manifest) -> Manifest:
    return replace(m, tip_hash=sha256(b"another chain"))


def _old_tip(regtest: Regtest, m: Manifest) -> Manifest:
    regtest.wallet.mine(regtest.node, 7)  # max_tip_lag is 6
    return m


def _with_tip(regtest: Regtest, m: Manifest) -> Manifest:
    height, block_hash = tip(regtest)
    return replace(m, tip_height=height, tip_hash=block_hash)


@pytest.mark.parametrize(
    ("lie", "reason"),
    [
        (_understate, "INPUT_AMOUNT_MISMATCH"),
        (_overstate, "INPUT_AMOUNT_MISMATCH"),
        (_foreign, "INPUT_SCRIPT_MISMATCH"),
        (_other_index, "INPUT_SCRIPT_MISMATCH"),
        (_other_branch, "INPUT_SCRIPT_MISMATCH"),
        (_invented_coin, "INPUT_NOT_ON_CHAIN"),
        (_future_tip, "TIP_AHEAD_OF_NODE"),
        (_tip_off_chain, "TIP_NOT_ON_CHAIN"),
        (_old_tip, "TIP_TOO_OLD"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_a_manifest_that_lies_about_the_chain_is_refused_and_freezes_nothing(
    signers: Signers, regtest: Regtest, lie: Lie, reason: str
) -> None:
    coins = fund(regtest, SERIES, [BTC, BTC])
    honest = pinned(regtest, [SERIES], coins, [request("alice", "freeze", BTC + BTC // 2)])
    hostile = lie(regtest, honest)
    assert build_round(hostile).transactions  # it builds: only the chain shows the lie
    for i in range(3):
        assert reason in _reasons(_sign(signers.stub(i), hostile))
    honest = _with_tip(regtest, honest)
    answers = [_sign(signers.stub(i), honest) for i in (0, 1)]
    assert all(a.signed_all for a in answers), [a.refusals for a in answers]
    _broadcast(regtest, honest, answers)
    regtest.wallet.mine(regtest.node, 1)


def test_an_input_refusal_names_the_coin(signers: Signers, regtest: Regtest) -> None:
    coins = fund(regtest, SERIES, [BTC, BTC])
    m = _invented_coin(
        regtest, pinned(regtest, [SERIES], coins, [request("a", "r", BTC + BTC // 2)])
    )
    [response] = [_sign(signers.stub(0), m)]
    [refusal] = response.refusals
    assert refusal.scope == signer_pb2.Refusal.SCOPE_INPUT
    [planned] = build_round(m).transactions
    invented = planned.psbt.tx.inputs[refusal.input_index].prevout
    assert invented not in {c.outpoint for c in coins}


def test_a_refund_of_a_deposit_that_is_not_on_the_chain_is_refused(
    signers: Signers, regtest: Regtest
) -> None:
    made_up = deposit("not on chain", SERIES, fresh_indexes(1)[0], BTC)
    address = script_pubkey_to_address(made_up.destination, REGTEST)
    assert address is not None
    register = deposit_address_request(SERIES, made_up.index, address)
    signers.stub(0).RegisterDepositAddress(register, timeout=CALL_TIMEOUT)
    m = pinned_refunds(regtest, [SERIES], [made_up])
    response = signers.stub(0).SignRound(refund_round_request(m), timeout=CALL_TIMEOUT)
    assert [(r.reason_code, r.psbt_index, r.input_index) for r in response.refusals] == [
        ("INPUT_NOT_ON_CHAIN", 0, 0)
    ]


# --- the signing log, released by the chain -----------------------------------------------------


def test_a_spend_whose_old_transaction_the_chain_made_unminable_is_signed(
    signers: Signers, regtest: Regtest
) -> None:
    """Signer 0 signed a spend of coins a and b; signers 1 and 2 then spend a elsewhere. Until
    that spend is confirmed, signer 0 refuses another spend of b; once it is, it signs."""
    a, b = fund(regtest, SERIES, [BTC, BTC])
    old = pinned(regtest, [SERIES], [a, b], [request("alice", "old", BTC + BTC // 2)])
    assert _sign(signers.stub(0), old).signed_all
    elsewhere = pinned(regtest, [SERIES], [a], [request("bob", "elsewhere", BTC // 2)])
    _broadcast(regtest, elsewhere, [_sign(signers.stub(i), elsewhere) for i in (1, 2)])
    new = pinned(regtest, [SERIES], [b], [request("carol", "new", BTC // 2)])
    assert _reasons(_sign(signers.stub(0), new)) == ["DOUBLE_SIGN"]  # only in the mempool
    regtest.wallet.mine(regtest.node, 1)
    new = _with_tip(regtest, new)
    response = _sign(signers.stub(0), new)
    assert response.signed_all, response.refusals


def test_a_spend_of_a_coin_whose_old_transaction_may_still_be_mined_is_refused(
    signers: Signers, regtest: Regtest
) -> None:
    [coin] = fund(regtest, SERIES, [BTC])
    first = pinned(regtest, [SERIES], [coin], [request("alice", "first", BTC // 2)])
    assert _sign(signers.stub(2), first).signed_all
    other = pinned(regtest, [SERIES], [coin], [request("mallory", "second", BTC // 2)])
    assert _reasons(_sign(signers.stub(2), other)) == ["DOUBLE_SIGN"]


# --- a signer whose node cannot be asked ------------------------------------------------------


@pytest.fixture(scope="module")
def cut_off(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SignerDaemon]:
    """A signer whose node is unreachable (nothing listens at its URL)."""
    directory = tmp_path_factory.mktemp("cut-off")
    chain = signer_chain(directory, _NoNode(f"http://127.0.0.1:{free_port()}/"))
    daemon = _start_signer(directory, pki, 0, chain, name="cut-off")
    yield daemon
    daemon.stop()


@dataclass
class _NoNode:
    rpc_url: str
    credentials: tuple[str, str] = ("vpool", "unused")


def test_a_signer_whose_node_is_unreachable_refuses_with_chain_unavailable(
    cut_off: SignerDaemon, pki: Pki, regtest: Regtest
) -> None:
    coins = fund(regtest, SERIES, [BTC])
    m = pinned(regtest, [SERIES], coins, [request("alice", "cut off", BTC // 2)])
    assert _reasons(_sign(cut_off.stub(pki), m)) == ["CHAIN_UNAVAILABLE"]


def test_a_signer_whose_node_is_unreachable_is_not_serving(cut_off: SignerDaemon, pki: Pki) -> None:
    health = health_pb2_grpc.HealthStub(cut_off.channel(pki.credentials()))
    for service in ("", "vpool.v1.SignerService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_get_info_says_the_node_is_unreachable_and_why(cut_off: SignerDaemon, pki: Pki) -> None:
    node = cut_off.stub(pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT).node
    assert node.configured and not node.reachable
    assert "unreachable" in node.error and node.checked_at > 0


def test_a_signer_without_a_node_signs_nothing(tmp_path: Path, pki: Pki, regtest: Regtest) -> None:
    daemon = _start_signer(tmp_path, pki, 1, {"dev_without_node": True}, name="no-node")
    try:
        coins = fund(regtest, SERIES, [BTC])
        m = pinned(regtest, [SERIES], coins, [request("alice", "no node", BTC // 2)])
        assert _reasons(_sign(daemon.stub(pki), m)) == ["CHAIN_NOT_CONFIGURED"]
        info = daemon.stub(pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
        assert not info.node.configured and not info.node.reachable
    finally:
        daemon.stop()


# --- a signer whose node lies about a previous transaction -------------------------------------


class _LyingNode(ThreadingHTTPServer):
    """Forwards JSON-RPC to the real node, except that ``getrawtransaction`` answers another
    transaction (when ``wrong_tx_hex`` is given)."""

    def __init__(self, node: JsonRpcClient, wrong_tx_hex: str | None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Forward)
        self.node = node
        self.wrong_tx_hex = wrong_tx_hex

    def serve(self) -> None:
        threading.Thread(target=self.serve_forever, args=(0.01,), daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    credentials = ("vpool", "unused")


class _Forward(BaseHTTPRequestHandler):
    server: _LyingNode

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = [self._answer(b) for b in body] if isinstance(body, list) else self._answer(body)
        data = json.dumps(answer, default=str).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, call: dict[str, Any]) -> dict[str, Any]:
        """One call's reply (a batch is a list of calls, answered each in turn)."""
        method, params = call["method"], call["params"]
        try:
            result: Any = self.server.node.call(method, *params)
            if method == "getrawtransaction" and self.server.wrong_tx_hex is not None:
                result = self.server.wrong_tx_hex
            return {"result": result, "error": None, "id": call["id"]}
        except Exception as e:  # the node's error, passed on
            return {"result": None, "error": {"code": -1, "message": str(e)}, "id": call["id"]}

    def log_message(self, *args: Any) -> None:
        pass


def test_a_previous_transaction_that_is_not_the_one_spent_is_refused(
    tmp_path: Path, pki: Pki, regtest: Regtest
) -> None:
    block = regtest.node.chain.block(regtest.node.chain.block_hash(1))
    wrong = block.transactions[0].serialize().hex()  # a coinbase, not the coin's funding
    proxy = _LyingNode(regtest.node.chain, wrong)
    proxy.serve()
    daemon = _start_signer(tmp_path, pki, 1, signer_chain(tmp_path, proxy), name="lied-to")
    try:
        coins = fund(regtest, SERIES, [BTC])
        m = pinned(regtest, [SERIES], coins, [request("alice", "lied to", BTC // 2)])
        assert _refused(_sign(daemon.stub(pki), m)) == [("PREVIOUS_TX_MISMATCH", 0, 0)]
    finally:
        daemon.stop()
        proxy.close()


def test_a_signer_serves_again_once_its_node_answers(
    tmp_path: Path, pki: Pki, regtest: Regtest
) -> None:
    port = free_port()
    chain = signer_chain(tmp_path, _NoNode(f"http://127.0.0.1:{port}/"))
    daemon = _start_signer(tmp_path, pki, 2, chain, name="returning")
    health = health_pb2_grpc.HealthStub(daemon.channel(pki.credentials()))
    Status = health_pb2.HealthCheckResponse

    def status() -> int:
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        return int(answer.status)

    proxy: _LyingNode | None = None
    try:
        assert status() == Status.NOT_SERVING
        proxy = _LyingNode(regtest.node.chain, None, port)  # the node is back, at its address
        proxy.serve()
        DevPool.wait_until(lambda: status() == Status.SERVING or None, "SERVING", timeout=30)
        node = daemon.stub(pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT).node
        assert node.reachable and node.tip_height > 0 and not node.error
    finally:
        daemon.stop()
        if proxy is not None:
            proxy.close()


def test_the_previous_transactions_are_not_in_the_psbts_the_coordinator_sends(
    regtest: Regtest,
) -> None:
    """The coordinator's messages stay small: the signers add the previous transactions."""
    coins = fund(regtest, SERIES, [BTC])
    m = pinned(regtest, [SERIES], coins, [request("alice", "small", BTC // 2)])
    [raw] = round_request(m).psbts
    assert all(i.non_witness_utxo is None for i in Psbt.parse(raw).inputs)


def test_a_signer_waits_for_its_own_min_conf_whatever_the_manifest_says(
    tmp_path: Path, pki: Pki, regtest: Regtest
) -> None:
    chain = signer_chain(tmp_path, regtest.node, min_conf=3)
    daemon = _start_signer(tmp_path, pki, 2, chain, name="patient")
    try:
        coins = fund(regtest, SERIES, [BTC])  # one confirmation; the manifest asks for one
        m = pinned(regtest, [SERIES], coins, [request("alice", "patient", BTC // 2)])
        assert _refused(_sign(daemon.stub(pki), m)) == [("INPUT_IMMATURE", 0, 0)]
        regtest.wallet.mine(regtest.node, 2)
        assert _sign(daemon.stub(pki), _with_tip(regtest, m)).signed_all
    finally:
        daemon.stop()
