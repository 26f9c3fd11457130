from vpool.v1 import common_pb2 as _common_pb2
from vpool.v1 import signer_pb2 as _signer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WithdrawalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WITHDRAWAL_STATUS_UNSPECIFIED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_PENDING: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_IN_ROUND: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_SIGNED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_BROADCAST: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_CONFIRMED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_COMPLETED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_DEFERRED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_CANCELLED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_REJECTED: _ClassVar[WithdrawalStatus]
    WITHDRAWAL_STATUS_EXPIRED: _ClassVar[WithdrawalStatus]

class RoundStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STATUS_UNSPECIFIED: _ClassVar[RoundStatus]
    ROUND_STATUS_SIGNING: _ClassVar[RoundStatus]
    ROUND_STATUS_SIGNED: _ClassVar[RoundStatus]
    ROUND_STATUS_BROADCAST: _ClassVar[RoundStatus]
    ROUND_STATUS_COMPLETED: _ClassVar[RoundStatus]
    ROUND_STATUS_ABANDONED: _ClassVar[RoundStatus]

class DepositStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPOSIT_STATUS_UNSPECIFIED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_SEEN: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_CONFIRMING: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_CREDITED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_REFUND_PENDING: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_REFUND_PROPOSED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_REFUND_SIGNED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_REFUNDED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_DUST: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_REORGED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_REMOVED: _ClassVar[DepositStatus]
    DEPOSIT_STATUS_CONFIRMED: _ClassVar[DepositStatus]
WITHDRAWAL_STATUS_UNSPECIFIED: WithdrawalStatus
WITHDRAWAL_STATUS_PENDING: WithdrawalStatus
WITHDRAWAL_STATUS_IN_ROUND: WithdrawalStatus
WITHDRAWAL_STATUS_SIGNED: WithdrawalStatus
WITHDRAWAL_STATUS_BROADCAST: WithdrawalStatus
WITHDRAWAL_STATUS_CONFIRMED: WithdrawalStatus
WITHDRAWAL_STATUS_COMPLETED: WithdrawalStatus
WITHDRAWAL_STATUS_DEFERRED: WithdrawalStatus
WITHDRAWAL_STATUS_CANCELLED: WithdrawalStatus
WITHDRAWAL_STATUS_REJECTED: WithdrawalStatus
WITHDRAWAL_STATUS_EXPIRED: WithdrawalStatus
ROUND_STATUS_UNSPECIFIED: RoundStatus
ROUND_STATUS_SIGNING: RoundStatus
ROUND_STATUS_SIGNED: RoundStatus
ROUND_STATUS_BROADCAST: RoundStatus
ROUND_STATUS_COMPLETED: RoundStatus
ROUND_STATUS_ABANDONED: RoundStatus
DEPOSIT_STATUS_UNSPECIFIED: DepositStatus
DEPOSIT_STATUS_SEEN: DepositStatus
DEPOSIT_STATUS_CONFIRMING: DepositStatus
DEPOSIT_STATUS_CREDITED: DepositStatus
DEPOSIT_STATUS_REFUND_PENDING: DepositStatus
DEPOSIT_STATUS_REFUND_PROPOSED: DepositStatus
DEPOSIT_STATUS_REFUND_SIGNED: DepositStatus
DEPOSIT_STATUS_REFUNDED: DepositStatus
DEPOSIT_STATUS_DUST: DepositStatus
DEPOSIT_STATUS_REORGED: DepositStatus
DEPOSIT_STATUS_REMOVED: DepositStatus
DEPOSIT_STATUS_CONFIRMED: DepositStatus

class SubmitWithdrawalRequest(_message.Message):
    __slots__ = ("request_id", "address", "amount_sat", "extra_fee_sat")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_SAT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FEE_SAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    address: str
    amount_sat: int
    extra_fee_sat: int
    def __init__(self, request_id: _Optional[str] = ..., address: _Optional[str] = ..., amount_sat: _Optional[int] = ..., extra_fee_sat: _Optional[int] = ...) -> None: ...

