"""The coordinator's side of the signer daemons: one mutual-TLS gRPC channel per signer.

Every channel presents the coordinator's own certificate (role "coordinator"), trusts only the
pool's CA, and checks that the peer's certificate names the signer (``tls_name``, through
``grpc.ssl_target_name_override``, so signers may be reached by IP address). Every call has a
deadline. ``sign_round_each`` and ``acknowledge_deposits_each`` ask every signer at once, on a
thread pool, and never raise: a signer that cannot be reached, overruns its deadline or fails
otherwise is an answer too.

A channel whose signer went away reconnects on gRPC's exponential backoff, which by default grows
to two minutes: until the next attempt every call fails at once with the last connection error,
so a signer that came back would stay unreachable for minutes. ``RECONNECT_BACKOFF_MS`` bounds the
backoff, so a returning signer is reached within about two seconds of answering again.

Logs name signers, status codes and counts only: never keys, signatures, PSBTs or certificates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.config import CoordinatorConfig, SignerEndpoint, TlsConfig
from pool.networks import Network
from pool.series import CHANGE, RECEIVE, Series
from pool.vocabulary import RoundKind
from vpool.metrics import REGISTRY
from vpool.v1 import common_pb2, signer_pb2, signer_pb2_grpc

log = logging.getLogger(__name__)

NETWORK_CODES = {
    "mainnet": common_pb2.NETWORK_MAINNET,
    "testnet": common_pb2.NETWORK_TESTNET,
    "signet": common_pb2.NETWORK_SIGNET,
    "regtest": common_pb2.NETWORK_REGTEST,
}
BRANCH_CODES = {RECEIVE: common_pb2.BRANCH_RECEIVE, CHANGE: common_pb2.BRANCH_CHANGE}
SERVICE_NAME = "vpool.v1.SignerService"
_SCOPE_NAMES = {
    signer_pb2.Refusal.SCOPE_ROUND: "round",
    signer_pb2.Refusal.SCOPE_REQUEST: "request",
    signer_pb2.Refusal.SCOPE_INPUT: "input",
}
_T = TypeVar("_T")
RECONNECT_BACKOFF_MS = (250, 2_000)
"""The first and the longest wait between two connection attempts to a signer."""


_KIND_CODES = {
    RoundKind.WITHDRAWAL: signer_pb2.ROUND_KIND_WITHDRAWAL,
    RoundKind.REFUND: signer_pb2.ROUND_KIND_REFUND,
}


class Failure(StrEnum):
    """Why a call gave no answer."""

    DOWN = "down"
    """UNAVAILABLE: the signer cannot be reached (or its device is gone)."""
    TIMEOUT = "timeout"
    """DEADLINE_EXCEEDED: no answer in time."""
    ERROR = "error"
    """Any other status."""


@dataclass(frozen=True)
class CallError:
    """A failed call: its kind, the gRPC status name and the signer's message."""

    failure: Failure
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class SignerCallError(Exception):
    """A call to one signer failed (``error`` says how)."""

    def __init__(self, signer_id: str, error: CallError) -> None:
        super().__init__(f"signer {signer_id}: {error}")
        self.signer_id = signer_id
        self.error = error


@dataclass(frozen=True)
class Signature:
    """One partial signature of a SignRound answer."""

    psbt_index: int
    input_index: int
    pubkey: bytes
    signature: bytes
    """DER signature followed by the sighash type byte."""


@dataclass(frozen=True)
class Refusal:
    """Something a signer refused to sign, as it sent it."""

    scope: str
    """"round", "request", "input" (or "unspecified" when the signer did not say)."""
    reason_code: str
    message: str
    client_id: str = ""
    request_id: str = ""
    psbt_index: int | None = None
    input_index: int | None = None


