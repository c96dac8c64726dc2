"""Every code sample of the product README, extracted from the README text and run as written,
with only the token, tenant, host and port supplied through the environment (and the literal
tokens the decisions allow replacing)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Dict, List

import pytest

from eventdbx import EventDBXClient

README_NAME = "000_756f5e89e70a6b9f.txt"


def _readme() -> str:
    here = Path(__file__).resolve()
    for parent in here.parents:
        for candidate in (parent / "shared" / "spec" / README_NAME,
                          parent.parent / "shared" / "spec" / README_NAME):
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
    pytest.skip("the product README (shared/spec) is not beside this checkout")
    raise AssertionError  # unreachable


def _samples(text: str) -> Dict[str, str]:
    """The README's Python samples, by the sentence that precedes them. The README lost its
    code fences: a sample starts at an `import`/`from`/`client.`/`latest =` line and runs until
    a line of prose."""
    lines = text.splitlines()
    starts = ("import ", "from eventdbx", "client.", "latest = ")
    samples: Dict[str, str] = {}
    i = 0
    while i < len(lines):
        if lines[i].startswith(starts):
            block: List[str] = []
            while i < len(lines) and _is_code(lines[i]):
                block.append(lines[i])
                i += 1
            samples[f"sample{len(samples) + 1}"] = "\n".join(block)
        else:
            i += 1
    return samples


def _is_code(line: str) -> bool:
    if not line.strip():
        return False
    prose = ("EventDBXClient performs", "Only transport", "Omit publish_targets", "create seeds",
             "Use next_cursor", "Filters use")
    return not line.startswith(prose)


def _indent(code: str) -> str:
    """The README lost its indentation: restore it from the brackets and block openers."""
    out: List[str] = []
    depth = 0
    block = 0
    for raw in code.splitlines():
        line = raw.strip()
        closing = len(re.match(r"^[\)\]\}]*", line).group(0))
        level = block + depth - closing
        if block and depth == 0 and not line.startswith(("if ", "with ")) and out and \
                not out[-1].rstrip().endswith(":") and _block_ended(line):
            block -= 1
            level = block + depth - closing
        out.append("    " * max(level, 0) + line)
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
        if line.endswith(":") and depth == 0:
            block += 1
    return "\n".join(out)


def _block_ended(line: str) -> bool:
    # In these samples only `history = ...` follows the body of `if first_page.has_next_cursor:`.
    return line.startswith("history =")


@pytest.fixture
def readme_env(server, monkeypatch):
    monkeypatch.setenv("EVENTDBX_TOKEN", server.token)
    monkeypatch.setenv("EVENTDBX_TENANT_ID", "tenant-123")
    monkeypatch.setenv("EVENTDBX_HOST", server.host)
    monkeypatch.setenv("EVENTDBX_PORT", str(server.port))
    monkeypatch.delenv("EVENTDBX_NO_NOISE", raising=False)
    return server


def _run(code: str, namespace: dict) -> dict:
    exec(compile(code, "<README>", "exec"), namespace)
    return namespace


def test_readme_has_the_expected_samples():
    samples = _samples(_readme())
    assert len(samples) == 5, list(samples.values())


def test_quickstart_sample_publishes_to_the_webhook_plugin(readme_env, caplog):
    code = _indent(_samples(_readme())["sample1"])
    assert "PublishTarget(plugin=\"webhook\", mode=\"async\")" in code
    # eventdbx.testing registers the README's plugins (webhook, analytics-engine, fraud-worker)
    # as log plugins: the sample runs unchanged and its write is delivered to `webhook`.
    with caplog.at_level(logging.DEBUG, logger="eventdbx.plugin"):
        _run(code, {})
        with EventDBXClient(token=readme_env.token, tenant_id="tenant-123",
                            port=readme_env.port) as client:
            found = client.get(aggregate_type="orders", aggregate_id="ord_123")
            assert found.found and found.aggregate["version"] >= 1
        _wait_for_delivery(caplog, "webhook", "ord_123")


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


def test_retry_sample_constructs_a_connected_client(readme_env):
    code = _samples(_readme())["sample2"]
    code = code.replace('token="control_token"', f'token="{readme_env.token}"')
    # The sample connects to the default port; only the port is supplied by the environment.
    code = code.replace('tenant_id="tenant-123",',
                        f'tenant_id="tenant-123", port={readme_env.port},')
    namespace = _run(_indent(code), {})
    client = namespace["client"]
    try:
        assert client.connected
    finally:
        client.close()


def test_publish_targets_sample_publishes_to_its_plugins(readme_env, caplog):
    code = _indent(_samples(_readme())["sample3"])
    code = code.replace('token="<token>"', f'token="{readme_env.token}"')
    code = code.replace('tenant_id="<tenant>")', f'tenant_id="tenant-123", port={readme_env.port})')
    with caplog.at_level(logging.DEBUG, logger="eventdbx.plugin"):
        namespace = _run(code, {})
        ids = re.findall(r'aggregate_id="([^"]+)"', code)
        assert ids
        for plugin in ("analytics-engine", "fraud-worker"):
            _wait_for_delivery(caplog, plugin, ids[-1])
    assert not namespace["client"].connected  # the sample's `with` block closed it


def test_write_and_read_samples_run_as_written(readme_env):
    samples = _samples(_readme())
    with EventDBXClient(token=readme_env.token, tenant_id="tenant-123",
                        port=readme_env.port) as client:
        namespace = _run(_indent(samples["sample4"]), {"client": client})
        namespace = _run(_indent(samples["sample5"]), namespace)
    latest = namespace["latest"]
    assert latest.found
    assert latest.aggregate["state"]["first_name"] == "Jayah"
    assert latest.aggregate["state"]["email"] == "[email protected]"
    projection = namespace["projection"]
    assert projection.selection == {
        "payload.email": "[email protected]",
        "metadata.@actor": "svc-directory",
    }
    first_page = namespace["first_page"]
    assert [a["aggregate_id"] for a in first_page.aggregates] == ["p-110"]
    history = namespace["history"]
    assert [e["event_type"] for e in history.events][:3] == [
        "person_registered", "person_email_updated", "person_registered"]
    assert re.fullmatch(r"[0-9a-f]{64}", namespace["merkle_root"])
