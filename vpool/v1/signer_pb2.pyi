from vpool.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackendKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_KIND_UNSPECIFIED: _ClassVar[BackendKind]
    BACKEND_KIND_EMULATOR: _ClassVar[BackendKind]
    BACKEND_KIND_HWI: _ClassVar[BackendKind]

class RoundKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_KIND_UNSPECIFIED: _ClassVar[RoundKind]
    ROUND_KIND_WITHDRAWAL: _ClassVar[RoundKind]
    ROUND_KIND_REFUND: _ClassVar[RoundKind]
BACKEND_KIND_UNSPECIFIED: BackendKind
BACKEND_KIND_EMULATOR: BackendKind
BACKEND_KIND_HWI: BackendKind
ROUND_KIND_UNSPECIFIED: RoundKind
ROUND_KIND_WITHDRAWAL: RoundKind
ROUND_KIND_REFUND: RoundKind

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignerInfo(_message.Message):
    __slots__ = ("signer_id", "backend_kind", "device_model", "master_fingerprint", "account_xpubs", "policy_hash", "software_version", "node", "device", "device_limits", "audit_seq", "audit_head", "serving")
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MODEL_FIELD_NUMBER: _ClassVar[int]
    MASTER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_XPUBS_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    signer_id: str
    backend_kind: BackendKind
    device_model: str
    master_fingerprint: str
    account_xpubs: _containers.RepeatedCompositeFieldContainer[AccountXpub]
    policy_hash: str
    software_version: str
    node: NodeState
    device: DeviceState
    device_limits: DeviceLimits
    audit_seq: int
    audit_head: str
    serving: _containers.RepeatedCompositeFieldContainer[ServingInterval]
    def __init__(self, signer_id: _Optional[str] = ..., backend_kind: _Optional[_Union[BackendKind, str]] = ..., device_model: _Optional[str] = ..., master_fingerprint: _Optional[str] = ..., account_xpubs: _Optional[_Iterable[_Union[AccountXpub, _Mapping]]] = ..., policy_hash: _Optional[str] = ..., software_version: _Optional[str] = ..., node: _Optional[_Union[NodeState, _Mapping]] = ..., device: _Optional[_Union[DeviceState, _Mapping]] = ..., device_limits: _Optional[_Union[DeviceLimits, _Mapping]] = ..., audit_seq: _Optional[int] = ..., audit_head: _Optional[str] = ..., serving: _Optional[_Iterable[_Union[ServingInterval, _Mapping]]] = ...) -> None: ...

class ServingInterval(_message.Message):
    __slots__ = ("from_unix", "until_unix")
    FROM_UNIX_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    from_unix: float
    until_unix: float
    def __init__(self, from_unix: _Optional[float] = ..., until_unix: _Optional[float] = ...) -> None: ...

class DeviceState(_message.Message):
    __slots__ = ("state", "usable", "error", "checked_at", "busy_since_unix")
    STATE_FIELD_NUMBER: _ClassVar[int]
    USABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    BUSY_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    state: str
    usable: bool
    error: str
    checked_at: float
    busy_since_unix: int
    def __init__(self, state: _Optional[str] = ..., usable: bool = ..., error: _Optional[str] = ..., checked_at: _Optional[float] = ..., busy_since_unix: _Optional[int] = ...) -> None: ...

class DeviceLimits(_message.Message):
    __slots__ = ("max_inputs", "max_outputs", "max_psbt_bytes", "max_reviewed_payments")
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_PSBT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REVIEWED_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    max_inputs: int
    max_outputs: int
    max_psbt_bytes: int
    max_reviewed_payments: int
    def __init__(self, max_inputs: _Optional[int] = ..., max_outputs: _Optional[int] = ..., max_psbt_bytes: _Optional[int] = ..., max_reviewed_payments: _Optional[int] = ...) -> None: ...

