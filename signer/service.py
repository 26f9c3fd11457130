"""``vpool.v1.SignerService``: the signer's RPCs on top of its backend, state, node and rounds.

Bad input raises ``RpcFailure`` (INVALID_ARGUMENT naming the field), which ``signer.rpc`` turns
into the call's status; a policy refusal is not an error but an answer. A device that overruns
its deadline gives DEADLINE_EXCEEDED. Logs never carry a PSBT or key material.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

from pool.address import address_to_script_pubkey, script_pubkey_to_address
from pool.descriptor import DescriptorKey
from pool.errors import HDKeyError, VpoolError
from pool.hdkeys import HARDENED, parse_path
from pool.series import CHANGE, RECEIVE, Series
from pool.tx import OutPoint
from pool.vocabulary import RoundKind, Scope
from signer.acknowledgements import MAX_CLAIMS, Acknowledger
from signer.audit import AuditLog
from signer.backends.base import (
    Backend,
    BackendError,
    DeviceRefused,
    DeviceTimeout,
)
from signer.chain import NodeChain
from signer.chain_checks import ChainRules
from signer.config import SignerConfig
from signer.device_monitor import DeviceMonitor, limits_of
from signer.keystore import bip48_account_path
from signer.node_monitor import NodeMonitor
from signer.policy import DepositClaim, Refusal, registration_refusal
from signer.rounds import RoundSigner
from signer.rpc import RpcFailure, invalid
from signer.serving import ServingLog
from signer.state import SignerState, StateError
from vpool.rpc import series_from_descriptors
from vpool.v1 import common_pb2, signer_pb2, signer_pb2_grpc
from vpool.version import software_version

log = logging.getLogger(__name__)

NETWORK_CODES = {
    "mainnet": common_pb2.NETWORK_MAINNET,
    "testnet": common_pb2.NETWORK_TESTNET,
    "signet": common_pb2.NETWORK_SIGNET,
    "regtest": common_pb2.NETWORK_REGTEST,
}
BRANCHES = {common_pb2.BRANCH_RECEIVE: RECEIVE, common_pb2.BRANCH_CHANGE: CHANGE}
BACKEND_KINDS = {
    "emulator": signer_pb2.BACKEND_KIND_EMULATOR,
    "hwi": signer_pb2.BACKEND_KIND_HWI,
}
ROUND_KINDS = {
    signer_pb2.ROUND_KIND_WITHDRAWAL: RoundKind.WITHDRAWAL,
    signer_pb2.ROUND_KIND_REFUND: RoundKind.REFUND,
}
_SCOPES = {
    Scope.ROUND: signer_pb2.Refusal.SCOPE_ROUND,
    Scope.REQUEST: signer_pb2.Refusal.SCOPE_REQUEST,
    Scope.INPUT: signer_pb2.Refusal.SCOPE_INPUT,
}
_MAX_PATH_DEPTH = 16
_TXID = re.compile(r"[0-9a-f]{64}")
MAX_MONEY = 21_000_000 * 100_000_000


class SignerService(signer_pb2_grpc.SignerServiceServicer):
    def __init__(
        self,
        config: SignerConfig,
        backend: Backend,
        state: SignerState,
        audit: AuditLog,
        clock: Callable[[], float],
        chain: NodeChain | None,
        monitor: NodeMonitor,
        device: DeviceMonitor | None = None,
        serving: ServingLog | None = None,
    ) -> None:
        """``chain`` is this signer's node (None without one, development only); ``monitor``
        probes it for GetInfo and health, ``device`` the device (None: not watched);
        ``serving`` when it was serving (None: not recorded)."""
        self._serving = serving
        self._network = config.network
        self._policy = config.policy
        self._backend = backend
        self._state = state
        self._clock = clock
        self._fingerprint = backend.fingerprint()
        self._monitor = monitor
        self._chain_rules = ChainRules(config.chain.min_conf, config.chain.max_tip_lag)
        reviewed = getattr(config.backend, "max_reviewed_payments", 0)
        limits = limits_of(backend.model, reviewed)
        self._rounds = RoundSigner(
            config.signer_id,
            config.network,
            config.policy,
            backend,
            state,
            audit,
            clock,
            chain,
            self._chain_rules,
            config.backend.answer_within_seconds,
            limits,
        )
        self._acknowledger = Acknowledger(
            config.network, config.policy, state, chain, self._rounds.lock, clock
        )
        self._device = device
        self._audit = audit
        self._account: signer_pb2.AccountXpub | None = None
        self.load_account_xpub()
        self._info = signer_pb2.SignerInfo(
            signer_id=config.signer_id,
            backend_kind=BACKEND_KINDS[backend.kind],
            device_model=backend.model,
            master_fingerprint=self._fingerprint.hex(),
            policy_hash=self._rounds.policy_hash,
            software_version=software_version(),
            device_limits=signer_pb2.DeviceLimits(
                max_inputs=limits.max_inputs,
                max_outputs=limits.max_outputs,
                max_psbt_bytes=limits.max_psbt_bytes,
                max_reviewed_payments=limits.max_reviewed_payments,
            ),
        )

    def load_account_xpub(self) -> bool:
        """Read the account xpub from the device if not known yet (a device absent at start
        gives it once it is there); whether it is known."""
        if self._account is not None:
            return True
        try:
            xpub, origin = self._backend.xpub(bip48_account_path(self._network))
        except BackendError as e:
            log.warning("the account xpub cannot be read yet: %s", e)
            return False
        self._account = signer_pb2.AccountXpub(
            network=NETWORK_CODES[self._network.name], origin=origin.to_string(), xpub=xpub
        )
        return True

    def round_at_device_since(self) -> float | None:
        """Since when the oldest round at the device has been there (None: none)."""
        starts = [since for _, since in self._rounds.in_progress()]
        return min(starts) if starts else None

    def rounds_at_device(self) -> int:
        """How many rounds wait at the device."""
        return len(self._rounds.in_progress())

    # ------------------------------------------------------------------------------ queries

    def GetInfo(self, request: signer_pb2.GetInfoRequest, context: Any) -> signer_pb2.SignerInfo:
        node = self._monitor.status
        info = signer_pb2.SignerInfo()
        info.CopyFrom(self._info)
        if self._account is not None:
            info.account_xpubs.append(self._account)
        if self._device is not None:
            device = self._device.status
            info.device.CopyFrom(
                signer_pb2.DeviceState(
                    state=str(device.condition),
                    usable=device.usable,
                    error=device.error,
                    checked_at=device.checked_at,
                    busy_since_unix=int(device.busy_since),
                )
            )
        if self._serving is not None:
            info.serving.extend(
                signer_pb2.ServingInterval(from_unix=a, until_unix=b)
                for a, b in self._serving.intervals()
            )
        info.node.CopyFrom(
            signer_pb2.NodeState(
                configured=node.configured,
                reachable=node.reachable,
                tip_height=node.tip_height,
                tip_hash=node.tip_hash,
                syncing=node.syncing,
                error=node.error,
                checked_at=node.checked_at,
                min_conf=self._chain_rules.min_conf,
                max_tip_lag=self._chain_rules.max_tip_lag,
            )
        )
        info.audit_seq, info.audit_head = self._audit.position
        return info

    def GetXpub(
        self, request: signer_pb2.GetXpubRequest, context: Any
    ) -> signer_pb2.GetXpubResponse:
        self._check_network(request.network)
        if not request.path.strip():
            # Refused alike on every backend (a device may not give its master xpub).
            raise invalid("path", "missing: give a derivation path, e.g. m/48h/1h/0h/2h")
        try:
            path = parse_path(request.path)
        except HDKeyError as e:
            raise invalid("path", str(e)) from None
        if len(path) > _MAX_PATH_DEPTH:
            raise invalid("path", f"more than {_MAX_PATH_DEPTH} steps")
        with _device_errors():
            xpub, origin = self._backend.xpub(path)
        return signer_pb2.GetXpubResponse(xpub=xpub, origin=origin.to_string())

    def RegisterSeries(
        self, request: signer_pb2.RegisterSeriesRequest, context: Any
    ) -> signer_pb2.RegisterSeriesResponse:
        self._check_network(request.network)
        series = self._parse_series(request)
        known = self._state.registered_series(self._network).get(series.id)
        if known is not None and known != series:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"series_id: series {series.id} is registered with other keys or threshold",
            )
        self._check_registration(series)
        with _device_errors():
            name = self._backend.register_series(series)
        try:
            new = self._state.register_series(
                series.id,
                self._network.name,
                request.receive_descriptor,
                request.change_descriptor,
                self._clock(),
            )
        except StateError as e:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, f"series_id: {e}") from None
        log.info("series %d registered (device name %r, new %s)", series.id, name, new)
        return signer_pb2.RegisterSeriesResponse(
            registered=True, device_registration_name=name, already_registered=not new
        )

    def DisplayAddress(
        self, request: signer_pb2.DisplayAddressRequest, context: Any
    ) -> signer_pb2.DisplayAddressResponse:
        self._check_network(request.network)
        series = self._state.registered_series(self._network).get(request.series_id)
        if series is None:
            raise invalid("series_id", f"series {request.series_id} is not registered")
        if request.branch not in BRANCHES:
            raise invalid("branch", "must be BRANCH_RECEIVE or BRANCH_CHANGE")
        if request.index >= HARDENED:
            raise invalid("index", "must be below 2^31")
        with _device_errors():
            address, shown = self._backend.display_address(
                series, BRANCHES[request.branch], request.index
            )
        return signer_pb2.DisplayAddressResponse(address=address, shown_on_device=shown)

    def RegisterDepositAddress(
        self, request: signer_pb2.RegisterDepositAddressRequest, context: Any
    ) -> signer_pb2.RegisterDepositAddressResponse:
        self._check_network(request.network)
        series = self._state.registered_series(self._network).get(request.series_id)
        if series is None:
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"series_id: series {request.series_id} is not registered with this signer",
            )
        if request.index >= HARDENED:
            raise invalid("index", "must be below 2^31")
        refund_address = self._canonical_address(request.refund_address)
        try:
            new = self._state.register_deposit_address(
                self._network.name, series.id, request.index, refund_address, self._clock()
            )
        except StateError as e:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, f"refund_address: {e}") from None
        log.info(
            "deposit address %d of series %d registered (new %s)", request.index, series.id, new
        )
        return signer_pb2.RegisterDepositAddressResponse(
            address=series.address(RECEIVE, request.index, self._network),
            already_registered=not new,
        )

    def _canonical_address(self, address: str) -> str:
        """``address`` ("" for none) in its canonical spelling, if valid on this network."""
        if not address:
            return ""
        try:
            script = address_to_script_pubkey(address, self._network)
        except VpoolError as e:
            raise invalid("refund_address", str(e)) from None
        canonical = script_pubkey_to_address(script, self._network)
        if canonical is None:
            raise invalid("refund_address", "not a standard address")
        return canonical

    def _check_network(self, code: int) -> None:
        if code != NETWORK_CODES[self._network.name]:
            name = common_pb2.Network.Name(code) if code in common_pb2.Network.values() else code
            raise invalid("network", f"this signer serves {self._network.name}, not {name}")

    def _parse_series(self, request: signer_pb2.RegisterSeriesRequest) -> Series:
        return series_from_descriptors(
            request.series_id,
            request.receive_descriptor,
            request.change_descriptor,
            self._network,
        )

    def _check_registration(self, series: Series) -> None:
        """The policy's rule (``registration_refusal``): the series holds this signer's key, its
        m is at least ``min_threshold``, its other keys are configured cosigners, and the operator
        approved it (``approved_series``)."""
        refusal = registration_refusal(self._policy, series, self._network, self._is_own_key)
        if refusal is not None:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, f"receive_descriptor: {refusal}")

    def _is_own_key(self, key: DescriptorKey) -> bool:
        """Is ``key`` this signer's account key, as its backend derives it?"""
        if key.origin.fingerprint != self._fingerprint:
            return False
        with _device_errors():
            xpub, _ = self._backend.xpub(key.origin.path)
        return xpub == key.xpub.to_string(self._network)

    # ------------------------------------------------------------------------------ deposits

    def AcknowledgeDeposits(
        self, request: signer_pb2.AcknowledgeDepositsRequest, context: Any
    ) -> signer_pb2.AcknowledgeDepositsResponse:
        self._check_network(request.network)
        claims = _claims(request.deposits)
        verdicts = self._acknowledger.acknowledge(claims)
        return signer_pb2.AcknowledgeDepositsResponse(
            results=[
                signer_pb2.DepositAcknowledgement(
                    txid=v.claim.outpoint.txid_hex,
                    vout=v.claim.outpoint.vout,
                    acknowledged=v.acknowledged,
                    already_acknowledged=v.already_acknowledged,
                    reason_code="" if v.refusal is None else str(v.refusal.reason),
                    message="" if v.refusal is None else v.refusal.message,
                    confirmations=v.confirmations,
                )
                for v in verdicts
            ]
        )

    # ------------------------------------------------------------------------------ rounds

    def SignRound(
        self, request: signer_pb2.SignRoundRequest, context: Any
    ) -> signer_pb2.SignRoundResponse:
        kind = ROUND_KINDS.get(request.kind)
        if kind is None:
            raise invalid("kind", "must be ROUND_KIND_WITHDRAWAL or ROUND_KIND_REFUND")
        try:
            result = self._rounds.sign_round(kind, bytes(request.manifest), list(request.psbts))
        except DeviceTimeout as e:
            raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from None
        return signer_pb2.SignRoundResponse(
            manifest_hash=result.manifest_hash,
            signed_psbts=[
                signer_pb2.SignedPsbt(
                    psbt_index=index,
                    signatures=[
                        signer_pb2.PartialSignature(input_index=i, pubkey=key, signature=sig)
                        for i, key, sig in signatures
                    ],
                )
                for index, signatures in sorted(result.signatures.items())
            ],
            refusals=[_refusal_message(refusal) for refusal in result.refusals],
            signed_all=not result.refusals and not result.pending,
            pending=result.pending,
            pending_since_unix=0 if result.pending_since is None else int(result.pending_since),
        )

    def close(self) -> None:
        """Stop the device worker (after the round it is on)."""
        self._rounds.close()


