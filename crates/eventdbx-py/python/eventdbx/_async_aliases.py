"""``AsyncEventDBXClient``'s names from the reference SDK (``send_event``, ``create_aggregate``,
``patch_event``, ``list_aggregates``, ``list_events``, ``get_aggregate``, ``select_aggregate``,
``verify_aggregate``): a mixin of the client whose methods each forward to the client's own
method, so that they check, send and return exactly what it does."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Coroutine, Generic, Mapping, Optional, Sequence

from ._commands import Ack, Sort, Targets
from .types import (
    GetAggregateResult,
    ListAggregatesResult,
    ListEventsResult,
    SelectAggregateResult,
)


class _AsyncAliases(Generic[Ack]):
    """The reference SDK's names on ``AsyncEventDBXClient`` (a base class of it)."""

    if TYPE_CHECKING:
        # What the aliases forward to, implemented by `AsyncEventDBXClient`: declared for the
        # type checker only, which checks each alias's call against these signatures and the
        # client's methods against them in turn. Nothing is defined here at run time.

        @abc.abstractmethod
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
        ) -> Coroutine[Any, Any, Ack]: ...

        @abc.abstractmethod
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
        ) -> Coroutine[Any, Any, Ack]: ...

        @abc.abstractmethod
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
        ) -> Coroutine[Any, Any, Ack]: ...

        @abc.abstractmethod
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
        ) -> Coroutine[Any, Any, ListAggregatesResult]: ...

        @abc.abstractmethod
        def events(
            self,
            *,
            aggregate_type: str,
            aggregate_id: str,
            cursor: Optional[str] = None,
            take: Optional[int] = None,
            filter_expr: Optional[str] = None,
            timeout: Optional[float] = None,
        ) -> Coroutine[Any, Any, ListEventsResult]: ...

        @abc.abstractmethod
        def get(
            self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
        ) -> Coroutine[Any, Any, GetAggregateResult]: ...

        @abc.abstractmethod
        def select(
            self,
            *,
            aggregate_type: str,
            aggregate_id: str,
            fields: Sequence[str],
            timeout: Optional[float] = None,
        ) -> Coroutine[Any, Any, SelectAggregateResult]: ...

        @abc.abstractmethod
        def verify(
            self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
        ) -> Coroutine[Any, Any, str]: ...

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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, Ack]:
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
    ) -> Coroutine[Any, Any, ListAggregatesResult]:
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
    ) -> Coroutine[Any, Any, ListEventsResult]:
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
    ) -> Coroutine[Any, Any, GetAggregateResult]:
        """The reference SDK's name for ``get``."""
        return self.get(aggregate_type=aggregate_type, aggregate_id=aggregate_id, timeout=timeout)

    def select_aggregate(
        self,
        *,
        aggregate_type: str,
        aggregate_id: str,
        fields: Sequence[str],
        timeout: Optional[float] = None,
    ) -> Coroutine[Any, Any, SelectAggregateResult]:
        """The reference SDK's name for ``select``."""
        return self.select(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            fields=fields,
            timeout=timeout,
        )

    def verify_aggregate(
        self, *, aggregate_type: str, aggregate_id: str, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, str]:
        """The reference SDK's name for ``verify``."""
        return self.verify(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            timeout=timeout,
        )
