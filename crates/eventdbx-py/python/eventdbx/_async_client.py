"""``AsyncEventDBXClient``: the asynchronous client, whose calls return coroutines (the requests
it builds are ``_commands._Commands``'s, shared with ``EventDBXClient``; the reference SDK's names
for its methods are ``_async_aliases._AsyncAliases``'s)."""

from __future__ import annotations

from typing import (
    Any,
    AsyncIterator,
    Coroutine,
    FrozenSet,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from . import _core
from ._async_aliases import _AsyncAliases
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
    _require_event,
    _targets,
)
from .exceptions import EventDBXArgumentError, EventDBXConnectionError
from .subscription import (
    AsyncSubscription,
    FromPosition,
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

__all__ = ["AsyncEventDBXClient"]


class AsyncEventDBXClient(_Commands[Ack], _AsyncAliases[Ack]):
    """The asynchronous twin of ``EventDBXClient``: the same methods, returning coroutines
    (arguments are checked when the method is called, before any I/O). The constructor does no
    I/O; ``async with`` or ``await client.connect()`` connects (the first call connects
    otherwise)."""

    @overload
    def __init__(
        self: AsyncEventDBXClient[str],
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
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncEventDBXClient[bool],
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
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncEventDBXClient[Union[str, bool]],
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
    ) -> None:
        self._settings = _connect_settings(
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
        self._settings["known_v2_hosts"] = known_v2_hosts
        self._settings["allow_v1_fallback"] = bool(allow_v1_fallback)
        self._verbose = bool(verbose)
        self.token = token
        self.tenant_id = tenant_id
        self.host = host
        self.port = int(port)
        self._core: Optional[_core.Client] = None
        self._closed = False

    async def connect(self) -> AsyncEventDBXClient[Ack]:
        """Connects and performs the handshake (once)."""
        if self._closed:
            raise EventDBXConnectionError("client is closed", "closed", False)
        if self._core is None:
            core = await _core.Client.connect(**self._settings, asynchronous=True)
            if self._core is None:
                self._core = core
            else:
                await core.close(asynchronous=True)
        return self

    async def _run(self, request: _Request[T]) -> T:
        core = self._core
        if core is None or self._closed:
            await self.connect()
            core = self._core
            assert core is not None
        if request.before is not None:
            request.before()
        method = getattr(core, request.method)
        return request.post(await method(*request.args, asynchronous=True, **request.kwargs))

    def _live_capabilities(self) -> Optional[FrozenSet[str]]:
        if self._core is None or not self._core.connected:
            return None
        return frozenset(self._core.server_capabilities)

    async def close(self) -> None:
        """Closes the connection; later calls raise ``EventDBXConnectionError``. Idempotent."""
        self._closed = True
        if self._core is not None:
            await self._core.close(asynchronous=True)

    @property
    def connected(self) -> bool:
        """True while a connection is held."""
        return self._core is not None and self._core.connected

    @property
    def protocol(self) -> Optional[str]:
        """``"v2"``, ``"v1"`` or ``"plaintext"`` (``None`` when not connected)."""
        return None if self._core is None else self._core.protocol

    @property
    def server_capabilities(self) -> FrozenSet[str]:
        """The capability tokens of the server's hello response (empty before connecting)."""
        return frozenset() if self._core is None else frozenset(self._core.server_capabilities)

    @property
    def server_fingerprint(self) -> Optional[str]:
        """The server key fingerprint (v2 only; ``None`` before connecting)."""
        return None if self._core is None else self._core.server_fingerprint

    async def __aenter__(self) -> AsyncEventDBXClient[Ack]:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
        """Appends an event. Returns the event JSON (the aggregate JSON with ``create=True``;
        ``True`` when ``verbose=False``)."""
        if create:
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
        # What `_build_apply` and `_run` do, without building and unpacking the generic
        # request (as `get`): an appending caller's every call.
        _require_event(aggregate_type, aggregate_id, event_type)
        if expected_version is not None and expected_version < 0:
            raise EventDBXArgumentError("expected_version cannot be negative")
        return self._applied(
            aggregate_type, aggregate_id, event_type, payload_json, note, metadata_json,
            _targets(publish_targets), expected_version, idempotency_key, timeout,
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, GetAggregateResult]:
        """One aggregate's current state: ``GetAggregateResult``."""
        # What `_build_get` and `_run` do, without building and unpacking the generic request
        # (a `_Request` and its keyword dictionary): an asyncio caller's hottest call.
        _require_aggregate(aggregate_type, aggregate_id)
        return self._found(aggregate_type, aggregate_id, timeout)

    async def _found(
        self, aggregate_type: str, aggregate_id: str, timeout: Optional[float]
    ) -> GetAggregateResult:
        core = self._core
        if core is None or self._closed:
            core = await self._connected_core()
        return _found_aggregate(
            await core.get(aggregate_type, aggregate_id, timeout=timeout, asynchronous=True)
        )

    async def _applied(
        self,
        aggregate_type: str,
        aggregate_id: str,
        event_type: str,
        payload_json: str,
        note: Optional[str],
        metadata_json: Optional[str],
        publish_targets: Optional[List[Tuple[str, Optional[str], Optional[str]]]],
        expected_version: Optional[int],
        idempotency_key: Optional[str],
        timeout: Optional[float],
    ) -> Ack:
        core = self._core
        if core is None or self._closed:
            core = await self._connected_core()
        return self._written(await core.write(
            "apply", aggregate_type, aggregate_id, event_type, payload_json, note=note,
            metadata_json=metadata_json, publish_targets=publish_targets,
            expected_version=expected_version, idempotency_key=idempotency_key,
            timeout=timeout, asynchronous=True,
        ))

    async def _connected_core(self) -> _core.Client:
        await self.connect()
        core = self._core
        assert core is not None
        return core

    def select(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        fields: Sequence[str],
        timeout: Optional[float] = None,
    ) -> Coroutine[Any, Any, SelectAggregateResult]:
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
    ) -> Coroutine[Any, Any, ListAggregatesResult]:
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
    ) -> Coroutine[Any, Any, ListEventsResult]:
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
    ) -> Coroutine[Any, Any, str]:
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
    ) -> Coroutine[Any, Any, ListSnapshotsResult]:
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
    ) -> Coroutine[Any, Any, GetSnapshotResult]:
        """One snapshot: ``GetSnapshotResult``."""
        return self._run(self._build_get_snapshot(snapshot_id=snapshot_id, timeout=timeout))

    def list_schemas(self, *, timeout: Optional[float] = None) -> Coroutine[Any, Any, str]:
        """The schema map JSON."""
        return self._run(self._build_list_schemas(timeout=timeout))

    def replace_schemas(
        self, *, schemas_json: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, int]:
        """Replaces the schema map; returns how many schemas were replaced."""
        return self._run(self._build_replace_schemas(schemas_json=schemas_json, timeout=timeout))

    def tenant_assign(
        self, *, tenant_id: str, shard_id: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, TenantAssignResult]:
        """Places a tenant on a shard: ``TenantAssignResult``."""
        return self._run(self._build_tenant_assign(
            tenant_id=tenant_id, shard_id=shard_id, timeout=timeout
        ))

    def tenant_unassign(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, bool]:
        """Removes a tenant's shard assignment; returns whether it changed."""
        return self._run(self._build_tenant_unassign(tenant_id=tenant_id, timeout=timeout))

    def tenant_quota_set(
        self, *, tenant_id: str, max_storage_mb: int, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, TenantQuotaResult]:
        """Sets a tenant's storage quota: ``TenantQuotaResult``."""
        return self._run(self._build_tenant_quota_set(
            tenant_id=tenant_id, max_storage_mb=max_storage_mb, timeout=timeout
        ))

    def tenant_quota_clear(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, bool]:
        """Removes a tenant's quota; returns whether it changed."""
        return self._run(self._build_tenant_quota_clear(tenant_id=tenant_id, timeout=timeout))

    def tenant_quota_recalc(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, int]:
        """Recomputes a tenant's storage; returns it in bytes."""
        return self._run(self._build_tenant_quota_recalc(tenant_id=tenant_id, timeout=timeout))

    def tenant_reload(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, bool]:
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
    ) -> Coroutine[Any, Any, TenantSchemaPublishResult]:
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

    async def iter_list(
        self,
        *,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Sort = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        cursor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[Item]:
        """Every aggregate matching the query, page by page (``async for``)."""
        paging = _Paging(cursor)
        while not paging.done:
            page = await self.list(
                cursor=paging.cursor,
                take=take,
                filter_expr=filter_expr,
                sort=sort,
                include_archived=include_archived,
                archived_only=archived_only,
                timeout=timeout,
            )
            for item in paging.feed(page):
                yield item

    def subscribe(
        self,
        *,
        from_position: FromPosition = "start",
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        event_types: Optional[List[str]] = None,
        batch_size: int = 0,
    ) -> AsyncSubscription:
        """The tenant's events in commit order, as they commit (``async for event in ...``):
        ``from_position`` is ``"start"``, ``"end"`` or a position to start after. Resumes by
        itself after a lost connection, after the last event it delivered."""
        settings = _subscribe_settings(
            from_position, aggregate_type, aggregate_id, event_types, batch_size
        )

        async def start() -> _core.Subscription:
            await self.connect()
            core = self._core
            assert core is not None
            return core.subscribe(**settings)

        return AsyncSubscription(start)

    async def iter_events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        cursor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[Item]:
        """Every event of an aggregate matching the filter, page by page (``async for``)."""
        paging = _Paging(cursor)
        while not paging.done:
            page = await self.events(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                cursor=paging.cursor,
                take=take,
                filter_expr=filter_expr,
                timeout=timeout,
            )
            for item in paging.feed(page):
                yield item
