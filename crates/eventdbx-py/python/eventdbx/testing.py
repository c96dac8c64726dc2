"""A real EventDBX server for tests: ``EventDBXServer`` starts one on ``127.0.0.1`` in a
temporary data directory and hands out a root token, in this process (the default) or as a
child process (``in_process=False``: ``python -m eventdbx.server`` run by this interpreter, so
nothing outside the installed package is needed).

    from eventdbx.testing import EventDBXServer

    with EventDBXServer() as server:
        with server.client() as client:
            client.create(aggregate_type="order", aggregate_id="o-1",
                          event_type="created", payload_json="{}")
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import IO, Any, Dict, List, Literal, Optional, overload

from . import _core
from .client import AsyncEventDBXClient, EventDBXClient

__all__ = ["EventDBXServer", "README_PLUGINS"]

#: The plugins the package README's samples publish to (log plugins: each job becomes a debug
#: line at ``eventdbx.plugin.log``), registered in a data directory without ``plugins.json``.
README_PLUGINS: List[Dict[str, Any]] = [
    {"enabled": True, "name": name, "payload_mode": "all",
     "config": {"type": "log", "level": "debug"}}
    for name in ("webhook", "analytics-engine", "fraud-worker")
]

#: How long a child server may take to print its ``ready`` line.
START_TIMEOUT = 30.0
#: How long a child server has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


class _Child:
    """A server in a child process: ``python -m eventdbx.server`` with this interpreter."""

    def __init__(self, data_dir: str, port: int, options: Dict[str, bool]) -> None:
        command = [sys.executable, "-m", "eventdbx.server", "--data-dir", data_dir,
                   "--port", str(port), "--http-port", "0", "--print-token"]
        if options["allow_plaintext"]:
            command.append("--allow-plaintext")
        if not options["durable"]:
            command.append("--relaxed")
        if not options["verbose_responses"]:
            command.append("--terse")
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1,
        )
        # Kills the child if its owner is collected without stop() (never a stray server).
        self._finalizer = weakref.finalize(self, _Child._kill, self.process)
        self.values: Dict[str, str] = {}
        try:
            self._read_banner()
        except BaseException:
            self.stop()
            raise

    def _read_banner(self) -> None:
        assert self.process.stdout is not None
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        stdout: IO[str] = self.process.stdout

        def read() -> None:
            for line in stdout:
                lines.put(line)
                if line.strip() == "ready":
                    return
            lines.put(None)

        reader = threading.Thread(target=read, name="eventdbx-child-banner", daemon=True)
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"the child server printed no 'ready' line in {START_TIMEOUT} s") from None
            if line is None:
                self.process.wait(timeout=STOP_TIMEOUT)
                raise RuntimeError(
                    f"the child server exited with status {self.process.returncode}: "
                    f"{self._errors()}")
            line = line.strip()
            if line == "ready":
                reader.join()  # it stops after the ready line
                return
            for key in ("listening on", "http on", "server key", "token"):
                if line.startswith(key + " "):
                    self.values[key] = line[len(key) + 1:]

    def _errors(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace").strip()

    @staticmethod
    def _kill(process: "subprocess.Popen[str]") -> None:
        if process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (the server drains its connections and closes its store), then SIGKILL
        after ``STOP_TIMEOUT``; always reaps the child."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._finalizer.detach()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def _register_plugins(data_dir: str, plugins: Optional[List[Dict[str, Any]]]) -> None:
    """Writes the plugin definitions (``<data_dir>/plugins.json``): ``plugins`` when given,
    else ``README_PLUGINS`` unless the data directory already has definitions."""
    path = os.path.join(data_dir, "plugins.json")
    if plugins is None:
        if os.path.exists(path):
            return
        plugins = README_PLUGINS
    os.makedirs(data_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(plugins, f, indent=2)


class EventDBXServer:
    """A real server on ``127.0.0.1``: in this process, or with ``in_process=False`` in a child
    process. Attributes: ``host``, ``port``, ``http_port`` (``/health`` and ``/metrics``),
    ``token`` (a root token), ``tenant_id``, ``fingerprint``, ``data_dir``, ``pid`` (the
    process serving), ``in_process``.

    ``plugins``: plugin definitions for ``<data_dir>/plugins.json`` (the server's format, see
    the repository's ``docs/plugins.md``); by default the package README's ``webhook``,
    ``analytics-engine`` and ``fraud-worker`` as log plugins, unless the data directory already
    has definitions."""

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
        in_process: bool = True,
        plugins: Optional[List[Dict[str, Any]]] = None,
    ) -> None:
        self._tempdir: Optional[tempfile.TemporaryDirectory[str]] = None
        if data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="eventdbx-")
            data_dir = self._tempdir.name
        self.data_dir = str(data_dir)
        _register_plugins(self.data_dir, plugins)
        self.tenant_id = tenant_id
        self._options = dict(
            allow_plaintext=allow_plaintext, durable=durable, verbose_responses=verbose_responses
        )
        self.in_process = in_process
        self._requested_port = port
        self._server: Optional[_core.EmbeddedServer] = None
        self._child: Optional[_Child] = None
        self.token = ""
        self.port = 0
        self.http_port = 0
        self.fingerprint = ""
        self.pid = 0
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Starts the server (again, on the same port and data directory after ``stop()``)."""
        if self.running:
            return
        port = self.port or self._requested_port
        if self.in_process:
            self._server = _core.EmbeddedServer.start(
                self.data_dir, port=port, http_port=0, **self._options)
            self.port = self._server.port
            self.http_port = self._server.http_port or 0
            self.fingerprint = self._server.fingerprint
            self.pid = os.getpid()
            if not self.token:
                self.token = self._server.issue_token()
            return
        self._child = _Child(self.data_dir, port, self._options)
        self.port = int(self._child.values["listening on"].rsplit(":", 1)[1])
        self.http_port = int(self._child.values["http on"].rsplit(":", 1)[1])
        self.fingerprint = self._child.values["server key"]
        self.pid = self._child.process.pid
        if not self.token:
            self.token = self._child.values["token"]

    def stop(self) -> None:
        """Stops the server, letting open connections finish their requests (a child process
        gets SIGTERM, then SIGKILL if it has not exited in ``STOP_TIMEOUT``, and is reaped)."""
        if self._server is not None:
            self._server.stop()
        if self._child is not None:
            self._child.stop()

    def close(self) -> None:
        """Stops the server and removes its temporary data directory."""
        self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    @property
    def running(self) -> bool:
        """True while the server accepts connections."""
        if self.in_process:
            return self._server is not None and self._server.running
        return self._child is not None and self._child.running

    def issue_token(
        self, *, actions: Optional[List[str]] = None, tenants: Optional[List[str]] = None,
        ttl_secs: int = 0,
    ) -> str:
        """A control token for ``actions`` (default: every action) and ``tenants`` (default:
        every tenant); ``ttl_secs=0`` never expires."""
        if self.in_process:
            assert self._server is not None
            return self._server.issue_token(actions=actions, tenants=list(tenants or []),
                                            ttl_secs=ttl_secs)
        # The child server accepts a token issued in its data directory at once.
        return _core.issue_token(self.data_dir, actions=actions, tenants=list(tenants or []),
                                 ttl_secs=ttl_secs)

    def _client_kwargs(self, kwargs: Any) -> Any:
        options = dict(token=self.token, tenant_id=self.tenant_id, host=self.host, port=self.port)
        if not kwargs.get("no_noise") and kwargs.get("protocol_version") != 1:
            options["server_key"] = self.fingerprint
        options.update(kwargs)
        return options

    @overload
    def client(self, *, verbose: Literal[True] = True, **kwargs: Any) -> EventDBXClient[str]: ...

    @overload
    def client(self, *, verbose: Literal[False], **kwargs: Any) -> EventDBXClient[bool]: ...

    def client(self, *, verbose: bool = True, **kwargs: Any) -> EventDBXClient[Any]:
        """A connected ``EventDBXClient`` pinned to this server's key; ``kwargs`` are the
        client's (``verbose``, ``tenant_id``, ``no_noise``, ...)."""
        return EventDBXClient(verbose=verbose, **self._client_kwargs(kwargs))

    @overload
    def async_client(
        self, *, verbose: Literal[True] = True, **kwargs: Any
    ) -> AsyncEventDBXClient[str]: ...

    @overload
    def async_client(
        self, *, verbose: Literal[False], **kwargs: Any
    ) -> AsyncEventDBXClient[bool]: ...

    def async_client(self, *, verbose: bool = True, **kwargs: Any) -> AsyncEventDBXClient[Any]:
        """An ``AsyncEventDBXClient`` pinned to this server's key (connects on first use)."""
        return AsyncEventDBXClient(verbose=verbose, **self._client_kwargs(kwargs))

    def __enter__(self) -> "EventDBXServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
