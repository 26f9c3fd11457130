"""The HWI backend end to end: Jade-protocol emulators driven by unmodified hwilib, behind signer
daemons, next to a software signer; the result is checked by an independent verifier (embit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from embit.ec import PublicKey as EmbitPublicKey
from embit.ec import Signature as EmbitSignature
from embit.script import Script as EmbitScript
from embit.transaction import Transaction as EmbitTransaction
from hwilib.devices import trezor as hwi_trezor

from pool.address import encode_segwit_address
from pool.descriptor import DescriptorKey
from pool.hdkeys import HARDENED, ExtendedPrivateKey, KeyOrigin
from pool.manifest import Manifest
from pool.networks import MAINNET, REGTEST, TESTNET
from pool.roles import combine, extract, finalize
from pool.series import CHANGE, Series, SeriesState
from pool.withdrawal import build_round
from signer.audit import audit_path
from signer.backends import hwi_device
from signer.backends.base import BackendError
from signer.backends.hwi import HwiBackend
from signer.backends.hwi_worker import DeviceSpec
from signer.config import HwiBackendConfig
from signer.device_monitor import DeviceCondition
from signer.jade_emulator import HWI_SIMULATOR_PORT
from signer.keystore import bip48_account_path
from tests.chain_harness import fund, pinned, signer_chain
from tests.factories import BTC, master_key, request
from tests.regtest_fixtures import Regtest
from tests.signer_harness import (
    CALL_TIMEOUT,
    register_request,
    round_request,
    sign_until_answered,
    with_signatures,
)
from vpool.devnet.processes import (
    JadeEmulator,
    Pki,
    SignerDaemon,
    emulator_backend,
    free_port,
    hwi_backend,
    master_of,
    mnemonic_for,
    write_config,
    write_keystore,
)
from vpool.v1 import common_pb2, signer_pb2, signer_pb2_grpc

ACCOUNT = bip48_account_path(REGTEST)
SIGN_TIMEOUT = 1.5
"""The stalled signer's device deadline for one PSBT, in seconds."""
MARGIN = 3.0


def _series(
    series_id: int, masters: list[ExtendedPrivateKey], account: tuple[int, ...] = ACCOUNT
) -> Series:
    keys = tuple(
        DescriptorKey(KeyOrigin(m.fingerprint, account), m.derive_path(account).public())
        for m in masters
    )
    return Series(series_id, 2, keys, SeriesState.ACTIVE)


