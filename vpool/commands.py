"""What a client or an operator can ask the coordinator: one small function per action.

Each takes a channel from ``open_channel`` (mutual TLS with the caller's certificate) and returns
the answer message; the command line (vpool.cli) prints it. Every call has a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from vpool.v1 import coordinator_pb2 as pb
from vpool.v1 import coordinator_pb2_grpc

DEFAULT_TIMEOUT = 30.0
STATUS_NAMES = {
    name.removeprefix("WITHDRAWAL_STATUS_").lower(): number
    for name, number in pb.WithdrawalStatus.items()
    if number != pb.WITHDRAWAL_STATUS_UNSPECIFIED
}
DEPOSIT_STATUS_NAMES = {
    name.removeprefix("DEPOSIT_STATUS_").lower(): number
    for name, number in pb.DepositStatus.items()
    if number != pb.DEPOSIT_STATUS_UNSPECIFIED
}
REFUND_STATUSES = ("refund_pending", "refund_proposed", "refund_signed", "refunded")
"""The deposit statuses `vpool refunds` lists: deposits on their way back to their sender."""


def open_channel(
    address: str, cert: Path, key: Path, ca: Path, tls_name: str | None = None
) -> grpc.Channel:
    """A channel to the coordinator at ``address`` (host:port). ``tls_name`` is the name its
    certificate must carry when it differs from the host (e.g. when reached by IP address)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    options = [] if tls_name is None else [("grpc.ssl_target_name_override", tls_name)]
    return grpc.secure_channel(address, credentials, options=options)


def _client(channel: grpc.Channel) -> coordinator_pb2_grpc.CoordinatorServiceStub:
    return coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]


def _admin(channel: grpc.Channel) -> coordinator_pb2_grpc.AdminServiceStub:
    return coordinator_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]


# --- clients ----------------------------------------------------------------------------------


