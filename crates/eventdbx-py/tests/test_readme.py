"""Every sample of the package README (``crates/eventdbx-py/README.md``), run as printed against
the suite's real server: the samples read the token, tenant, host and port from the
environment, which these tests set. Each sample carries a ``<!-- sample: name -->`` tag; a
Python block without one, or a tag no test runs, fails the first test."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import eventdbx
from eventdbx import EventDBXClient

README = Path(__file__).resolve().parents[1] / "README.md"
TENANT = "tenant-123"
TAGGED = re.compile(r"<!-- sample: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
FENCE = re.compile(r"^```(\w+)$", re.M)
RUN = {"quickstart", "connect", "writes", "terse", "concurrency", "reads", "paging",
       "publish-targets", "retry", "plaintext", "admin", "async", "testing-server",
       "pytest-fixture", "server-command", "subscriptions"}


def _samples() -> Dict[str, str]:
    return {name: code for name, _, code in TAGGED.findall(README.read_text(encoding="utf-8"))}


def _run(name: str, namespace: Dict[str, Any]) -> Dict[str, Any]:
    exec(compile(_samples()[name], f"<README sample {name}>", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module", autouse=True)
def readme_env(server) -> Iterator[Any]:
    """The environment the samples read, pointing at the suite's server."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVENTDBX_TOKEN", server.token)
        patch.setenv("EVENTDBX_TENANT_ID", TENANT)
        patch.setenv("EVENTDBX_HOST", server.host)
        patch.setenv("EVENTDBX_PORT", str(server.port))
        patch.delenv("EVENTDBX_NO_NOISE", raising=False)
        yield server


@pytest.fixture(scope="module")
def written(readme_env) -> Iterator[Dict[str, Any]]:
    """The namespace after the "connect" and "writes" samples: the samples that use ``client``
    and person ``p-110`` run on a copy of it."""
    namespace = _run("writes", _run("connect", {}))
    yield namespace
    namespace["client"].close()


def _wait_for_delivery(caplog, plugin: str, aggregate_id: str) -> None:
    """Plugin jobs are delivered in the background: wait for the log plugin's line."""
    deadline = time.monotonic() + 120  # only a safety net: a loaded machine delivers late
    while time.monotonic() < deadline:
        for record in caplog.records:
            text = record.getMessage()
            if record.name == "eventdbx.plugin.log" and \
                    re.search(rf'plugin="?{re.escape(plugin)}\b', text) and aggregate_id in text:
                return
        time.sleep(0.05)
    seen = [record.getMessage() for record in caplog.records]
    raise AssertionError(f"no delivery to {plugin} logged: {seen}")


def test_every_python_sample_is_tagged_and_run():
    text = README.read_text(encoding="utf-8")
    tagged = TAGGED.findall(text)
    assert {name for name, _, _ in tagged} == RUN
    assert len(tagged) == len(RUN), "a sample name is used twice"
    # Untagged blocks are shell commands for the reader's machine (install, development).
    python_blocks = [lang for lang in FENCE.findall(text) if lang == "python"]
    assert len(python_blocks) == sum(1 for _, lang, _ in tagged if lang == "python")


def test_quickstart_creates_and_publishes_to_the_webhook_plugin(server, caplog):
    with caplog.at_level(logging.DEBUG, logger="eventdbx.plugin"):
        namespace = _run("quickstart", {})
        assert not namespace["client"].connected  # the `with` block closed it
        with EventDBXClient(token=server.token, tenant_id=TENANT, port=server.port) as client:
            found = client.get(aggregate_type="orders", aggregate_id="ord_123")
        assert found.found and found.aggregate["state"] == {"total": 42.15}
        assert '"ord_123"' in namespace["created"]
        _wait_for_delivery(caplog, "webhook", "ord_123")


def test_write_samples_leave_the_person_patched_and_restored(written):
    latest = written["client"].get(aggregate_type="person", aggregate_id="p-110")
    assert latest.found
    state = latest.aggregate["state"]
    assert state["first_name"] == "Jayah"
    assert state["email"] == "jaya.singh@example.com"
    assert latest.aggregate.get("archived", False) is False  # omitted when false
    assert latest.aggregate["version"] >= 3


def test_terse_sample_acknowledges_with_true(written):
    namespace = _run("terse", dict(written))
    assert namespace["acknowledged"] is True
    assert not namespace["terse"].connected


def test_concurrency_sample_rejects_the_stale_write_and_applies_the_keyed_one_once(written):
    namespace = _run("concurrency", dict(written))
    assert namespace["rejected"] == "version_conflict"
    assert namespace["first"] == namespace["again"]
    events = written["client"].events(aggregate_type="person", aggregate_id="p-110").events
    types = [event["event_type"] for event in events]
    assert types.count("person_newsletter_joined") == 1
    assert types.count("person_phone_added") == 1


