"""AsyncEventDBXClient: the same Rust client, awaited on asyncio."""

from __future__ import annotations

import asyncio
import json

import pytest

from eventdbx import AsyncEventDBXClient
from eventdbx import exceptions as exc


def test_async_client_round_trip(server, uid):
    async def scenario():
        client = server.async_client()
        assert not client.connected  # the constructor does no I/O
        async with client:
            assert client.connected
            created = json.loads(await client.create(
                aggregate_type="person", aggregate_id=f"a-{uid}", event_type="registered",
                payload_json='{"n": 0}'))
            assert created["version"] == 1
            await asyncio.gather(*[
                client.apply(aggregate_type="person", aggregate_id=f"a-{uid}",
                             event_type="tick", payload_json=json.dumps({"n": n}))
                for n in range(1, 33)
            ])
            latest = await client.get(aggregate_type="person", aggregate_id=f"a-{uid}")
            assert latest.aggregate["version"] == 33
            seen = [e async for e in client.iter_events(aggregate_type="person",
                                                        aggregate_id=f"a-{uid}", take=10)]
            assert len(seen) == 33
            ids = [a["aggregate_id"] async for a in client.iter_list(take=5)]
            assert f"a-{uid}" in ids
            with pytest.raises(exc.EventDBXAlreadyExistsError):
                await client.create(aggregate_type="person", aggregate_id=f"a-{uid}",
                                    event_type="registered", payload_json="{}")
            assert len(await client.verify(aggregate_type="person",
                                           aggregate_id=f"a-{uid}")) == 64
        with pytest.raises(exc.EventDBXConnectionError, match="client is closed"):
            await client.list()

    asyncio.run(scenario())


def test_async_client_connects_lazily_and_reports_handshake_errors(server):
    async def scenario():
        client = AsyncEventDBXClient(token=server.token, tenant_id="t", port=server.port,
                                     verbose=False)
        assert await client.create(aggregate_type="lazy", aggregate_id="l-1",
                                   event_type="e", payload_json="{}") is True
        await client.close()
        bad = AsyncEventDBXClient(token="wrong", tenant_id="t", port=server.port)
        with pytest.raises(exc.EventDBXTokenRejectedError):
            await bad.connect()

    asyncio.run(scenario())


def test_async_aliases_stand_for_their_methods(server, uid):
    """The reference SDK's names on the async client (the sync client's are in
    ``test_client.py``): each returns its method's coroutine and refuses what it refuses
    before any I/O; a terse client's aliases of writes return ``True``."""
    async def scenario():
        async with server.async_client() as client:
            await client.create(aggregate_type="order", aggregate_id=f"o-{uid}",
                                event_type="created", payload_json="{}")
            paid = client.send_event(aggregate_type="order", aggregate_id=f"o-{uid}",
                                     event_type="paid", payload_json='{"paid": true}')
            assert asyncio.iscoroutine(paid)
            assert json.loads(await paid)["event_type"] == "paid"
            await client.patch_event(aggregate_type="order", aggregate_id=f"o-{uid}",
                                     event_type="p",
                                     patches=[{"op": "add", "path": "/x", "value": 1}])
            assert json.loads(await client.create_aggregate(
                aggregate_type="order", aggregate_id=f"o2-{uid}", event_type="created",
                payload_json="{}"))["version"] == 1
            await client.archive(aggregate_type="order", aggregate_id=f"o2-{uid}")
            found = await client.get_aggregate(aggregate_type="order", aggregate_id=f"o-{uid}")
            assert found.aggregate["state"] == {"paid": True, "x": 1}
            selected = await client.select_aggregate(aggregate_type="order",
                                                     aggregate_id=f"o-{uid}", fields=["x"])
            assert selected.selection == {"x": 1}
            page = await client.list_events(aggregate_type="order", aggregate_id=f"o-{uid}")
            assert len(page.events) == 3
            assert await client.verify_aggregate(aggregate_type="order",
                                                 aggregate_id=f"o-{uid}") == \
                await client.verify(aggregate_type="order", aggregate_id=f"o-{uid}")
            archived = await client.list_aggregates(take=1000, archived_only=True)
            ids = {a["aggregate_id"] for a in archived.aggregates}
            assert f"o2-{uid}" in ids and f"o-{uid}" not in ids
            with pytest.raises(exc.EventDBXArgumentError):
                client.send_event(aggregate_type="order", aggregate_id="", event_type="e",
                                  payload_json="{}")
            with pytest.raises(exc.EventDBXArgumentError):
                client.patch_event(aggregate_type="order", aggregate_id=f"o-{uid}",
                                   event_type="p", patches=[])
            with pytest.raises(exc.EventDBXArgumentError):
                client.select_aggregate(aggregate_type="order", aggregate_id=f"o-{uid}",
                                        fields=[])
            with pytest.raises(exc.EventDBXArgumentError):
                client.list_aggregates(take=-1)
        async with server.async_client(verbose=False) as terse:
            assert await terse.send_event(aggregate_type="order", aggregate_id=f"o-{uid}",
                                          event_type="e", payload_json="{}") is True
            assert await terse.create_aggregate(aggregate_type="order",
                                                aggregate_id=f"o3-{uid}", event_type="created",
                                                payload_json="{}") is True

    asyncio.run(scenario())
