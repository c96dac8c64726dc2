"""The exceptions of the EventDBX SDK.

Every failure of a call is one of these classes: the Rust core raises them through one mapping
function (``src/error.rs``), so no ``OSError``, socket timeout or crypto error escapes. Each
carries ``code`` (the server's error code, or a client-side code such as ``"connection"``),
``message`` and ``retriable``; ``str(e)`` is ``"<code>: <message>"``. All are picklable.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "EventDBXError",
    "EventDBXConnectionError",
    "EventDBXTimeoutError",
    "EventDBXHandshakeError",
    "EventDBXTokenRejectedError",
    "EventDBXProtocolError",
    "EventDBXRequestTooLargeError",
    "EventDBXUnsupportedError",
    "EventDBXArgumentError",
    "EventDBXAPIError",
    "EventDBXAuthenticationError",
    "EventDBXPermissionError",
    "EventDBXNotFoundError",
    "EventDBXAlreadyExistsError",
    "EventDBXConflictError",
    "EventDBXValidationError",
    "EventDBXQuotaError",
]


class EventDBXError(RuntimeError):
    """The root of every EventDBX failure."""

    default_code = "error"
    default_retriable = False

    def __new__(
        cls, message: str = "", code: Optional[str] = None, retriable: Optional[bool] = None
    ) -> "EventDBXError":
        # Only the message reaches the builtin constructor: OSError (the base of
        # TimeoutError) would read further arguments as errno and strerror.
        return super().__new__(cls, message)

    def __init__(
        self, message: str = "", code: Optional[str] = None, retriable: Optional[bool] = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.retriable = bool(retriable) if retriable is not None else self.default_retriable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"retriable={self.retriable!r})"
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.code, self.retriable))


class EventDBXConnectionError(EventDBXError):
    """The socket failed (refused, reset, closed), or the client was closed."""

    default_code = "connection"
    default_retriable = True


class EventDBXTimeoutError(EventDBXConnectionError, TimeoutError):
    """Connecting or a request took longer than its timeout (also a builtin TimeoutError)."""

    default_code = "timeout"
    default_retriable = True

    def __new__(
        cls, message: str = "", code: Optional[str] = None, retriable: Optional[bool] = None
    ) -> "EventDBXTimeoutError":
        # The instance layout is OSError's, so OSError's constructor must make it.
        return TimeoutError.__new__(cls, message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class EventDBXHandshakeError(EventDBXConnectionError):
    """The hello was rejected, the Noise handshake failed, plaintext was refused or the pinned
    server key did not match."""

    default_code = "handshake"
    default_retriable = False


class EventDBXProtocolError(EventDBXError):
    """The server's reply could not be decoded or did not match the request."""

    default_code = "protocol"
    default_retriable = True


class EventDBXRequestTooLargeError(EventDBXProtocolError):
    """The request is larger than the transport carries; nothing was sent."""

    default_code = "request_too_large"
    default_retriable = False


class EventDBXUnsupportedError(EventDBXProtocolError):
    """The server lacks a request or capability the call needs."""

    default_code = "unsupported"
    default_retriable = False


class EventDBXArgumentError(EventDBXError, ValueError):
    """A client-side argument check failed before any I/O (also a ValueError)."""

    default_code = "invalid_argument"
    default_retriable = False


class EventDBXAPIError(EventDBXError):
    """The server answered with an error; ``code`` is its code. ``retriable`` is true only for
    ``unavailable``: the server's storage could not be reached and did nothing, so the same call
    may be made again (the client's retries do)."""

    default_code = "server"
    default_retriable = False


class EventDBXAuthenticationError(EventDBXAPIError):
    """The token is invalid or expired (``invalid_token``, ``token_expired``)."""


class EventDBXTokenRejectedError(EventDBXHandshakeError, EventDBXAuthenticationError):
    """The hello or the v2 handshake failed because of the token."""

    default_code = "handshake"
    default_retriable = False


class EventDBXPermissionError(EventDBXAPIError):
    """The token does not grant the action (``unauthorized``)."""


class EventDBXNotFoundError(EventDBXAPIError):
    """``aggregate_not_found``."""


class EventDBXAlreadyExistsError(EventDBXAPIError):
    """``aggregate_exists``."""


class EventDBXConflictError(EventDBXAPIError):
    """``version_conflict``, ``idempotency_conflict``, ``aggregate_archived``."""


class EventDBXValidationError(EventDBXAPIError):
    """``invalid_schema``, ``payload_too_large``, ``schema_violation``, ``invalid_cursor``."""


class EventDBXQuotaError(EventDBXAPIError):
    """``tenant_quota``: the tenant's storage quota is used up."""
