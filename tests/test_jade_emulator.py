"""The Jade-protocol emulator, driven by unmodified hwilib 3.2.0 (and by raw CBOR where the test
is about the wire).

Expected values come from elsewhere: the master fingerprint and xpubs from the ``bip32``
package, addresses from ``pool.descriptor``, and signatures are checked by ``pool.roles`` and
again by embit (its own PSBT parser, BIP143 sighash and ECDSA).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
import usb1
from bip32 import BIP32
from embit.ec import Signature as EmbitSignature
from embit.psbt import PSBT as EmbitPsbt
from embit.transaction import SIGHASH
from hwilib import commands
from hwilib.common import Chain
from hwilib.devices import jade as hwi_jade
from hwilib.devices.jadepy import jade as jadepy_jade
from hwilib.devices.jadepy.jade import JadeAPI, JadeError
from hwilib.errors import ActionCanceledError
from hwilib.hwwclient import HardwareWalletClient
from mnemonic import Mnemonic

from pool.descriptor import DescriptorKey
from pool.hashes import sha256
from pool.hdkeys import HARDENED, KeyOrigin
from pool.networks import REGTEST
from pool.psbt import Psbt, PsbtOutput
from pool.roles import verify_partial_sigs
from pool.series import RECEIVE, Series, SeriesState
from pool.withdrawal import build_round
from signer.backends.hwi_device import Device
from signer.backends.hwi_worker import DeviceSpec
from signer.cli import main
from signer.jade_emulator import (
    HWI_SIMULATOR_PORT,
    EmulatorError,
    Faults,
    JadeDevice,
    JadeEmulatorServer,
    master_from_mnemonic,
)
from signer.jade_emulator.protocol import PSBT_OUT_CHUNK_SIZE
from tests.factories import BTC, account_path, manifest, master_key, request, utxo

ROOT = Path(__file__).resolve().parent.parent
MNEMONIC = Mnemonic("english").to_mnemonic(sha256(b"vpool jade emulator test key"))
ORACLE = BIP32.from_seed(Mnemonic.to_seed(MNEMONIC, ""), network="test")
FINGERPRINT = ORACLE.get_fingerprint().hex()
ACCOUNT = account_path(REGTEST.coin_type)
HWI = Path(sys.executable).with_name("hwi")


# --- fixtures and builders ---------------------------------------------------------------------


@pytest.fixture
def device() -> JadeDevice:
    return JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST)


@pytest.fixture
def emulator(device: JadeDevice) -> Iterator[JadeEmulatorServer]:
    with JadeEmulatorServer(device, port=0) as server:
        yield server


def _path(server: JadeEmulatorServer) -> str:
    return f"tcp:127.0.0.1:{server.port}"


@pytest.fixture
def client(emulator: JadeEmulatorServer) -> Iterator[HardwareWalletClient]:
    client = commands.get_client("jade", _path(emulator), chain=Chain.REGTEST)
    assert client is not None
    yield client
    client.close()


def _series(
    series_id: int = 1, state: SeriesState = SeriesState.ACTIVE, account: int = 0
) -> Series:
    """2-of-3: the emulator's key and test keys 1 and 2, at BIP48 ``account``."""
    master = master_from_mnemonic(MNEMONIC)
    path = account_path(REGTEST.coin_type, account)
    keys = [
        DescriptorKey(KeyOrigin(m.fingerprint, path), m.derive_path(path).public())
        for m in (master, master_key(1), master_key(2))
    ]
    return Series(series_id, 2, tuple(keys), state)


