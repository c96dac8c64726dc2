"""``EventDBXClient`` and ``AsyncEventDBXClient``: keyword arguments, validation and result
classes over the one Rust client of ``eventdbx._core``.

Both classes share every method (``_Operations``); they differ only in how a call to the core
runs: the synchronous client blocks with the GIL released, the asynchronous one awaits.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import warnings
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _core
from .exceptions import EventDBXArgumentError, EventDBXConnectionError
from .types import (
    AggregateSortOption,
    GetAggregateResult,
    GetSnapshotResult,
    ListAggregatesResult,
    ListEventsResult,
    ListSnapshotsResult,
    PublishTarget,
    RetryOptions,
    SelectAggregateResult,
    TenantAssignResult,
    TenantQuotaResult,
    TenantSchemaPublishResult,
    encode_sort,
)

__all__ = ["EventDBXClient", "AsyncEventDBXClient"]

logger = logging.getLogger("eventdbx")

Sort = Union[str, Sequence[AggregateSortOption], None]
Targets = Optional[Sequence[Union[PublishTarget, Mapping[str, Any]]]]

_PLAINTEXT_WARNING = "plaintext transport requested; intended for testing only"
_EVENTS_FILTER = "events_filter"
_EVENTS_FILTER_WARNING = "the server ignores filter_expr for events"


def _env_no_noise() -> bool:
    value = os.environ.get("EVENTDBX_NO_NOISE", "").strip().lower()
    return value in ("1", "true")


def _connect_settings(
    *,
    token: str,
    tenant_id: str,
    host: str,
    port: int,
    verbose: bool,
    no_noise: Optional[bool],
    retry: Union[RetryOptions, Mapping[str, Any], None],
    protocol_version: Optional[int],
    connect_timeout: float,
    read_timeout: float,
    use_noise: Optional[bool],
    server_key: Optional[str],
    max_message_bytes: int,
    transport: Any,
) -> Dict[str, Any]:
    """Validates the constructor's arguments (before any I/O) into ``_core.Client.connect``'s."""
    if transport is not None:
        raise TypeError("transport is not supported: the Rust core owns the connection")
    if not isinstance(token, str) or not token.strip():
        raise EventDBXArgumentError("token must be provided")
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise EventDBXArgumentError("tenant_id must be provided")
    if use_noise is not None:
        if no_noise is not None and no_noise == use_noise:
            raise EventDBXArgumentError("use_noise and no_noise disagree")
        no_noise = not use_noise
    if no_noise is None:
        no_noise = _env_no_noise()
    if protocol_version not in (None, 1, 2):
        raise EventDBXArgumentError("protocol_version must be None, 1 or 2")
    if server_key is not None and protocol_version == 1:
        raise EventDBXArgumentError("server_key needs protocol v2")
    if no_noise:
        if server_key is not None or protocol_version == 2:
            raise EventDBXArgumentError(
                "no_noise cannot be combined with server_key or protocol_version=2"
            )
        # The Rust client logs it too (logger eventdbx.client.connection) once connected.
        warnings.warn(_PLAINTEXT_WARNING, RuntimeWarning, stacklevel=4)
        transport_name = "plaintext"
    else:
        transport_name = {None: "auto", 1: "v1", 2: "v2"}[protocol_version]
    options = RetryOptions.from_config(retry)
    return dict(
        host=host,
        port=int(port),
        token=token,
        tenant_id=tenant_id,
        transport=transport_name,
        server_key=server_key,
        connect_timeout=float(connect_timeout),
        read_timeout=float(read_timeout),
        attempts=options.attempts,
        initial_delay_ms=options.initial_delay_ms,
        max_delay_ms=options.max_delay_ms,
        verbose=bool(verbose),
        max_message_bytes=int(max_message_bytes),
    )


def _targets(publish_targets: Targets) -> Optional[List[Tuple[str, Optional[str], Optional[str]]]]:
    if publish_targets is None:
        return None
    targets = []
    for item in publish_targets:
        if isinstance(item, PublishTarget):
            target = item
        elif isinstance(item, Mapping):
            target = PublishTarget(
                plugin=item.get("plugin", ""), mode=item.get("mode"), priority=item.get("priority")
            )
        else:
            raise TypeError("publish_targets must contain PublishTarget or mapping entries")
        targets.append((target.plugin, target.mode, target.priority))
    return targets


def _require_event(aggregate_type: str, aggregate_id: str, event_type: str) -> None:
    if not aggregate_type or not aggregate_id or not event_type:
        raise EventDBXArgumentError(
            "aggregate_type, aggregate_id and event_type must be provided"
        )


def _require_aggregate(aggregate_type: str, aggregate_id: str) -> None:
    if not aggregate_type or not aggregate_id:
        raise EventDBXArgumentError("aggregate_type and aggregate_id must be provided")


def _require_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise EventDBXArgumentError("tenant_id must be provided")


def _note(note: Optional[str], comment: Optional[str]) -> Optional[str]:
    if note is not None and comment is not None and note != comment:
        raise EventDBXArgumentError("Provide either note or comment, not both")
    return note if note is not None else comment


def _page(result: Tuple[str, Optional[str]], cls: Any) -> Any:
    text, cursor = result
    return cls(text, cursor, cursor is not None)


class _Operations(abc.ABC):
    """Every method of both clients. ``_call`` runs one method of the core: it returns the
    result (synchronous client) or a coroutine of it (asynchronous client)."""

    _verbose: bool

    @abc.abstractmethod
    def _call(
        self,
        method: str,
        *args: Any,
        post: Callable[[Any], Any],
        before: Optional[Callable[[], None]] = None,
        **kwargs: Any,
    ) -> Any:
        """Runs ``method`` of the core; ``before`` runs once connected, before the request."""

    @abc.abstractmethod
    def _live_capabilities(self) -> Optional[frozenset]:
        """The capabilities of the live connection (``None`` without one)."""

    def _warn_if_events_filter_ignored(self) -> None:
        capabilities = self._live_capabilities()
        if capabilities is not None and _EVENTS_FILTER not in capabilities:
            warnings.warn(_EVENTS_FILTER_WARNING, RuntimeWarning, stacklevel=4)

    def _written(self, text: str) -> Union[str, bool]:
        return text if self._verbose else True

    # ---- mutations ---------------------------------------------------------------------------

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
    ) -> Any:
        """Creates an aggregate with its first event, atomically. Returns the aggregate JSON
        (``True`` when ``verbose=False``)."""
        _require_event(aggregate_type, aggregate_id, event_type)
        return self._call(
            "write",
            "create",
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
            note=note,
            metadata_json=metadata_json,
            publish_targets=_targets(publish_targets),
            idempotency_key=idempotency_key,
            timeout=timeout,
            post=self._written,
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
    ) -> Any:
        """Appends an event. Returns the event JSON (the aggregate JSON with ``create=True``;
        ``True`` when ``verbose=False``)."""
        _require_event(aggregate_type, aggregate_id, event_type)
        if create and expected_version is not None:
            raise EventDBXArgumentError("expected_version cannot be used with create=True")
        if expected_version is not None and expected_version < 0:
            raise EventDBXArgumentError("expected_version cannot be negative")
        return self._call(
            "write",
            "create" if create else "apply",
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
            note=note,
            metadata_json=metadata_json,
            publish_targets=_targets(publish_targets),
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            timeout=timeout,
            post=self._written,
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
    ) -> Any:
        """Applies RFC 6902 operations to the aggregate's state, recorded as an event. Returns
        the event JSON (``True`` when ``verbose=False``)."""
        _require_event(aggregate_type, aggregate_id, event_type)
        if not patches:
            raise EventDBXArgumentError("patches must contain at least one entry")
        if expected_version is not None and expected_version < 0:
            raise EventDBXArgumentError("expected_version cannot be negative")
        return self._call(
            "write",
            "patch",
            aggregate_type,
            aggregate_id,
            event_type,
            json.dumps(list(patches)),
            note=note,
            metadata_json=metadata_json,
            publish_targets=_targets(publish_targets),
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            timeout=timeout,
            post=self._written,
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
    ) -> Any:
        """Archives (``archived=True``) or restores an aggregate."""
        _require_aggregate(aggregate_type, aggregate_id)
        return self._call(
            "set_archived",
            aggregate_type,
            aggregate_id,
            bool(archived),
            note=_note(note, comment),
            timeout=timeout,
            post=self._written,
        )

    def archive(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Archives an aggregate: read-only, history kept. Returns the aggregate JSON."""
        return self.set_aggregate_archive(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            archived=True,
            note=note,
            comment=comment,
            timeout=timeout,
        )

    def restore(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Restores an archived aggregate. Returns the aggregate JSON."""
        return self.set_aggregate_archive(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            archived=False,
            note=note,
            comment=comment,
            timeout=timeout,
        )

    def create_snapshot(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Takes a snapshot of an aggregate's current state. Returns the snapshot JSON."""
        _require_aggregate(aggregate_type, aggregate_id)
        return self._call(
            "create_snapshot",
            aggregate_type,
            aggregate_id,
            comment=comment,
            timeout=timeout,
            post=self._written,
        )

    # ---- reads -------------------------------------------------------------------------------

    def get(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> Any:
        """One aggregate's current state: ``GetAggregateResult``."""
        _require_aggregate(aggregate_type, aggregate_id)
        return self._call(
            "get",
            aggregate_type,
            aggregate_id,
            timeout=timeout,
            post=lambda text: GetAggregateResult(text is not None, text),
        )

    def select(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        fields: Sequence[str],
        timeout: Optional[float] = None,
    ) -> Any:
        """Selected fields (``payload.<path>``, ``metadata.<key>`` or a state path):
        ``SelectAggregateResult``."""
        _require_aggregate(aggregate_type, aggregate_id)
        if isinstance(fields, str) or not fields:
            raise EventDBXArgumentError("fields must contain at least one entry")
        return self._call(
            "select",
            aggregate_type,
            aggregate_id,
            list(fields),
            timeout=timeout,
            post=lambda text: SelectAggregateResult(text is not None, text),
        )

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
    ) -> Any:
        """One page of aggregates: ``ListAggregatesResult``; pass ``next_cursor`` back as
        ``cursor`` for the next page."""
        if take is not None and take < 0:
            raise EventDBXArgumentError("take cannot be negative")
        return self._call(
            "list",
            cursor=cursor,
            take=take,
            filter_expr=filter_expr,
            sort=encode_sort(sort),
            include_archived=include_archived,
            archived_only=archived_only,
            timeout=timeout,
            post=lambda page: _page(page, ListAggregatesResult),
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
    ) -> Any:
        """One page of an aggregate's event envelopes: ``ListEventsResult``."""
        _require_aggregate(aggregate_type, aggregate_id)
        if take is not None and take < 0:
            raise EventDBXArgumentError("take cannot be negative")
        return self._call(
            "events",
            aggregate_type,
            aggregate_id,
            cursor=cursor,
            take=take,
            filter_expr=filter_expr,
            timeout=timeout,
            post=lambda page: _page(page, ListEventsResult),
            before=None if filter_expr is None else self._warn_if_events_filter_ignored,
        )

    def verify(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> Any:
        """The Merkle root of the aggregate's events (64 hex digits), recomputed."""
        _require_aggregate(aggregate_type, aggregate_id)
        return self._call(
            "verify", aggregate_type, aggregate_id, timeout=timeout, post=lambda root: root
        )

    def list_snapshots(
        self,
        *,
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        version: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Snapshots, optionally of one aggregate type, aggregate or version."""
        return self._call(
            "list_snapshots",
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=version,
            timeout=timeout,
            post=ListSnapshotsResult,
        )

    def get_snapshot(self, *, snapshot_id: int, timeout: Optional[float] = None) -> Any:
        """One snapshot: ``GetSnapshotResult``."""
        if snapshot_id < 0:
            raise EventDBXArgumentError("snapshot_id must be non-negative")
        return self._call(
            "get_snapshot",
            int(snapshot_id),
            timeout=timeout,
            post=lambda text: GetSnapshotResult(text is not None, text),
        )

    # ---- schemas and tenants -----------------------------------------------------------------

    def list_schemas(self, *, timeout: Optional[float] = None) -> Any:
        """The schema map JSON."""
        return self._call("list_schemas", timeout=timeout, post=lambda text: text)

    def replace_schemas(self, *, schemas_json: str, timeout: Optional[float] = None) -> Any:
        """Replaces the schema map; returns how many schemas were replaced."""
        if not schemas_json:
            raise EventDBXArgumentError("schemas_json must be provided")
        return self._call("replace_schemas", schemas_json, timeout=timeout, post=int)

    def tenant_assign(
        self, *, tenant_id: str, shard_id: str, timeout: Optional[float] = None
    ) -> Any:
        """Places a tenant on a shard: ``TenantAssignResult``."""
        if not tenant_id or not shard_id:
            raise EventDBXArgumentError("tenant_id and shard_id must be provided")
        return self._call(
            "tenant_assign",
            tenant_id,
            shard_id,
            timeout=timeout,
            post=lambda result: TenantAssignResult(*result),
        )

    def tenant_unassign(self, *, tenant_id: str, timeout: Optional[float] = None) -> Any:
        """Removes a tenant's shard assignment; returns whether it changed."""
        _require_tenant(tenant_id)
        return self._call("tenant_unassign", tenant_id, timeout=timeout, post=bool)

    def tenant_quota_set(
        self, *, tenant_id: str, max_storage_mb: int, timeout: Optional[float] = None
    ) -> Any:
        """Sets a tenant's storage quota: ``TenantQuotaResult``."""
        _require_tenant(tenant_id)
        if max_storage_mb < 0:
            raise EventDBXArgumentError("max_storage_mb cannot be negative")
        return self._call(
            "tenant_quota_set",
            tenant_id,
            int(max_storage_mb),
            timeout=timeout,
            post=lambda r: TenantQuotaResult(r[0], r[1], r[1] is not None),
        )

    def tenant_quota_clear(self, *, tenant_id: str, timeout: Optional[float] = None) -> Any:
        """Removes a tenant's quota; returns whether it changed."""
        _require_tenant(tenant_id)
        return self._call("tenant_quota_clear", tenant_id, timeout=timeout, post=bool)

    def tenant_quota_recalc(self, *, tenant_id: str, timeout: Optional[float] = None) -> Any:
        """Recomputes a tenant's storage; returns it in bytes."""
        _require_tenant(tenant_id)
        return self._call("tenant_quota_recalc", tenant_id, timeout=timeout, post=int)

    def tenant_reload(self, *, tenant_id: str, timeout: Optional[float] = None) -> Any:
        """Reloads a tenant; returns whether it was reloaded."""
        _require_tenant(tenant_id)
        return self._call("tenant_reload", tenant_id, timeout=timeout, post=bool)

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
    ) -> Any:
        """Publishes the tenant's schemas as a new version: ``TenantSchemaPublishResult``."""
        _require_tenant(tenant_id)
        return self._call(
            "tenant_schema_publish",
            tenant_id,
            reason=reason,
            actor=actor,
            labels=list(labels or []),
            activate=bool(activate),
            force=bool(force),
            reload=bool(reload),
            timeout=timeout,
            post=lambda r: TenantSchemaPublishResult(*r),
        )

    # ---- the reference SDK's names -----------------------------------------------------------

    def send_event(self, **kwargs: Any) -> Any:
        """``apply`` (appendEvent)."""
        if kwargs.get("create"):
            raise TypeError("send_event does not take create")
        return self.apply(**kwargs)

    def create_aggregate(self, **kwargs: Any) -> Any:
        """``create``."""
        return self.create(**kwargs)

    def patch_event(self, **kwargs: Any) -> Any:
        """``patch``."""
        return self.patch(**kwargs)

    def list_aggregates(self, **kwargs: Any) -> Any:
        """``list``."""
        return self.list(**kwargs)

    def list_events(self, **kwargs: Any) -> Any:
        """``events``."""
        return self.events(**kwargs)

    def get_aggregate(self, **kwargs: Any) -> Any:
        """``get``."""
        return self.get(**kwargs)

    def select_aggregate(self, **kwargs: Any) -> Any:
        """``select``."""
        return self.select(**kwargs)

    def verify_aggregate(self, **kwargs: Any) -> Any:
        """``verify``."""
        return self.verify(**kwargs)


class EventDBXClient(_Operations):
    """A synchronous client: connects and performs the handshake in the constructor; a
    context manager; safe to share between threads (calls release the GIL)."""

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
        max_message_bytes: int = 16 * 1024 * 1024,
        transport: Any = None,
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
        self._verbose = bool(verbose)
        self.token = token
        self.tenant_id = tenant_id
        self.host = host
        self.port = int(port)
        self._core: _core.Client = _core.Client.connect(**settings)

    def _call(
        self,
        method: str,
        *args: Any,
        post: Callable[[Any], Any],
        before: Optional[Callable[[], None]] = None,
        **kwargs: Any,
    ) -> Any:
        if before is not None:
            before()
        return post(getattr(self._core, method)(*args, **kwargs))

    def _live_capabilities(self) -> Optional[frozenset]:
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
    def server_capabilities(self) -> frozenset:
        """The capability tokens of the server's hello response."""
        return frozenset(self._core.server_capabilities)

    @property
    def server_fingerprint(self) -> Optional[str]:
        """The server key fingerprint (v2 only)."""
        return self._core.server_fingerprint

    def __enter__(self) -> "EventDBXClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

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
    ) -> Iterator[Dict[str, Any]]:
        """Every aggregate matching the query, page by page (``take`` is the page size)."""
        while True:
            page = self.list(
                cursor=cursor,
                take=take,
                filter_expr=filter_expr,
                sort=sort,
                include_archived=include_archived,
                archived_only=archived_only,
                timeout=timeout,
            )
            yield from page.aggregates
            if not page.has_next_cursor:
                return
            cursor = page.next_cursor

    def iter_events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        cursor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Every event of an aggregate matching the filter, page by page."""
        while True:
            page = self.events(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                cursor=cursor,
                take=take,
                filter_expr=filter_expr,
                timeout=timeout,
            )
            yield from page.events
            if not page.has_next_cursor:
                return
            cursor = page.next_cursor


class AsyncEventDBXClient(_Operations):
    """The asynchronous twin of ``EventDBXClient``: the same methods as coroutines. The
    constructor does no I/O; ``async with`` or ``await client.connect()`` connects (the first
    call connects otherwise)."""

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
        self._verbose = bool(verbose)
        self.token = token
        self.tenant_id = tenant_id
        self.host = host
        self.port = int(port)
        self._core: Optional[_core.Client] = None
        self._closed = False

    async def connect(self) -> "AsyncEventDBXClient":
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

    def _call(
        self,
        method: str,
        *args: Any,
        post: Callable[[Any], Any],
        before: Optional[Callable[[], None]] = None,
        **kwargs: Any,
    ) -> Any:
        async def call() -> Any:
            await self.connect()
            core = self._core
            assert core is not None
            if before is not None:
                before()
            return post(await getattr(core, method)(*args, asynchronous=True, **kwargs))

        return call()

    def _live_capabilities(self) -> Optional[frozenset]:
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
    def server_capabilities(self) -> frozenset:
        """The capability tokens of the server's hello response (empty before connecting)."""
        return frozenset() if self._core is None else frozenset(self._core.server_capabilities)

    @property
    def server_fingerprint(self) -> Optional[str]:
        """The server key fingerprint (v2 only; ``None`` before connecting)."""
        return None if self._core is None else self._core.server_fingerprint

    async def __aenter__(self) -> "AsyncEventDBXClient":
        return await self.connect()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

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
    ) -> AsyncIterator[Dict[str, Any]]:
        """Every aggregate matching the query, page by page (``async for``)."""
        while True:
            page = await self.list(
                cursor=cursor,
                take=take,
                filter_expr=filter_expr,
                sort=sort,
                include_archived=include_archived,
                archived_only=archived_only,
                timeout=timeout,
            )
            for item in page.aggregates:
                yield item
            if not page.has_next_cursor:
                return
            cursor = page.next_cursor

    async def iter_events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        cursor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[Dict[str, Any]]:
        """Every event of an aggregate matching the filter, page by page (``async for``)."""
        while True:
            page = await self.events(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                cursor=cursor,
                take=take,
                filter_expr=filter_expr,
                timeout=timeout,
            )
            for item in page.events:
                yield item
            if not page.has_next_cursor:
                return
            cursor = page.next_cursor
