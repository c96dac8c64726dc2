"""A pure-Python protocol v1 client: the yardstick for our SDK's client cost (issue 13, item 4).

It does what the SDK's v1 transport does for one request, with nothing of ours: a blocking
socket, the Cap'n Proto messages built and read by pycapnp from the schema files, and the Noise
session by ``noiseprotocol`` (``Noise_NNpsk0_25519_ChaChaPoly_SHA256``, empty prologue,
PSK = SHA-256 of the trimmed token; see docs/protocol.md, "Protocol v1"). Only what the
benchmark calls is here: ``get`` and ``apply``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from typing import Any, Callable, Optional

import capnp  # type: ignore[import-untyped]
from noise.connection import NoiseConnection  # type: ignore[import-untyped]

_SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "crates", "eventdbx-proto", "schema")
_control: Any = None


def _schema() -> Any:
    global _control
    if _control is None:
        capnp.remove_import_hook()
        _control = capnp.load(os.path.join(_SCHEMA_DIR, "control.capnp"),
                              imports=[_SCHEMA_DIR])
    return _control


class PureV1Client:
    """One v1 session over Noise; blocking; one request in flight."""

    def __init__(self, host: str, port: int, token: str, tenant_id: str = "default") -> None:
        control = _schema()
        self._token = token
        self._next_id = 1
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = control.ControlHello.new_message(protocolVersion=1, token=token,
                                                 tenantId=tenant_id, noNoise=False)
        self._sock.sendall(hello.to_bytes())
        with control.ControlHelloResponse.from_bytes(self._read_stream_message()) as answer:
            if not answer.accepted:
                raise ConnectionError(f"hello rejected: {answer.message}")
        self._noise = NoiseConnection.from_name(b"Noise_NNpsk0_25519_ChaChaPoly_SHA256")
        self._noise.set_as_initiator()
        self._noise.set_psks(hashlib.sha256(token.strip().encode()).digest())
        self._noise.set_prologue(b"")
        self._noise.start_handshake()
        self._write_frame(self._noise.write_message())
        self._noise.read_message(self._read_frame())

    def _read_exact(self, n: int) -> bytes:
        chunks, missing = [], n
        while missing:
            chunk = self._sock.recv(missing)
            if not chunk:
                raise ConnectionError("server closed the connection")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def _read_stream_message(self) -> bytes:
        # Cap'n Proto stream framing: segment count - 1, each segment's size in words, padding
        # to a word, then the segments.
        head = self._read_exact(4)
        (count_minus_one,) = struct.unpack("<I", head)
        count = count_minus_one + 1
        sizes_len = 4 * count + (4 if count % 2 == 0 else 0)
        sizes = self._read_exact(sizes_len)
        words = sum(struct.unpack(f"<{count}I", sizes[:4 * count]))
        return head + sizes + self._read_exact(8 * words)

    def _read_frame(self) -> bytes:
        (length,) = struct.unpack(">I", self._read_exact(4))
        return self._read_exact(length)

    def _write_frame(self, payload: bytes) -> None:
        self._sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _call(self, member: str, extract: Callable[[Any], Any], **fields: Any) -> Any:
        control = _schema()
        request = control.ControlRequest.new_message(id=self._next_id)
        self._next_id += 1
        body = request.payload.init(member)
        for name, value in fields.items():
            setattr(body, name, value)
        self._write_frame(self._noise.encrypt(request.to_bytes()))
        data = self._noise.decrypt(self._read_frame())
        with control.ControlResponse.from_bytes(data) as response:
            which = response.payload.which()
            if which == "error":
                raise RuntimeError(f"{response.payload.error.code}: "
                                   f"{response.payload.error.message}")
            if which != member:
                raise RuntimeError(f"expected a {member} response, got {which}")
            return extract(getattr(response.payload, member))

    def get(self, aggregate_type: str, aggregate_id: str) -> Optional[str]:
        return self._call("getAggregate", lambda r: r.aggregateJson if r.found else None,
                          aggregateType=aggregate_type, aggregateId=aggregate_id,
                          token=self._token)

    def apply(self, aggregate_type: str, aggregate_id: str, event_type: str,
              payload: str) -> None:
        self._call("appendEvent", lambda r: None, token=self._token,
                   aggregateType=aggregate_type,
                   aggregateId=aggregate_id, eventType=event_type, payloadJson=payload)

    def close(self) -> None:
        self._sock.close()
