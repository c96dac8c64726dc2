"""``EventDBXClient``: the synchronous client, which blocks with the GIL released (the requests
it builds are ``_commands._Commands``'s, shared with ``AsyncEventDBXClient``)."""

from __future__ import annotations

from typing import (
    Any,
    FrozenSet,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Union,
    overload,
)

from . import _core
from ._commands import (
    Ack,
    Item,
    Sort,
    T,
    Targets,
    _Commands,
    _connect_settings,
    _found_aggregate,
    _Paging,
    _Request,
    _require_aggregate,
)
from .exceptions import EventDBXArgumentError
from .subscription import (
    FromPosition,
    Subscription,
    _subscribe_settings,
)
from .types import (
    GetAggregateResult,
    GetSnapshotResult,
    ListAggregatesResult,
    ListEventsResult,
    ListSnapshotsResult,
    RetryOptions,
    SelectAggregateResult,
    TenantAssignResult,
    TenantQuotaResult,
    TenantSchemaPublishResult,
)

__all__ = ["EventDBXClient"]


def _busy_poll_us(value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventDBXArgumentError("busy_poll_us must be None or a whole number of µs ≥ 0")
    return value


class EventDBXClient(_Commands[Ack]):
    """A synchronous client: connects and performs the handshake in the constructor; a
    context manager; safe to share between threads (calls release the GIL).

    ``busy_poll_us``: how long a call reads the socket for its answer, after its request went
    out, before the thread sleeps until the answer arrives (``None``: the Rust client's
    default, 100 µs; ``0``: never). Polling answers a quick server sooner, in CPU time."""

    @overload
    def __init__(
        self: EventDBXClient[str],
        *,
        token: str,
        tenant_id: str,
        host: str = "127.0.0.1",
        port: int = 6363,
        verbose: Literal[True] = True,
        no_noise: Optional[bool] = None,
        retry: Union[RetryOptions, Mapping[str, Any], None] = None,
        protocol_version: Optional[int] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        use_noise: Optional[bool] = None,
        server_key: Optional[str] = None,
        known_v2_hosts: Optional[str] = None,
        allow_v1_fallback: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
        transport: Any = None,
        busy_poll_us: Optional[int] = None,
    ) -> None: ...

    @overload
    def __init__(
        self: EventDBXClient[bool],
        *,
        token: str,
        tenant_id: str,
        host: str = "127.0.0.1",
        port: int = 6363,
        verbose: Literal[False],
        no_noise: Optional[bool] = None,
        retry: Union[RetryOptions, Mapping[str, Any], None] = None,
        protocol_version: Optional[int] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        use_noise: Optional[bool] = None,
        server_key: Optional[str] = None,
        known_v2_hosts: Optional[str] = None,
        allow_v1_fallback: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
        transport: Any = None,
        busy_poll_us: Optional[int] = None,
    ) -> None: ...

    @overload
    def __init__(
        self: EventDBXClient[Union[str, bool]],
        *,
        token: str,
        tenant_id: str,
        host: str = "127.0.0.1",
        port: int = 6363,
        verbose: bool,
        no_noise: Optional[bool] = None,
        retry: Union[RetryOptions, Mapping[str, Any], None] = None,
        protocol_version: Optional[int] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        use_noise: Optional[bool] = None,
        server_key: Optional[str] = None,
        known_v2_hosts: Optional[str] = None,
        allow_v1_fallback: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
        transport: Any = None,
        busy_poll_us: Optional[int] = None,
    ) -> None: ...

    def __init__(
        self,
        *,
        token: str,
        tenant_id: str,
        host: str = "127.0.0.1",
        port: int = 6363,
        verbose: bool = True,
        no_noise: Optional[bool] = None,
        retry: Union[RetryOptions, Mapping[str, Any], None] = None,
        protocol_version: Optional[int] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        use_noise: Optional[bool] = None,
        server_key: Optional[str] = None,
        known_v2_hosts: Optional[str] = None,
        allow_v1_fallback: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
        transport: Any = None,
        busy_poll_us: Optional[int] = None,
    ) -> None:
        settings = _connect_settings(
            token=token,
            tenant_id=tenant_id,
            host=host,
            port=port,
            verbose=verbose,
            no_noise=no_noise,
            retry=retry,
            protocol_version=protocol_version,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            use_noise=use_noise,
            server_key=server_key,
            max_message_bytes=max_message_bytes,
            transport=transport,
        )
        # The memory of servers that spoke v2 (see the README, "Noise and plaintext").
        settings["known_v2_hosts"] = known_v2_hosts
        settings["allow_v1_fallback"] = bool(allow_v1_fallback)
        settings["busy_poll_us"] = _busy_poll_us(busy_poll_us)
        self._verbose = bool(verbose)
        self.token = token
        self.tenant_id = tenant_id
        self.host = host
        self.port = int(port)
        self._core: _core.Client = _core.Client.connect(**settings)

    def _run(self, request: _Request[T]) -> T:
        if request.before is not None:
            request.before()
        method = getattr(self._core, request.method)
        return request.post(method(*request.args, **request.kwargs))

    def _live_capabilities(self) -> Optional[FrozenSet[str]]:
        if not self._core.connected:
            return None
        return frozenset(self._core.server_capabilities)

    def close(self) -> None:
        """Closes the connection; later calls raise ``EventDBXConnectionError``. Idempotent."""
        self._core.close()

    @property
    def connected(self) -> bool:
        """True while a connection is held."""
        return self._core.connected

    @property
    def protocol(self) -> Optional[str]:
        """``"v2"``, ``"v1"`` or ``"plaintext"`` (``None`` when not connected)."""
        return self._core.protocol

    @property
    def server_capabilities(self) -> FrozenSet[str]:
        """The capability tokens of the server's hello response."""
        return frozenset(self._core.server_capabilities)

    @property
    def server_fingerprint(self) -> Optional[str]:
        """The server key fingerprint (v2 only)."""
        return self._core.server_fingerprint

    def __enter__(self) -> EventDBXClient[Ack]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        payload_json: str,
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Targets = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Creates an aggregate with its first event, atomically. Returns the aggregate JSON
        (``True`` when ``verbose=False``)."""
        return self._run(
            self._build_create(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                event_type=event_type,
                payload_json=payload_json,
                note=note,
                metadata_json=metadata_json,
                publish_targets=publish_targets,
                idempotency_key=idempotency_key,
                timeout=timeout,
            )
        )

    def apply(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        payload_json: str,
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Targets = None,
        create: bool = False,
        expected_version: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Appends an event. Returns the event JSON (the aggregate JSON with ``create=True``;
        ``True`` when ``verbose=False``)."""
        return self._run(
            self._build_apply(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                event_type=event_type,
                payload_json=payload_json,
                note=note,
                metadata_json=metadata_json,
                publish_targets=publish_targets,
                create=create,
                expected_version=expected_version,
                idempotency_key=idempotency_key,
                timeout=timeout,
            )
        )

    def patch(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        patches: Sequence[Mapping[str, Any]],
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Targets = None,
        expected_version: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Applies RFC 6902 operations to the aggregate's state, recorded as an event. Returns
        the event JSON (``True`` when ``verbose=False``)."""
        return self._run(
            self._build_patch(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                event_type=event_type,
                patches=patches,
                note=note,
                metadata_json=metadata_json,
                publish_targets=publish_targets,
                expected_version=expected_version,
                idempotency_key=idempotency_key,
                timeout=timeout,
            )
        )

    def set_aggregate_archive(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        archived: bool,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Archives (``archived=True``) or restores an aggregate."""
        return self._run(
            self._build_set_aggregate_archive(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                archived=archived,
                note=note,
                comment=comment,
                timeout=timeout,
            )
        )

    def archive(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Archives an aggregate: read-only, history kept. Returns the aggregate JSON."""
        return self._run(
            self._build_archive(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                note=note,
                comment=comment,
                timeout=timeout,
            )
        )

    def restore(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Restores an archived aggregate. Returns the aggregate JSON."""
        return self._run(
            self._build_restore(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                note=note,
                comment=comment,
                timeout=timeout,
            )
        )

    def create_snapshot(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Takes a snapshot of an aggregate's current state. Returns the snapshot JSON."""
        return self._run(
            self._build_create_snapshot(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                comment=comment,
                timeout=timeout,
            )
        )

    def get(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> GetAggregateResult:
        """One aggregate's current state: ``GetAggregateResult``."""
        # What `_build_get` and `_run` do, without building and unpacking the generic request:
        # this is a sequential caller's hottest call, and Python run after each blocking wait
        # costs several times what it does in a warm loop (about 3.5 µs of CPU per get here).
        _require_aggregate(aggregate_type, aggregate_id)
        return _found_aggregate(self._core.get(aggregate_type, aggregate_id, timeout=timeout))

    def select(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        fields: Sequence[str],
        timeout: Optional[float] = None,
    ) -> SelectAggregateResult:
        """Selected fields (``payload.<path>``, ``metadata.<key>`` or a state path):
        ``SelectAggregateResult``."""
        return self._run(self._build_select(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id, fields=fields, timeout=timeout
        ))

    def list(
        self,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Sort = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> ListAggregatesResult:
        """One page of aggregates: ``ListAggregatesResult``; pass ``next_cursor`` back as
        ``cursor`` for the next page."""
        return self._run(
            self._build_list(
                cursor=cursor,
                take=take,
                filter_expr=filter_expr,
                sort=sort,
                include_archived=include_archived,
                archived_only=archived_only,
                timeout=timeout,
            )
        )

    def events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ListEventsResult:
        """One page of an aggregate's event envelopes: ``ListEventsResult``."""
        return self._run(
            self._build_events(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                cursor=cursor,
                take=take,
                filter_expr=filter_expr,
                timeout=timeout,
            )
        )

    def verify(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> str:
        """The Merkle root of the aggregate's events (64 hex digits), recomputed."""
        return self._run(self._build_verify(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id, timeout=timeout
        ))

    def list_snapshots(
        self,
        *,
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        version: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> ListSnapshotsResult:
        """Snapshots, optionally of one aggregate type, aggregate or version."""
        return self._run(
            self._build_list_snapshots(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                version=version,
                timeout=timeout,
            )
        )

    def get_snapshot(
        self, *, snapshot_id: int, timeout: Optional[float] = None
    ) -> GetSnapshotResult:
        """One snapshot: ``GetSnapshotResult``."""
        return self._run(self._build_get_snapshot(snapshot_id=snapshot_id, timeout=timeout))

    def list_schemas(self, *, timeout: Optional[float] = None) -> str:
        """The schema map JSON."""
        return self._run(self._build_list_schemas(timeout=timeout))

    def replace_schemas(self, *, schemas_json: str, timeout: Optional[float] = None) -> int:
        """Replaces the schema map; returns how many schemas were replaced."""
        return self._run(self._build_replace_schemas(schemas_json=schemas_json, timeout=timeout))

    def tenant_assign(
        self, *, tenant_id: str, shard_id: str, timeout: Optional[float] = None
    ) -> TenantAssignResult:
        """Places a tenant on a shard: ``TenantAssignResult``."""
        return self._run(self._build_tenant_assign(
            tenant_id=tenant_id, shard_id=shard_id, timeout=timeout
        ))

    def tenant_unassign(self, *, tenant_id: str, timeout: Optional[float] = None) -> bool:
        """Removes a tenant's shard assignment; returns whether it changed."""
        return self._run(self._build_tenant_unassign(tenant_id=tenant_id, timeout=timeout))

    def tenant_quota_set(
        self, *, tenant_id: str, max_storage_mb: int, timeout: Optional[float] = None
    ) -> TenantQuotaResult:
        """Sets a tenant's storage quota: ``TenantQuotaResult``."""
        return self._run(self._build_tenant_quota_set(
            tenant_id=tenant_id, max_storage_mb=max_storage_mb, timeout=timeout
        ))

    def tenant_quota_clear(self, *, tenant_id: str, timeout: Optional[float] = None) -> bool:
        """Removes a tenant's quota; returns whether it changed."""
        return self._run(self._build_tenant_quota_clear(tenant_id=tenant_id, timeout=timeout))

    def tenant_quota_recalc(self, *, tenant_id: str, timeout: Optional[float] = None) -> int:
        """Recomputes a tenant's storage; returns it in bytes."""
        return self._run(self._build_tenant_quota_recalc(tenant_id=tenant_id, timeout=timeout))

    def tenant_reload(self, *, tenant_id: str, timeout: Optional[float] = None) -> bool:
        """Reloads a tenant; returns whether it was reloaded."""
        return self._run(self._build_tenant_reload(tenant_id=tenant_id, timeout=timeout))

    def tenant_schema_publish(
        self,
        *,
        tenant_id: str,
        reason: Optional[str] = None,
        actor: Optional[str] = None,
        labels: Optional[Sequence[str]] = None,
        activate: bool = False,
        force: bool = False,
        reload: bool = False,
        timeout: Optional[float] = None,
    ) -> TenantSchemaPublishResult:
        """Publishes the tenant's schemas as a new version: ``TenantSchemaPublishResult``."""
        return self._run(
            self._build_tenant_schema_publish(
                tenant_id=tenant_id,
                reason=reason,
                actor=actor,
                labels=labels,
                activate=activate,
                force=force,
                reload=reload,
                timeout=timeout,
            )
        )

    def send_event(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        payload_json: str,
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Targets = None,
        expected_version: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """The reference SDK's name (appendEvent) for ``apply`` without ``create``."""
        return self.apply(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_type,
            payload_json=payload_json,
            note=note,
            metadata_json=metadata_json,
            publish_targets=publish_targets,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )

    def create_aggregate(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        payload_json: str,
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Targets = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """The reference SDK's name for ``create``."""
        return self.create(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_type,
            payload_json=payload_json,
            note=note,
            metadata_json=metadata_json,
            publish_targets=publish_targets,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )

    def patch_event(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        patches: Sequence[Mapping[str, Any]],
        note: Optional[str] = None,
        metadata_json: Optional[str] = None,
        publish_targets: Targets = None,
        expected_version: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Ack:
        """The reference SDK's name for ``patch``."""
        return self.patch(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_type,
            patches=patches,
            note=note,
            metadata_json=metadata_json,
            publish_targets=publish_targets,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )

    def list_aggregates(
        self,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Sort = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> ListAggregatesResult:
        """The reference SDK's name for ``list``."""
        return self.list(
            cursor=cursor,
            take=take,
            filter_expr=filter_expr,
            sort=sort,
            include_archived=include_archived,
            archived_only=archived_only,
            timeout=timeout,
        )

    def list_events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ListEventsResult:
        """The reference SDK's name for ``events``."""
        return self.events(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            cursor=cursor,
            take=take,
            filter_expr=filter_expr,
            timeout=timeout,
        )

    def get_aggregate(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> GetAggregateResult:
        """The reference SDK's name for ``get``."""
        return self.get(aggregate_type=aggregate_type, aggregate_id=aggregate_id, timeout=timeout)

    def select_aggregate(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        fields: Sequence[str],
        timeout: Optional[float] = None,
    ) -> SelectAggregateResult:
        """The reference SDK's name for ``select``."""
        return self.select(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            fields=fields,
            timeout=timeout,
        )

    def verify_aggregate(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> str:
        """The reference SDK's name for ``verify``."""
        return self.verify(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            timeout=timeout,
        )

    def iter_list(
        self,
        *,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Sort = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        cursor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Item]:
        """Every aggregate matching the query, page by page (``take`` is the page size)."""
        paging = _Paging(cursor)
        while not paging.done:
            yield from paging.feed(self.list(
                cursor=paging.cursor,
                take=take,
                filter_expr=filter_expr,
                sort=sort,
                include_archived=include_archived,
                archived_only=archived_only,
                timeout=timeout,
            ))

    def subscribe(
        self,
        *,
        from_position: FromPosition = "start",
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        event_types: Optional[List[str]] = None,
        batch_size: int = 0,
    ) -> Subscription:
        """The tenant's events in commit order, as they commit (``for event in ...``):
        ``from_position`` is ``"start"``, ``"end"`` or a position to start after. Resumes by
        itself after a lost connection, after the last event it delivered."""
        settings = _subscribe_settings(
            from_position, aggregate_type, aggregate_id, event_types, batch_size
        )
        return Subscription(self._core.subscribe(**settings))

    def iter_events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        cursor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Item]:
        """Every event of an aggregate matching the filter, page by page."""
        paging = _Paging(cursor)
        while not paging.done:
            yield from paging.feed(self.events(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                cursor=paging.cursor,
                take=take,
                filter_expr=filter_expr,
                timeout=timeout,
            ))
