"""``good.py`` with the mistakes typing must catch. A ``# mypy: <text>`` comment says that
``mypy --strict`` reports ``<text>`` on the next line; nothing else may be reported
(``test_typing.py``)."""

from __future__ import annotations

from typing import List

from eventdbx import AsyncEventDBXClient, EventDBXClient


def latest_version(client: EventDBXClient) -> int:
    found = client.get(aggregate_type="order", aggregate_id="o-1")
    # mypy: "GetAggregateResult" has no attribute "aggregates"
    return len(found.aggregates)


def ship_order(token: str) -> str:
    with EventDBXClient(token=token, tenant_id="shop", verbose=False) as terse:
        # mypy: Incompatible return value type (got "bool", expected "str")
        return terse.send_event(
            aggregate_type="order", aggregate_id="o-1", event_type="shipped", payload_json="{}"
        )


def quota_mb(client: EventDBXClient) -> int:
    # mypy: Incompatible return value type (got "TenantQuotaResult", expected "int")
    return client.tenant_quota_set(tenant_id="shop", max_storage_mb=5)


async def event_types(client: AsyncEventDBXClient) -> List[str]:
    page = client.events(aggregate_type="order", aggregate_id="o-1")
    # mypy: "Coroutine[Any, Any, ListEventsResult]" has no attribute "events"
    return [str(event) for event in page.events]
