"""What both clients send: argument checks (before any I/O), the request for the Rust core and
the conversion of its answer into a result class, written once for ``EventDBXClient`` and
``AsyncEventDBXClient`` (``_sync_client.py``, ``_async_client.py``), which differ only in how a
request runs."""

from __future__ import annotations

import abc
import json
import os
import warnings
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Generic,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

from .exceptions import EventDBXArgumentError
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

if TYPE_CHECKING:
    # A type variable with a default (PEP 696) exists in `typing` only from Python 3.13;
    # type checkers read it from typing_extensions, the runtime needs no default.
    from typing_extensions import TypeVar

    #: What a write returns: the stored JSON (``str``) for a verbose client, ``True`` for a
    #: terse one (``verbose=False``). A bare ``EventDBXClient`` annotation means verbose.
    Ack = TypeVar("Ack", bound=Union[str, bool], default=str)
else:
    from typing import TypeVar

    Ack = TypeVar("Ack", bound=Union[str, bool])

T = TypeVar("T")

Sort = Union[str, Sequence[AggregateSortOption], None]
Targets = Optional[Sequence[Union[PublishTarget, Mapping[str, Any]]]]
#: One parsed item of a page: an aggregate or an event envelope.
Item = Dict[str, Any]

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


def _found_aggregate(text: Optional[str]) -> GetAggregateResult:
    """A ``get``'s answer (the aggregate JSON, or ``None`` when not found) as its result."""
    return GetAggregateResult(text is not None, text)


def _require_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise EventDBXArgumentError("tenant_id must be provided")


def _note(note: Optional[str], comment: Optional[str]) -> Optional[str]:
    if note is not None and comment is not None and note != comment:
        raise EventDBXArgumentError("Provide either note or comment, not both")
    return note if note is not None else comment