def _round(regtest: Regtest, series: Series, tag: str) -> Manifest:
    """Three new 1 BTC coins paying 2.5 BTC, with change back to the series."""
    utxos = fund(regtest, series, [BTC, BTC, BTC])
    return pinned(regtest, [series], utxos, [request("alice", tag, 2 * BTC + BTC // 2)])


@dataclass
class Pool:
    pki: Pki
    series: Series
    next_series: Series
    """Series 2 (the same keyholders' BIP48 account 1), registered too: a sweep's target."""
    jades: list[JadeEmulator]
    signers: list[SignerDaemon]
    registrations: list[signer_pb2.RegisterSeriesResponse]

    def stub(self, index: int) -> signer_pb2_grpc.SignerServiceStub:
        return self.signers[index].stub(self.pki)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, pki: Pki, regtest: Regtest) -> Iterator[Pool]:
    """Signers jade-a and jade-b (hwi backend, one Jade emulator each, which like Trezor and
    BitBox02 refuse inputs without their previous transaction) and soft (emulator)."""
    base = tmp_path_factory.mktemp("pool")
    jades = [
        JadeEmulator(base / f"jade-{tag}", mnemonic_for(f"jade {tag}"), require_previous_tx=True)
        for tag in "ab"
    ]
    soft_key = master_key(3)
    masters = [master_of(mnemonic_for("jade a")), master_of(mnemonic_for("jade b")), soft_key]
    series = _series(1, masters)
    next_series = _series(2, masters, (*ACCOUNT[:2], 1 + HARDENED, *ACCOUNT[3:]))
    signers = []
    try:
        for tag, jade in zip("ab", jades, strict=True):
            backend = hwi_backend(jade.port, jade.fingerprint)
            directory = base / f"hwi-{tag}"
            config = write_config(
                directory,
                pki,
                f"jade-{tag}",
                backend,
                series=[series, next_series],
                chain=signer_chain(directory, regtest.node),
            )
            signers.append(SignerDaemon(config))
        keystore = write_keystore(base / "soft.keystore", soft_key)
        config = write_config(
            base / "soft",
            pki,
            "soft",
            emulator_backend(keystore),
            series=[series, next_series],
            chain=signer_chain(base / "soft", regtest.node),
        )
        signers.append(SignerDaemon(config))
        registrations = [
            daemon.stub(pki).RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
            for daemon in signers
        ]
        for daemon in signers:
            daemon.stub(pki).RegisterSeries(register_request(next_series), timeout=CALL_TIMEOUT)
        yield Pool(pki, series, next_series, jades, signers, registrations)
    finally:
        for process in [*signers, *jades]:
            process.stop()


def test_every_signer_registers_the_series(pool: Pool) -> None:
    jade_a, jade_b, soft = pool.registrations
    assert all(r.registered and not r.already_registered for r in pool.registrations)
    assert jade_a.device_registration_name.startswith("hwi")
    assert jade_a.device_registration_name == jade_b.device_registration_name
    assert soft.device_registration_name == ""


def test_get_info_names_the_device(pool: Pool) -> None:
    info = pool.stub(0).GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
    assert info.backend_kind == signer_pb2.BACKEND_KIND_HWI
    assert info.device_model == "jade"
    assert info.master_fingerprint == pool.jades[0].fingerprint.hex()
    master = master_of(mnemonic_for("jade a"))
    assert info.account_xpubs[0].xpub == master.derive_path(ACCOUNT).public().to_string(REGTEST)


def test_the_device_displays_the_pool_address(pool: Pool) -> None:
    shown = pool.stub(1).DisplayAddress(
        signer_pb2.DisplayAddressRequest(
            network=common_pb2.NETWORK_REGTEST,
            series_id=1,
            branch=common_pb2.BRANCH_CHANGE,
            index=7,
        ),
        timeout=CALL_TIMEOUT,
    )
    assert shown.address == pool.series.address(CHANGE, 7, REGTEST)
    assert shown.shown_on_device


def _pubkeys(witness_script: bytes) -> list[bytes]:
    """The keys of ``OP_m <33-byte key>... OP_n OP_CHECKMULTISIG``."""
    count = witness_script[-2] - 0x50
    return [witness_script[2 + 34 * i : 35 + 34 * i] for i in range(count)]


def test_a_round_signed_by_two_devices_and_a_software_key_verifies_independently(
    pool: Pool, regtest: Regtest
) -> None:
    m = _round(regtest, pool.series, "w1000")
    [planned] = build_round(m).transactions
    request_message = round_request(m)
    answers = [sign_until_answered(pool.stub(i), request_message) for i in range(3)]
    assert all(a.signed_all and not a.refusals for a in answers)
    signed = [with_signatures(planned.psbt, a.signed_psbts[0]) for a in answers]
    raw = extract(finalize(combine(signed))).serialize()

    tx = EmbitTransaction.parse(raw)
    values = [u.value for u in planned.inputs]
    for index, vin in enumerate(tx.vin):
        *sigs, witness_script = vin.witness.items
        digest = tx.sighash_segwit(index, EmbitScript(witness_script), values[index])
        keys = _pubkeys(witness_script)
        assert sigs[0] == b"" and len(sigs) == 3
        assert all(
            any(EmbitPublicKey.parse(k).verify(EmbitSignature.parse(s[:-1]), digest) for k in keys)
            for s in sigs[1:]
        )
        for answer in answers:  # every signer's signature, the devices' included
            [sig] = [s for s in answer.signed_psbts[0].signatures if s.input_index == index]
            assert sig.pubkey in keys and sig.signature[-1] == 0x01
            key = EmbitPublicKey.parse(sig.pubkey)
            assert key.verify(EmbitSignature.parse(sig.signature[:-1]), digest)


def _sign_on_every_signer(pool: Pool, m: Manifest) -> None:
    """Every signer signs the round's one transaction; the signatures make it complete."""
    [planned] = build_round(m).transactions
    answers = [sign_until_answered(pool.stub(i), round_request(m)) for i in range(3)]
    assert all(a.signed_all and not a.refusals for a in answers)
    signed = [with_signatures(planned.psbt, a.signed_psbts[0]) for a in answers]
    assert extract(finalize(combine(signed))).txid_hex == planned.psbt.tx.txid_hex


def test_a_withdrawals_change_is_recognised_as_change_on_the_devices(
    pool: Pool, regtest: Regtest
) -> None:
    m = _round(regtest, pool.series, "change-hidden")
    _sign_on_every_signer(pool, m)
    for jade in pool.jades:  # the payment is shown, the change (output 1) is not
        assert jade.reviews()[-1] == "outputs shown [0], change [1]"


def test_a_sweep_signs_on_the_devices_with_the_new_series_output_shown_as_a_payment(
    pool: Pool, regtest: Regtest
) -> None:
    """Inputs of the retiring series, change to the new one: the firmware validates change only
    against the one registration all signed inputs match, so the person sees the move."""
    utxos = fund(regtest, pool.series, [BTC, BTC])
    retiring = replace(pool.series, state=SeriesState.RETIRING)
    m = pinned(
        regtest,
        [retiring, pool.next_series],
        utxos,
        [request("alice", "sweep", BTC // 2)],
        change_index=((2, 0),),
    )
    [planned] = build_round(m).transactions
    assert planned.change is not None and planned.change.series_id == 2
    _sign_on_every_signer(pool, m)
    for jade in pool.jades:
        assert jade.reviews()[-1] == "outputs shown [0, 1], change []"


# --- finding the device ------------------------------------------------------------------------


def test_a_device_is_found_by_fingerprint_alone(tmp_path: Path) -> None:
    """hwilib's enumerate probes the Jade simulator port (and USB devices)."""
    words = mnemonic_for("jade by fingerprint")
    try:
        jade = JadeEmulator(tmp_path, words, port=HWI_SIMULATOR_PORT)
    except RuntimeError:
        pytest.skip(f"port {HWI_SIMULATOR_PORT} is in use")
    try:
        backend = HwiBackend(HwiBackendConfig(jade.fingerprint, None, None, 20, 20), REGTEST)
        try:
            assert backend.model == "jade_simulator"
            xpub, origin = backend.xpub(ACCOUNT)
            assert xpub == master_of(words).derive_path(ACCOUNT).public().to_string(REGTEST)
            assert origin.fingerprint == jade.fingerprint
        finally:
            backend.close()
        absent = HwiBackend(HwiBackendConfig(bytes(4), None, None, 20, 20), REGTEST)
        try:  # the daemon waits for its device: the probe says why it is not there
            condition, error = absent.probe(20)
            with pytest.raises(BackendError, match="no device with fingerprint 00000000"):
                absent.xpub(ACCOUNT)
        finally:
            absent.close()
        assert (condition, "no device with fingerprint 00000000" in error) == (
            DeviceCondition.ABSENT,
            True,
        )
    finally:
        jade.stop()


def test_without_libusb_the_other_devices_are_still_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_libusb(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("cannot find a suitable libusb-1.0")

    monkeypatch.setattr(hwi_device.commands, "enumerate", no_libusb)
    monkeypatch.setattr(hwi_trezor, "enumerate", no_libusb)
    device = hwi_device.Device(DeviceSpec("regtest", "00000000", None, None))
    with pytest.raises(hwi_device.DeviceError, match=r"libusb-1\.0 is missing"):
        device.call("connect", None)


def test_a_device_with_another_fingerprint_is_refused(pool: Pool) -> None:
    path = f"tcp:127.0.0.1:{pool.jades[0].port}"
    backend = HwiBackend(HwiBackendConfig(pool.jades[1].fingerprint, "jade", path, 20, 20), REGTEST)
    try:
        condition, error = backend.probe(20)
        with pytest.raises(BackendError, match=f"not {pool.jades[1].fingerprint.hex()}"):
            backend.xpub(ACCOUNT)
    finally:
        backend.close()
    assert (condition, f"not {pool.jades[1].fingerprint.hex()}" in error) == (
        DeviceCondition.WRONG_DEVICE,
        True,
    )


# --- device deadline ---------------------------------------------------------------------------


def test_a_stalled_device_gives_deadline_exceeded_and_the_daemon_keeps_serving(
    tmp_path: Path, pki: Pki, regtest: Regtest
) -> None:
    words = mnemonic_for("jade stall")
    jade = JadeEmulator(tmp_path / "jade", words, stall_seconds=120)
    backend = hwi_backend(jade.port, jade.fingerprint, sign_timeout=SIGN_TIMEOUT)
    series = _series(2, [master_of(words), master_key(4), master_key(5)])
    chain = signer_chain(tmp_path / "signer", regtest.node)
    config = write_config(tmp_path / "signer", pki, "jade-s", backend, series=[series], chain=chain)
    daemon = SignerDaemon(config)
    try:
        stub = daemon.stub(pki)
        stub.RegisterSeries(register_request(series), timeout=CALL_TIMEOUT)
        request_message = round_request(_round(regtest, series, "w2000"))

        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            stub.SignRound(request_message, timeout=CALL_TIMEOUT)
        elapsed = time.monotonic() - start
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "did not answer" in failure.value.details()
        assert SIGN_TIMEOUT <= elapsed < SIGN_TIMEOUT + MARGIN

        info = stub.GetInfo(signer_pb2.GetInfoRequest(), timeout=CALL_TIMEOUT)
        assert info.master_fingerprint == jade.fingerprint.hex()

        jade.stop()  # the stall is lifted: the same device comes back on the same port
        jade = JadeEmulator(tmp_path / "jade", words, port=jade.port)
        assert sign_until_answered(stub, request_message).signed_all
        decisions = [
            json.loads(line)["decision"]
            for line in audit_path(daemon.data_dir).read_text().splitlines()
        ]
        assert decisions == ["failed", "signed"]
    finally:
        daemon.stop()
        jade.stop()


@pytest.fixture
def absent_device() -> Iterator[HwiBackend]:
    """A backend whose device is not there (nothing listens at its path): calls are stubbed."""
    config = HwiBackendConfig(bytes(4), "jade", f"tcp:127.0.0.1:{free_port()}", 20, 20)
    backend = HwiBackend(config, REGTEST)
    try:
        yield backend
    finally:
        backend.close()


def _device_shows(backend: HwiBackend, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setattr(backend, "_call", lambda op, argument, what: (address, "vpool-1"))


def test_a_regtest_address_shown_under_testnets_prefix_is_the_pools_address(
    absent_device: HwiBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = _series(1, [master_key(i) for i in range(3)])
    script = series.derive(CHANGE, 7).script_pubkey
    _device_shows(absent_device, monkeypatch, encode_segwit_address(TESTNET, 0, script[2:]))
    shown, on_device = absent_device.display_address(series, CHANGE, 7)
    assert shown == series.address(CHANGE, 7, REGTEST)
    assert on_device


def test_a_testnet_prefixed_address_of_another_script_is_refused(
    absent_device: HwiBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = _series(1, [master_key(i) for i in range(3)])
    other = series.derive(CHANGE, 8).script_pubkey
    _device_shows(absent_device, monkeypatch, encode_segwit_address(TESTNET, 0, other[2:]))
    with pytest.raises(BackendError, match="the device computed the address tb1"):
        absent_device.display_address(series, CHANGE, 7)


def test_a_mainnet_address_shown_for_a_regtest_pool_is_refused(
    absent_device: HwiBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = _series(1, [master_key(i) for i in range(3)])
    script = series.derive(CHANGE, 7).script_pubkey
    _device_shows(absent_device, monkeypatch, encode_segwit_address(MAINNET, 0, script[2:]))
    with pytest.raises(BackendError, match="the device computed the address bc1"):
        absent_device.display_address(series, CHANGE, 7)
