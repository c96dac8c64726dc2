"""Rust's log events reach ``logging.getLogger("eventdbx")``, and never carry a token."""

from __future__ import annotations

import logging
import socket

import pytest

from eventdbx import EventDBXClient
from eventdbx import exceptions as exc


def _eventdbx_records(caplog):
    return [r for r in caplog.records if r.name == "eventdbx" or r.name.startswith("eventdbx.")]


def test_the_clients_plaintext_warning_is_a_record_of_the_eventdbx_logger(server, caplog):
    caplog.set_level(logging.WARNING, logger="eventdbx")
    with pytest.warns(RuntimeWarning):
        with server.client(no_noise=True) as client:
            assert client.protocol == "plaintext"
    warnings = [r for r in _eventdbx_records(caplog)
                if "plaintext transport requested" in r.getMessage()]
    assert len(warnings) == 1
    (record,) = warnings
    assert record.levelno == logging.WARNING
    assert record.name == "eventdbx.client.connection"
    assert logging.getLogger("eventdbx") in _ancestors(logging.getLogger(record.name))


def _ancestors(logger):
    while logger is not None:
        yield logger
        logger = logger.parent


def test_retries_log_at_debug_without_the_token(caplog):
    caplog.set_level(logging.DEBUG, logger="eventdbx")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    token = "secret-token-that-must-not-be-logged"
    with pytest.raises(exc.EventDBXConnectionError):
        EventDBXClient(token=token, tenant_id="t", port=port, connect_timeout=1.0,
                       retry={"attempts": 3, "initial_delay_ms": 0})
    records = _eventdbx_records(caplog)
    assert sum("retrying" in r.getMessage() for r in records) == 2
    assert all(token not in r.getMessage() for r in records)


def test_a_refused_token_is_logged_by_the_server_without_the_token(server, caplog):
    caplog.set_level(logging.DEBUG, logger="eventdbx")
    token = "refused-token-that-must-not-be-logged"
    with pytest.raises(exc.EventDBXTokenRejectedError):
        EventDBXClient(token=token, tenant_id="t", port=server.port, protocol_version=1)
    records = _eventdbx_records(caplog)
    assert any(r.name.startswith("eventdbx.server") for r in records)
    assert all(token not in r.getMessage() for r in records)


def test_records_below_the_loggers_level_are_dropped(server, caplog):
    caplog.set_level(logging.ERROR, logger="eventdbx")
    with pytest.warns(RuntimeWarning):
        server.client(no_noise=True).close()
    assert not _eventdbx_records(caplog)
