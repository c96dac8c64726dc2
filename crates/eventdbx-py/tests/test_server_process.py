"""The server outside the test's process: ``EventDBXServer(in_process=False)`` (a child
``python -m eventdbx.server``), the ``python -m eventdbx.server`` / ``python -m eventdbx serve``
command lines, and the HTTP ``/health`` and ``/metrics`` endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from typing import Dict, List

import pytest

from eventdbx import EventDBXClient, PublishTarget, testing
from eventdbx import exceptions as exc
from eventdbx.testing import EventDBXServer


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        return response.status, response.headers.get("content-type"), response.read().decode()


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _round_trip(client: EventDBXClient, aggregate_id: str) -> None:
    created = json.loads(client.create(aggregate_type="order", aggregate_id=aggregate_id,
                                       event_type="created", payload_json='{"total": 3}'))
    assert created["version"] == 1
    client.apply(aggregate_type="order", aggregate_id=aggregate_id, event_type="paid",
                 payload_json='{"paid": true}')
    found = client.get(aggregate_type="order", aggregate_id=aggregate_id)
    assert found.found and found.aggregate["state"] == {"total": 3, "paid": True}
    assert [e["event_type"] for e in client.iter_events(
        aggregate_type="order", aggregate_id=aggregate_id)] == ["created", "paid"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_process_server_serves_clients_and_exits_cleanly():
    server = EventDBXServer(in_process=False)
    pid, data_dir = server.pid, server.data_dir
    try:
        assert not server.in_process and server.running
        assert pid != os.getpid() and pid > 0
        assert "-m eventdbx.server" in _cmdline(pid)
        assert os.getppid() != pid
        with server.client() as client:
            assert client.protocol == "v2"
            assert client.server_fingerprint == server.fingerprint
            _round_trip(client, "o-child")
        status, _, body = _get(server.http_port, "/health")
        assert status == 200 and json.loads(body)["server_key_fingerprint"] == server.fingerprint

        async def scenario():
            async with server.async_client() as aclient:
                got = await aclient.get(aggregate_type="order", aggregate_id="o-child")
                return got.aggregate["version"]

        assert asyncio.run(scenario()) == 2
        reader = server.issue_token(actions=["aggregate.read"])
        with server.client(token=reader) as narrow:
            assert narrow.get(aggregate_type="order", aggregate_id="o-child").found
            with pytest.raises(exc.EventDBXPermissionError):
                narrow.apply(aggregate_type="order", aggregate_id="o-child", event_type="x",
                             payload_json="{}")
        process = server._child.process  # type: ignore[union-attr]
    finally:
        server.close()
    assert process.returncode == 0  # SIGTERM: drained and closed its store, exit status 0
    assert _reaped(pid)  # waited for: no zombie left behind
    assert not os.path.exists(data_dir)
    assert not server.running


def test_a_child_server_restarts_on_its_port_and_keeps_its_data():
    with EventDBXServer(in_process=False, allow_plaintext=True) as server:
        first_pid, port = server.pid, server.port
        with server.client() as client:
            _round_trip(client, "o-restart")
        server.stop()
        assert not server.running and _reaped(first_pid)
        server.start()
        assert server.running and server.port == port and server.pid != first_pid
        with pytest.warns(RuntimeWarning, match="plaintext"), \
                server.client(no_noise=True) as client:  # --allow-plaintext reached the child
            assert client.protocol == "plaintext"
            assert client.get(aggregate_type="order", aggregate_id="o-restart").found


def test_a_child_server_that_ignores_sigterm_is_killed(monkeypatch):
    monkeypatch.setattr(testing, "STOP_TIMEOUT", 0.5)
    server = EventDBXServer(in_process=False)
    pid = server.pid
    process = server._child.process  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # a stopped process does not act on SIGTERM
    server.close()
    assert process.returncode == -signal.SIGKILL
    assert _reaped(pid)


def test_a_child_server_that_cannot_start_reports_why():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="cannot bind the control port"):
            EventDBXServer(in_process=False, port=port)


def test_the_in_process_server_serves_health_and_metrics(server, client, uid):
    assert server.pid == os.getpid() and server.http_port > 0
    status, content_type, body = _get(server.http_port, "/health")
    assert status == 200 and content_type == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok" and health["durability"] == "relaxed"
    client.create(aggregate_type="metric", aggregate_id=f"m-{uid}", event_type="e",
                  payload_json="{}")
    status, content_type, body = _get(server.http_port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    requests = [line for line in body.splitlines() if line.startswith("eventdbx_requests_total ")]
    assert requests and int(requests[0].split()[1]) >= 1


def _spawn(args: List[str]) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _banner(process: "subprocess.Popen[str]") -> Dict[str, str]:
    assert process.stdout is not None
    values: Dict[str, str] = {}
    for line in process.stdout:
        line = line.strip()
        if line == "ready":
            return values
        key, _, value = line.rpartition(" ")
        values[key] = value
    process.wait(timeout=60)
    raise AssertionError(f"no ready line; stderr: {process.stderr.read()}")  # type: ignore


@pytest.mark.parametrize("module", [["eventdbx.server"], ["eventdbx", "serve"]])
def test_the_server_command_line_serves_control_and_http(module, tmp_path):
    process = _spawn([*module, "--data-dir", str(tmp_path / "data"), "--port", "0",
                      "--http-port", "0", "--print-token", "--relaxed"])
    try:
        values = _banner(process)
        port = int(values["listening on"].rsplit(":", 1)[1])
        http_port = int(values["http on"].rsplit(":", 1)[1])
        status, _, body = _get(http_port, "/health")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok"
        assert health["server_key_fingerprint"] == values["server key"]
        assert health["durability"] == "relaxed"
        with EventDBXClient(token=values["token"], tenant_id="default", port=port,
                            server_key=values["server key"]) as client:
            _round_trip(client, "o-cli")
        assert (tmp_path / "data").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    assert process.returncode == 0, process.stderr.read()  # type: ignore[union-attr]


def test_the_server_command_line_without_http_and_usage(tmp_path):
    process = _spawn(["eventdbx.server", "--data-dir", str(tmp_path), "--port", "0", "--no-http"])
    try:
        values = _banner(process)
        assert "http on" not in values and "token" not in values
        assert values["listening on"].startswith("127.0.0.1:")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert process.returncode == 0
    usage = subprocess.run([sys.executable, "-m", "eventdbx"], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "python -m eventdbx serve" in usage.stderr


@pytest.mark.parametrize("in_process", [True, False])
def test_the_test_servers_register_the_readme_plugins(in_process, tmp_path):
    targets = [PublishTarget(plugin="analytics-engine", mode="event-only"),
               PublishTarget(plugin="fraud-worker", mode="all", priority="high"),
               PublishTarget(plugin="webhook", mode="async")]
    with EventDBXServer(in_process=in_process) as server:
        assert [p["name"] for p in json.loads(
            open(os.path.join(server.data_dir, "plugins.json")).read())] == \
            ["webhook", "analytics-engine", "fraud-worker"]
        with server.client() as client:
            written = json.loads(client.apply(aggregate_type="invoice", aggregate_id="inv-1",
                                              event_type="paid", payload_json="{}",
                                              publish_targets=targets))
            assert written["version"] == 1
    # plugins=[]: none configured; a target is refused before anything is written.
    with EventDBXServer(in_process=in_process, plugins=[]) as server, server.client() as client:
        with pytest.raises(exc.EventDBXValidationError, match="plugin 'webhook' is not"):
            client.apply(aggregate_type="invoice", aggregate_id="inv-1", event_type="paid",
                         payload_json="{}", publish_targets=targets[2:])
        assert not client.get(aggregate_type="invoice", aggregate_id="inv-1").found
    # A data directory's own definitions are kept.
    own = [{"enabled": True, "name": "mine", "config": {"type": "log"}}]
    (tmp_path / "plugins.json").write_text(json.dumps(own))
    with EventDBXServer(data_dir=str(tmp_path), in_process=in_process) as server, \
            server.client() as client:
        assert client.apply(aggregate_type="invoice", aggregate_id="inv-2", event_type="paid",
                            payload_json="{}", publish_targets=[PublishTarget(plugin="mine")])
        with pytest.raises(exc.EventDBXValidationError, match="plugin 'webhook' is not"):
            client.apply(aggregate_type="invoice", aggregate_id="inv-2", event_type="paid",
                         payload_json="{}", publish_targets=targets[2:])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_synchronous_client_runs_on_the_calling_thread():
    # Its own current-thread runtime: connecting and calling start no thread in this process
    # (the answer is read by the thread that waits for it). The server is a child process, so
    # its threads are not counted.
    def threads() -> set:
        return set(os.listdir("/proc/self/task"))

    with EventDBXServer(in_process=False) as server:
        before = threads()
        with server.client() as client:
            for n in range(20):
                client.create(aggregate_type="person", aggregate_id=f"ct-{n}", event_type="e",
                              payload_json="{}")
                assert client.get(aggregate_type="person", aggregate_id=f"ct-{n}").found
            assert not threads() - before  # (threads of earlier tests may have ended)
