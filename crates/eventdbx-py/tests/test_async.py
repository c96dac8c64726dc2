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