def _claims(deposits: Sequence[signer_pb2.DepositClaim]) -> list[DepositClaim]:
    """The request's deposits, checked (INVALID_ARGUMENT naming the field at fault)."""
    if not deposits:
        raise invalid("deposits", "name at least one deposit")
    if len(deposits) > MAX_CLAIMS:
        raise invalid("deposits", f"{len(deposits)} deposits, at most {MAX_CLAIMS} per call")
    claims, seen = [], set()
    for i, d in enumerate(deposits):
        field = f"deposits[{i}]"
        if not _TXID.fullmatch(d.txid):
            raise invalid(f"{field}.txid", "expected 64 lowercase hex characters")
        if d.index >= HARDENED:
            raise invalid(f"{field}.index", "must be below 2^31")
        if not 0 < d.value <= MAX_MONEY:
            raise invalid(f"{field}.value", f"must be above 0 and at most {MAX_MONEY}")
        outpoint = OutPoint.from_hex(d.txid, d.vout)
        if outpoint in seen:
            raise invalid(f"{field}.vout", f"deposit {d.txid}:{d.vout} is named twice")
        seen.add(outpoint)
        claims.append(DepositClaim(outpoint, d.series_id, d.index, d.value))
    return claims


def _refusal_message(refusal: Refusal) -> signer_pb2.Refusal:
    return signer_pb2.Refusal(
        scope=_SCOPES[refusal.scope],
        reason_code=str(refusal.reason),
        message=refusal.message,
        client_id=refusal.client_id,
        request_id=refusal.request_id,
        psbt_index=refusal.psbt_index,
        input_index=refusal.input_index,
    )


@contextmanager
def _device_errors() -> Iterator[None]:
    """Device failures outside SignRound, as status codes."""
    try:
        yield
    except DeviceTimeout as e:
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from None
    except DeviceRefused as e:
        raise RpcFailure(grpc.StatusCode.ABORTED, str(e)) from None
    except BackendError as e:
        raise RpcFailure(grpc.StatusCode.UNAVAILABLE, str(e)) from None