def _round_psbt(n_inputs: int = 3) -> Psbt:
    """A withdrawal spending ``n_inputs`` 1 BTC pool UTXOs, with change back to the pool."""
    utxos = [utxo(i, BTC, 100, index=i) for i in range(n_inputs)]
    plan = build_round(
        manifest([_series()], utxos, [request("c", "r1", n_inputs * BTC - BTC // 2)])
    )
    psbt = plan.transactions[0].psbt
    assert len(psbt.inputs) == n_inputs
    return psbt


def _hwi_descriptor(index: int, series: Series | None = None) -> str:
    """The receive descriptor at one index, as hwi takes it (no wildcard, no checksum)."""
    text = (series or _series()).descriptor(RECEIVE).to_string(REGTEST).partition("#")[0]
    return text.replace("/0/*", f"/0/{index}")


def _without_change_derivations(psbt: Psbt) -> Psbt:
    return replace(psbt, outputs=tuple(PsbtOutput() for _ in psbt.outputs))


class RawClient:
    """A bare CBOR connection, for tests about the wire itself."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._file = self.sock.makefile("rb")

    def send(self, message: object) -> None:
        self.sock.sendall(cbor2.dumps(message))

    def receive(self) -> Any:
        return cbor2.load(self._file)

    def call(self, method: str, params: object = None, message_id: str = "1") -> Any:
        message = {"id": message_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self._file.close()
        self.sock.close()


@pytest.fixture
def raw(emulator: JadeEmulatorServer) -> Iterator[RawClient]:
    connection = RawClient(emulator.port)
    yield connection
    connection.close()


def _error(reply: Any) -> tuple[int, str]:
    assert set(reply) == {"id", "error"}
    assert set(reply["error"]) <= {"code", "message", "data"}
    return reply["error"]["code"], reply["error"]["message"]


# --- keys, addresses, signatures ---------------------------------------------------------------


def test_get_client_reaches_any_port_and_reports_the_mnemonics_fingerprint(
    client: HardwareWalletClient,
) -> None:
    assert client.get_master_fingerprint().hex() == FINGERPRINT


def test_getxpub_matches_the_bip32_package(client: HardwareWalletClient) -> None:
    result = commands.getxpub(client, "m/48h/1h/0h/2h")
    assert result == {"xpub": ORACLE.get_xpub_from_path("m/48h/1h/0h/2h")}


def test_displayaddress_registers_the_multisig_and_shows_the_pool_address(
    client: HardwareWalletClient, emulator: JadeEmulatorServer
) -> None:
    result = commands.displayaddress(client, desc=_hwi_descriptor(5))
    assert result == {"address": _series().address(RECEIVE, 5, REGTEST)}
    with JadeAPI.create_serial(_path(emulator), timeout=5) as jade:
        registered = jade.get_registered_multisigs()
    [(name, record)] = registered.items()
    assert re.fullmatch("hwi[0-9a-f]{12}", name)
    assert record == {
        "variant": "wsh(multi(k))",
        "sorted": True,
        "threshold": 2,
        "num_signers": 3,
        "master_blinding_key": b"",
    }


def _embit_verified_keys(psbt_b64: str) -> list[set[bytes]]:
    """Per input, the keys whose partial signature embit verifies on its own."""
    theirs = EmbitPsbt.from_base64(psbt_b64)
    verified = []
    for index, psbt_input in enumerate(theirs.inputs):
        digest = theirs.tx.sighash_segwit(
            index, psbt_input.witness_script, psbt_input.witness_utxo.value, SIGHASH.ALL
        )
        verified.append(
            {
                pubkey.sec()
                for pubkey, signature in psbt_input.partial_sigs.items()
                if signature[-1] == SIGHASH.ALL
                and pubkey.verify(EmbitSignature.parse(signature[:-1]), digest)
            }
        )
    return verified


def _emulator_keys(psbt: Psbt) -> list[bytes]:
    """The emulator's key in each input, derived by the bip32 package."""
    keys = []
    for psbt_input in psbt.inputs:
        [path] = [
            o.path
            for o in psbt_input.bip32_derivations.values()
            if o.path[:4] == ACCOUNT and o.fingerprint.hex() == FINGERPRINT
        ]
        keys.append(ORACLE.get_pubkey_from_path(list(path)))
    return keys


@pytest.mark.parametrize("n_inputs", [3, 9], ids=["one-chunk", "chunked-reply"])
def test_signtx_returns_one_valid_signature_per_input_for_the_emulators_key(
    client: HardwareWalletClient, n_inputs: int
) -> None:
    psbt = _round_psbt(n_inputs)
    assert (len(psbt.serialize()) > PSBT_OUT_CHUNK_SIZE) == (n_inputs == 9)
    commands.displayaddress(client, desc=_hwi_descriptor(0))  # registers, so change validates
    result = commands.signtx(client, psbt.to_base64())
    signed = Psbt.from_base64(result["psbt"])
    assert signed.tx == psbt.tx
    keys = _emulator_keys(psbt)
    assert [set(i.partial_sigs) for i in signed.inputs] == [{key} for key in keys]
    assert verify_partial_sigs(signed) == [(i, key, True) for i, key in enumerate(keys)]
    assert _embit_verified_keys(result["psbt"]) == [{key} for key in keys]


def test_registered_change_is_hidden_from_the_user(
    client: HardwareWalletClient, device: JadeDevice
) -> None:
    commands.displayaddress(client, desc=_hwi_descriptor(0))
    psbt = _round_psbt()
    review = device.review(psbt)
    assert review.record is not None
    assert review.change == (len(psbt.outputs) - 1,)
    assert review.shown == tuple(range(len(psbt.outputs) - 1))
    commands.signtx(client, psbt.to_base64())


def test_change_of_an_unregistered_multisig_is_shown_as_a_payment_and_signed(
    client: HardwareWalletClient, device: JadeDevice
) -> None:
    psbt = _round_psbt()
    review = device.review(psbt)
    assert review.record is None and review.change == ()
    assert review.shown == tuple(range(len(psbt.outputs)))
    signed = Psbt.from_base64(commands.signtx(client, psbt.to_base64())["psbt"])
    assert all(i.partial_sigs for i in signed.inputs)


def test_change_keys_paying_another_script_are_shown_not_refused(
    client: HardwareWalletClient, device: JadeDevice
) -> None:
    commands.displayaddress(client, desc=_hwi_descriptor(0))
    psbt = _round_psbt()
    # The change output keeps its keys and derivations but pays elsewhere: not change.
    elsewhere = b"\x00\x20" + sha256(b"elsewhere")
    outputs = (*psbt.tx.outputs[:-1], replace(psbt.tx.outputs[-1], script_pubkey=elsewhere))
    tampered = replace(psbt, tx=replace(psbt.tx, outputs=outputs))
    review = device.review(tampered)
    assert review.change == () and len(psbt.outputs) - 1 in review.shown
    commands.signtx(client, tampered.to_base64())


def test_a_sweeps_change_to_another_registered_series_is_shown_as_a_payment(
    client: HardwareWalletClient, device: JadeDevice
) -> None:
    old, new = _series(1, SeriesState.RETIRING), _series(2, SeriesState.ACTIVE, account=1)
    for series in (old, new):  # registered as the signer registers a series
        commands.displayaddress(client, desc=_hwi_descriptor(0, series))
    utxos = [utxo(i, BTC, 100, index=i) for i in range(2)]
    plan = build_round(
        manifest([old, new], utxos, [request("c", "r1", BTC // 2)], change_index=((2, 0),))
    )
    psbt = plan.transactions[0].psbt
    review = device.review(psbt)
    assert review.record is not None  # the inputs are all the old series'
    assert review.change == ()  # the change pays the new series: the person sees it
    assert review.shown == (0, 1)
    commands.signtx(client, psbt.to_base64())


def test_the_refuse_signing_fault_is_a_user_rejection(
    client: HardwareWalletClient, device: JadeDevice
) -> None:
    commands.displayaddress(client, desc=_hwi_descriptor(0))
    device.faults = Faults(refuse_signing=True)
    with pytest.raises(ActionCanceledError):
        commands.signtx(client, _round_psbt().to_base64())


def test_each_transaction_shown_to_the_user_is_counted_as_a_prompt(
    client: HardwareWalletClient, device: JadeDevice
) -> None:
    commands.displayaddress(client, desc=_hwi_descriptor(0))
    commands.signtx(client, _round_psbt().to_base64())
    commands.signtx(client, _round_psbt().to_base64())
    assert device.prompts == 2


def test_a_locked_jade_answers_only_its_version_and_says_it_is_locked() -> None:
    device = JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST, locked=True)
    with JadeEmulatorServer(device, port=0) as server:
        raw = RawClient(server.port)
        try:
            state = raw.call("get_version_info")["result"]["JADE_STATE"]
            reply = raw.call("get_xpub", {"network": "testnet", "path": []})
        finally:
            raw.close()
    assert (state, _error(reply)[0]) == ("LOCKED", JadeError.HW_LOCKED)


def test_hwi_cannot_open_a_locked_jade_until_its_user_unlocks_it() -> None:
    device = JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST, locked=True)
    with JadeEmulatorServer(device, port=0) as server:
        path = _path(server)
        with pytest.raises(Exception, match="Recovery Phrase Login"):
            commands.get_client("jade", path, chain=Chain.REGTEST)
        device.unlock()
        client = commands.get_client("jade", path, chain=Chain.REGTEST)
        try:
            assert client.get_master_fingerprint() == device.fingerprint
        finally:
            client.close()


def test_a_single_client_emulator_reads_a_second_client_only_after_the_first_closes() -> None:
    device = JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST)
    with JadeEmulatorServer(device, port=0, single_client=True) as server:
        first, second = RawClient(server.port), RawClient(server.port)
        try:
            first.call("ping")
            second.sock.sendall(cbor2.dumps({"id": "2", "method": "ping"}))
            second.sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                second.sock.recv(1)
            first.close()
            second.sock.settimeout(30)
            answered = cbor2.loads(second.sock.recv(4096))
        finally:
            second.close()
    assert answered == {"id": "2", "result": 0}


def test_every_network_is_served_like_on_the_qemu_simulator(
    emulator: JadeEmulatorServer,
) -> None:
    mainnet = BIP32.from_seed(Mnemonic.to_seed(MNEMONIC, ""), network="main")
    with JadeAPI.create_serial(_path(emulator), timeout=5) as jade:
        assert jade.get_version_info()["JADE_NETWORKS"] == "ALL"
        assert jade.get_xpub("mainnet", [HARDENED + 1]) == mainnet.get_xpub_from_path("m/1h")
        assert jade.get_xpub("testnet", [HARDENED + 1]) == ORACLE.get_xpub_from_path("m/1h")


def test_a_restricted_device_refuses_another_network_type() -> None:
    device = JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST, restrict_network=True)
    with JadeEmulatorServer(device, port=0) as server:
        restricted = RawClient(server.port)
        try:
            info = restricted.call("get_version_info")["result"]
            reply = restricted.call("get_xpub", {"network": "mainnet", "path": []})
            testnet = restricted.call("get_xpub", {"network": "testnet", "path": []})
        finally:
            restricted.close()
    assert info["JADE_NETWORKS"] == "TEST"
    assert _error(reply) == (
        JadeError.NETWORK_MISMATCH,
        "Network type inconsistent with prior usage",
    )
    assert testnet["result"] == ORACLE.get_xpub_from_path("m")


def test_a_stalled_sign_psbt_exceeds_a_short_client_timeout(
    emulator: JadeEmulatorServer, device: JadeDevice
) -> None:
    device.faults = Faults(stall_seconds=30)
    client = hwi_jade.JadeClient(_path(emulator), chain=Chain.REGTEST, timeout=1)
    try:
        assert client.get_master_fingerprint().hex() == FINGERPRINT  # only signing stalls
        psbt_b64 = _without_change_derivations(_round_psbt()).to_base64()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            commands.signtx(client, psbt_b64)
        assert 0.9 < time.monotonic() - start < 5
    finally:
        client.close()
    other = commands.get_client("jade", _path(emulator), chain=Chain.REGTEST)
    assert other is not None
    assert other.get_master_fingerprint().hex() == FINGERPRINT  # the stall blocks no one else
    other.close()


def _signed_through_the_worker_device(
    emulator: JadeEmulatorServer, patience: float, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Sign as the signer's HWI worker does, with hwilib's own read timeout cut to 1 s (it is
    120 s: the same race, made short) and the person taking 2 s."""
    monkeypatch.setattr(jadepy_jade, "DEFAULT_SERIAL_TIMEOUT", 1)
    spec = DeviceSpec("regtest", FINGERPRINT, "jade", _path(emulator), patience_seconds=patience)
    device = Device(spec)
    try:
        psbt_b64 = _without_change_derivations(_round_psbt()).to_base64()
        return str(device.call("sign", psbt_b64))
    finally:
        device.drop()


def test_the_worker_device_waits_for_a_person_longer_than_hwilibs_own_timeout(
    emulator: JadeEmulatorServer, device: JadeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    device.faults = Faults(approve_after=2)
    signed = Psbt.from_base64(_signed_through_the_worker_device(emulator, 30, monkeypatch))
    assert all(i.partial_sigs for i in signed.inputs)


def test_without_patience_hwilibs_own_timeout_expires_before_the_person_answers(
    emulator: JadeEmulatorServer, device: JadeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    device.faults = Faults(approve_after=2)
    with pytest.raises(TimeoutError):
        _signed_through_the_worker_device(emulator, 0, monkeypatch)


def test_stall_all_delays_every_call(emulator: JadeEmulatorServer, device: JadeDevice) -> None:
    device.faults = Faults(stall_seconds=0.3, stall_all=True)
    with JadeAPI.create_serial(_path(emulator), timeout=5) as jade:
        start = time.monotonic()
        jade.get_version_info()
        assert time.monotonic() - start >= 0.3


# --- refusals with Jade's error shape ----------------------------------------------------------


def test_unknown_methods_get_jades_unknown_method_error(emulator: JadeEmulatorServer) -> None:
    jade = JadeAPI.create_serial(_path(emulator), timeout=5)
    with jade, pytest.raises(JadeError) as caught:
        jade._jadeRpc("frobnicate", {})
    assert (caught.value.code, caught.value.message) == (JadeError.UNKNOWN_METHOD, "Unknown method")


def _signer(fingerprint: bytes, xpub: str) -> dict[str, object]:
    return {"fingerprint": fingerprint, "derivation": list(ACCOUNT), "xpub": xpub, "path": []}


def _registration(signers: list[dict[str, object]], **descriptor: object) -> dict[str, object]:
    fields = {"variant": "wsh(multi(k))", "sorted": True, "threshold": 2, "signers": signers}
    return {
        "network": "localtest",
        "multisig_name": "vpool",
        "descriptor": {**fields, **descriptor},
    }


OURS = _signer(bytes.fromhex(FINGERPRINT), ORACLE.get_xpub_from_path("m/48h/1h/0h/2h"))
OTHER = _signer(
    master_key(1).fingerprint, master_key(1).derive_path(ACCOUNT).public().to_string(REGTEST)
)
BAD = -32602  # JadeError.BAD_PARAMETERS


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("get_xpub", None, BAD, "Expecting parameters map"),
        (
            "get_xpub",
            {"network": "localtest", "path": "m/0h"},
            BAD,
            "Failed to extract valid path from parameters",
        ),
        (
            "get_xpub",
            {"network": "localtest", "path": [1] * 17},
            BAD,
            "Failed to extract valid path from parameters",
        ),
        (
            "get_xpub",
            {"network": "localtest", "path": [2**32]},
            BAD,
            "Failed to extract valid path from parameters",
        ),
        (
            "get_xpub",
            {"network": "regtest", "path": []},
            BAD,
            "Failed to extract valid network from parameters",
        ),
        (
            "sign_psbt",
            {"network": "localtest", "psbt": "cHNidP8="},
            BAD,
            "Failed to extract psbt bytes from parameters",
        ),
        (
            "sign_psbt",
            {"network": "localtest", "psbt": b"psbt\xff\x00"},
            BAD,
            "Failed to extract psbt from passed bytes",
        ),
        (
            "register_multisig",
            _registration([OURS, OTHER], threshold=3),
            BAD,
            "Invalid multisig threshold",
        ),
        (
            "register_multisig",
            _registration([OURS, OTHER], variant="tr(k)"),
            BAD,
            "Invalid script variant parameter",
        ),
        ("register_multisig", _registration([OTHER, OTHER]), BAD, "Failed to validate co-signers"),
        (
            "register_multisig",
            _registration([{**OURS, "xpub": OTHER["xpub"]}, OTHER]),
            BAD,
            "Failed to validate co-signers",
        ),
        (
            "register_multisig",
            _registration([OURS, {**OTHER, "path": [HARDENED]}]),
            BAD,
            "Failed to validate co-signers",
        ),
        (
            "register_multisig",
            _registration([OURS, {**OTHER, "fingerprint": b"\x01"}]),
            BAD,
            "Failed to extract valid co-signers from parameters",
        ),
        (
            "register_multisig",
            {**_registration([OURS, OTHER]), "multisig_name": "a name"},
            BAD,
            "Missing or invalid multisig name parameter",
        ),
        (
            "get_receive_address",
            {"network": "localtest", "paths": [[0, 0]], "multisig_name": "nope"},
            BAD,
            "Cannot find named multisig wallet",
        ),
        ("get_extended_data", {}, -32001, "Unexpected method"),
    ],
)
def test_malformed_or_refused_requests_get_jades_error_reply(
    raw: RawClient, method: str, params: object, code: int, message: str
) -> None:
    reply = raw.call(method, params, message_id="42")
    assert reply["id"] == "42"
    assert _error(reply) == (code, message)


def test_addresses_need_one_unhardened_path_per_registered_signer(raw: RawClient) -> None:
    assert raw.call("register_multisig", _registration([OURS, OTHER])) == {
        "id": "1",
        "result": True,
    }
    for paths in ([[0, 0]], [[0, 0], [0, HARDENED]]):
        reply = raw.call(
            "get_receive_address",
            {"network": "localtest", "paths": paths, "multisig_name": "vpool"},
        )
        assert _error(reply) == (
            BAD,
            "Unexpected number of signer paths or invalid path for multisig",
        )


def test_invalid_cbor_gets_an_error_and_the_connection_stays_usable(raw: RawClient) -> None:
    raw.sock.sendall(b"\x1c")  # reserved additional information: not CBOR
    assert raw.receive() == {
        "id": "00",
        "error": {"code": -32600, "message": "Invalid RPC Request message", "data": b"1"},
    }
    raw.send({"method": "ping"})  # no id: not an RPC request
    assert _error(raw.receive()) == (-32600, "Invalid RPC Request message")
    assert raw.call("ping") == {"id": "1", "result": 0}


def test_a_message_split_across_packets_is_reassembled(raw: RawClient) -> None:
    data = cbor2.dumps({"id": "7", "method": "ping"})
    for byte in data:
        raw.sock.sendall(bytes([byte]))
        time.sleep(0.001)
    assert raw.receive() == {"id": "7", "result": 0}


def test_chunks_must_be_fetched_in_order_with_get_extended_data(raw: RawClient) -> None:
    psbt = _without_change_derivations(_round_psbt(9)).serialize()
    first = raw.call("sign_psbt", {"network": "localtest", "psbt": psbt}, message_id="10")
    assert (first["id"], first["seqnum"], first["seqlen"]) == ("10", 1, 2)
    fetch = {"origid": "10", "orig": "sign_psbt", "seqnum": 3, "seqlen": 2}
    reply = raw.call("get_extended_data", fetch, message_id="11")
    assert reply["id"] == "11"
    assert _error(reply) == (-32001, "Mismatched fields in 'get_extended_data' message")
    reply = raw.call("get_extended_data", {**fetch, "seqnum": 2}, message_id="12")
    assert _error(reply) == (-32001, "Unexpected method")  # the sequence was abandoned


# --- connections -------------------------------------------------------------------------------


def test_the_server_never_closes_a_connection_first(raw: RawClient) -> None:
    assert raw.call("get_version_info")["result"]["JADE_STATE"] == "READY"
    raw.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # recv would return b"" if the server had closed
        raw.sock.recv(1)


def test_sequential_and_concurrent_clients_are_served(emulator: JadeEmulatorServer) -> None:
    first = commands.get_client("jade", _path(emulator), chain=Chain.REGTEST)
    assert first is not None
    assert first.get_master_fingerprint().hex() == FINGERPRINT
    first.close()
    results: list[str] = []

    def fetch_xpub() -> None:
        client = commands.get_client("jade", _path(emulator), chain=Chain.REGTEST)
        assert client is not None
        results.append(commands.getxpub(client, "m/48h/1h/0h/2h")["xpub"])
        client.close()

    threads = [threading.Thread(target=fetch_xpub) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [ORACLE.get_xpub_from_path("m/48h/1h/0h/2h")] * 4


def test_registrations_persist_in_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "jade-state.json"
    first = JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST, state_file=state)
    with JadeEmulatorServer(first, port=0) as server:
        client = commands.get_client("jade", _path(server), chain=Chain.REGTEST)
        assert client is not None
        commands.displayaddress(client, desc=_hwi_descriptor(0))
        client.close()
    registered = first.call("get_registered_multisigs", None)
    assert isinstance(registered, dict) and len(registered) == 1
    again = JadeDevice(master_from_mnemonic(MNEMONIC), REGTEST, state_file=state)
    assert again.call("get_registered_multisigs", None) == registered
    other_wallet = master_from_mnemonic(Mnemonic("english").to_mnemonic(bytes(16)))
    with pytest.raises(EmulatorError, match="belongs to wallet"):
        JadeDevice(other_wallet, REGTEST, state_file=state)


# --- hwi's discovery of the simulator port -----------------------------------------------------


@pytest.fixture
def on_hwi_port(device: JadeDevice) -> Iterator[JadeEmulatorServer]:
    try:
        server = JadeEmulatorServer(device, port=HWI_SIMULATOR_PORT)
    except EmulatorError as e:
        pytest.skip(f"hwi only probes port {HWI_SIMULATOR_PORT}, which is taken here: {e}")
    with server:
        yield server


def _libusb_missing() -> str | None:
    """Why hwi's enumerate cannot run here: its Trezor WebUSB scan raises without libusb."""
    try:
        usb1._libusb1.loadLibrary()
    except OSError as e:
        return (
            f"hwi enumerate raises without the system libusb-1.0 (Debian package libusb-1.0-0): {e}"
        )
    return None


def _simulator_entry(devices: list[dict[str, Any]]) -> dict[str, Any]:
    [entry] = [d for d in devices if d.get("path") == f"tcp:127.0.0.1:{HWI_SIMULATOR_PORT}"]
    return entry


EXPECTED_ENTRY = {
    "type": "jade",
    "model": "jade_simulator",
    "path": f"tcp:127.0.0.1:{HWI_SIMULATOR_PORT}",
    "needs_pin_sent": False,
    "needs_passphrase_sent": False,
    "fingerprint": FINGERPRINT,
}


def test_hwis_jade_probe_lists_the_emulator(on_hwi_port: JadeEmulatorServer) -> None:
    devices = hwi_jade.enumerate(allow_emulators=True)  # hwi's default chain: mainnet
    assert _simulator_entry(devices) == EXPECTED_ENTRY


def test_hwi_enumerate_lists_the_emulator(on_hwi_port: JadeEmulatorServer) -> None:
    if reason := _libusb_missing():
        pytest.skip(reason)
    devices = commands.enumerate(allow_emulators=True)
    assert _simulator_entry(devices) == EXPECTED_ENTRY


# --- the command line, as subprocesses ---------------------------------------------------------


@contextmanager
def _emulator_process(tmp_path: Path, port: int, *options: str) -> Iterator[int]:
    """``vpool-signer emulate-jade`` in a subprocess; yields its port, then stops it with
    SIGTERM and checks that it exited cleanly and logged no secret."""
    mnemonic_file = tmp_path / "mnemonic.txt"
    mnemonic_file.write_text(MNEMONIC + "\n", encoding="utf-8")
    log = tmp_path / "emulator.log"
    argv = [
        sys.executable,
        "-c",
        "import sys; from signer.cli import main; sys.exit(main())",
        "emulate-jade",
        "--network",
        "regtest",
        "--mnemonic-file",
        str(mnemonic_file),
        "--port",
        str(port),
        *options,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as log_file:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log_file, text=True, env=env
        )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = process.stdout.readline() if selector.select(timeout=20) else ""
    try:
        if not ready:
            process.kill()
            process.wait()
            if "cannot listen" in log.read_text():
                pytest.skip(f"port {port} is taken here")
            pytest.fail(f"the emulator did not start: {log.read_text()}")
        assert f"master fingerprint {FINGERPRINT}" in ready
        listening = re.search(r"127\.0\.0\.1:(\d+) ", ready)
        assert listening is not None
        yield int(listening.group(1))
    finally:
        if process.poll() is None:
            process.terminate()
            assert process.wait(10) == 0
        process.stdout.close()
    logged = log.read_text()
    assert MNEMONIC not in logged and "tprv" not in logged


def _hwi(*args: str) -> Any:
    if not HWI.exists():
        pytest.skip(f"the hwi command is not installed next to {sys.executable}")
    done = subprocess.run([str(HWI), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_hwi_command_drives_the_emulator_process_on_any_port(tmp_path: Path) -> None:
    with _emulator_process(tmp_path, 0, "--restrict-network") as port:
        device = ("--device-type", "jade", "--device-path", f"tcp:127.0.0.1:{port}")
        regtest = _hwi(*device, "--chain", "regtest", "getxpub", "m/48h/1h/0h/2h")
        mainnet = _hwi(*device, "getxpub", "m/48h/0h/0h/2h")
    assert regtest == {"xpub": ORACLE.get_xpub_from_path("m/48h/1h/0h/2h")}
    # hwi's auth_user (sent on any port but 30121) meets Jade's refusal of another network type
    assert mainnet == {
        "error": "JadeError: -32003 - Network type inconsistent with prior usage (Data: None)",
        "code": -3,
    }


def test_the_fault_options_of_the_command_reach_the_device(tmp_path: Path) -> None:
    psbt_b64 = _without_change_derivations(_round_psbt()).to_base64()
    options = ("--refuse-signing", "--stall-seconds", "0.5")
    with _emulator_process(tmp_path, 0, *options) as port:
        path = f"tcp:127.0.0.1:{port}"
        start = time.monotonic()
        result = _hwi("-t", "jade", "-d", path, "--chain", "regtest", "signtx", psbt_b64)
        elapsed = time.monotonic() - start
    assert result == {"error": "sign_tx canceled by user", "code": -14}
    assert elapsed >= 0.5


def test_hwi_emulators_enumerate_command_lists_the_emulator_process(tmp_path: Path) -> None:
    if reason := _libusb_missing():
        pytest.skip(reason)
    with _emulator_process(tmp_path, HWI_SIMULATOR_PORT):
        devices = _hwi("--emulators", "enumerate")
    assert _simulator_entry(devices) == EXPECTED_ENTRY


def test_cli_refuses_a_bad_mnemonic_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = "zebra " * 12
    mnemonic_file = tmp_path / "mnemonic.txt"
    mnemonic_file.write_text(words, encoding="utf-8")
    argv = ["emulate-jade", "--network", "regtest", "--mnemonic-file", str(mnemonic_file)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "not a valid English BIP39 mnemonic" in err
    assert "zebra" not in err
