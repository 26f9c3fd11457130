from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Network(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_UNSPECIFIED: _ClassVar[Network]
    NETWORK_MAINNET: _ClassVar[Network]
    NETWORK_TESTNET: _ClassVar[Network]
    NETWORK_SIGNET: _ClassVar[Network]
    NETWORK_REGTEST: _ClassVar[Network]

class Branch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BRANCH_UNSPECIFIED: _ClassVar[Branch]
    BRANCH_RECEIVE: _ClassVar[Branch]
    BRANCH_CHANGE: _ClassVar[Branch]
NETWORK_UNSPECIFIED: Network
NETWORK_MAINNET: Network
NETWORK_TESTNET: Network
NETWORK_SIGNET: Network
NETWORK_REGTEST: Network
BRANCH_UNSPECIFIED: Branch
BRANCH_RECEIVE: Branch
BRANCH_CHANGE: Branch

class FeeAttestation(_message.Message):
    __slots__ = ("signer_id", "public_key", "statement", "signature")
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signer_id: str
    public_key: bytes
    statement: bytes
    signature: bytes
    def __init__(self, signer_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., statement: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
