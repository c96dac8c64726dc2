"""Subscriptions (``docs/subscriptions.md``): ``for`` on the sync client, ``async for`` on the
async one, typed events with positions, resuming after a remembered position."""

from __future__ import annotations

import asyncio

import pytest

from eventdbx import SubscribedEvent
from eventdbx import exceptions as exc


def _write(client, kind, n):
    """Three events of one aggregate of type ``kind``."""
    client.create(aggregate_type=kind, aggregate_id="a-1", event_type="opened",
                  payload_json='{"n": 0}')
    for i in range(1, n):
        client.apply(aggregate_type=kind, aggregate_id="a-1", event_type="changed",
                     payload_json=f'{{"n": {i}}}')


def test_a_sync_subscription_yields_typed_events_and_resumes_after_a_position(client, uid):
    kind = f"sub{uid}"
    _write(client, kind, 3)
    with client.subscribe(from_position="start", aggregate_type=kind) as events:
        got = [next(events) for _ in range(3)]
    assert all(isinstance(e, SubscribedEvent) for e in got)
    assert [(e.aggregate_type, e.aggregate_id, e.version) for e in got] == [
        (kind, "a-1", 1), (kind, "a-1", 2), (kind, "a-1", 3)]
    assert [e.payload["n"] for e in got] == [0, 1, 2]
    assert got[0].event_type == "opened" and "event_id" in got[0].metadata
    positions = [e.position for e in got]
    assert positions == sorted(set(positions))
    # An event with position P resumes with from_position=P: delivery starts after it.
    with client.subscribe(from_position=got[1].position, aggregate_type=kind) as events:
        assert next(events) == got[2]
    with pytest.raises(exc.EventDBXArgumentError, match="from_position"):
        client.subscribe(from_position="later")


def test_an_async_subscription_follows_new_events(server, uid):
    kind = f"asub{uid}"

    async def scenario():
        async with server.async_client() as client:
            # From the start of a type nobody wrote yet: the first event is the one below,
            # whether the subscription or the write reaches the server first.
            async with client.subscribe(from_position="start", aggregate_type=kind) as events:
                first = asyncio.ensure_future(asyncio.wait_for(events.__anext__(), 60))
                await client.create(aggregate_type=kind, aggregate_id="a-1",
                                    event_type="opened", payload_json='{"n": 0}')
                event = await first
                assert (event.aggregate_id, event.version, event.payload) == ("a-1", 1, {"n": 0})
                await client.apply(aggregate_type=kind, aggregate_id="a-1",
                                   event_type="changed", payload_json='{"n": 1}')
                second = await asyncio.wait_for(events.__anext__(), 60)
                assert second.version == 2 and second.position > event.position

    asyncio.run(scenario())
