"""Subscriptions (``docs/subscriptions.md``): ``for`` on the sync client, ``async for`` on the
async one, typed events with positions, resuming after a remembered position."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from eventdbx import ListEventsResult, RetryOptions, SubscribedEvent
from eventdbx import exceptions as exc
from eventdbx.testing import EventDBXServer


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


def test_event_pages_carry_the_positions_subscriptions_deliver(client, uid):
    kind = f"pos{uid}"
    _write(client, kind, 3)
    page = client.events(aggregate_type=kind, aggregate_id="a-1")
    with client.subscribe(from_position="start", aggregate_type=kind) as events:
        delivered = [next(events).position for _ in range(3)]
    assert page.positions == delivered
    assert [page.position(i) for i in range(3)] == delivered
    assert page.position(3) is None
    # A server that sends no positions (EventDBX's own): the page says so with None.
    assert ListEventsResult(page.events_json).position(0) is None


def _history(client, kind):
    """``(position, aggregate id, version)`` of every stored event of ``kind``'s aggregates."""
    out = []
    for n in range(4):
        page = client.events(aggregate_type=kind, aggregate_id=f"a-{n}", take=1000)
        assert not page.has_next_cursor
        for index, event in enumerate(page.events):
            out.append((page.position(index), event["aggregate_id"], event["version"]))
    return sorted(out)


def test_a_subscription_resumes_by_itself_after_the_server_is_sigkilled():
    """The server is SIGKILLed under a live subscription with events not yet read, and
    restarted on its port: the subscription resumes after the last event it yielded, with
    nothing missing, repeated or out of order (``fsync`` durability: nothing it was shown is
    lost with the kill)."""
    kind = "killed"
    patient = RetryOptions(attempts=1000, initial_delay_ms=20, max_delay_ms=100)
    with EventDBXServer(in_process=False, durable=True) as server:

        def write(first, count):
            with server.client() as writer:
                for n in range(first, first + count):
                    writer.apply(aggregate_type=kind, aggregate_id=f"a-{n % 4}",
                                 event_type="changed", payload_json=f'{{"n": {n}}}')

        write(0, 200)
        with server.client(retry=patient) as reader, \
                reader.subscribe(from_position="start") as events:
            received = [next(events) for _ in range(150)]
            os.kill(server.pid, signal.SIGKILL)
            server.stop()  # reaps the killed child
            server.start()
            write(200, 200)
            received += [next(events) for _ in range(250)]
        with server.client() as checker:
            history = _history(checker, kind)
    assert [e.position for e in received] == list(range(1, 401))
    assert [(e.position, e.aggregate_id, e.version) for e in received] == history
    assert [e.payload["n"] for e in received] == list(range(400))