class _Request(Generic[T]):
    """One call of a ``_core.Client`` method: its name and arguments, ``post`` turning the
    core's answer into the result, ``before`` run once connected, before the call."""

    __slots__ = ("method", "args", "kwargs", "post", "before")

    def __init__(
        self,
        method: str,
        *args: Any,
        post: Callable[[Any], T],
        before: Optional[Callable[[], None]] = None,
        **kwargs: Any,
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.post = post
        self.before = before


class _Paging:
    """The cursor walk of ``iter_list`` and ``iter_events`` on both clients: feed it each page,
    ask it for the next cursor until ``done``."""

    def __init__(self, cursor: Optional[str]) -> None:
        self.cursor = cursor
        self.done = False

    def feed(self, page: Union[ListAggregatesResult, ListEventsResult]) -> List[Item]:
        """The page's items; remembers where the next page starts (or that none does)."""
        self.done = not page.has_next_cursor
        self.cursor = page.next_cursor
        if isinstance(page, ListAggregatesResult):
            return page.aggregates
        return page.events


class _Commands(abc.ABC, Generic[Ack]):
    """The request of every method of both clients (``_build_<method>``), checked before any
    I/O; the clients run it."""

    _verbose: bool

    @abc.abstractmethod
    def _live_capabilities(self) -> Optional[FrozenSet[str]]:
        """The capabilities of the live connection (``None`` without one)."""

    def _warn_if_events_filter_ignored(self) -> None:
        capabilities = self._live_capabilities()
        if capabilities is not None and _EVENTS_FILTER not in capabilities:
            warnings.warn(_EVENTS_FILTER_WARNING, RuntimeWarning, stacklevel=4)

    def _written(self, text: str) -> Ack:
        # The overloads of the clients' constructors tie Ack to `verbose`.
        return cast(Ack, text if self._verbose else True)

    def _build_create(
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
    ) -> _Request[Ack]:
        _require_event(aggregate_type, aggregate_id, event_type)
        return _Request(
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

    def _build_apply(
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
    ) -> _Request[Ack]:
        _require_event(aggregate_type, aggregate_id, event_type)
        if create and expected_version is not None:
            raise EventDBXArgumentError("expected_version cannot be used with create=True")
        if expected_version is not None and expected_version < 0:
            raise EventDBXArgumentError("expected_version cannot be negative")
        return _Request(
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

    def _build_patch(
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
    ) -> _Request[Ack]:
        _require_event(aggregate_type, aggregate_id, event_type)
        if not patches:
            raise EventDBXArgumentError("patches must contain at least one entry")
        if expected_version is not None and expected_version < 0:
            raise EventDBXArgumentError("expected_version cannot be negative")
        return _Request(
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

    def _build_set_aggregate_archive(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        archived: bool,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Request[Ack]:
        _require_aggregate(aggregate_type, aggregate_id)
        return _Request(
            "set_archived",
            aggregate_type,
            aggregate_id,
            bool(archived),
            note=_note(note, comment),
            timeout=timeout,
            post=self._written,
        )

    def _build_archive(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Request[Ack]:
        return self._build_set_aggregate_archive(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            archived=True,
            note=note,
            comment=comment,
            timeout=timeout,
        )

    def _build_restore(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        note: Optional[str] = None,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Request[Ack]:
        return self._build_set_aggregate_archive(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            archived=False,
            note=note,
            comment=comment,
            timeout=timeout,
        )

    def _build_create_snapshot(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        comment: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Request[Ack]:
        _require_aggregate(aggregate_type, aggregate_id)
        return _Request(
            "create_snapshot",
            aggregate_type,
            aggregate_id,
            comment=comment,
            timeout=timeout,
            post=self._written,
        )

    def _build_get(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> _Request[GetAggregateResult]:
        _require_aggregate(aggregate_type, aggregate_id)
        return _Request(
            "get",
            aggregate_type,
            aggregate_id,
            timeout=timeout,
            post=_found_aggregate,
        )

    def _build_select(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        fields: Sequence[str],
        timeout: Optional[float] = None,
    ) -> _Request[SelectAggregateResult]:
        _require_aggregate(aggregate_type, aggregate_id)
        if isinstance(fields, str) or not fields:
            raise EventDBXArgumentError("fields must contain at least one entry")
        return _Request(
            "select",
            aggregate_type,
            aggregate_id,
            list(fields),
            timeout=timeout,
            post=lambda text: SelectAggregateResult(text is not None, text),
        )

    def _build_list(
        self,
        *,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        sort: Sort = None,
        include_archived: Optional[bool] = None,
        archived_only: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> _Request[ListAggregatesResult]:
        if take is not None and take < 0:
            raise EventDBXArgumentError("take cannot be negative")
        return _Request(
            "list",
            cursor=cursor,
            take=take,
            filter_expr=filter_expr,
            sort=encode_sort(sort),
            include_archived=include_archived,
            archived_only=archived_only,
            timeout=timeout,
            post=lambda page: ListAggregatesResult(page[0], page[1], page[1] is not None),
        )

    def _build_events(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        cursor: Optional[str] = None,
        take: Optional[int] = None,
        filter_expr: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Request[ListEventsResult]:
        _require_aggregate(aggregate_type, aggregate_id)
        if take is not None and take < 0:
            raise EventDBXArgumentError("take cannot be negative")
        return _Request(
            "events",
            aggregate_type,
            aggregate_id,
            cursor=cursor,
            take=take,
            filter_expr=filter_expr,
            timeout=timeout,
            post=lambda page: ListEventsResult(page[0], page[1], page[1] is not None, page[2]),
            before=None if filter_expr is None else self._warn_if_events_filter_ignored,
        )

    def _build_verify(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> _Request[str]:
        _require_aggregate(aggregate_type, aggregate_id)
        return _Request(
            "verify", aggregate_type, aggregate_id, timeout=timeout, post=str
        )

    def _build_list_snapshots(
        self,
        *,
        aggregate_type: Optional[str] = None,
        aggregate_id: Optional[str] = None,
        version: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> _Request[ListSnapshotsResult]:
        return _Request(
            "list_snapshots",
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=version,
            timeout=timeout,
            post=ListSnapshotsResult,
        )

    def _build_get_snapshot(
        self, *, snapshot_id: int, timeout: Optional[float] = None
    ) -> _Request[GetSnapshotResult]:
        if snapshot_id < 0:
            raise EventDBXArgumentError("snapshot_id must be non-negative")
        return _Request(
            "get_snapshot",
            int(snapshot_id),
            timeout=timeout,
            post=lambda text: GetSnapshotResult(text is not None, text),
        )

    def _build_list_schemas(self, *, timeout: Optional[float] = None) -> _Request[str]:
        return _Request("list_schemas", timeout=timeout, post=str)

    def _build_replace_schemas(
        self, *, schemas_json: str, timeout: Optional[float] = None
    ) -> _Request[int]:
        if not schemas_json:
            raise EventDBXArgumentError("schemas_json must be provided")
        return _Request("replace_schemas", schemas_json, timeout=timeout, post=int)

    def _build_tenant_assign(
        self, *, tenant_id: str, shard_id: str, timeout: Optional[float] = None
    ) -> _Request[TenantAssignResult]:
        if not tenant_id or not shard_id:
            raise EventDBXArgumentError("tenant_id and shard_id must be provided")
        return _Request(
            "tenant_assign",
            tenant_id,
            shard_id,
            timeout=timeout,
            post=lambda result: TenantAssignResult(*result),
        )

    def _build_tenant_unassign(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> _Request[bool]:
        _require_tenant(tenant_id)
        return _Request("tenant_unassign", tenant_id, timeout=timeout, post=bool)

    def _build_tenant_quota_set(
        self, *, tenant_id: str, max_storage_mb: int, timeout: Optional[float] = None
    ) -> _Request[TenantQuotaResult]:
        _require_tenant(tenant_id)
        if max_storage_mb < 0:
            raise EventDBXArgumentError("max_storage_mb cannot be negative")
        return _Request(
            "tenant_quota_set",
            tenant_id,
            int(max_storage_mb),
            timeout=timeout,
            post=lambda r: TenantQuotaResult(r[0], r[1], r[1] is not None),
        )

    def _build_tenant_quota_clear(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> _Request[bool]:
        _require_tenant(tenant_id)
        return _Request("tenant_quota_clear", tenant_id, timeout=timeout, post=bool)

    def _build_tenant_quota_recalc(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> _Request[int]:
        _require_tenant(tenant_id)
        return _Request("tenant_quota_recalc", tenant_id, timeout=timeout, post=int)

    def _build_tenant_reload(
        self, *, tenant_id: str, timeout: Optional[float] = None
    ) -> _Request[bool]:
        _require_tenant(tenant_id)
        return _Request("tenant_reload", tenant_id, timeout=timeout, post=bool)

    def _build_tenant_schema_publish(
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
    ) -> _Request[TenantSchemaPublishResult]:
        _require_tenant(tenant_id)
        return _Request(
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
