"""The emulated Jade: its wallet, multisig registrations and RPC methods (no sockets here).

It behaves as the debug-build QEMU simulator with a wallet loaded: unlocked (state READY) and,
unless told to restrict itself to one network type as a release Jade does, open to every
Bitcoin network (so hwi's default mainnet ``enumerate`` reads its fingerprint). Its user
confirms registrations and addresses and approves transactions (at once, after
``Faults.approve_after``, or never with ``Faults.refuse_signing``); what the user is shown is
decided as the firmware does (``signing.review_outputs``: change hidden only when it is change of
the one registered multisig that all signed inputs match, every other output shown, nothing
refused for it). It signs with the core's ``pool.roles.sign_psbt``, exactly as the software
signer does.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnemonic import Mnemonic

from pool.address import encode_segwit_address
from pool.hdkeys import HARDENED, ExtendedPrivateKey, ExtendedPublicKey, format_path
from pool.networks import MAINNET, REGTEST, TESTNET, Network
from pool.psbt import Psbt
from pool.script import p2wsh_script_pubkey
from signer.jade_emulator import params as p
from signer.jade_emulator.errors import EmulatorError
from signer.jade_emulator.protocol import (
    HW_LOCKED,
    NETWORK_MISMATCH,
    PROTOCOL_ERROR,
    UNKNOWN_METHOD,
    JadeRpcError,
)
from signer.jade_emulator.registry import WSH_MULTI, Multisig, Registry, Signer
from signer.jade_emulator.signing import Review, review_outputs, sign_request

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "1.0.40"
"""Reported as JADE_VERSION: at least 0.1.47, so HWI signs with ``sign_psbt``."""
CHUNKED_METHODS = frozenset({"sign_psbt"})
"""Methods whose bytes result is sent in sequenced chunks (``get_extended_data``)."""
_FOLLOW_UP_METHODS = frozenset(
    {"get_extended_data", "get_signature", "tx_input", "ota_data", "ota_complete", "pin"}
)
_MULTISIG_VARIANTS = frozenset({"sh(multi(k))", WSH_MULTI, "sh(wsh(multi(k)))"})
_JADE_NETWORKS = {"mainnet": MAINNET, "testnet": TESTNET, "localtest": REGTEST}
_WHILE_LOCKED = frozenset({"get_version_info", "ping", "add_entropy"})
"""Methods a locked Jade answers."""
_MAX_SIGNERS = 15
_MAX_NAME_LEN = 15


@dataclass(frozen=True)
class Faults:
    """Injected misbehaviour: answer late, or have the user reject every signing request."""

    stall_seconds: float = 0.0
    stall_all: bool = False
    """Stall every call, not only ``sign_psbt``."""
    refuse_signing: bool = False
    require_previous_tx: bool = False
    """Not a fault but a stricter device: refuse an input to sign without its previous
    transaction (``non_witness_utxo``), as Trezor and BitBox02 refuse segwit v0 inputs."""
    approve_after: float = 0.0
    """Not a fault but a person: each transaction is shown (a prompt, logged and counted) and
    approved (or refused, with ``refuse_signing``) this many seconds later; the device does
    nothing else meanwhile, like a Jade showing a transaction."""

    def stall_for(self, method: str) -> float:
        return self.stall_seconds if self.stall_all or method == "sign_psbt" else 0.0


def master_from_mnemonic(words: str) -> ExtendedPrivateKey:
    """The BIP32 master key of an English BIP39 mnemonic with an empty passphrase."""
    normalized = " ".join(unicodedata.normalize("NFKD", words).split())
    if not Mnemonic("english").check(normalized):
        raise EmulatorError("not a valid English BIP39 mnemonic (unknown word or checksum)")
    return ExtendedPrivateKey.from_seed(Mnemonic.to_seed(normalized, ""))


class JadeDevice:
    """One wallet; ``call`` runs one RPC method at a time, like the device's main task."""

    def __init__(
        self,
        master: ExtendedPrivateKey,
        network: Network,
        *,
        restrict_network: bool = False,
        state_file: Path | None = None,
        faults: Faults | None = None,
        locked: bool = False,
    ) -> None:
        """``network``'s type (main or test) is the only one served if ``restrict_network``;
        the state file, if any, writes xpubs in its encoding. ``locked``: the PIN has not been
        entered yet (``unlock`` is the user entering it on the device)."""
        self.faults = faults or Faults()
        self._master = master
        self._network = network
        self._restrict_network = restrict_network
        self._registry = Registry(network, master.fingerprint, state_file)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._locked = locked
        self.prompts = 0
        """Transactions shown to the user for approval (``sign_psbt`` calls that parsed)."""
        self._methods: dict[str, Callable[[object], object]] = {
            "get_version_info": self._get_version_info,
            "ping": lambda _: 0,
            "add_entropy": self._add_entropy,
            "auth_user": self._auth_user,
            "get_xpub": self._get_xpub,
            "register_multisig": self._register_multisig,
            "get_registered_multisigs": self._get_registered_multisigs,
            "get_receive_address": self._get_receive_address,
            "sign_psbt": self._sign_psbt,
        }

    @property
    def fingerprint(self) -> bytes:
        return self._master.fingerprint

    def close(self) -> None:
        """Interrupt a person's wait (the device is going away)."""
        self._closing.set()

    def unlock(self) -> None:
        """The user enters the PIN on the device (or uses "QR PIN Unlock")."""
        self._locked = False
        log.info("unlocked by its user")

    def call(self, method: str, params: object) -> object:
        """The result of ``method``; a refusal raises ``JadeRpcError``."""
        handler = self._methods.get(method)
        if handler is None:
            if method in _FOLLOW_UP_METHODS:
                raise JadeRpcError(PROTOCOL_ERROR, "Unexpected method")
            raise JadeRpcError(UNKNOWN_METHOD, "Unknown method")
        if self._locked and method not in _WHILE_LOCKED:
            # the firmware would run the pinserver exchange from auth_user; the emulator has no
            # pinserver: the device stays locked until its user unlocks it
            raise JadeRpcError(HW_LOCKED, "Cannot process message - hw locked or network mismatch")
        with self._lock:
            return handler(params)

    # --- session -------------------------------------------------------------------------------

    def _get_version_info(self, _: object) -> dict[str, object]:
        return {
            "JADE_VERSION": FIRMWARE_VERSION,
            "JADE_OTA_MAX_CHUNK": 4096,
            "JADE_CONFIG": "NORADIO",
            "BOARD_TYPE": "VPOOL_EMULATOR",
            "JADE_FEATURES": "DEV",
            "IDF_VERSION": "v5.4",
            "CHIP_FEATURES": "32000000",
            "EFUSEMAC": "0000" + self.fingerprint.hex().upper(),
            "ATTESTATION_INITIALISED": False,
            "BATTERY_STATUS": 0,
            "BATTERY_MILLIVOLTS": 0,
            "BATTERY_CHARGING": False,
            "JADE_STATE": "LOCKED" if self._locked else "READY",
            "JADE_NETWORKS": self._network_type() if self._restrict_network else "ALL",
            "JADE_HAS_PIN": False,
        }

    def _add_entropy(self, params: object) -> bool:
        entropy = p.params_map(params).get("entropy")
        if not isinstance(entropy, bytes) or not entropy:
            raise p.bad("Failed to extract valid entropy bytes from parameters")
        return True

    def _auth_user(self, params: object) -> bool:
        """Already unlocked: checks the network and answers true, as Jade does when READY."""
        values = p.params_map(params)
        self._jade_network(values)
        if values.get("epoch") is not None and p.uint(values["epoch"]) is None:
            raise p.bad("Failed to extract valid epoch value from parameters")
        return True

    def _network_type(self, network: Network | None = None) -> str:
        return "MAIN" if (network or self._network) is MAINNET else "TEST"

    def _jade_network(self, values: p.Params) -> Network:
        """The network a request names (of this device's type, when restricted)."""
        name = values.get("network")
        network = _JADE_NETWORKS.get(name) if isinstance(name, str) else None
        if network is None:
            raise p.bad("Failed to extract valid network from parameters")
        if self._restrict_network and self._network_type(network) != self._network_type():
            raise JadeRpcError(NETWORK_MISMATCH, "Network type inconsistent with prior usage")
        return network

    # --- keys and addresses --------------------------------------------------------------------

    def _get_xpub(self, params: object) -> str:
        values = p.params_map(params)
        network = self._jade_network(values)
        path = p.path(values.get("path"))
        if path is None:
            raise p.bad("Failed to extract valid path from parameters")
        log.info("get_xpub m/%s", format_path(path))
        return self._master.derive_path(path).public().to_string(network)

    def _register_multisig(self, params: object) -> bool:
        values = p.params_map(params)
        network = self._jade_network(values)
        name = values.get("multisig_name")
        if not isinstance(name, str) or not _is_valid_name(name):
            raise p.bad("Missing or invalid multisig name parameter")
        descriptor = values.get("descriptor")
        if not isinstance(descriptor, dict):
            raise p.bad("Cannot extract multisig descriptor data")
        multisig = self._multisig(descriptor, network)
        existing = self._registry.get(name)
        if existing == multisig:
            return True
        if existing is None and self._registry.is_full():
            raise p.bad("Already have maximum number of multisig wallets")
        self._registry.register(name, multisig)
        log.info(
            "registered multisig %s: %d of %d", name, multisig.threshold, len(multisig.signers)
        )
        return True

    def _multisig(self, descriptor: p.Params, network: Network) -> Multisig:
        variant = descriptor.get("variant")
        if variant not in _MULTISIG_VARIANTS:
            raise p.bad("Invalid script variant parameter")
        if variant != WSH_MULTI:
            raise p.bad(f"Script variant {variant} is not supported by this emulator")
        is_sorted = descriptor.get("sorted")
        if is_sorted is not None and not isinstance(is_sorted, bool):
            raise p.bad("Invalid sorted flag value")
        if descriptor.get("master_blinding_key") is not None:
            raise p.bad("Liquid blinding keys are not supported by this emulator")
        threshold = p.uint(descriptor.get("threshold"))
        if not threshold or threshold > _MAX_SIGNERS:
            raise p.bad("Invalid multisig threshold value")
        signers = _signers(descriptor.get("signers"), network)
        if len(signers) > _MAX_SIGNERS:
            raise p.bad("Failed to extract co-signers")
        if threshold > len(signers):
            raise p.bad("Invalid multisig threshold")
        if not self._includes_this_wallet(signers):
            raise p.bad("Failed to validate co-signers")
        return Multisig(WSH_MULTI, bool(is_sorted), threshold, signers)

    def _includes_this_wallet(self, signers: tuple[Signer, ...]) -> bool:
        """Jade's signer check: unhardened fixed paths, and this wallet's xpub where it claims
        to be."""
        if any(index >= HARDENED for signer in signers for index in signer.path):
            return False
        found = False
        for signer in signers:
            if signer.fingerprint == self.fingerprint:
                ours = self._master.derive_path(signer.derivation).public()
                if (ours.public_key, ours.chain_code) != (
                    signer.xpub.public_key,
                    signer.xpub.chain_code,
                ):
                    return False
                found = True
        return found

    def _get_registered_multisigs(self, _: object) -> dict[str, dict[str, object]]:
        return {
            name: {
                "variant": m.variant,
                "sorted": m.sorted,
                "threshold": m.threshold,
                "num_signers": len(m.signers),
                "master_blinding_key": b"",
            }
            for name, m in self._registry.items()
        }

    def _get_receive_address(self, params: object) -> str:
        values = p.params_map(params)
        network = self._jade_network(values)
        if values.get("confidential"):
            raise p.bad("Confidential addresses only apply to liquid networks")
        name = values.get("multisig_name")
        if name is None:
            raise p.bad("Only multisig addresses are supported by this emulator")
        if not isinstance(name, str) or not name:
            raise p.bad("Invalid multisig name parameter")
        multisig = self._registry.get(name)
        if multisig is None:
            raise p.bad("Cannot find named multisig wallet")
        tails = _signer_paths(values.get("paths"))
        if len(tails) != len(multisig.signers) or any(i >= HARDENED for t in tails for i in t):
            raise p.bad("Unexpected number of signer paths or invalid path for multisig")
        script = multisig.witness_script(tails)
        log.info("get_receive_address %s at %s", name, format_path(tails[0]))
        return encode_segwit_address(network, 0, p2wsh_script_pubkey(script)[2:])

    # --- signing -------------------------------------------------------------------------------

    def review(self, psbt: Psbt) -> Review:
        """What its user would be shown of ``psbt`` (``signing.review_outputs``)."""
        registered = [multisig for _, multisig in self._registry.items()]
        return review_outputs(psbt, self._master, registered)

    def _sign_psbt(self, params: object) -> bytes:
        values = p.params_map(params)
        self._jade_network(values)
        raw = values.get("psbt")
        if not isinstance(raw, bytes) or not raw:
            raise p.bad("Failed to extract psbt bytes from parameters")
        self.prompts += 1
        log.info("sign_psbt: prompt %d shown to the user", self.prompts)
        if self.faults.approve_after and self._closing.wait(self.faults.approve_after):
            raise JadeRpcError(PROTOCOL_ERROR, "Device closed")
        registered = [multisig for _, multisig in self._registry.items()]
        return sign_request(
            raw,
            self._master,
            registered,
            refuse=self.faults.refuse_signing,
            require_previous_tx=self.faults.require_previous_tx,
        )


