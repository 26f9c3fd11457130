"""Transport and secrets, as one table: each of the three services refuses every bad way in; the
keystore refuses a wrong passphrase and a tampered file; no log of the run holds a secret.

Transport: ``CoordinatorService`` and ``AdminService`` on the coordinator's server (in process,
its real ``start_server``) and ``SignerService`` on a signer daemon, each called with no client
certificate, a certificate from another CA, an expired one, a not-yet-valid one, one of the
wrong role, and in plaintext; each must be refused (the handshake fails: UNAVAILABLE; or
PERMISSION_DENIED / UNAUTHENTICATED), while the right certificate is answered (the control).
tests/test_signer_tls.py, tests/test_coordinator_api.py and tests/test_tls.py check several of
these one by one; the not-yet-valid certificate was checked nowhere.

Secrets: the logs of the run (every ``*.log`` under the session's temporary directory: with
``make reliability`` this part runs last, so that is the whole suite's daemons, signers, Jade
emulators and coordinators; here also a small pool's withdrawals, deposits and a refund) are
scanned for every test key's extended private key and private key hex, the devnet signers'
mnemonics (whole, and any 4 of their words in a row), the keystore passphrase, and any string
shaped like an xprv/tprv.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from pool.networks import REGTEST
from signer import keystore
from signer.keystore import KeystoreError
from tests.coordinator_harness import (
    ADMIN,
    CLIENTS,
    ApiServer,
    address,
    fund_pool,
    make_config,
)
from tests.factories import BTC, make_series, master_key
from tests.reliability.conftest import Rows
from tests.store_fixtures import add_active_series
from vpool.devnet.pool import DevPool, default_signers
from vpool.devnet.processes import (
    PASSPHRASE,
    Pki,
    SignerDaemon,
    client_credentials,
    emulator_backend,
    master_of,
    write_config,
    write_keystore,
)
from vpool.v1 import coordinator_pb2, coordinator_pb2_grpc, signer_pb2, signer_pb2_grpc

SERIES = make_series(1, 2, [0, 1, 2])
TIMEOUT = 10.0
REFUSED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
WAYS_IN = ("no certificate", "another CA", "expired", "not yet valid", "wrong role", "plaintext")
XPRV = re.compile(r"[xt]prv[1-9A-HJ-NP-Za-km-z]{100,112}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class Service:
    name: str
    role: str
    """The role of its rightful callers."""
    caller: str
    """A rightful caller's name."""
    wrong_role: str
    address: str
    call: Callable[[grpc.Channel], object]


@pytest.fixture(scope="module")
def services(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    from coordinator.store.schema import make_engine, migrate

    directory = tmp_path_factory.mktemp("transport")
    url = f"sqlite:///{directory / 'coordinator.db'}"
    engine = make_engine(url)
    migrate(engine)
    add_active_series(engine, SERIES)
    fund_pool(engine, BTC)
    api = ApiServer(pki, make_config(pki, directory, url), engine)
    keystore_path = write_keystore(directory / "keystore.json", master_key(0))
    config = write_config(directory / "signer", pki, "signer-0", emulator_backend(keystore_path))
    daemon = SignerDaemon(config)

    def pool_status(channel: grpc.Channel) -> object:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]
        return stub.GetPoolStatus(coordinator_pb2.GetPoolStatusRequest(), timeout=TIMEOUT)

    def rounds(channel: grpc.Channel) -> object:
        stub = coordinator_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        return stub.ListRounds(coordinator_pb2.ListRoundsRequest(), timeout=TIMEOUT)

    def info(channel: grpc.Channel) -> object:
        stub = signer_pb2_grpc.SignerServiceStub(channel)  # type: ignore[no-untyped-call]
        return stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=TIMEOUT)

    yield [
        Service("CoordinatorService", "client", CLIENTS[0], "admin", api.address, pool_status),
        Service("AdminService", "admin", ADMIN, "client", api.address, rounds),
        Service("SignerService", "coordinator", "coordinator", "client", daemon.address, info),
    ]
    api.stop()
    assert daemon.stop() == 0, daemon.log_text()
    engine.dispose()