def withdraw(
    channel: grpc.Channel,
    request_id: str,
    address: str,
    amount_sat: int,
    extra_fee_sat: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.Withdrawal:
    request = pb.SubmitWithdrawalRequest(
        request_id=request_id, address=address, amount_sat=amount_sat, extra_fee_sat=extra_fee_sat
    )
    answer: pb.Withdrawal = _client(channel).SubmitWithdrawal(request, timeout=timeout)
    return answer


def get_withdrawal(
    channel: grpc.Channel, request_id: str, timeout: float = DEFAULT_TIMEOUT
) -> pb.Withdrawal:
    request = pb.GetWithdrawalRequest(request_id=request_id)
    answer: pb.Withdrawal = _client(channel).GetWithdrawal(request, timeout=timeout)
    return answer


def list_withdrawals(
    channel: grpc.Channel,
    statuses: Sequence[str] = (),
    page_size: int = 0,
    page_token: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.ListWithdrawalsResponse:
    """``statuses`` by name (``pending``, ``in_round``, ...: keys of ``STATUS_NAMES``)."""
    request = pb.ListWithdrawalsRequest(
        statuses=[STATUS_NAMES[s] for s in statuses], page_size=page_size, page_token=page_token
    )
    answer: pb.ListWithdrawalsResponse = _client(channel).ListWithdrawals(request, timeout=timeout)
    return answer


def cancel_withdrawal(
    channel: grpc.Channel, request_id: str, timeout: float = DEFAULT_TIMEOUT
) -> pb.Withdrawal:
    request = pb.CancelWithdrawalRequest(request_id=request_id)
    answer: pb.Withdrawal = _client(channel).CancelWithdrawal(request, timeout=timeout)
    return answer


def watch_withdrawals(
    channel: grpc.Channel, after_cursor: int = 0, timeout: float | None = None
) -> Iterator[pb.WithdrawalEvent]:
    """Events until the stream ends (``timeout``: None to follow for as long as it lasts)."""
    request = pb.WatchWithdrawalsRequest(after_cursor=after_cursor)
    events: Iterator[pb.WithdrawalEvent] = _client(channel).WatchWithdrawals(
        request, timeout=timeout
    )
    return events


def pool_status(channel: grpc.Channel, timeout: float = DEFAULT_TIMEOUT) -> pb.PoolStatus:
    answer: pb.PoolStatus = _client(channel).GetPoolStatus(
        pb.GetPoolStatusRequest(), timeout=timeout
    )
    return answer


def fee_statement(
    channel: grpc.Channel,
    page_size: int = 0,
    page_token: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.FeeStatement:
    request = pb.GetFeeStatementRequest(page_size=page_size, page_token=page_token)
    answer: pb.FeeStatement = _client(channel).GetFeeStatement(request, timeout=timeout)
    return answer


def round_manifest(
    channel: grpc.Channel, round_id: str, timeout: float = DEFAULT_TIMEOUT
) -> pb.RoundManifest:
    request = pb.GetRoundManifestRequest(round_id=round_id)
    answer: pb.RoundManifest = _client(channel).GetRoundManifest(request, timeout=timeout)
    return answer


def deposit_address(
    channel: grpc.Channel,
    user_id: str,
    refund_address: str = "",
    verify_on_signers: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.DepositAddress:
    request = pb.GetDepositAddressRequest(
        user_id=user_id, refund_address=refund_address, verify_on_signers=verify_on_signers
    )
    answer: pb.DepositAddress = _client(channel).GetDepositAddress(request, timeout=timeout)
    return answer


def list_deposits(
    channel: grpc.Channel,
    user_id: str = "",
    statuses: Sequence[str] = (),
    page_size: int = 0,
    page_token: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.ListDepositsResponse:
    """``statuses`` by name (``credited``, ``refund_pending``, ...: keys of
    ``DEPOSIT_STATUS_NAMES``)."""
    request = pb.ListDepositsRequest(
        user_id=user_id,
        statuses=[DEPOSIT_STATUS_NAMES[s] for s in statuses],
        page_size=page_size,
        page_token=page_token,
    )
    answer: pb.ListDepositsResponse = _client(channel).ListDeposits(request, timeout=timeout)
    return answer


def watch_deposits(
    channel: grpc.Channel, after_cursor: int = 0, timeout: float | None = None
) -> Iterator[pb.DepositEvent]:
    """Deposit events until the stream ends (``timeout``: None to follow it for as long as it
    lasts)."""
    request = pb.WatchDepositsRequest(after_cursor=after_cursor)
    events: Iterator[pb.DepositEvent] = _client(channel).WatchDeposits(request, timeout=timeout)
    return events


# --- operators --------------------------------------------------------------------------------


def list_rounds(
    channel: grpc.Channel,
    page_size: int = 0,
    page_token: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.ListRoundsResponse:
    request = pb.ListRoundsRequest(page_size=page_size, page_token=page_token)
    answer: pb.ListRoundsResponse = _admin(channel).ListRounds(request, timeout=timeout)
    return answer


def get_round(channel: grpc.Channel, round_id: str, timeout: float = DEFAULT_TIMEOUT) -> pb.Round:
    answer: pb.Round = _admin(channel).GetRound(
        pb.GetRoundRequest(round_id=round_id), timeout=timeout
    )
    return answer


def cancel_round(
    channel: grpc.Channel, round_id: str, timeout: float = DEFAULT_TIMEOUT
) -> pb.Round:
    """Cancel a round (AdminService.CancelRound): a signing round without any valid signature
    is abandoned; a signed or broadcast one is replaced by a cancel round without its payments
    (they queue again once the replacement confirms); FAILED_PRECONDITION, naming why,
    otherwise. The answer's ``detail`` says which."""
    answer: pb.Round = _admin(channel).CancelRound(
        pb.CancelRoundRequest(round_id=round_id), timeout=timeout
    )
    return answer


def run_round(channel: grpc.Channel, timeout: float = DEFAULT_TIMEOUT) -> pb.RunRoundNowResponse:
    answer: pb.RunRoundNowResponse = _admin(channel).RunRoundNow(
        pb.RunRoundNowRequest(), timeout=timeout
    )
    return answer


def pause_rounds(channel: grpc.Channel, timeout: float = DEFAULT_TIMEOUT) -> pb.RoundsState:
    answer: pb.RoundsState = _admin(channel).PauseRounds(pb.PauseRoundsRequest(), timeout=timeout)
    return answer


def resume_rounds(channel: grpc.Channel, timeout: float = DEFAULT_TIMEOUT) -> pb.RoundsState:
    answer: pb.RoundsState = _admin(channel).ResumeRounds(pb.ResumeRoundsRequest(), timeout=timeout)
    return answer


def add_series(
    channel: grpc.Channel,
    series_id: int,
    receive_descriptor: str,
    change_descriptor: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.SeriesInfo:
    request = pb.AddSeriesRequest(
        series_id=series_id,
        receive_descriptor=receive_descriptor,
        change_descriptor=change_descriptor,
    )
    answer: pb.SeriesInfo = _admin(channel).AddSeries(request, timeout=timeout)
    return answer


def set_maintenance(
    channel: grpc.Channel, signer_id: str, maintenance: bool, timeout: float = DEFAULT_TIMEOUT
) -> pb.SignerHealth:
    request = pb.SetSignerMaintenanceRequest(signer_id=signer_id, maintenance=maintenance)
    answer: pb.SignerHealth = _admin(channel).SetSignerMaintenance(request, timeout=timeout)
    return answer


def propose_refund(
    channel: grpc.Channel, txid: str, vout: int, address: str, timeout: float = DEFAULT_TIMEOUT
) -> pb.Deposit:
    request = pb.ProposeRefundRequest(txid=txid, vout=vout, address=address)
    answer: pb.Deposit = _admin(channel).ProposeRefund(request, timeout=timeout)
    return answer


def list_refunds(
    channel: grpc.Channel,
    page_size: int = 0,
    page_token: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> pb.ListRefundsResponse:
    request = pb.ListRefundsRequest(page_size=page_size, page_token=page_token)
    answer: pb.ListRefundsResponse = _admin(channel).ListRefunds(request, timeout=timeout)
    return answer
