"""Subscriptions: a tenant's events in commit order, each with its position, from a start the
caller chooses (``docs/subscriptions.md``).

``client.subscribe(from_position=...)`` returns a ``Subscription`` (``for``) on the synchronous
client and an ``AsyncSubscription`` (``async for``) on the asynchronous one. After a lost
connection the client resubscribes by itself after the last event it delivered, so the loop
sees every event exactly once. Resume a projection with the position of the last event it
applied: ``from_position=P`` starts after P.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
)

from . import _core
from .exceptions import EventDBXArgumentError

__all__ = ["SubscribedEvent", "Subscription", "AsyncSubscription"]

#: ``"start"`` (the first event), ``"end"`` (only new events) or a position to start after.
FromPosition = Union[str, int]


@dataclass(frozen=True)
class SubscribedEvent:
    """One event of a subscription; ``position`` is its place in the tenant's commit order."""

    position: int
    aggregate_type: str
    aggregate_id: str
    version: int
    event_type: str
    payload: Any
    metadata: Dict[str, Any]

    @classmethod
    def _from_core(cls, item: Tuple[int, str]) -> SubscribedEvent:
        position, event_json = item
        event = json.loads(event_json)
        return cls(
            position=position,
            aggregate_type=event["aggregate_type"],
            aggregate_id=event["aggregate_id"],
            version=event["version"],
            event_type=event["event_type"],
            payload=event.get("payload"),
            metadata=event.get("metadata") or {},
        )


def _subscribe_settings(
    from_position: FromPosition,
    aggregate_type: Optional[str],
    aggregate_id: Optional[str],
    event_types: Optional[List[str]],
    batch_size: int,
) -> Dict[str, Any]:
    """The keyword arguments of ``_core.Client.subscribe``, checked."""
    if from_position == "start":
        start: Dict[str, Any] = {"from_end": False, "after": 0}
    elif from_position == "end":
        start = {"from_end": True, "after": 0}
    elif isinstance(from_position, int) and not isinstance(from_position, bool):
        if from_position < 0:
            raise EventDBXArgumentError("from_position must not be negative")
        start = {"from_end": False, "after": from_position}
    else:
        raise EventDBXArgumentError(
            f'from_position must be "start", "end" or a position, not {from_position!r}'
        )
    if batch_size < 0:
        raise EventDBXArgumentError("batch_size must not be negative")
    return dict(
        start,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_types=list(event_types or []),
        batch_size=batch_size,
    )


class Subscription(Iterator[SubscribedEvent]):
    """The events of ``EventDBXClient.subscribe``; each ``next`` blocks until one commits.
    ``close()`` (or leaving a ``with`` block) ends it."""

    def __init__(self, core: _core.Subscription) -> None:
        self._core = core

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> SubscribedEvent:
        item = self._core.next()
        if item is None:
            raise StopIteration
        return SubscribedEvent._from_core(item)

    def close(self) -> None:
        """Ends the subscription. Idempotent."""
        self._core.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncSubscription(AsyncIterator[SubscribedEvent]):
    """The events of ``AsyncEventDBXClient.subscribe`` (``async for``). The subscription starts
    on the first ``__anext__`` (connecting the client if needed)."""

    def __init__(self, start: Callable[[], Awaitable[_core.Subscription]]) -> None:
        self._start = start
        self._core: Optional[_core.Subscription] = None
        self._closed = False

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> SubscribedEvent:
        if self._closed:
            raise StopAsyncIteration
        if self._core is None:
            self._core = await self._start()
        item = await self._core.next(asynchronous=True)
        if item is None:
            raise StopAsyncIteration
        return SubscribedEvent._from_core(item)

    async def aclose(self) -> None:
        """Ends the subscription. Idempotent."""
        self._closed = True
        if self._core is not None:
            self._core.close()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