def _credentials(pki: Pki, service: Service, way: str, rogue: Pki) -> grpc.ChannelCredentials:
    """Client credentials for ``way`` in (the right caller's, but for the one thing wrong)."""
    role, name = service.role, service.caller
    if way == "no certificate":
        return client_credentials(pki.ca_path)
    if way == "another CA":
        cert, key = rogue.issue(role, name)
        return client_credentials(pki.ca_path, cert, key)
    if way == "expired":
        cert, key = pki.issue(role, name, start=pki.now - timedelta(days=20), days=10)
    elif way == "not yet valid":
        cert, key = pki.issue(role, name, start=pki.now + timedelta(days=10), days=10)
    elif way == "wrong role":
        cert, key = pki.issue(service.wrong_role, name)
    else:
        cert, key = pki.issue(role, name)
    credentials = client_credentials(pki.ca_path, cert, key)
    pki.issue(role, name)  # the rightful files back for the other calls
    return credentials


def _code(service: Service, channel: grpc.Channel) -> grpc.StatusCode:
    try:
        service.call(channel)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        channel.close()
    return grpc.StatusCode.OK


def _transport(pki: Pki, services: list[Service], rogue: Pki) -> tuple[int, list[str]]:
    """(refusals checked, what was let in or misanswered)."""
    wrong = []
    checked = 0
    for service in services:
        control = _credentials(pki, service, "right", rogue)
        code = _code(service, grpc.secure_channel(service.address, control))
        if code is not grpc.StatusCode.OK:
            wrong.append(f"{service.name}: the rightful caller got {code.name}")
        for way in WAYS_IN:
            if way == "plaintext":
                channel = grpc.insecure_channel(service.address)
            else:
                credentials = _credentials(pki, service, way, rogue)
                channel = grpc.secure_channel(service.address, credentials)
            code = _code(service, channel)
            checked += 1
            if code not in REFUSED:
                wrong.append(f"{service.name}, {way}: {code.name}")
    return checked, wrong


def test_every_service_refuses_every_bad_way_in(
    pki: Pki, services: list[Service], rows: Rows, tmp_path: Path
) -> None:
    checked, wrong = _transport(pki, services, Pki(tmp_path / "rogue"))
    rows.add(
        "transport: bad ways in that were let in",
        len(wrong),
        "calls",
        "<= 0",
        f"{checked} calls: {', '.join(s.name for s in services)} × {', '.join(WAYS_IN)}; "
        "each refused (handshake failed, or PERMISSION_DENIED), the rightful caller answered"
        + (f"; {wrong}" if wrong else ""),
    )
    assert wrong == []


# --------------------------------------------------------------------------- the keystore


