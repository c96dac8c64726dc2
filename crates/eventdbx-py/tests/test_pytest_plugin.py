"""The pytest plugin: its fixtures come from the ``pytest11`` entry point, not a conftest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from eventdbx import EventDBXClient
from eventdbx.testing import EventDBXServer


def test_the_plugin_is_registered_by_its_entry_point(request):
    plugin = request.config.pluginmanager.get_plugin("eventdbx")
    assert plugin is not None and plugin.__name__ == "eventdbx.pytest_plugin"


def test_the_fixtures_give_a_server_and_a_connected_client(eventdbx_server, eventdbx_client):
    assert isinstance(eventdbx_server, EventDBXServer) and eventdbx_server.running
    assert isinstance(eventdbx_client, EventDBXClient) and eventdbx_client.connected
    assert eventdbx_client.protocol == "v2"
    assert eventdbx_client.server_fingerprint == eventdbx_server.fingerprint
    created = json.loads(eventdbx_client.create(
        aggregate_type="order", aggregate_id="plugin-1", event_type="created",
        payload_json='{"total": 3}'))
    assert created["state"] == {"total": 3}


def test_the_server_is_shared_by_the_session(eventdbx_server, eventdbx_client):
    # Written by the previous test: same server, a new client.
    found = eventdbx_client.get(aggregate_type="order", aggregate_id="plugin-1")
    assert found.aggregate["state"] == {"total": 3}


def test_a_project_without_conftest_gets_the_fixtures(tmp_path):
    (tmp_path / "test_orders.py").write_text(textwrap.dedent("""
        def test_round_trip(eventdbx_client):
            eventdbx_client.create(aggregate_type="order", aggregate_id="o-1",
                                   event_type="created", payload_json="{}")
            assert eventdbx_client.get(aggregate_type="order", aggregate_id="o-1").found

        def test_second_client(eventdbx_server, eventdbx_client):
            with eventdbx_server.client() as other:
                assert other.get(aggregate_type="order", aggregate_id="o-1").found
    """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