@dataclass(frozen=True)
class SignResult:
    """One signer's answer to SignRound: signatures and/or refusals, or an error."""

    signatures: tuple[Signature, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    manifest_hash: bytes = b""
    """The round the signer answered for (SHA256 of the manifest it received)."""
    error: CallError | None = None
    seconds: float = 0.0
    """How long the call took."""
    pending: bool = False
    """The signer's device was asked and has not answered yet (a person may be reviewing the
    round): no signatures and no refusals; ask again with the same request later."""
    pending_since: float | None = None
    """When pending: since when the signer's device has been asked (unix seconds), when the
    signer said."""


@dataclass(frozen=True)
class DepositClaim:
    """A deposit the coordinator asks a signer to acknowledge."""

    series_id: int
    index: int
    """Receive index of the address it pays."""
    txid: str
    """Display hex."""
    vout: int
    value: int


@dataclass(frozen=True)
class DepositAnswer:
    """A signer's verdict on one deposit, as it sent it."""

    txid: str
    vout: int
    acknowledged: bool
    reason_code: str
    message: str
    confirmations: int


@dataclass(frozen=True)
class AcknowledgeResult:
    """One signer's answer to AcknowledgeDeposits (one verdict per claim, in order), or an
    error."""

    answers: tuple[DepositAnswer, ...] = ()
    error: CallError | None = None
    seconds: float = 0.0


MAX_CLAIMS_PER_CALL = 250
"""Deposits asked about in one AcknowledgeDeposits call (the signer takes up to 1000): each costs
the signer one lookup on its node, about 6 ms on bcoin, so a call stays well within its deadline;
a signer that answers late has recorded its acknowledgements anyway and repeats them at once."""


SIGNER_CALLS = REGISTRY.histogram(
    "vpool_signer_call_seconds",
    "Seconds of each call to a signer, by signer, method and result (ok, down, timeout, error).",
    ("signer", "method", "result"),
)


def _observe(signer_id: str, method: str, started: float, result: str) -> None:
    SIGNER_CALLS.observe(time.monotonic() - started, signer=signer_id, method=method, result=result)


def _call_error(error: grpc.RpcError) -> CallError:
    """Classify a failed call by its status code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        failure = Failure.DOWN
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        failure = Failure.TIMEOUT
    else:
        failure = Failure.ERROR
    return CallError(failure, code.name, details)


def _refusal_from_message(message: signer_pb2.Refusal) -> Refusal:
    return Refusal(
        scope=_SCOPE_NAMES.get(message.scope, "unspecified"),
        reason_code=message.reason_code,
        message=message.message,
        client_id=message.client_id,
        request_id=message.request_id,
        psbt_index=message.psbt_index if message.HasField("psbt_index") else None,
        input_index=message.input_index if message.HasField("input_index") else None,
    )


def _result_from_response(response: signer_pb2.SignRoundResponse, seconds: float) -> SignResult:
    signatures = tuple(
        Signature(signed.psbt_index, sig.input_index, bytes(sig.pubkey), bytes(sig.signature))
        for signed in response.signed_psbts
        for sig in signed.signatures
    )
    return SignResult(
        signatures=signatures,
        refusals=tuple(_refusal_from_message(r) for r in response.refusals),
        manifest_hash=bytes(response.manifest_hash),
        seconds=seconds,
        pending=response.pending,
        pending_since=float(response.pending_since_unix) if response.pending_since_unix else None,
    )


@dataclass
class _Signer:
    endpoint: SignerEndpoint
    channel: grpc.Channel
    stub: signer_pb2_grpc.SignerServiceStub
    health: health_pb2_grpc.HealthStub


class SignerPool:
    """Clients of the configured signers; ``close`` when done."""

    def __init__(
        self,
        endpoints: Sequence[SignerEndpoint],
        tls: TlsConfig,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca.read_bytes(),
            private_key=tls.key.read_bytes(),
            certificate_chain=tls.cert.read_bytes(),
        )
        self._signers: dict[str, _Signer] = {}
        self._device_limits: dict[str, signer_pb2.DeviceLimits] = {}
        for endpoint in endpoints:
            channel = grpc.secure_channel(
                endpoint.address,
                credentials,
                options=[
                    ("grpc.ssl_target_name_override", endpoint.tls_name),
                    ("grpc.max_receive_message_length", max_message_bytes),
                    ("grpc.max_send_message_length", max_message_bytes),
                    ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                    ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
                ],
            )
            self._signers[endpoint.id] = _Signer(
                endpoint,
                channel,
                signer_pb2_grpc.SignerServiceStub(channel),  # type: ignore[no-untyped-call]
                health_pb2_grpc.HealthStub(channel),
            )
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(self._signers)), thread_name_prefix="signer-call"
        )

    @classmethod
    def from_config(cls, config: CoordinatorConfig) -> SignerPool:
        return cls(config.signers, config.server.tls, config.server.max_message_bytes)

    @property
    def signer_ids(self) -> tuple[str, ...]:
        """The configured signers, in configuration order."""
        return tuple(self._signers)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for signer in self._signers.values():
            signer.channel.close()

    def __enter__(self) -> SignerPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ single calls

    def _signer(self, signer_id: str) -> _Signer:
        try:
            return self._signers[signer_id]
        except KeyError:
            raise KeyError(f"unknown signer {signer_id!r}") from None

    def _call(self, signer_id: str, name: str, call: Callable[[_Signer], _T]) -> _T:
        """Run the call ``name``; a failed call raises ``SignerCallError``."""
        signer = self._signer(signer_id)
        started = time.monotonic()
        try:
            answer = call(signer)
        except grpc.RpcError as exc:
            error = _call_error(exc)
            _observe(signer_id, name, started, str(error.failure))
            log.info("signer %s: %s failed (%s)", signer_id, name, error.code)
            raise SignerCallError(signer_id, error) from None
        _observe(signer_id, name, started, "ok")
        return answer

    def get_info(self, signer_id: str, timeout: float) -> signer_pb2.SignerInfo:
        """The signer's identity, keys and policy hash; its device's limits are kept
        (``device_limits``)."""
        request = signer_pb2.GetInfoRequest()
        info: signer_pb2.SignerInfo = self._call(
            signer_id, "GetInfo", lambda s: s.stub.GetInfo(request, timeout=timeout)
        )
        self._device_limits[signer_id] = info.device_limits
        return info

    def device_limits(self) -> list[signer_pb2.DeviceLimits]:
        """The device limits of every signer whose GetInfo answered in this process (the
        health checks ask each signer once)."""
        return list(self._device_limits.values())

    def health(self, signer_id: str, timeout: float) -> bool:
        """True when the signer's SignerService reports SERVING."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        answer = self._call(signer_id, "Check", lambda s: s.health.Check(request, timeout=timeout))
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def register_series(
        self, signer_id: str, network: Network, series: Series, timeout: float
    ) -> signer_pb2.RegisterSeriesResponse:
        """Register ``series`` on the signer (idempotent on the signer's side)."""
        request = signer_pb2.RegisterSeriesRequest(
            network=NETWORK_CODES[network.name],
            series_id=series.id,
            receive_descriptor=series.descriptor(RECEIVE).to_string(network),
            change_descriptor=series.descriptor(CHANGE).to_string(network),
        )
        answer: signer_pb2.RegisterSeriesResponse = self._call(
            signer_id, "RegisterSeries", lambda s: s.stub.RegisterSeries(request, timeout=timeout)
        )
        return answer

    def register_deposit_address(
        self,
        signer_id: str,
        network: Network,
        series_id: int,
        index: int,
        refund_address: str,
        timeout: float,
    ) -> signer_pb2.RegisterDepositAddressResponse:
        """Register receive address ``index`` of the series with its refund address ("" for
        none) on the signer; the first registration of an address wins there."""
        request = signer_pb2.RegisterDepositAddressRequest(
            network=NETWORK_CODES[network.name],
            series_id=series_id,
            index=index,
            refund_address=refund_address,
        )
        answer: signer_pb2.RegisterDepositAddressResponse = self._call(
            signer_id,
            "RegisterDepositAddress",
            lambda s: s.stub.RegisterDepositAddress(request, timeout=timeout),
        )
        return answer

    def display_address(
        self,
        signer_id: str,
        network: Network,
        series_id: int,
        branch: int,
        index: int,
        timeout: float,
    ) -> signer_pb2.DisplayAddressResponse:
        """The address as the signer's device computes it."""
        request = signer_pb2.DisplayAddressRequest(
            network=NETWORK_CODES[network.name],
            series_id=series_id,
            branch=BRANCH_CODES[branch],
            index=index,
        )
        answer: signer_pb2.DisplayAddressResponse = self._call(
            signer_id, "DisplayAddress", lambda s: s.stub.DisplayAddress(request, timeout=timeout)
        )
        return answer

    def sign_round(
        self,
        signer_id: str,
        manifest: bytes,
        psbts: Sequence[bytes],
        deadline: float,
        kind: RoundKind = RoundKind.WITHDRAWAL,
    ) -> SignResult:
        """One signer's SignRound answer for a round of ``kind``; never raises for a failed
        call."""
        request = signer_pb2.SignRoundRequest(
            kind=_KIND_CODES[kind], manifest=manifest, psbts=list(psbts)
        )
        started = time.monotonic()
        try:
            response = self._signer(signer_id).stub.SignRound(request, timeout=deadline)
        except grpc.RpcError as exc:
            error = _call_error(exc)
            seconds = time.monotonic() - started
            _observe(signer_id, "SignRound", started, str(error.failure))
            log.info(
                "signer %s: SignRound failed after %.1f s (%s)",
                signer_id,
                seconds,
                error.code,
                extra={"signer_id": signer_id},
            )
            return SignResult(error=error, seconds=seconds)
        result = _result_from_response(response, time.monotonic() - started)
        _observe(signer_id, "SignRound", started, "pending" if result.pending else "ok")
        if result.pending:
            log.info("signer %s: SignRound pending (its device is asked)", signer_id)
            return result
        log.info(
            "signer %s: SignRound answered in %.1f s: %d signatures, %d refusals",
            signer_id,
            result.seconds,
            len(result.signatures),
            len(result.refusals),
        )
        return result

    def acknowledge_deposits(
        self, signer_id: str, network: Network, claims: Sequence[DepositClaim], deadline: float
    ) -> AcknowledgeResult:
        """The signer's verdicts on ``claims`` (at most ``MAX_CLAIMS_PER_CALL``), in order; never
        raises for a failed call (an answer that does not match the claims is an error too)."""
        request = signer_pb2.AcknowledgeDepositsRequest(
            network=NETWORK_CODES[network.name],
            deposits=[
                signer_pb2.DepositClaim(
                    series_id=c.series_id, index=c.index, txid=c.txid, vout=c.vout, value=c.value
                )
                for c in claims
            ],
        )
        started = time.monotonic()
        try:
            response = self._signer(signer_id).stub.AcknowledgeDeposits(request, timeout=deadline)
        except grpc.RpcError as exc:
            error = _call_error(exc)
            _observe(signer_id, "AcknowledgeDeposits", started, str(error.failure))
            log.info("signer %s: AcknowledgeDeposits failed (%s)", signer_id, error.code)
            return AcknowledgeResult(error=error, seconds=time.monotonic() - started)
        _observe(signer_id, "AcknowledgeDeposits", started, "ok")
        seconds = time.monotonic() - started
        answers = tuple(
            DepositAnswer(r.txid, r.vout, r.acknowledged, r.reason_code, r.message, r.confirmations)
            for r in response.results
        )
        if [(a.txid, a.vout) for a in answers] != [(c.txid, c.vout) for c in claims]:
            log.warning("signer %s: AcknowledgeDeposits answered other deposits", signer_id)
            mismatch = CallError(Failure.ERROR, "BAD_ANSWER", "the results do not match the claims")
            return AcknowledgeResult(error=mismatch, seconds=seconds)
        log.info(
            "signer %s: AcknowledgeDeposits answered in %.1f s: %d of %d acknowledged",
            signer_id,
            seconds,
            sum(a.acknowledged for a in answers),
            len(answers),
        )
        return AcknowledgeResult(answers=answers, seconds=seconds)

    # ------------------------------------------------------------------------ all signers

    def sign_round_each(
        self,
        manifest: bytes,
        psbts: Sequence[bytes],
        deadline: float,
        signer_ids: Iterable[str] | None = None,
        kind: RoundKind = RoundKind.WITHDRAWAL,
    ) -> Iterator[tuple[str, SignResult]]:
        """Ask every signer (or ``signer_ids``) in parallel to sign a round of ``kind``; yield
        each answer as it arrives."""
        ids = list(self._signers if signer_ids is None else signer_ids)
        for signer_id in ids:
            self._signer(signer_id)
        futures: dict[Future[SignResult], str] = {
            self._executor.submit(
                self.sign_round, signer_id, manifest, psbts, deadline, kind
            ): signer_id
            for signer_id in ids
        }
        for future in as_completed(futures):
            yield futures[future], future.result()

    def acknowledge_deposits_each(
        self,
        network: Network,
        claims: Mapping[str, Sequence[DepositClaim]],
        deadline: float,
    ) -> Iterator[tuple[str, AcknowledgeResult]]:
        """Ask each signer of ``claims`` (signer id → its claims) in parallel to acknowledge its
        deposits; yield each answer as it arrives."""
        for signer_id in claims:
            self._signer(signer_id)
        futures: dict[Future[AcknowledgeResult], str] = {
            self._executor.submit(
                self.acknowledge_deposits, signer_id, network, wanted, deadline
            ): signer_id
            for signer_id, wanted in claims.items()
        }
        for future in as_completed(futures):
            yield futures[future], future.result()