def test_read_samples_run_as_written(written):
    namespace = _run("reads", dict(written))
    latest = namespace["latest"]
    assert latest.found
    assert latest.aggregate["state"]["first_name"] == "Jayah"
    assert namespace["projection"].selection == {
        "payload.email": "jaya.singh@example.com",
        "metadata.@actor": "svc-directory",
    }
    assert [a["aggregate_id"] for a in namespace["first_page"].aggregates] == ["p-110"]
    assert [e["event_type"] for e in namespace["history"].events][:3] == [
        "person_registered", "person_email_updated", "person_registered"]
    assert re.fullmatch(r"[0-9a-f]{64}", namespace["merkle_root"])


def test_subscriptions_sample_projects_and_checkpoints(written):
    namespace = _run("subscriptions", dict(written))
    store = namespace["store"]
    assert store.execute("SELECT email FROM emails WHERE person = 'p-110'").fetchone() == (
        "jaya.singh@example.com",)
    (checkpoint,) = store.execute("SELECT position FROM checkpoint").fetchone()
    assert checkpoint == namespace["event"].position > 0


def test_paging_sample_sorts_resumes_and_iterates(written):
    namespace = _run("paging", dict(written))
    created = [a["created_at"] for a in namespace["newest_first"].aggregates]
    assert created and created == sorted(created, reverse=True)
    assert "p-110" not in [a["aggregate_id"] for a in namespace["after_p110"].aggregates]
    assert namespace["people"] == ["p-110"]
    assert namespace["event_types"][:3] == [
        "person_registered", "person_email_updated", "person_registered"]


def test_publish_targets_sample_publishes_to_its_plugins(caplog):
    with caplog.at_level(logging.DEBUG, logger="eventdbx.plugin"):
        namespace = _run("publish-targets", {})
        for plugin in ("analytics-engine", "fraud-worker"):
            _wait_for_delivery(caplog, plugin, "inv-1")
    assert not namespace["routed"].connected


def test_retry_sample_connects_and_closes():
    namespace = _run("retry", {})
    assert isinstance(namespace["patient"], EventDBXClient)
    assert not namespace["patient"].connected


def test_plaintext_sample_uses_plaintext():
    assert _run("plaintext", {})["transport"] == "plaintext"


def test_admin_sample_runs_every_helper(written):
    namespace = _run("admin", dict(written))
    fetched = namespace["fetched"]
    assert fetched.found and fetched.snapshot == namespace["snapshots"].snapshots[0]
    assert int(namespace["snapshot"]["snapshot_id"]) == namespace["snapshot_id"]
    assert isinstance(namespace["replaced"], int)
    assert namespace["published"].version_id
    assert namespace["placed"].shard_id == "shard-0001"
    assert namespace["quota"] == eventdbx.TenantQuotaResult(True, 512, True)
    assert namespace["used_bytes"] >= 0
    # The tenant's data is where it was after the assignment round trip and the reload.
    assert written["client"].get(aggregate_type="person", aggregate_id="p-110").found


def test_async_sample_runs_concurrent_writes():
    events = _run("async", {})["counter_events"]
    assert [event["event_type"] for event in events] == ["started"] + ["ticked"] * 10


def test_testing_server_sample_starts_and_pins_a_server():
    order = _run("testing-server", {})["order"]
    assert order.found and order.aggregate["aggregate_id"] == "o-1"


def test_pytest_fixture_sample_passes_with_the_plugin_fixture(eventdbx_client):
    namespace = _run("pytest-fixture", {})
    namespace["test_an_order_is_created"](eventdbx_client)


def test_server_command_sample_serves_until_sigterm(tmp_path):
    words = _samples()["server-command"].split()
    assert words[:3] == ["python", "-m", "eventdbx.server"]
    # As printed, but on free ports and in a temporary data directory.
    options = {"--data-dir": str(tmp_path / "data"), "--port": "0"}
    command: List[str] = [sys.executable] + words[1:]
    for flag, value in options.items():
        command[command.index(flag) + 1] = value
    command += ["--http-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, text=True, env=dict(os.environ))
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert [line.split(" ")[0] for line in lines] == [
            "listening", "http", "server", "token", "ready"], lines
        port = int(lines[0].rsplit(":", 1)[1])
        token = lines[3].split(" ", 1)[1]
        with EventDBXClient(token=token, tenant_id="cli", port=port,
                            server_key=lines[2].split(" ", 2)[2]) as client:
            assert client.list().aggregates == []
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        if process.stdout is not None:
            process.stdout.close()