class PaidOutput(_message.Message):
    __slots__ = ("txid", "vout", "amount_sat")
    TXID_FIELD_NUMBER: _ClassVar[int]
    VOUT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_SAT_FIELD_NUMBER: _ClassVar[int]
    txid: str
    vout: int
    amount_sat: int
    def __init__(self, txid: _Optional[str] = ..., vout: _Optional[int] = ..., amount_sat: _Optional[int] = ...) -> None: ...

class Withdrawal(_message.Message):
    __slots__ = ("client_id", "request_id", "address", "amount_sat", "extra_fee_sat", "status", "split", "reason", "round_id", "outputs", "confirmations", "created_unix", "updated_unix")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_SAT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FEE_SAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    request_id: str
    address: str
    amount_sat: int
    extra_fee_sat: int
    status: WithdrawalStatus
    split: bool
    reason: str
    round_id: str
    outputs: _containers.RepeatedCompositeFieldContainer[PaidOutput]
    confirmations: int
    created_unix: int
    updated_unix: int
    def __init__(self, client_id: _Optional[str] = ..., request_id: _Optional[str] = ..., address: _Optional[str] = ..., amount_sat: _Optional[int] = ..., extra_fee_sat: _Optional[int] = ..., status: _Optional[_Union[WithdrawalStatus, str]] = ..., split: bool = ..., reason: _Optional[str] = ..., round_id: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[PaidOutput, _Mapping]]] = ..., confirmations: _Optional[int] = ..., created_unix: _Optional[int] = ..., updated_unix: _Optional[int] = ...) -> None: ...

class GetWithdrawalRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ListWithdrawalsRequest(_message.Message):
    __slots__ = ("statuses", "page_size", "page_token")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[WithdrawalStatus]
    page_size: int
    page_token: str
    def __init__(self, statuses: _Optional[_Iterable[_Union[WithdrawalStatus, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWithdrawalsResponse(_message.Message):
    __slots__ = ("withdrawals", "next_page_token")
    WITHDRAWALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    withdrawals: _containers.RepeatedCompositeFieldContainer[Withdrawal]
    next_page_token: str
    def __init__(self, withdrawals: _Optional[_Iterable[_Union[Withdrawal, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelWithdrawalRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class WatchWithdrawalsRequest(_message.Message):
    __slots__ = ("after_cursor",)
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    after_cursor: int
    def __init__(self, after_cursor: _Optional[int] = ...) -> None: ...

class WithdrawalEvent(_message.Message):
    __slots__ = ("cursor", "status", "withdrawal", "at_unix")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    cursor: int
    status: WithdrawalStatus
    withdrawal: Withdrawal
    at_unix: int
    def __init__(self, cursor: _Optional[int] = ..., status: _Optional[_Union[WithdrawalStatus, str]] = ..., withdrawal: _Optional[_Union[Withdrawal, _Mapping]] = ..., at_unix: _Optional[int] = ...) -> None: ...

class GetPoolStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeriesBalance(_message.Message):
    __slots__ = ("series_id", "state", "confirmed_sat", "unconfirmed_sat", "utxo_count", "m", "n")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_SAT_FIELD_NUMBER: _ClassVar[int]
    UNCONFIRMED_SAT_FIELD_NUMBER: _ClassVar[int]
    UTXO_COUNT_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    series_id: int
    state: str
    confirmed_sat: int
    unconfirmed_sat: int
    utxo_count: int
    m: int
    n: int
    def __init__(self, series_id: _Optional[int] = ..., state: _Optional[str] = ..., confirmed_sat: _Optional[int] = ..., unconfirmed_sat: _Optional[int] = ..., utxo_count: _Optional[int] = ..., m: _Optional[int] = ..., n: _Optional[int] = ...) -> None: ...

class SignerHealth(_message.Message):
    __slots__ = ("signer_id", "state", "fingerprint", "last_seen_unix", "detail", "audit_seq", "audit_head", "audit_recorded_unix")
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_FIELD_NUMBER: _ClassVar[int]
    AUDIT_RECORDED_UNIX_FIELD_NUMBER: _ClassVar[int]
    signer_id: str
    state: str
    fingerprint: str
    last_seen_unix: int
    detail: str
    audit_seq: int
    audit_head: str
    audit_recorded_unix: int
    def __init__(self, signer_id: _Optional[str] = ..., state: _Optional[str] = ..., fingerprint: _Optional[str] = ..., last_seen_unix: _Optional[int] = ..., detail: _Optional[str] = ..., audit_seq: _Optional[int] = ..., audit_head: _Optional[str] = ..., audit_recorded_unix: _Optional[int] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round_id", "status", "transactions", "withdrawals", "fee_sat", "created_unix")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWALS_FIELD_NUMBER: _ClassVar[int]
    FEE_SAT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    status: RoundStatus
    transactions: int
    withdrawals: int
    fee_sat: int
    created_unix: int
    def __init__(self, round_id: _Optional[str] = ..., status: _Optional[_Union[RoundStatus, str]] = ..., transactions: _Optional[int] = ..., withdrawals: _Optional[int] = ..., fee_sat: _Optional[int] = ..., created_unix: _Optional[int] = ...) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("network", "tip_height", "series", "signers", "quorum", "queue_length", "last_round", "rounds_paused", "alerts", "health", "health_detail", "awaiting", "role", "active_coordinator")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    TIP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SIGNERS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_PAUSED_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_DETAIL_FIELD_NUMBER: _ClassVar[int]
    AWAITING_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    network: _common_pb2.Network
    tip_height: int
    series: _containers.RepeatedCompositeFieldContainer[SeriesBalance]
    signers: _containers.RepeatedCompositeFieldContainer[SignerHealth]
    quorum: str
    queue_length: int
    last_round: RoundSummary
    rounds_paused: bool
    alerts: _containers.RepeatedScalarFieldContainer[str]
    health: str
    health_detail: str
    awaiting: _containers.RepeatedScalarFieldContainer[str]
    role: str
    active_coordinator: str
    def __init__(self, network: _Optional[_Union[_common_pb2.Network, str]] = ..., tip_height: _Optional[int] = ..., series: _Optional[_Iterable[_Union[SeriesBalance, _Mapping]]] = ..., signers: _Optional[_Iterable[_Union[SignerHealth, _Mapping]]] = ..., quorum: _Optional[str] = ..., queue_length: _Optional[int] = ..., last_round: _Optional[_Union[RoundSummary, _Mapping]] = ..., rounds_paused: bool = ..., alerts: _Optional[_Iterable[str]] = ..., health: _Optional[str] = ..., health_detail: _Optional[str] = ..., awaiting: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., active_coordinator: _Optional[str] = ...) -> None: ...

class GetFeeStatementRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class FeeNotice(_message.Message):
    __slots__ = ("round_id", "txid", "fee_sat", "at_unix")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    TXID_FIELD_NUMBER: _ClassVar[int]
    FEE_SAT_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    txid: str
    fee_sat: int
    at_unix: int
    def __init__(self, round_id: _Optional[str] = ..., txid: _Optional[str] = ..., fee_sat: _Optional[int] = ..., at_unix: _Optional[int] = ...) -> None: ...

class FeeStatement(_message.Message):
    __slots__ = ("notices", "total_sat", "next_page_token")
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SAT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    notices: _containers.RepeatedCompositeFieldContainer[FeeNotice]
    total_sat: int
    next_page_token: str
    def __init__(self, notices: _Optional[_Iterable[_Union[FeeNotice, _Mapping]]] = ..., total_sat: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListRoundsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRoundsResponse(_message.Message):
    __slots__ = ("rounds", "next_page_token")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    next_page_token: str
    def __init__(self, rounds: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class RoundTransaction(_message.Message):
    __slots__ = ("txid", "fee_sat", "status", "confirmations", "psbt", "raw_tx")
    TXID_FIELD_NUMBER: _ClassVar[int]
    FEE_SAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    PSBT_FIELD_NUMBER: _ClassVar[int]
    RAW_TX_FIELD_NUMBER: _ClassVar[int]
    txid: str
    fee_sat: int
    status: str
    confirmations: int
    psbt: bytes
    raw_tx: bytes
    def __init__(self, txid: _Optional[str] = ..., fee_sat: _Optional[int] = ..., status: _Optional[str] = ..., confirmations: _Optional[int] = ..., psbt: _Optional[bytes] = ..., raw_tx: _Optional[bytes] = ...) -> None: ...

class SignerOutcome(_message.Message):
    __slots__ = ("signer_id", "outcome", "signatures", "refusals", "detail", "awaited_since_unix", "awaited")
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    AWAITED_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    AWAITED_FIELD_NUMBER: _ClassVar[int]
    signer_id: str
    outcome: str
    signatures: int
    refusals: _containers.RepeatedCompositeFieldContainer[_signer_pb2.Refusal]
    detail: str
    awaited_since_unix: int
    awaited: str
    def __init__(self, signer_id: _Optional[str] = ..., outcome: _Optional[str] = ..., signatures: _Optional[int] = ..., refusals: _Optional[_Iterable[_Union[_signer_pb2.Refusal, _Mapping]]] = ..., detail: _Optional[str] = ..., awaited_since_unix: _Optional[int] = ..., awaited: _Optional[str] = ...) -> None: ...

class Round(_message.Message):
    __slots__ = ("round_id", "status", "manifest", "transactions", "signers", "created_unix", "updated_unix", "detail", "rebuilt_from", "signed_by")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    SIGNERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REBUILT_FROM_FIELD_NUMBER: _ClassVar[int]
    SIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    status: RoundStatus
    manifest: bytes
    transactions: _containers.RepeatedCompositeFieldContainer[RoundTransaction]
    signers: _containers.RepeatedCompositeFieldContainer[SignerOutcome]
    created_unix: int
    updated_unix: int
    detail: str
    rebuilt_from: str
    signed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round_id: _Optional[str] = ..., status: _Optional[_Union[RoundStatus, str]] = ..., manifest: _Optional[bytes] = ..., transactions: _Optional[_Iterable[_Union[RoundTransaction, _Mapping]]] = ..., signers: _Optional[_Iterable[_Union[SignerOutcome, _Mapping]]] = ..., created_unix: _Optional[int] = ..., updated_unix: _Optional[int] = ..., detail: _Optional[str] = ..., rebuilt_from: _Optional[str] = ..., signed_by: _Optional[_Iterable[str]] = ...) -> None: ...

class CancelRoundRequest(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class RunRoundNowRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunRoundNowResponse(_message.Message):
    __slots__ = ("round_id", "detail")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    detail: str
    def __init__(self, round_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class PauseRoundsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeRoundsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RoundsState(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    def __init__(self, paused: bool = ...) -> None: ...

class AddSeriesRequest(_message.Message):
    __slots__ = ("series_id", "receive_descriptor", "change_descriptor")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    series_id: int
    receive_descriptor: str
    change_descriptor: str
    def __init__(self, series_id: _Optional[int] = ..., receive_descriptor: _Optional[str] = ..., change_descriptor: _Optional[str] = ...) -> None: ...

class SeriesInfo(_message.Message):
    __slots__ = ("series_id", "state", "receive_descriptor", "change_descriptor")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    series_id: int
    state: str
    receive_descriptor: str
    change_descriptor: str
    def __init__(self, series_id: _Optional[int] = ..., state: _Optional[str] = ..., receive_descriptor: _Optional[str] = ..., change_descriptor: _Optional[str] = ...) -> None: ...

class GetDepositAddressRequest(_message.Message):
    __slots__ = ("user_id", "refund_address", "verify_on_signers")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_ON_SIGNERS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    refund_address: str
    verify_on_signers: bool
    def __init__(self, user_id: _Optional[str] = ..., refund_address: _Optional[str] = ..., verify_on_signers: bool = ...) -> None: ...

class DepositAddress(_message.Message):
    __slots__ = ("address", "user_id", "series_id", "index", "refund_address", "verified_by")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REFUND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_BY_FIELD_NUMBER: _ClassVar[int]
    address: str
    user_id: str
    series_id: int
    index: int
    refund_address: str
    verified_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, address: _Optional[str] = ..., user_id: _Optional[str] = ..., series_id: _Optional[int] = ..., index: _Optional[int] = ..., refund_address: _Optional[str] = ..., verified_by: _Optional[_Iterable[str]] = ...) -> None: ...

class Deposit(_message.Message):
    __slots__ = ("txid", "vout", "amount_sat", "address", "user_id", "status", "reason", "height", "confirmations", "refund_address", "refund_source", "refund_txid", "refund_signed_by", "created_unix", "updated_unix", "acknowledged_by")
    TXID_FIELD_NUMBER: _ClassVar[int]
    VOUT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_SAT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    REFUND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REFUND_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REFUND_TXID_FIELD_NUMBER: _ClassVar[int]
    REFUND_SIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_BY_FIELD_NUMBER: _ClassVar[int]
    txid: str
    vout: int
    amount_sat: int
    address: str
    user_id: str
    status: DepositStatus
    reason: str
    height: int
    confirmations: int
    refund_address: str
    refund_source: str
    refund_txid: str
    refund_signed_by: _containers.RepeatedScalarFieldContainer[str]
    created_unix: int
    updated_unix: int
    acknowledged_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, txid: _Optional[str] = ..., vout: _Optional[int] = ..., amount_sat: _Optional[int] = ..., address: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[DepositStatus, str]] = ..., reason: _Optional[str] = ..., height: _Optional[int] = ..., confirmations: _Optional[int] = ..., refund_address: _Optional[str] = ..., refund_source: _Optional[str] = ..., refund_txid: _Optional[str] = ..., refund_signed_by: _Optional[_Iterable[str]] = ..., created_unix: _Optional[int] = ..., updated_unix: _Optional[int] = ..., acknowledged_by: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDepositsRequest(_message.Message):
    __slots__ = ("user_id", "statuses", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    statuses: _containers.RepeatedScalarFieldContainer[DepositStatus]
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[DepositStatus, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDepositsResponse(_message.Message):
    __slots__ = ("deposits", "next_page_token")
    DEPOSITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deposits: _containers.RepeatedCompositeFieldContainer[Deposit]
    next_page_token: str
    def __init__(self, deposits: _Optional[_Iterable[_Union[Deposit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchDepositsRequest(_message.Message):
    __slots__ = ("after_cursor",)
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    after_cursor: int
    def __init__(self, after_cursor: _Optional[int] = ...) -> None: ...

class DepositEvent(_message.Message):
    __slots__ = ("cursor", "status", "deposit", "at_unix")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPOSIT_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    cursor: int
    status: DepositStatus
    deposit: Deposit
    at_unix: int
    def __init__(self, cursor: _Optional[int] = ..., status: _Optional[_Union[DepositStatus, str]] = ..., deposit: _Optional[_Union[Deposit, _Mapping]] = ..., at_unix: _Optional[int] = ...) -> None: ...

class SetSignerMaintenanceRequest(_message.Message):
    __slots__ = ("signer_id", "maintenance")
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_FIELD_NUMBER: _ClassVar[int]
    signer_id: str
    maintenance: bool
    def __init__(self, signer_id: _Optional[str] = ..., maintenance: bool = ...) -> None: ...

class ProposeRefundRequest(_message.Message):
    __slots__ = ("txid", "vout", "address")
    TXID_FIELD_NUMBER: _ClassVar[int]
    VOUT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    txid: str
    vout: int
    address: str
    def __init__(self, txid: _Optional[str] = ..., vout: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class ListRefundsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRefundsResponse(_message.Message):
    __slots__ = ("deposits", "next_page_token")
    DEPOSITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deposits: _containers.RepeatedCompositeFieldContainer[Deposit]
    next_page_token: str
    def __init__(self, deposits: _Optional[_Iterable[_Union[Deposit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
