"""A signer tells the truth about its device: unplugged (the Jade emulator stopped), its health is
NOT_SERVING and GetInfo says the device is absent, a call in flight is abandoned, and it serves
again when the device returns; a daemon started without its device waits for it.

Real parts: the bcoin regtest node, a signer daemon over mutual TLS with the hwi backend, and
``vpool-signer emulate-jade`` (unmodified hwilib talking to it). Conditions are waited on, never
timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pool.descriptor import DescriptorKey
from pool.hdkeys import KeyOrigin
from pool.networks import REGTEST
from pool.series import Series, SeriesState
from pool.vocabulary import Reason
from signer.keystore import bip48_account_path
from tests.chain_harness import fund, pinned, signer_chain
from tests.factories import BTC, master_key, request
from tests.regtest_fixtures import Regtest
from tests.signer_harness import CALL_TIMEOUT, register_request, round_request
from vpool.devnet.processes import (
    JadeEmulator,
    Pki,
    SignerDaemon,
    hwi_backend,
    master_of,
    mnemonic_for,
    write_config,
)
from vpool.health import REASON_KEY
from vpool.v1 import signer_pb2

ACCOUNT = bip48_account_path(REGTEST)
WORDS = mnemonic_for("unplugged jade")
PATIENCE = 60.0
"""Seconds to wait for a condition that must come (a hang fails the test instead)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "pki")
    pki.issue("coordinator", "coordinator")
    return pki


@pytest.fixture
def series() -> Series:
    masters = [master_of(WORDS), master_key(4), master_key(5)]
    keys = tuple(
        DescriptorKey(KeyOrigin(m.fingerprint, ACCOUNT), m.derive_path(ACCOUNT).public())
        for m in masters
    )
    return Series(8, 2, keys, SeriesState.ACTIVE)


class Rig:
    """A Jade emulator (restartable on its port, one client at a time like the QEMU simulator)
    and a signer daemon behind it."""

    def __init__(self, base: Path, pki: Pki, regtest: Regtest, series: Series) -> None:
        self.base, self.pki = base, pki
        self.jade: JadeEmulator | None = JadeEmulator(base / "jade", WORDS, single_client=True)
        self.port = self.jade.port
        directory = base / "signer"
        backend = hwi_backend(self.port, master_of(WORDS).fingerprint, probe_seconds=0.5)
        self.config = write_config(
            directory,
            pki,
            "signer-3",
            backend,
            series=[series],
            chain=signer_chain(directory, regtest.node),
        )
        self.daemon: SignerDaemon | None = None

    def start_daemon(self) -> SignerDaemon:
        self.daemon = SignerDaemon(self.config)
        return self.daemon

    def unplug(self) -> None:
        """Gone without a word, as a USB cable pulled: the emulator is killed (SIGKILL), so
        nothing answers the call in flight."""
        assert self.jade is not None
        self.jade.proc.kill()
        self.jade.stop()
        self.jade = None

    def plug(self, approve_after: float = 0.0, locked: bool = False) -> JadeEmulator:
        self.jade = JadeEmulator(
            self.base / "jade",
            WORDS,
            port=self.port,
            approve_after=approve_after,
            locked=locked,
            single_client=True,
        )
        return self.jade

    def health(self) -> int:
        assert self.daemon is not None
        stub = health_pb2_grpc.HealthStub(self.daemon.channel(self.pki.credentials()))
        status: int = stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT).status
        return status

    def health_reason(self) -> str | None:
        """The reason the health Check sends along (vpool.health), None when it sends none."""
        assert self.daemon is not None
        stub = health_pb2_grpc.HealthStub(self.daemon.channel(self.pki.credentials()))
        _, call = stub.Check.with_call(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        return dict(call.trailing_metadata()).get(REASON_KEY)

    def device(self) -> signer_pb2.DeviceState:
        assert self.daemon is not None
        info = self.daemon.stub(self.pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
        return info.device

    def stop(self) -> None:
        for process in (self.daemon, self.jade):
            if process is not None:
                process.stop()


@pytest.fixture
def rig(tmp_path: Path, pki: Pki, regtest: Regtest, series: Series) -> Iterator[Rig]:
    rig = Rig(tmp_path, pki, regtest, series)
    try:
        yield rig
    finally:
        rig.stop()


def test_an_unplugged_device_makes_the_signer_not_serving_with_the_reason(rig: Rig) -> None:
    rig.start_daemon()
    wait_for(lambda: rig.health() == SERVING, "serving with the device there")
    rig.unplug()
    wait_for(lambda: rig.health() == NOT_SERVING, "not serving once the device is gone")
    device = rig.device()
    assert (device.state, device.usable, device.error != "") == ("absent", False, True)


def test_the_health_check_of_a_signer_without_its_device_says_why(rig: Rig) -> None:
    rig.start_daemon()
    wait_for(lambda: rig.health() == SERVING, "serving with the device there")
    assert rig.health_reason() is None
    rig.unplug()
    wait_for(lambda: rig.health() == NOT_SERVING, "not serving once the device is gone")
    reason = rig.health_reason()
    assert reason is not None and reason.startswith("the device is absent"), reason


def test_the_signer_serves_again_when_the_device_returns(rig: Rig) -> None:
    rig.start_daemon()
    rig.unplug()
    wait_for(lambda: rig.health() == NOT_SERVING, "not serving once the device is gone")
    rig.plug()
    wait_for(lambda: rig.health() == SERVING, "serving again once the device is back")
    assert (rig.device().state, rig.device().usable) == ("ready", True)


def test_a_daemon_started_without_its_device_waits_for_it(rig: Rig) -> None:
    rig.unplug()
    rig.start_daemon()
    assert rig.health() == NOT_SERVING
    rig.plug()
    wait_for(lambda: rig.health() == SERVING, "serving once the device is plugged in")
    info = rig.daemon.stub(rig.pki).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    assert [x.origin.split("/")[0] for x in info.account_xpubs] == [
        master_of(WORDS).fingerprint.hex()
    ]


def test_a_locked_device_is_reported_locked_until_its_user_unlocks_it(rig: Rig) -> None:
    rig.unplug()
    jade = rig.plug(locked=True)
    rig.start_daemon()
    assert rig.health() == NOT_SERVING
    device = rig.device()
    assert (device.state, device.usable) == ("locked", False)
    jade.unlock()
    wait_for(lambda: rig.health() == SERVING, "serving once the user unlocked the device")


def test_a_round_at_an_unplugged_device_is_abandoned_and_not_left_waiting(
    rig: Rig, regtest: Regtest, series: Series
) -> None:
    rig.unplug()
    rig.plug(approve_after=PATIENCE * 10)  # a person who never answers
    daemon = rig.start_daemon()
    stub = daemon.stub(rig.pki)
    stub.RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
    coins = fund(regtest, series, [BTC])
    message = round_request(pinned(regtest, [series], coins, [request("dan", "1", BTC // 2)]))
    assert stub.SignRound(message, timeout=CALL_TIMEOUT).pending
    wait_for(lambda: rig.device().state == "busy", "the device reported busy with the person")
    rig.unplug()
    answers: list[signer_pb2.SignRoundResponse] = []

    def answered() -> bool:
        answers.append(stub.SignRound(message, timeout=CALL_TIMEOUT))
        return not answers[-1].pending

    wait_for(answered, "the round at the unplugged device answered")
    [refusal] = answers[-1].refusals
    assert (refusal.reason_code, "worker exited" in refusal.message) == (Reason.DEVICE_ERROR, True)