class NodeState(_message.Message):
    __slots__ = ("configured", "reachable", "tip_height", "tip_hash", "syncing", "error", "checked_at", "min_conf", "max_tip_lag")
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    TIP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIP_HASH_FIELD_NUMBER: _ClassVar[int]
    SYNCING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    MIN_CONF_FIELD_NUMBER: _ClassVar[int]
    MAX_TIP_LAG_FIELD_NUMBER: _ClassVar[int]
    configured: bool
    reachable: bool
    tip_height: int
    tip_hash: str
    syncing: bool
    error: str
    checked_at: float
    min_conf: int
    max_tip_lag: int
    def __init__(self, configured: bool = ..., reachable: bool = ..., tip_height: _Optional[int] = ..., tip_hash: _Optional[str] = ..., syncing: bool = ..., error: _Optional[str] = ..., checked_at: _Optional[float] = ..., min_conf: _Optional[int] = ..., max_tip_lag: _Optional[int] = ...) -> None: ...

class AccountXpub(_message.Message):
    __slots__ = ("network", "origin", "xpub")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    XPUB_FIELD_NUMBER: _ClassVar[int]
    network: _common_pb2.Network
    origin: str
    xpub: str
    def __init__(self, network: _Optional[_Union[_common_pb2.Network, str]] = ..., origin: _Optional[str] = ..., xpub: _Optional[str] = ...) -> None: ...

class GetXpubRequest(_message.Message):
    __slots__ = ("path", "network")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    path: str
    network: _common_pb2.Network
    def __init__(self, path: _Optional[str] = ..., network: _Optional[_Union[_common_pb2.Network, str]] = ...) -> None: ...

