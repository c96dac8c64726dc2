"""Every method of EventDBXClient against a real in-process server."""

from __future__ import annotations

import json
import pickle
import sys
import threading

import pytest

import eventdbx
from eventdbx import (
    AggregateSortField,
    AggregateSortOption,
    EventDBXClient,
    PublishTarget,
    RetryOptions,
)
from eventdbx import exceptions as exc


def _person(client, aggregate_id, last_name="Singh", **extra):
    return client.create(
        aggregate_type="person",
        aggregate_id=aggregate_id,
        event_type="person_registered",
        payload_json=json.dumps({"last_name": last_name, "n": 1}),
        **extra,
    )


def test_mutations_return_the_stored_json(client, uid):
    created = json.loads(_person(client, f"p-{uid}", metadata_json='{"@actor": "svc"}'))
    assert created["version"] == 1 and created["state"]["last_name"] == "Singh"
    event = json.loads(client.apply(aggregate_type="person", aggregate_id=f"p-{uid}",
                                    event_type="renamed", payload_json='{"last_name": "Sen"}',
                                    note="by hand", expected_version=1))
    assert event["event_type"] == "renamed"
    patched = json.loads(client.patch(aggregate_type="person", aggregate_id=f"p-{uid}",
                                      event_type="fixed",
                                      patches=[{"op": "replace", "path": "/n", "value": 2}]))
    assert patched["event_type"] == "fixed"
    archived = json.loads(client.archive(aggregate_type="person", aggregate_id=f"p-{uid}",
                                         note="customer request"))
    assert archived["archived"] is True
    restored = json.loads(client.restore(aggregate_type="person", aggregate_id=f"p-{uid}"))
    assert restored.get("archived", False) is False
    state = client.get(aggregate_type="person", aggregate_id=f"p-{uid}").aggregate["state"]
    assert state == {"last_name": "Sen", "n": 2}


def test_verbose_false_returns_true(server, uid):
    with server.client(verbose=False) as quiet:
        assert _person(quiet, f"q-{uid}") is True
        assert quiet.apply(aggregate_type="person", aggregate_id=f"q-{uid}", event_type="e",
                           payload_json="{}") is True
        assert quiet.archive(aggregate_type="person", aggregate_id=f"q-{uid}") is True
        assert quiet.restore(aggregate_type="person", aggregate_id=f"q-{uid}") is True
        assert quiet.get(aggregate_type="person", aggregate_id=f"q-{uid}").found


def test_apply_create_and_aliases(client, uid):
    aggregate = json.loads(client.apply(aggregate_type="order", aggregate_id=f"o-{uid}",
                                        event_type="created", payload_json="{}", create=True))
    assert aggregate["version"] == 1
    assert json.loads(client.send_event(aggregate_type="order", aggregate_id=f"o-{uid}",
                                        event_type="paid", payload_json='{"paid": true}'))
    client.patch_event(aggregate_type="order", aggregate_id=f"o-{uid}", event_type="p",
                       patches=[{"op": "add", "path": "/x", "value": 1}])
    client.create_aggregate(aggregate_type="order", aggregate_id=f"o2-{uid}",
                            event_type="created", payload_json="{}")
    client.set_aggregate_archive(aggregate_type="order", aggregate_id=f"o2-{uid}", archived=True)
    assert client.get_aggregate(aggregate_type="order", aggregate_id=f"o-{uid}").aggregate[
        "state"] == {"paid": True, "x": 1}
    assert client.select_aggregate(aggregate_type="order", aggregate_id=f"o-{uid}",
                                   fields=["x"]).selection == {"x": 1}
    assert len(client.list_events(aggregate_type="order", aggregate_id=f"o-{uid}").events) == 3
    assert client.verify_aggregate(aggregate_type="order", aggregate_id=f"o-{uid}") == \
        client.verify(aggregate_type="order", aggregate_id=f"o-{uid}")
    ids = {a["aggregate_id"] for a in client.list_aggregates(take=1000, archived_only=True)
           .aggregates}
    assert f"o2-{uid}" in ids and f"o-{uid}" not in ids


def test_get_and_select_not_found(client, uid):
    missing = client.get(aggregate_type="person", aggregate_id=f"none-{uid}")
    assert missing == eventdbx.GetAggregateResult(False, None) and missing.aggregate is None
    assert not client.select(aggregate_type="person", aggregate_id=f"none-{uid}",
                             fields=["a"]).found