def _signers(value: object, network: Network) -> tuple[Signer, ...]:
    """The co-signers of a registration; xpubs must be in ``network``'s encoding."""
    failed = p.bad("Failed to extract valid co-signers from parameters")
    if not isinstance(value, list) or not value:
        raise failed
    signers = []
    for item in value:
        if not isinstance(item, dict):
            raise failed
        fingerprint, xpub = item.get("fingerprint"), item.get("xpub")
        derivation, path = p.path(item.get("derivation")), p.path(item.get("path"))
        if not isinstance(fingerprint, bytes) or len(fingerprint) != 4:
            raise failed
        if not isinstance(xpub, str) or derivation is None or path is None:
            raise failed
        try:
            key = ExtendedPublicKey.from_string(xpub, network)
        except ValueError:
            raise p.bad("Failed to validate co-signers") from None
        signers.append(Signer(fingerprint, derivation, key, path))
    return tuple(signers)


def _is_valid_name(name: str) -> bool:
    """Jade's storage key names: 1 to 15 printable ASCII characters, no space."""
    return 0 < len(name) <= _MAX_NAME_LEN and all(33 <= ord(c) <= 126 for c in name)


def _signer_paths(value: object) -> list[tuple[int, ...]]:
    failed = p.bad("Failed to extract signer paths from parameters")
    if not isinstance(value, list) or not value:
        raise failed
    tails = []
    for item in value:
        tail = p.path(item)
        if not tail:
            raise failed
        tails.append(tail)
    return tails
