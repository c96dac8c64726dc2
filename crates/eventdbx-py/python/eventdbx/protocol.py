"""Module-level names of the reference SDK kept for drop-in use: the v1 Noise pattern and
prologue, the pre-shared key a token derives, and the encoded control hello."""

from __future__ import annotations

import hashlib
from typing import Union

from . import _core
from .exceptions import EventDBXArgumentError

__all__ = [
    "DEFAULT_NOISE_PROTOCOL",
    "DEFAULT_NOISE_PROLOGUE",
    "derive_psk",
    "build_control_hello",
]

#: The Noise pattern of protocol v1 (protocol v2 uses Noise XX with a token-derived PSK).
DEFAULT_NOISE_PROTOCOL = "Noise_NNpsk0_25519_ChaChaPoly_SHA256"

#: The Noise prologue: empty (the reference SDK's ``b"eventdbx-control"`` breaks every handshake).
DEFAULT_NOISE_PROLOGUE = b""


def derive_psk(token: Union[str, bytes]) -> bytes:
    """The v1 pre-shared key of a token: SHA-256 of the token trimmed of surrounding whitespace,
    as the server computes it."""
    raw = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    return hashlib.sha256(raw.strip()).digest()


def build_control_hello(
    *, protocol_version: int, token: str, tenant_id: str, no_noise: bool = False
) -> bytes:
    """The encoded ``ControlHello`` stream message (no length prefix), with the token trimmed."""
    if protocol_version <= 0:
        raise EventDBXArgumentError("protocol_version must be greater than zero")
    if not isinstance(token, str) or not token.strip():
        raise EventDBXArgumentError("token must be provided")
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise EventDBXArgumentError("tenant_id must be provided")
    return _core.build_control_hello(
        protocol_version=int(protocol_version), token=token.strip(), tenant_id=tenant_id,
        no_noise=bool(no_noise),
    )
