"""Public names of the package not covered elsewhere: module-level names kept from the
reference SDK, the async client's connection properties, the events filter warning."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import warnings

import pytest

import eventdbx
from eventdbx import exceptions as exc


def test_noise_constants_and_psk():
    assert eventdbx.DEFAULT_NOISE_PROTOCOL == "Noise_NNpsk0_25519_ChaChaPoly_SHA256"
    assert eventdbx.DEFAULT_NOISE_PROLOGUE == b""
    assert eventdbx.derive_psk("  tok \n") == hashlib.sha256(b"tok").digest()
    assert eventdbx.derive_psk(b"tok") == eventdbx.derive_psk("tok")


@pytest.mark.parametrize("kwargs, message", [
    (dict(protocol_version=0, token="t", tenant_id="a"), "protocol_version must be greater"),
    (dict(protocol_version=1, token=" ", tenant_id="a"), "token must be provided"),
    (dict(protocol_version=1, token="t", tenant_id=""), "tenant_id must be provided"),
])
def test_build_control_hello_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        eventdbx.build_control_hello(**kwargs)


def _hello_exchange(port, hello):
    """Sends a hello on a raw socket and returns the server's answer (a stream message)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(hello)
        header = _read(sock, 8)
        segments = struct.unpack("<I", header[:4])[0] + 1
        sizes = [struct.unpack("<I", header[4:8])[0]]
        rest = _read(sock, 4 * (segments - 1) + (4 if segments % 2 == 0 else 0))
        sizes += [struct.unpack("<I", rest[i:i + 4])[0] for i in range(0, 4 * (segments - 1), 4)]
        return _read(sock, 8 * sum(sizes))


def _read(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "server closed the connection"
        data += chunk
    return data


def test_build_control_hello_is_what_a_real_server_reads(server):
    """A plaintext v1 hello built by the SDK opens a session; a wrong token is refused."""
    good = eventdbx.build_control_hello(protocol_version=1, token=f" {server.token} ",
                                        tenant_id="hello", no_noise=True)
    assert b"invalid control token" not in _hello_exchange(server.port, good)
    bad = eventdbx.build_control_hello(protocol_version=1, token="not-a-token",
                                       tenant_id="hello", no_noise=True)
    assert b"invalid control token" in _hello_exchange(server.port, bad)


def test_async_client_protocol_and_capabilities(server):
    async def scenario():
        client = server.async_client()
        assert client.protocol is None and client.server_capabilities == frozenset()
        async with client:
            assert client.protocol == "v2"
            assert "events_filter" in client.server_capabilities
            assert isinstance(client.server_capabilities, frozenset)

    asyncio.run(scenario())


def _events_with_filter(client, uid):
    client.create(aggregate_type="person", aggregate_id=f"f-{uid}", event_type="registered",
                  payload_json="{}")
    return client.events(aggregate_type="person", aggregate_id=f"f-{uid}",
                         filter_expr='event_type = "registered"')


def test_events_filter_sent_quietly_to_a_server_that_honours_it(client, uid):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_events_with_filter(client, uid).events) == 1


def test_events_filter_warns_when_the_server_lacks_the_capability(client, uid, monkeypatch):
    # Our server has the capability; pretend the live connection's hello lacked it.
    monkeypatch.setattr(client, "_live_capabilities", lambda: frozenset())
    with pytest.warns(RuntimeWarning, match="the server ignores filter_expr for events") as seen:
        page = _events_with_filter(client, uid)
    assert seen[0].filename == __file__
    assert json.loads(page.events_json)  # the request was still sent unchanged


def test_async_events_filter_warning(server, uid):
    async def scenario():
        async with server.async_client() as client:
            client._live_capabilities = lambda: frozenset()
            with pytest.warns(RuntimeWarning, match="ignores filter_expr"):
                await client.events(aggregate_type="person", aggregate_id=f"none-{uid}",
                                    filter_expr="x = 1")

    asyncio.run(scenario())


def test_the_closed_client_error_is_the_connection_class(server):
    client = server.client()
    client.close()
    client.close()
    with pytest.raises(exc.EventDBXConnectionError, match="client is closed"):
        client.list()
