from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class NodeInfo(_message.Message):
    __slots__ = ("schema", "node_id", "incarnation", "address", "labels", "weight", "state", "version", "started_at", "capacity", "load")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    schema: int
    node_id: str
    incarnation: int
    address: str
    labels: _containers.ScalarMap[str, str]
    weight: int
    state: str
    version: str
    started_at: float
    capacity: int
    load: int
    def __init__(self, schema: _Optional[int] = ..., node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., weight: _Optional[int] = ..., state: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[float] = ..., capacity: _Optional[int] = ..., load: _Optional[int] = ...) -> None: ...

class ChildSpec(_message.Message):
    __slots__ = ("schema", "child_id", "start", "args_json", "restart", "metadata_json", "max_restarts", "max_seconds", "created_at", "nodes")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CHILD_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    schema: int
    child_id: str
    start: str
    args_json: str
    restart: str
    metadata_json: str
    max_restarts: int
    max_seconds: float
    created_at: float
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema: _Optional[int] = ..., child_id: _Optional[str] = ..., start: _Optional[str] = ..., args_json: _Optional[str] = ..., restart: _Optional[str] = ..., metadata_json: _Optional[str] = ..., max_restarts: _Optional[int] = ..., max_seconds: _Optional[float] = ..., created_at: _Optional[float] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class Owner(_message.Message):
    __slots__ = ("schema", "node_id", "incarnation", "state", "started_at", "restarts", "last_exit")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    schema: int
    node_id: str
    incarnation: int
    state: str
    started_at: float
    restarts: int
    last_exit: str
    def __init__(self, schema: _Optional[int] = ..., node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., state: _Optional[str] = ..., started_at: _Optional[float] = ..., restarts: _Optional[int] = ..., last_exit: _Optional[str] = ...) -> None: ...

class State(_message.Message):
    __slots__ = ("schema", "encoding", "data", "token", "saved_at")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SAVED_AT_FIELD_NUMBER: _ClassVar[int]
    schema: int
    encoding: str
    data: bytes
    token: int
    saved_at: float
    def __init__(self, schema: _Optional[int] = ..., encoding: _Optional[str] = ..., data: _Optional[bytes] = ..., token: _Optional[int] = ..., saved_at: _Optional[float] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("schema", "incarnation", "requested_at")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    schema: int
    incarnation: int
    requested_at: float
    def __init__(self, schema: _Optional[int] = ..., incarnation: _Optional[int] = ..., requested_at: _Optional[float] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("schema", "node_id", "incarnation", "role", "started_at")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    schema: int
    node_id: str
    incarnation: int
    role: str
    started_at: float
    def __init__(self, schema: _Optional[int] = ..., node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., role: _Optional[str] = ..., started_at: _Optional[float] = ...) -> None: ...
