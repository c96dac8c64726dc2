"""A user's program that uses the result types correctly: ``mypy --strict`` accepts it
(``test_typing.py``). ``bad.py`` is its twin with the mistakes typing must catch."""

from __future__ import annotations

import asyncio
from typing import List

from eventdbx import (
    AsyncEventDBXClient,
    EventDBXClient,
    GetAggregateResult,
    ListEventsResult,
    TenantQuotaResult,
)


def latest_version(client: EventDBXClient) -> int:
    found: GetAggregateResult = client.get(aggregate_type="order", aggregate_id="o-1")
    if found.aggregate is None:
        return 0
    version = found.aggregate["version"]
    assert isinstance(version, int)
    return version


def create_order(client: EventDBXClient) -> str:
    # A verbose client (the default) returns the stored aggregate as JSON text.
    return client.create(
        aggregate_type="order", aggregate_id="o-1", event_type="created", payload_json="{}"
    )


def ship_order(token: str) -> bool:
    with EventDBXClient(token=token, tenant_id="shop", verbose=False) as terse:
        return terse.send_event(
            aggregate_type="order", aggregate_id="o-1", event_type="shipped", payload_json="{}"
        )


def quota_mb(client: EventDBXClient) -> int:
    quota: TenantQuotaResult = client.tenant_quota_set(tenant_id="shop", max_storage_mb=5)
    return quota.quota_mb or 0


def order_ids(client: EventDBXClient) -> List[str]:
    return [str(aggregate["aggregate_id"]) for aggregate in client.iter_list(take=50)]


async def event_types(client: AsyncEventDBXClient) -> List[str]:
    page: ListEventsResult = await client.events(aggregate_type="order", aggregate_id="o-1")
    root: str = await client.verify_aggregate(aggregate_type="order", aggregate_id="o-1")
    return [str(event["event_type"]) for event in page.events] + [root]


def run(client: AsyncEventDBXClient) -> List[str]:
    return asyncio.run(event_types(client))
