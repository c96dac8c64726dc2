"""The package README's quickstart (``crates/eventdbx-py/README.md``), run against a real
server.

The calls are the README's own ("Connect", "Publish targets", "Write aggregates and events" and
"Read aggregates and events"), in order, with the connection settings read from the environment
exactly as the README's first sample does. `scripts/quickstart.sh` starts a `dbx`
server, registers the plugins the samples name, and runs this file.
"""

import json
import os

from eventdbx import EventDBXClient, PublishTarget, RetryOptions


def show(title: str, value: object) -> None:
    print(f"{title}: {value}")


with EventDBXClient(
    token=os.getenv("EVENTDBX_TOKEN", "control_token"),
    tenant_id=os.getenv("EVENTDBX_TENANT_ID", "tenant-123"),
    host=os.getenv("EVENTDBX_HOST", "127.0.0.1"),
    port=int(os.getenv("EVENTDBX_PORT", "6363")),
    verbose=True,  # set False to return boolean acknowledgements
    no_noise=False,  # set True or EVENTDBX_NO_NOISE=1 to skip Noise in test labs
    retry=RetryOptions(attempts=3, initial_delay_ms=100, max_delay_ms=1_000),
) as client:
    created = client.create(
        aggregate_type="orders",
        aggregate_id="ord_123",
        event_type="created",
        payload_json=json.dumps({"total": 42.15}),
        publish_targets=[PublishTarget(plugin="webhook", mode="async")],
    )
    show("create orders/ord_123", created)

    # Publish targets
    client.create(
        aggregate_type="invoice",
        aggregate_id="inv-1",
        event_type="invoice_created",
        payload_json="{}",
    )
    paid = client.apply(
        aggregate_type="invoice",
        aggregate_id="inv-1",
        event_type="invoice_paid",
        payload_json="{}",
        publish_targets=[
            PublishTarget(plugin="analytics-engine", mode="event-only"),
            PublishTarget(plugin="fraud-worker", mode="all", priority="high"),
        ],
    )
    show("apply invoice/inv-1 (routed to analytics-engine and fraud-worker)", paid)

    # Write aggregates and events
    client.create(
        aggregate_type="person",
        aggregate_id="p-110",
        event_type="person_registered",
        payload_json=json.dumps(
            {"first_name": "Jaya", "last_name": "Singh", "email": "[email protected]"}
        ),
        metadata_json=json.dumps(
            {"@actor": "svc-directory", "note": "created by [email protected]"}
        ),
    )
    client.apply(
        aggregate_type="person",
        aggregate_id="p-110",
        event_type="person_email_updated",
        payload_json=json.dumps({"email": "[email protected]"}),
    )
    client.patch(
        aggregate_type="person",
        aggregate_id="p-110",
        event_type="person_registered",
        patches=[{"op": "replace", "path": "/first_name", "value": "Jayah"}],
    )
    client.archive(aggregate_type="person", aggregate_id="p-110", note="customer request")
    client.restore(aggregate_type="person", aggregate_id="p-110")

    # Read aggregates and events
    latest = client.get(aggregate_type="person", aggregate_id="p-110")
    show("get person/p-110", latest)
    projection = client.select(
        aggregate_type="person",
        aggregate_id="p-110",
        fields=["payload.email", "metadata.@actor"],
    )
    show("select payload.email, metadata.@actor", projection)
    first_page = client.list(
        take=25,
        filter_expr="person.archived = false AND person.last_name LIKE 'S%'",
        sort="aggregate_id",
    )
    show("list (filtered, sorted)", first_page)
    if first_page.has_next_cursor:
        next_page = client.list(cursor=first_page.next_cursor)
        show("next page", next_page)
    history = client.events(aggregate_type="person", aggregate_id="p-110", take=100)
    show("events person/p-110", history)
    merkle_root = client.verify(aggregate_type="person", aggregate_id="p-110")
    show("verify person/p-110", merkle_root)

    # Filters, sorting, pagination and snapshots
    order = "created_at:desc,aggregate_id:asc"
    newest = client.list(take=2, sort=order)
    show(f"list sorted {order}", newest)
    if newest.has_next_cursor:
        show("  next page", client.list(cursor=newest.next_cursor, sort=order))
    snapshot = client.create_snapshot(aggregate_type="person", aggregate_id="p-110")
    show("create_snapshot person/p-110", snapshot)