def test_a_sync_get_runs_four_python_functions(client, uid):
    """The synchronous get is a sequential caller's hottest call, and Python code run after
    each blocking wait costs several times what it costs in a warm loop (issue 15: CPU per
    get): it validates, calls the core and shapes the result, with no generic request built
    and unpacked in between (that was seven functions, about 3.5 µs of CPU per get)."""
    _person(client, f"p-{uid}")
    called = []

    def profile(frame, event, _arg):
        if event == "call":
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        found = client.get(aggregate_type="person", aggregate_id=f"p-{uid}")
    finally:
        sys.setprofile(None)
    assert found.found and found.aggregate["state"]["last_name"] == "Singh"
    assert len(called) <= 4, called


def test_list_pages_with_sort_strings_options_and_cursors(server, uid):
    with server.client(tenant_id=f"t-{uid}") as client:
        for n in range(5):
            _person(client, f"p{n}", last_name=f"S{n}")
        first = client.list(take=2, sort="aggregate_id:desc")
        assert first.has_next_cursor and first.next_cursor
        assert [a["aggregate_id"] for a in first.aggregates] == ["p4", "p3"]
        second = client.list(take=2, cursor=first.next_cursor, sort="aggregate_id:desc")
        assert [a["aggregate_id"] for a in second.aggregates] == ["p2", "p1"]
        options = [AggregateSortOption(AggregateSortField.AGGREGATE_ID, descending=True)]
        assert client.list(take=2, sort=options).aggregates == first.aggregates
        assert [a["aggregate_id"] for a in client.iter_list(take=2, sort="aggregate_id")] == \
            [f"p{n}" for n in range(5)]
        ts = client.list(take=2, sort="created_at:asc")
        resumed = client.list(take=10, sort="created_at:asc", cursor="ts:person:p1")
        assert [a["aggregate_id"] for a in ts.aggregates] == ["p0", "p1"]
        assert [a["aggregate_id"] for a in resumed.aggregates] == ["p2", "p3", "p4"]
        filtered = client.list(filter_expr="person.last_name LIKE 'S%' AND n = 1", take=10)
        assert len(filtered.aggregates) == 5
        without_take = client.list(cursor=first.next_cursor)
        assert without_take.aggregates


def test_events_pages_filter_and_iterator(client, uid):
    _person(client, f"e-{uid}")
    for n in range(4):
        client.apply(aggregate_type="person", aggregate_id=f"e-{uid}", event_type=f"t{n % 2}",
                     payload_json=json.dumps({"n": n}))
    page = client.events(aggregate_type="person", aggregate_id=f"e-{uid}", take=2)
    assert page.has_next_cursor and len(page.events) == 2
    everything = list(client.iter_events(aggregate_type="person", aggregate_id=f"e-{uid}",
                                         take=2))
    assert [e["version"] for e in everything] == [1, 2, 3, 4, 5]
    odd = client.events(aggregate_type="person", aggregate_id=f"e-{uid}",
                        filter_expr='event_type = "t1"')
    assert [e["event_type"] for e in odd.events] == ["t1", "t1"]


def test_snapshots(client, uid):
    _person(client, f"s-{uid}")
    snapshot = json.loads(client.create_snapshot(aggregate_type="person",
                                                 aggregate_id=f"s-{uid}", comment="nightly"))
    listed = client.list_snapshots(aggregate_type="person", aggregate_id=f"s-{uid}")
    assert len(listed.snapshots) == 1
    snapshot_id = listed.snapshots[0].get("snapshot_id", listed.snapshots[0].get("id"))
    assert snapshot_id is not None, snapshot
    fetched = client.get_snapshot(snapshot_id=int(snapshot_id))
    assert fetched.found and fetched.snapshot == listed.snapshots[0]
    assert not client.get_snapshot(snapshot_id=1).found
    with pytest.raises(ValueError, match="snapshot_id must be non-negative"):
        client.get_snapshot(snapshot_id=-1)


