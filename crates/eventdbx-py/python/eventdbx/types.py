"""Value types: publish targets, retry options, sorting, and the result classes.

Result classes keep the reference SDK's attribute names and field order (``aggregates_json``,
``next_cursor``, ``has_next_cursor``, ``found``, ...) and add parsed views (``aggregates``,
``events``, ``aggregate``, ...) that parse the JSON once, on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union, cast

from .exceptions import EventDBXArgumentError

__all__ = [
    "PublishTarget",
    "RetryOptions",
    "AggregateSortField",
    "AggregateSortOption",
    "ListAggregatesResult",
    "ListEventsResult",
    "GetAggregateResult",
    "SelectAggregateResult",
    "ListSnapshotsResult",
    "GetSnapshotResult",
    "TenantAssignResult",
    "TenantQuotaResult",
    "TenantSchemaPublishResult",
]


@dataclass
class PublishTarget:
    """A plugin a write is published to, with an optional payload mode and priority."""

    plugin: str
    mode: Optional[str] = None
    priority: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.plugin, str) or not self.plugin.strip():
            raise EventDBXArgumentError("publish target plugin must be provided")


@dataclass
class RetryOptions:
    """How connecting and safe calls are retried: ``attempts`` tries in all, waiting
    ``min(initial_delay_ms * 2**(k-1), max_delay_ms)`` before retry *k*."""

    attempts: int = 1
    initial_delay_ms: int = 100
    max_delay_ms: int = 1_000

    def __post_init__(self) -> None:
        self.attempts = int(self.attempts)
        self.initial_delay_ms = int(self.initial_delay_ms)
        self.max_delay_ms = int(self.max_delay_ms)
        if self.attempts <= 0:
            raise EventDBXArgumentError("retry.attempts must be greater than zero")
        if self.initial_delay_ms < 0:
            raise EventDBXArgumentError("retry.initial_delay_ms cannot be negative")
        if self.max_delay_ms < 0:
            raise EventDBXArgumentError("retry.max_delay_ms cannot be negative")

    @classmethod
    def from_config(cls, obj: Union["RetryOptions", Mapping[str, Any], None]) -> "RetryOptions":
        """Defaults for ``None``, a copy of a ``RetryOptions``, or the snake_case / camelCase
        keys of a mapping."""
        if obj is None:
            return cls()
        if isinstance(obj, RetryOptions):
            return cls(obj.attempts, obj.initial_delay_ms, obj.max_delay_ms)
        if isinstance(obj, Mapping):
            return cls(
                attempts=obj.get("attempts", 1),
                initial_delay_ms=obj.get("initial_delay_ms", obj.get("initialDelayMs", 100)),
                max_delay_ms=obj.get("max_delay_ms", obj.get("maxDelayMs", 1_000)),
            )
        raise TypeError("retry must be RetryOptions, a mapping or None")


class AggregateSortField(str, Enum):
    """Fields aggregates can be sorted by."""

    AGGREGATE_TYPE = "aggregate_type"
    AGGREGATE_ID = "aggregate_id"
    ARCHIVED = "archived"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    VERSION = "version"


@dataclass
class AggregateSortOption:
    """One sort directive; ``field`` is an ``AggregateSortField`` or its string value."""

    field: Union[AggregateSortField, str]
    descending: bool = False

    def encode(self) -> str:
        name = self.field.value if isinstance(self.field, AggregateSortField) else str(self.field)
        return f"{name}:{'desc' if self.descending else 'asc'}"


def encode_sort(sort: Union[str, Sequence[AggregateSortOption], None]) -> Optional[str]:
    """The wire form of ``sort``: a string stripped as is, or options joined by ``", "``;
    empty means no sort."""
    if sort is None:
        return None
    if isinstance(sort, str):
        return sort.strip() or None
    items = []
    for option in sort:
        if not isinstance(option, AggregateSortOption):
            raise TypeError("sort must be a string or a list of AggregateSortOption")
        items.append(option.encode())
    return ", ".join(items) or None


def _parsed(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


class _Parsed:
    """Caches parsed views; not a dataclass field, so equality and repr ignore it."""

    def _view(self, name: str, text: Optional[str]) -> Any:
        cache: Dict[str, Any] = self.__dict__.setdefault("_views", {})
        if name not in cache:
            cache[name] = _parsed(text)
        return cache[name]

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_views", None)
        return state


@dataclass
class ListAggregatesResult(_Parsed):
    """A page of aggregates."""

    aggregates_json: str
    next_cursor: Optional[str] = None
    has_next_cursor: bool = False

    @property
    def aggregates(self) -> List[Dict[str, Any]]:
        """The aggregates, parsed."""
        return cast(List[Dict[str, Any]], self._view("aggregates", self.aggregates_json))


@dataclass
class ListEventsResult(_Parsed):
    """A page of event envelopes. ``positions`` holds each event's position in the tenant's
    commit order (``docs/subscriptions.md``), in the order of ``events``: ``None`` for an event
    without one, and ``positions`` itself ``None`` when the server sent none (EventDBX's own
    server does not)."""

    events_json: str
    next_cursor: Optional[str] = None
    has_next_cursor: bool = False
    positions: Optional[List[Optional[int]]] = None

    @property
    def events(self) -> List[Dict[str, Any]]:
        """The events, parsed."""
        return cast(List[Dict[str, Any]], self._view("events", self.events_json))

    def position(self, index: int) -> Optional[int]:
        """The position of ``events[index]``; ``None`` when the server sent none for it."""
        if self.positions is None or not 0 <= index < len(self.positions):
            return None
        return self.positions[index]


@dataclass
class GetAggregateResult(_Parsed):
    """An aggregate, when found."""

    found: bool
    aggregate_json: Optional[str] = None

    @property
    def aggregate(self) -> Optional[Dict[str, Any]]:
        """The aggregate, parsed (``None`` when not found)."""
        return cast(Optional[Dict[str, Any]], self._view("aggregate", self.aggregate_json))


@dataclass
class SelectAggregateResult(_Parsed):
    """Selected fields of an aggregate, when found."""

    found: bool
    selection_json: Optional[str] = None

    @property
    def selection(self) -> Optional[Dict[str, Any]]:
        """The selection, parsed (``None`` when not found)."""
        return cast(Optional[Dict[str, Any]], self._view("selection", self.selection_json))


@dataclass
class ListSnapshotsResult(_Parsed):
    """Snapshots."""

    snapshots_json: str

    @property
    def snapshots(self) -> List[Dict[str, Any]]:
        """The snapshots, parsed."""
        return cast(List[Dict[str, Any]], self._view("snapshots", self.snapshots_json))


@dataclass
class GetSnapshotResult(_Parsed):
    """A snapshot, when found."""

    found: bool
    snapshot_json: Optional[str] = None

    @property
    def snapshot(self) -> Optional[Dict[str, Any]]:
        """The snapshot, parsed (``None`` when not found)."""
        return cast(Optional[Dict[str, Any]], self._view("snapshot", self.snapshot_json))


@dataclass
class TenantAssignResult:
    """Result of ``tenant_assign``."""

    changed: bool
    shard_id: str


@dataclass
class TenantQuotaResult:
    """Result of ``tenant_quota_set``."""

    changed: bool
    quota_mb: Optional[int] = None
    has_quota: bool = False


@dataclass
class TenantSchemaPublishResult:
    """Result of ``tenant_schema_publish``."""

    version_id: str
    activated: bool = False
    skipped: bool = False