class GetXpubResponse(_message.Message):
    __slots__ = ("xpub", "origin")
    XPUB_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    xpub: str
    origin: str
    def __init__(self, xpub: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class RegisterSeriesRequest(_message.Message):
    __slots__ = ("network", "series_id", "receive_descriptor", "change_descriptor")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    network: _common_pb2.Network
    series_id: int
    receive_descriptor: str
    change_descriptor: str
    def __init__(self, network: _Optional[_Union[_common_pb2.Network, str]] = ..., series_id: _Optional[int] = ..., receive_descriptor: _Optional[str] = ..., change_descriptor: _Optional[str] = ...) -> None: ...

class RegisterSeriesResponse(_message.Message):
    __slots__ = ("registered", "device_registration_name", "already_registered")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_REGISTRATION_NAME_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    registered: bool
    device_registration_name: str
    already_registered: bool
    def __init__(self, registered: bool = ..., device_registration_name: _Optional[str] = ..., already_registered: bool = ...) -> None: ...

class DisplayAddressRequest(_message.Message):
    __slots__ = ("network", "series_id", "branch", "index")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    network: _common_pb2.Network
    series_id: int
    branch: _common_pb2.Branch
    index: int
    def __init__(self, network: _Optional[_Union[_common_pb2.Network, str]] = ..., series_id: _Optional[int] = ..., branch: _Optional[_Union[_common_pb2.Branch, str]] = ..., index: _Optional[int] = ...) -> None: ...

class DisplayAddressResponse(_message.Message):
    __slots__ = ("address", "shown_on_device")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SHOWN_ON_DEVICE_FIELD_NUMBER: _ClassVar[int]
    address: str
    shown_on_device: bool
    def __init__(self, address: _Optional[str] = ..., shown_on_device: bool = ...) -> None: ...

class SignRoundRequest(_message.Message):
    __slots__ = ("kind", "manifest", "psbts")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PSBTS_FIELD_NUMBER: _ClassVar[int]
    kind: RoundKind
    manifest: bytes
    psbts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, kind: _Optional[_Union[RoundKind, str]] = ..., manifest: _Optional[bytes] = ..., psbts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SignRoundResponse(_message.Message):
    __slots__ = ("manifest_hash", "signed_psbts", "refusals", "signed_all", "pending", "pending_since_unix")
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNED_PSBTS_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    SIGNED_ALL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PENDING_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    manifest_hash: bytes
    signed_psbts: _containers.RepeatedCompositeFieldContainer[SignedPsbt]
    refusals: _containers.RepeatedCompositeFieldContainer[Refusal]
    signed_all: bool
    pending: bool
    pending_since_unix: int
    def __init__(self, manifest_hash: _Optional[bytes] = ..., signed_psbts: _Optional[_Iterable[_Union[SignedPsbt, _Mapping]]] = ..., refusals: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ..., signed_all: bool = ..., pending: bool = ..., pending_since_unix: _Optional[int] = ...) -> None: ...

class SignedPsbt(_message.Message):
    __slots__ = ("psbt_index", "signatures")
    PSBT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    psbt_index: int
    signatures: _containers.RepeatedCompositeFieldContainer[PartialSignature]
    def __init__(self, psbt_index: _Optional[int] = ..., signatures: _Optional[_Iterable[_Union[PartialSignature, _Mapping]]] = ...) -> None: ...

class PartialSignature(_message.Message):
    __slots__ = ("input_index", "pubkey", "signature")
    INPUT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PUBKEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    input_index: int
    pubkey: bytes
    signature: bytes
    def __init__(self, input_index: _Optional[int] = ..., pubkey: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("scope", "reason_code", "message", "client_id", "request_id", "psbt_index", "input_index")
    class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SCOPE_UNSPECIFIED: _ClassVar[Refusal.Scope]
        SCOPE_ROUND: _ClassVar[Refusal.Scope]
        SCOPE_REQUEST: _ClassVar[Refusal.Scope]
        SCOPE_INPUT: _ClassVar[Refusal.Scope]
    SCOPE_UNSPECIFIED: Refusal.Scope
    SCOPE_ROUND: Refusal.Scope
    SCOPE_REQUEST: Refusal.Scope
    SCOPE_INPUT: Refusal.Scope
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PSBT_INDEX_FIELD_NUMBER: _ClassVar[int]
    INPUT_INDEX_FIELD_NUMBER: _ClassVar[int]
    scope: Refusal.Scope
    reason_code: str
    message: str
    client_id: str
    request_id: str
    psbt_index: int
    input_index: int
    def __init__(self, scope: _Optional[_Union[Refusal.Scope, str]] = ..., reason_code: _Optional[str] = ..., message: _Optional[str] = ..., client_id: _Optional[str] = ..., request_id: _Optional[str] = ..., psbt_index: _Optional[int] = ..., input_index: _Optional[int] = ...) -> None: ...

class RegisterDepositAddressRequest(_message.Message):
    __slots__ = ("network", "series_id", "index", "refund_address")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REFUND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    network: _common_pb2.Network
    series_id: int
    index: int
    refund_address: str
    def __init__(self, network: _Optional[_Union[_common_pb2.Network, str]] = ..., series_id: _Optional[int] = ..., index: _Optional[int] = ..., refund_address: _Optional[str] = ...) -> None: ...

class RegisterDepositAddressResponse(_message.Message):
    __slots__ = ("address", "already_registered")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    address: str
    already_registered: bool
    def __init__(self, address: _Optional[str] = ..., already_registered: bool = ...) -> None: ...

class AcknowledgeDepositsRequest(_message.Message):
    __slots__ = ("network", "deposits")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DEPOSITS_FIELD_NUMBER: _ClassVar[int]
    network: _common_pb2.Network
    deposits: _containers.RepeatedCompositeFieldContainer[DepositClaim]
    def __init__(self, network: _Optional[_Union[_common_pb2.Network, str]] = ..., deposits: _Optional[_Iterable[_Union[DepositClaim, _Mapping]]] = ...) -> None: ...

class DepositClaim(_message.Message):
    __slots__ = ("series_id", "index", "txid", "vout", "value")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TXID_FIELD_NUMBER: _ClassVar[int]
    VOUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    series_id: int
    index: int
    txid: str
    vout: int
    value: int
    def __init__(self, series_id: _Optional[int] = ..., index: _Optional[int] = ..., txid: _Optional[str] = ..., vout: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...

class AcknowledgeDepositsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DepositAcknowledgement]
    def __init__(self, results: _Optional[_Iterable[_Union[DepositAcknowledgement, _Mapping]]] = ...) -> None: ...

class DepositAcknowledgement(_message.Message):
    __slots__ = ("txid", "vout", "acknowledged", "already_acknowledged", "reason_code", "message", "confirmations")
    TXID_FIELD_NUMBER: _ClassVar[int]
    VOUT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    txid: str
    vout: int
    acknowledged: bool
    already_acknowledged: bool
    reason_code: str
    message: str
    confirmations: int
    def __init__(self, txid: _Optional[str] = ..., vout: _Optional[int] = ..., acknowledged: bool = ..., already_acknowledged: bool = ..., reason_code: _Optional[str] = ..., message: _Optional[str] = ..., confirmations: _Optional[int] = ...) -> None: ...