def test_schemas_and_tenants(server, uid):
    tenant = f"adm-{uid}"
    with server.client(tenant_id=tenant) as client:
        assert json.loads(client.list_schemas()) == {} or isinstance(
            json.loads(client.list_schemas()), dict)
        schemas = {"person": {"aggregate": "person", "snapshot_threshold": None, "locked": False,
                              "field_locks": [], "hidden": False, "hidden_fields": [],
                              "column_types": {}, "events": {},
                              "created_at": "2024-01-01T00:00:00Z",
                              "updated_at": "2024-01-01T00:00:00Z"}}
        try:
            replaced = client.replace_schemas(schemas_json=json.dumps(schemas))
        except exc.EventDBXValidationError:
            replaced = client.replace_schemas(schemas_json=json.dumps({}))
        assert isinstance(replaced, int)
        published = client.tenant_schema_publish(tenant_id=tenant, reason="test", labels=["a"],
                                                 activate=True, force=True)
        assert isinstance(published, eventdbx.TenantSchemaPublishResult)
        assert published.version_id
        assigned = client.tenant_assign(tenant_id=tenant, shard_id="shard-0001")
        assert assigned.shard_id == "shard-0001"
        assert client.tenant_unassign(tenant_id=tenant) in (True, False)
        quota = client.tenant_quota_set(tenant_id=tenant, max_storage_mb=10)
        assert quota == eventdbx.TenantQuotaResult(True, 10, True)
        assert client.tenant_quota_clear(tenant_id=tenant) is True
        assert client.tenant_quota_recalc(tenant_id=tenant) >= 0
        assert client.tenant_reload(tenant_id=tenant) in (True, False)


def test_server_errors_map_onto_the_hierarchy(client, server, uid):
    _person(client, f"x-{uid}")
    with pytest.raises(exc.EventDBXAlreadyExistsError) as raised:
        _person(client, f"x-{uid}")
    assert raised.value.code == "aggregate_exists" and not raised.value.retriable
    with pytest.raises(exc.EventDBXConflictError) as raised:
        client.apply(aggregate_type="person", aggregate_id=f"x-{uid}", event_type="e",
                     payload_json="{}", expected_version=7)
    assert raised.value.code == "version_conflict"
    with pytest.raises(exc.EventDBXNotFoundError):
        client.patch(aggregate_type="person", aggregate_id=f"nobody-{uid}", event_type="e",
                     patches=[{"op": "add", "path": "/a", "value": 1}])
    client.archive(aggregate_type="person", aggregate_id=f"x-{uid}")
    with pytest.raises(exc.EventDBXConflictError) as raised:
        client.apply(aggregate_type="person", aggregate_id=f"x-{uid}", event_type="e",
                     payload_json="{}")
    assert raised.value.code == "aggregate_archived"
    with pytest.raises(exc.EventDBXValidationError) as raised:
        client.list(cursor="garbage-cursor")
    assert raised.value.code == "invalid_cursor"
    reader = server.issue_token(actions=["aggregate.read"])
    with server.client(token=reader) as read_only:
        with pytest.raises(exc.EventDBXPermissionError) as raised:
            _person(read_only, f"y-{uid}")
        assert raised.value.code == "unauthorized"
    for error in (raised.value,):
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and str(clone) == str(error)


def test_idempotency_key_applies_once(client, uid):
    _person(client, f"i-{uid}")
    first = client.apply(aggregate_type="person", aggregate_id=f"i-{uid}", event_type="e",
                         payload_json='{"k": 1}', idempotency_key=f"key-{uid}")
    again = client.apply(aggregate_type="person", aggregate_id=f"i-{uid}", event_type="e",
                         payload_json='{"k": 1}', idempotency_key=f"key-{uid}")
    assert first == again
    assert client.get(aggregate_type="person", aggregate_id=f"i-{uid}").aggregate["version"] == 2
    with pytest.raises(exc.EventDBXConflictError) as raised:
        client.apply(aggregate_type="person", aggregate_id=f"i-{uid}", event_type="e",
                     payload_json='{"k": 2}', idempotency_key=f"key-{uid}")
    assert raised.value.code == "idempotency_conflict"


def test_publish_targets_reach_the_server(client, uid):
    with pytest.raises(exc.EventDBXValidationError,
                       match="plugin 'no-such-plugin' is not configured"):
        client.apply(aggregate_type="person", aggregate_id=f"pt-{uid}", event_type="e",
                     payload_json="{}",
                     publish_targets=[{"plugin": "no-such-plugin", "mode": "all"}])
    assert not client.get(aggregate_type="person", aggregate_id=f"pt-{uid}").found
    # eventdbx.testing registers the README's plugins: `webhook` is a configured target.
    assert client.apply(aggregate_type="person", aggregate_id=f"pt-{uid}", event_type="e",
                        payload_json="{}", publish_targets=[{"plugin": "webhook", "mode": "all"}])
    with pytest.raises(TypeError, match="PublishTarget or mapping"):
        client.apply(aggregate_type="person", aggregate_id=f"pt-{uid}", event_type="e",
                     payload_json="{}", publish_targets=["webhook"])
    with pytest.raises(ValueError, match="publish target plugin must be provided"):
        PublishTarget(plugin="")
    # An empty list fans out to every enabled plugin: the write succeeds.
    assert client.apply(aggregate_type="person", aggregate_id=f"pt-{uid}", event_type="e",
                        payload_json="{}", publish_targets=[])


