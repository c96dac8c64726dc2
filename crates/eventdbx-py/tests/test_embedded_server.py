"""The server in the test's process (``EventDBXServer()``, over ``_core.EmbeddedServer``):
``stop()`` releases the data directory, so the same object starts again on it."""

from __future__ import annotations

import json

from eventdbx.testing import EventDBXServer


def test_an_in_process_server_restarts_on_its_port_and_keeps_its_data():
    with EventDBXServer() as server:
        port = server.port
        with server.client() as client:
            created = json.loads(client.create(aggregate_type="order", aggregate_id="o-1",
                                               event_type="created", payload_json='{"total": 3}'))
            assert created["version"] == 1
        server.stop()
        assert not server.running
        # A token issued while stopped is kept in the data directory for the next start.
        late = server.issue_token()
        server.start()  # refused with "Database already open" while the stopped server held it
        assert server.running and server.port == port
        with server.client() as client:
            found = client.get(aggregate_type="order", aggregate_id="o-1")
            assert found.found and found.aggregate["state"] == {"total": 3}
        with server.client(token=late) as client:
            assert client.get(aggregate_type="order", aggregate_id="o-1").found