def _tampered(document: dict[str, object], how: str) -> dict[str, object]:
    changed = dict(document)
    if how == "ciphertext byte":
        raw = bytearray.fromhex(str(changed["ciphertext"]))
        raw[len(raw) // 2] ^= 1
        changed["ciphertext"] = raw.hex()
    elif how == "authentication tag byte":
        raw = bytearray.fromhex(str(changed["ciphertext"]))
        raw[-1] ^= 1
        changed["ciphertext"] = raw.hex()
    elif how == "nonce":
        raw = bytearray.fromhex(str(changed["nonce"]))
        raw[0] ^= 1
        changed["nonce"] = raw.hex()
    elif how == "fingerprint":
        changed["fingerprint"] = "00000000"
    elif how == "network":
        changed["network"] = "testnet"
    elif how == "truncated ciphertext":
        changed["ciphertext"] = str(changed["ciphertext"])[:-8]
    return changed


def test_the_keystore_refuses_a_wrong_passphrase_and_every_tampering(
    rows: Rows, tmp_path: Path
) -> None:
    path = tmp_path / "keystore.json"
    keystore.create_keystore(
        path, master_key(7).to_string(REGTEST), "xprv", PASSPHRASE, "regtest", scrypt_n=16
    )
    document = json.loads(path.read_text())
    let_in = []
    tries = [
        "wrong passphrase",
        "ciphertext byte",
        "authentication tag byte",
        "nonce",
        "fingerprint",
        "network",
        "truncated ciphertext",
    ]
    for how in tries:
        target = tmp_path / f"{how.replace(' ', '-')}.json"
        passphrase = PASSPHRASE
        if how == "wrong passphrase":
            target.write_text(path.read_text())
            passphrase = PASSPHRASE + "!"
        else:
            target.write_text(json.dumps(_tampered(document, how)))
        try:
            keystore.load_keystore(target, passphrase)
        except KeystoreError:
            continue
        let_in.append(how)
    assert keystore.load_keystore(path, PASSPHRASE).master.fingerprint == master_key(7).fingerprint
    rows.add(
        "keystore: wrong passphrase or tampering accepted",
        len(let_in),
        "files",
        "<= 0",
        f"{len(tries)} tries: {', '.join(tries)}; each refused with KeystoreError, the original "
        "unlocks" + (f"; accepted: {let_in}" if let_in else ""),
    )
    assert let_in == []


# --------------------------------------------------------------------------- the logs


def _secrets() -> dict[str, str]:
    """What no log may hold: name → text."""
    found = {"the keystore passphrase": PASSPHRASE}
    for i in range(20):
        key = master_key(i)
        found[f"test key {i}'s tprv"] = key.to_string(REGTEST)
        found[f"test key {i}'s private key"] = key.private_key.hex()
    for spec in default_signers(5, 2):
        words = spec.words.split()
        found[f"{spec.signer_id}'s mnemonic"] = spec.words
        for start in range(0, len(words) - 3, 4):
            four = " ".join(words[start : start + 4])
            found[f"{spec.signer_id}'s words {start}-{start + 3}"] = four
        master = master_of(spec.words)
        found[f"{spec.signer_id}'s tprv"] = master.to_string(REGTEST)
        found[f"{spec.signer_id}'s private key"] = master.private_key.hex()
    return found


def scan_logs(root: Path) -> tuple[int, int, list[str]]:
    """(files, bytes, findings) over every ``*.log`` under ``root``."""
    secrets = _secrets()
    files = size = 0
    findings = []
    for path in sorted(root.rglob("*.log")):
        text = path.read_text(errors="replace")
        files += 1
        size += len(text)
        for name, secret in secrets.items():
            if secret in text:
                findings.append(f"{path.relative_to(root)}: {name}")
        for match in XPRV.finditer(text):
            findings.append(f"{path.relative_to(root)}: an extended private key {match[0][:8]}…")
    return files, size, findings


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    """A small pool's run whose logs are scanned: withdrawals, deposits, one refunded."""
    pool = DevPool(tmp_path_factory.mktemp("secrets-run"), deposit_settings={"confirmations": 1})
    with pool:
        pool.fund([BTC] * 2)
        refund_to = address("secrets/refund")
        small = pool.deposit_address("secrets-small", refund_to)
        paid = pool.pay({small: 5_000})
        pool.mine(1)
        stub = pool.client()
        for i in range(3):
            request = coordinator_pb2.SubmitWithdrawalRequest(
                request_id=f"secrets-{i}", address=address(f"secrets/{i}"), amount_sat=1_000_000
            )
            stub.SubmitWithdrawal(request, timeout=TIMEOUT)
        pool.run_round()
        pool.mine(2)
        waiting = (
            coordinator_pb2.DEPOSIT_STATUS_SEEN,
            coordinator_pb2.DEPOSIT_STATUS_CONFIRMING,
            coordinator_pb2.DEPOSIT_STATUS_REFUND_PENDING,
        )
        pool.wait_until(
            lambda: (
                (
                    (d := pool.deposit("secrets-small", paid[small])) is not None
                    and d.status not in waiting
                )
                or None
            ),
            "the small deposit's refund round",
        )
        yield pool


def test_no_log_of_the_run_holds_a_key_a_mnemonic_or_the_passphrase(
    small_run: DevPool, rows: Rows, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.getbasetemp()
    files, size, findings = scan_logs(root)
    rows.add(
        "secrets in the run's logs",
        len(findings),
        "findings",
        "<= 0",
        f"{files} log files, {size / 1e6:.1f} MB (every daemon, signer, Jade emulator and "
        "coordinator of the session); searched: test keys' tprv and private keys, the devnet "
        "mnemonics whole and by 4 words, the passphrase, anything shaped like an xprv/tprv"
        + (f"; {findings[:5]}" if findings else ""),
    )
    assert files > 0
    assert findings == []