def test_argument_errors_before_io(client):
    cases = [
        (lambda: client.create(aggregate_type="", aggregate_id="a", event_type="e",
                               payload_json="{}"),
         "aggregate_type, aggregate_id and event_type must be provided"),
        (lambda: client.patch(aggregate_type="a", aggregate_id="a", event_type="e", patches=[]),
         "patches must contain at least one entry"),
        (lambda: client.select(aggregate_type="a", aggregate_id="a", fields=[]),
         "fields must contain at least one entry"),
        (lambda: client.archive(aggregate_type="a", aggregate_id="a", note="x", comment="y"),
         "Provide either note or comment, not both"),
        (lambda: client.tenant_quota_set(tenant_id="t", max_storage_mb=-1),
         "max_storage_mb cannot be negative"),
        (lambda: client.replace_schemas(schemas_json=""), "schemas_json must be provided"),
        (lambda: client.tenant_assign(tenant_id="", shard_id="s"),
         "tenant_id and shard_id must be provided"),
        (lambda: client.apply(aggregate_type="a", aggregate_id="a", event_type="e",
                              payload_json="{}", create=True, expected_version=1),
         "expected_version cannot be used with create=True"),
    ]
    for call, message in cases:
        with pytest.raises(exc.EventDBXArgumentError, match=message) as raised:
            call()
        assert isinstance(raised.value, ValueError) and raised.value.code == "invalid_argument"


def test_constructor_validation_and_retry_options(server):
    with pytest.raises(ValueError, match="token must be provided"):
        EventDBXClient(token="  ", tenant_id="t")
    with pytest.raises(ValueError, match="tenant_id must be provided"):
        EventDBXClient(token="x", tenant_id="")
    with pytest.raises(ValueError, match="retry.attempts must be greater than zero"):
        RetryOptions(attempts=0)
    with pytest.raises(TypeError):
        EventDBXClient(token="x", tenant_id="t", transport=object())
    with pytest.raises(ValueError):
        EventDBXClient(token="x", tenant_id="t", no_noise=True, server_key=server.fingerprint)
    assert RetryOptions.from_config({"attempts": "3", "initialDelayMs": 5, "maxDelayMs": 9}) == \
        RetryOptions(3, 5, 9)
    with server.client(retry={"attempts": 2}, connect_timeout=30.0, read_timeout=30.0) as client:
        assert client.connected and client.protocol == "v2"
        assert client.server_fingerprint == server.fingerprint


def test_handshake_errors(server):
    with pytest.raises(exc.EventDBXTokenRejectedError) as raised:
        EventDBXClient(token="not-a-token", tenant_id="t", port=server.port)
    assert isinstance(raised.value, exc.EventDBXAuthenticationError)
    assert isinstance(raised.value, exc.EventDBXHandshakeError)
    assert raised.value.code == "handshake" and not raised.value.retriable
    last = server.fingerprint[-1]
    wrong_key = server.fingerprint[:-1] + ("1" if last != "1" else "2")
    with pytest.raises(exc.EventDBXHandshakeError):
        EventDBXClient(token=server.token, tenant_id="t", port=server.port, server_key=wrong_key)
    narrow = server.issue_token(tenants=["only-this"])
    with pytest.raises(exc.EventDBXTokenRejectedError):
        EventDBXClient(token=narrow, tenant_id="another", port=server.port, protocol_version=1)


def test_connection_refused_is_a_retriable_connection_error(server):
    with pytest.raises(exc.EventDBXConnectionError) as raised:
        EventDBXClient(token=server.token, tenant_id="t", port=1,
                       retry=RetryOptions(attempts=2, initial_delay_ms=0))
    assert raised.value.retriable and raised.value.code == "connection"
    assert not isinstance(raised.value, exc.EventDBXTimeoutError)


