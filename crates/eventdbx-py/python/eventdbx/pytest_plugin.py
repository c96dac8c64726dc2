"""The pytest plugin of ``eventdbx`` (registered through the ``pytest11`` entry point).

Fixtures:

- ``eventdbx_server`` (session scope): an :class:`eventdbx.testing.EventDBXServer`, a real
  server in this process on ``127.0.0.1`` with a temporary data directory and a root token.
- ``eventdbx_client`` (function scope): an :class:`eventdbx.EventDBXClient` connected to it
  (pinned to its key), closed after the test.

    def test_create(eventdbx_client):
        eventdbx_client.create(aggregate_type="order", aggregate_id="o-1",
                               event_type="created", payload_json="{}")

Tests share the session's server, so give each its own aggregate ids (or tenant: pass
``tenant_id=`` to ``eventdbx_server.client(...)``). Override ``eventdbx_server`` in a
``conftest.py`` for other server options (``allow_plaintext=True``, ``verbose_responses=False``).
"""

from __future__ import annotations

from typing import Iterator

import pytest

from .client import EventDBXClient
from .testing import EventDBXServer

__all__ = ["eventdbx_server", "eventdbx_client"]


@pytest.fixture(scope="session")
def eventdbx_server() -> Iterator[EventDBXServer]:
    """A real EventDBX server for the whole test session."""
    with EventDBXServer() as server:
        yield server


@pytest.fixture
def eventdbx_client(eventdbx_server: EventDBXServer) -> Iterator[EventDBXClient]:
    """A client connected to ``eventdbx_server``, closed after the test."""
    with eventdbx_server.client() as client:
        yield client
