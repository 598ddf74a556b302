from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    OK: _ClassVar[Status]
    UNKNOWN_CHILD: _ClassVar[Status]
    NOT_RUNNING: _ClassVar[Status]
    MOVED: _ClassVar[Status]
    STALE_HANDLE: _ClassVar[Status]
    NOT_CALLABLE: _ClassVar[Status]
    HANDLER_ERROR: _ClassVar[Status]
    MAILBOX_FULL: _ClassVar[Status]
    TOO_LARGE: _ClassVar[Status]
    BAD_PAYLOAD: _ClassVar[Status]
    WRONG_HUB: _ClassVar[Status]
STATUS_UNSPECIFIED: Status
OK: Status
UNKNOWN_CHILD: Status
NOT_RUNNING: Status
MOVED: Status
STALE_HANDLE: Status
NOT_CALLABLE: Status
HANDLER_ERROR: Status
MAILBOX_FULL: Status
TOO_LARGE: Status
BAD_PAYLOAD: Status
WRONG_HUB: Status

class CallRequest(_message.Message):
    __slots__ = ("schema", "hub_id", "child_id", "fencing_token", "payload", "codec", "idempotency_key", "all_replicas")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ALL_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    schema: int
    hub_id: str
    child_id: str
    fencing_token: int
    payload: bytes
    codec: str
    idempotency_key: str
    all_replicas: bool
    def __init__(self, schema: _Optional[int] = ..., hub_id: _Optional[str] = ..., child_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., payload: _Optional[bytes] = ..., codec: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., all_replicas: bool = ...) -> None: ...

class CastRequest(_message.Message):
    __slots__ = ("schema", "hub_id", "child_id", "fencing_token", "payload", "codec", "idempotency_key")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    schema: int
    hub_id: str
    child_id: str
    fencing_token: int
    payload: bytes
    codec: str
    idempotency_key: str
    def __init__(self, schema: _Optional[int] = ..., hub_id: _Optional[str] = ..., child_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., payload: _Optional[bytes] = ..., codec: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("schema", "status", "payload", "codec", "error_type", "error_message", "node_id", "fencing_token")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    schema: int
    status: Status
    payload: bytes
    codec: str
    error_type: str
    error_message: str
    node_id: str
    fencing_token: int
    def __init__(self, schema: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., payload: _Optional[bytes] = ..., codec: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., node_id: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class CastReply(_message.Message):
    __slots__ = ("schema", "status", "payload", "codec", "error_type", "error_message", "node_id", "fencing_token")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    schema: int
    status: Status
    payload: bytes
    codec: str
    error_type: str
    error_message: str
    node_id: str
    fencing_token: int
    def __init__(self, schema: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., payload: _Optional[bytes] = ..., codec: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., node_id: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...