def test_no_noise_granted_and_refused(server, monkeypatch, uid):
    with pytest.warns(RuntimeWarning, match="plaintext transport requested"):
        with server.client(no_noise=True) as client:
            assert client.protocol == "plaintext"
            _person(client, f"pl-{uid}")
    monkeypatch.setenv("EVENTDBX_NO_NOISE", "TRUE")
    with pytest.warns(RuntimeWarning):
        with EventDBXClient(token=server.token, tenant_id="t", port=server.port) as client:
            assert client.protocol == "plaintext"
    with EventDBXClient(token=server.token, tenant_id="t", port=server.port,
                        no_noise=False) as client:
        assert client.protocol == "v2"
    monkeypatch.delenv("EVENTDBX_NO_NOISE")
    from eventdbx.testing import EventDBXServer

    with EventDBXServer(allow_plaintext=False) as strict:
        with pytest.warns(RuntimeWarning):
            with pytest.raises(exc.EventDBXHandshakeError) as raised:
                strict.client(no_noise=True)
        assert "plaintext" in raised.value.message


def test_v1_transport(server, uid):
    with server.client(protocol_version=1) as client:
        assert client.protocol == "v1"
        _person(client, f"v1-{uid}")
        assert client.get(aggregate_type="person", aggregate_id=f"v1-{uid}").found


def test_close_and_context_manager(server):
    with server.client() as client:
        assert client.connected
    assert not client.connected
    with pytest.raises(exc.EventDBXConnectionError, match="client is closed") as raised:
        client.list()
    assert not raised.value.retriable
    client.close()  # idempotent
    with pytest.raises(KeyError):
        with server.client():
            raise KeyError("not suppressed")


def test_request_too_large_on_v1(server, uid):
    with server.client(protocol_version=1) as client:
        with pytest.raises(exc.EventDBXRequestTooLargeError) as raised:
            client.apply(aggregate_type="person", aggregate_id=f"big-{uid}", event_type="e",
                         payload_json=json.dumps({"x": "a" * 70_000}))
        assert raised.value.code == "request_too_large"
        assert client.connected


def test_a_payload_over_the_server_cap_has_the_size_code(server, uid):
    """Over the server's 262144-byte payload cap (docs/errors.md): a validation error whose code
    says what is wrong, not ``invalid_schema``."""
    with server.client() as client:
        with pytest.raises(exc.EventDBXValidationError) as raised:
            client.create(aggregate_type="person", aggregate_id=f"huge-{uid}", event_type="e",
                          payload_json=json.dumps({"x": "a" * 300_000}))
        assert raised.value.code == "payload_too_large"
        assert "exceeds maximum size of 262144 bytes" in str(raised.value)


def test_timeout_is_a_builtin_timeout_error(server):
    """A peer that accepts and never answers: the handshake times out."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        with pytest.raises(TimeoutError) as raised:
            EventDBXClient(token=server.token, tenant_id="t", port=silent.getsockname()[1],
                           connect_timeout=0.2)
    finally:
        silent.close()
    assert isinstance(raised.value, exc.EventDBXTimeoutError)
    assert isinstance(raised.value, exc.EventDBXConnectionError)
    assert raised.value.retriable and raised.value.code == "timeout"
    with server.client() as client:
        with pytest.raises(ValueError, match="timeout must be positive"):
            client.list(timeout=0)
        assert client.list(take=1, timeout=5.0).aggregates is not None


def test_threads_share_one_client(client, uid):
    errors = []

    def work(n):
        try:
            for k in range(20):
                client.apply(aggregate_type="thread", aggregate_id=f"{uid}-{n}",
                             event_type="tick", payload_json=json.dumps({"k": k}))
            assert client.get(aggregate_type="thread",
                              aggregate_id=f"{uid}-{n}").aggregate["version"] == 20
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_gil_is_released_during_calls(server):
    """A Python thread keeps running while another thread waits in a call."""
    with server.client() as client:
        ticks = []
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks.append(1)

        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            for _ in range(50):
                client.list(take=1)
        finally:
            stop.set()
            spinner.join()
        assert len(ticks) > 100


def test_results_are_picklable_and_comparable():
    page = eventdbx.ListAggregatesResult('[{"a": 1}]', None, False)
    assert page.aggregates == [{"a": 1}]
    clone = pickle.loads(pickle.dumps(page))
    assert clone == page and clone.aggregates == [{"a": 1}]


def test_every_exception_pickles():
    for name in exc.__all__:
        cls = getattr(exc, name)
        error = cls("boom", "some_code", True)
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is cls
        assert (clone.message, clone.code, clone.retriable) == ("boom", "some_code", True)
        assert str(clone) == "some_code: boom"

