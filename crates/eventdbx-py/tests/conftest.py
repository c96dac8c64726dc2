"""Fixtures: a real in-process server per test session, and clients on it."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from eventdbx import EventDBXClient
from eventdbx.testing import EventDBXServer


@pytest.fixture(scope="session")
def server() -> Iterator[EventDBXServer]:
    with EventDBXServer(allow_plaintext=True) as running:
        yield running


@pytest.fixture
def client(server: EventDBXServer) -> Iterator[EventDBXClient]:
    with server.client() as connected:
        yield connected


@pytest.fixture
def uid() -> str:
    """A fresh id suffix, so tests sharing the server never collide."""
    return uuid.uuid4().hex[:12]
