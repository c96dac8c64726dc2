"""Type stubs of the Rust extension ``eventdbx._core``.

Every request method of ``Client`` blocks (the GIL released) and returns its answer, or with
``asynchronous=True`` returns an awaitable of it: hence two overloads each.
"""

from pathlib import Path
from typing import Awaitable, List, Literal, Optional, Tuple, Union, final, overload

__all__ = [
    "Client",
    "EmbeddedServer",
    "Subscription",
    "__version__",
    "build_control_hello",
    "issue_token",
]

__version__: str

@final
class Client:
    @overload
    @staticmethod
    def connect(
        *,
        host: str,
        port: int,
        token: str,
        tenant_id: str,
        transport: str = "auto",
        server_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        attempts: int = 1,
        initial_delay_ms: int = 100,
        max_delay_ms: int = 1000,
        verbose: bool = True,
        max_message_bytes: int = 16777216,
        asynchronous: Literal[False] = False,
        known_v2_hosts: Optional[str] = None,
        allow_v1_fallback: bool = True,
        busy_poll_us: Optional[int] = None,
    ) -> Client: ...
    @overload
    @staticmethod
    def connect(
        *,
        host: str,
        port: int,
        token: str,
        tenant_id: str,
        transport: str = "auto",
        server_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        attempts: int = 1,
        initial_delay_ms: int = 100,
        max_delay_ms: int = 1000,
        verbose: bool = True,
        max_message_bytes: int = 16777216,
        asynchronous: Literal[True],
        known_v2_hosts: Optional[str] = None,
        allow_v1_fallback: bool = True,
        busy_poll_us: Optional[int] = None,
    ) -> Awaitable[Client]: ...
    @overload
    def close(self, *, asynchronous: Literal[False] = False) -> None: ...
    @overload
    def close(self, *, asynchronous: Literal[True]) -> Awaitable[None]: ...
    @property
    def closed(self) -> bool: ...
    @property
    def connected(self) -> bool: ...
    @property
    def protocol(self) -> Optional[str]: ...
    @property
    def server_capabilities(self) -> List[str]: ...
    @property
    def server_fingerprint(self) -> Optional[str]: ...
    @overload
    def write(
        self,
        kind: str,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        body_json: str,
        *,
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Optional[List[Tuple[str, Optional[str], Optional[str]]]] = None,
        expected_version: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> str: ...
    @overload
    def write(
        self,
        kind: str,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        body_json: str,
        *,
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Optional[List[Tuple[str, Optional[str], Optional[str]]]] = None,
        expected_version: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[str]: ...
    @overload
    def set_archived(
        self,
        aggregate_type: str,
        aggregate_id: str,
        archived: bool,
        *,
        note: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> str: ...
    @overload
    def set_archived(
        self,
        aggregate_type: str,
        aggregate_id: str,
        archived: bool,
        *,
        note: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[str]: ...
    @overload
    def create_snapshot(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> str: ...
    @overload
    def create_snapshot(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[str]: ...
    @overload
    def get(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Optional[str]: ...
    @overload
    def get(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Optional[str]]: ...
    @overload
    def select(
        self,
        aggregate_type: str,
        aggregate_id: str,
        fields: List[str],
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Optional[str]: ...
    @overload
    def select(
        self,
        aggregate_type: str,
        aggregate_id: str,
        fields: List[str],
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Optional[str]]: ...
    @overload
    def list(
        self,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Optional[str] = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Tuple[str, Optional[str]]: ...
    @overload
    def list(
        self,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Optional[str] = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Tuple[str, Optional[str]]]: ...
    @overload
    def events(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Tuple[str, Optional[str], Optional[List[Optional[int]]]]: ...
    @overload
    def events(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Tuple[str, Optional[str], Optional[List[Optional[int]]]]]: ...
    def subscribe(
        self,
        *,
        from_end: bool = False,
        after: int = 0,
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        event_types: List[str] = ...,
        batch_size: int = 0,
        credit_window: int = 0,
    ) -> Subscription: ...
    @overload
    def verify(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> str: ...
    @overload
    def verify(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[str]: ...
    @overload
    def list_snapshots(
        self,
        *,
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        version: Optional[int] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> str: ...
    @overload
    def list_snapshots(
        self,
        *,
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        version: Optional[int] = None,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[str]: ...
    @overload
    def get_snapshot(
        self,
        snapshot_id: int,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Optional[str]: ...
    @overload
    def get_snapshot(
        self,
        snapshot_id: int,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Optional[str]]: ...
    @overload
    def list_schemas(
        self,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> str: ...
    @overload
    def list_schemas(
        self,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[str]: ...
    @overload
    def replace_schemas(
        self,
        schemas_json: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> int: ...
    @overload
    def replace_schemas(
        self,
        schemas_json: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[int]: ...
    @overload
    def tenant_assign(
        self,
        tenant_id: str,
        shard_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Tuple[bool, str]: ...
    @overload
    def tenant_assign(
        self,
        tenant_id: str,
        shard_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Tuple[bool, str]]: ...
    @overload
    def tenant_unassign(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> bool: ...
    @overload
    def tenant_unassign(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[bool]: ...
    @overload
    def tenant_quota_set(
        self,
        tenant_id: str,
        max_storage_mb: int,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Tuple[bool, Optional[int]]: ...
    @overload
    def tenant_quota_set(
        self,
        tenant_id: str,
        max_storage_mb: int,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Tuple[bool, Optional[int]]]: ...
    @overload
    def tenant_quota_clear(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> bool: ...
    @overload
    def tenant_quota_clear(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[bool]: ...
    @overload
    def tenant_quota_recalc(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> int: ...
    @overload
    def tenant_quota_recalc(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[int]: ...
    @overload
    def tenant_reload(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> bool: ...
    @overload
    def tenant_reload(
        self,
        tenant_id: str,
        *,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[bool]: ...
    @overload
    def tenant_schema_publish(
        self,
        tenant_id: str,
        *,
        reason: Optional[str] = None,
        actor: Optional[str] = None,
        labels: List[str] = ...,
        activate: bool = False,
        force: bool = False,
        reload: bool = False,
        timeout: Optional[float] = None,
        asynchronous: Literal[False] = False,
    ) -> Tuple[str, bool, bool]: ...
    @overload
    def tenant_schema_publish(
        self,
        tenant_id: str,
        *,
        reason: Optional[str] = None,
        actor: Optional[str] = None,
        labels: List[str] = ...,
        activate: bool = False,
        force: bool = False,
        reload: bool = False,
        timeout: Optional[float] = None,
        asynchronous: Literal[True],
    ) -> Awaitable[Tuple[str, bool, bool]]: ...

def build_control_hello(
    *, protocol_version: int, token: str, tenant_id: str, no_noise: bool = False
) -> bytes: ...
@final
class Subscription:
    @overload
    def next(self, *, asynchronous: Literal[False] = False) -> Optional[Tuple[int, str]]: ...
    @overload
    def next(self, *, asynchronous: Literal[True]) -> Awaitable[Optional[Tuple[int, str]]]: ...
    def close(self) -> None: ...

@final
class EmbeddedServer:
    @staticmethod
    def start(
        data_dir: Union[str, Path],
        *,
        port: int = 0,
        allow_plaintext: bool = False,
        durable: bool = False,
        verbose_responses: bool = True,
        http_port: Optional[int] = None,
    ) -> "EmbeddedServer": ...
    @property
    def port(self) -> int: ...
    @property
    def http_port(self) -> Optional[int]: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def issue_token(
        self, *, actions: Optional[List[str]] = None, tenants: List[str] = ..., ttl_secs: int = 0
    ) -> str: ...
    def stop(self) -> None: ...

def issue_token(
    data_dir: Union[str, Path],
    *,
    actions: Optional[List[str]] = None,
    tenants: List[str] = ...,
    ttl_secs: int = 0,
) -> str: ...
