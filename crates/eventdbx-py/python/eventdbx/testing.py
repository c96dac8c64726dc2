"""A real EventDBX server for tests: ``EventDBXServer`` starts one in this process on
``127.0.0.1`` in a temporary data directory and hands out a root token.

    from eventdbx.testing import EventDBXServer

    with EventDBXServer() as server:
        with server.client() as client:
            client.create(aggregate_type="order", aggregate_id="o-1",
                          event_type="created", payload_json="{}")
"""

from __future__ import annotations

import tempfile
from typing import Any, List, Optional

from . import _core
from .client import AsyncEventDBXClient, EventDBXClient

__all__ = ["EventDBXServer"]


class EventDBXServer:
    """A server in this process. Attributes: ``host``, ``port``, ``token`` (a root token),
    ``tenant_id``, ``fingerprint``, ``data_dir``."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        data_dir: Optional[str] = None,
        port: int = 0,
        tenant_id: str = "default",
        allow_plaintext: bool = False,
        durable: bool = False,
        verbose_responses: bool = True,
    ) -> None:
        self._tempdir: Optional[tempfile.TemporaryDirectory] = None
        if data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="eventdbx-")
            data_dir = self._tempdir.name
        self.data_dir = str(data_dir)
        self.tenant_id = tenant_id
        self._options = dict(
            allow_plaintext=allow_plaintext, durable=durable, verbose_responses=verbose_responses
        )
        self._requested_port = port
        self._server: Optional[_core.EmbeddedServer] = None
        self.token = ""
        self.port = 0
        self.fingerprint = ""
        self.start()

    def start(self) -> None:
        """Starts the server (again, on the same port and data directory after ``stop()``)."""
        if self._server is not None and self._server.running:
            return
        port = self.port or self._requested_port
        self._server = _core.EmbeddedServer.start(self.data_dir, port=port, **self._options)
        self.port = self._server.port
        self.fingerprint = self._server.fingerprint
        if not self.token:
            self.token = self._server.issue_token()

    def stop(self) -> None:
        """Stops the server, letting open connections finish their requests."""
        if self._server is not None:
            self._server.stop()

    def close(self) -> None:
        """Stops the server and removes its temporary data directory."""
        self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    @property
    def running(self) -> bool:
        """True while the server accepts connections."""
        return self._server is not None and self._server.running

    def issue_token(
        self, *, actions: Optional[List[str]] = None, tenants: Optional[List[str]] = None,
        ttl_secs: int = 0,
    ) -> str:
        """A control token for ``actions`` (default: every action) and ``tenants`` (default:
        every tenant); ``ttl_secs=0`` never expires."""
        assert self._server is not None
        return self._server.issue_token(actions=actions, tenants=list(tenants or []),
                                        ttl_secs=ttl_secs)

    def _client_kwargs(self, kwargs: Any) -> Any:
        options = dict(token=self.token, tenant_id=self.tenant_id, host=self.host, port=self.port)
        if not kwargs.get("no_noise") and kwargs.get("protocol_version") != 1:
            options["server_key"] = self.fingerprint
        options.update(kwargs)
        return options

    def client(self, **kwargs: Any) -> EventDBXClient:
        """A connected ``EventDBXClient`` pinned to this server's key."""
        return EventDBXClient(**self._client_kwargs(kwargs))

    def async_client(self, **kwargs: Any) -> AsyncEventDBXClient:
        """An ``AsyncEventDBXClient`` pinned to this server's key (connects on first use)."""
        return AsyncEventDBXClient(**self._client_kwargs(kwargs))

    def __enter__(self) -> "EventDBXServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
