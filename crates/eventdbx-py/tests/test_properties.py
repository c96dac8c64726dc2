"""Property tests (hypothesis), each against the real in-process server of ``conftest.py``:
retry options, publish targets, sorting and cursors, payload JSON types, exception pickling."""

from __future__ import annotations

import json
import math
import pickle
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventdbx import (
    AggregateSortField,
    AggregateSortOption,
    EventDBXClient,
    PublishTarget,
    RetryOptions,
)
from eventdbx import exceptions as exc
from eventdbx.types import encode_sort

# Modest runtimes: few examples, no per-example deadline (every example talks to a server).
FEW = settings(max_examples=25, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------- retry


@st.composite
def retry_mappings(draw) -> Tuple[Dict[str, Any], Tuple[int, int, int]]:
    attempts = draw(st.integers(1, 5))
    initial = draw(st.integers(0, 50))
    maximum = draw(st.integers(0, 200))
    as_text = draw(st.booleans())  # values are converted with int()
    value = (lambda n: str(n)) if as_text else (lambda n: n)
    mapping: Dict[str, Any] = {}
    if draw(st.booleans()):
        mapping["attempts"] = value(attempts)
    else:
        attempts = 1
    style = draw(st.sampled_from(["snake", "camel", "both", "none"]))
    if style == "snake":
        mapping.update(initial_delay_ms=value(initial), max_delay_ms=value(maximum))
    elif style == "camel":
        mapping.update(initialDelayMs=value(initial), maxDelayMs=value(maximum))
    elif style == "both":  # snake_case wins over camelCase
        mapping.update(initial_delay_ms=value(initial), max_delay_ms=value(maximum),
                       initialDelayMs=value(initial + 1), maxDelayMs=value(maximum + 1))
    else:
        initial, maximum = 100, 1_000
    return mapping, (attempts, initial, maximum)


@FEW
@given(retry_mappings())
def test_retry_options_from_mappings_configure_a_real_client(server, drawn):
    mapping, (attempts, initial, maximum) = drawn
    options = RetryOptions.from_config(mapping)
    assert (options.attempts, options.initial_delay_ms, options.max_delay_ms) == \
        (attempts, initial, maximum)
    assert RetryOptions.from_config(options) == options
    with server.client(retry=mapping) as client:
        assert client.connected
        assert client.list(take=1).aggregates is not None


@FEW
@given(st.sampled_from(["attempts", "initial_delay_ms", "initialDelayMs", "max_delay_ms",
                        "maxDelayMs"]),
       st.integers(-1_000, -1))
def test_retry_options_refuse_negative_values(server, key, value):
    if key == "attempts":
        value = value + 1  # zero is refused too
    with pytest.raises(exc.EventDBXArgumentError):
        RetryOptions.from_config({key: value})
    with pytest.raises(ValueError):
        server.client(retry={key: value})


# ------------------------------------------------------------------------ publish targets

plugin_names = st.text(st.characters(codec="utf-8", categories=["L", "N", "Pd"]),
                       min_size=1, max_size=20)


@FEW
@given(st.text(st.sampled_from(" \t\n"), max_size=4))
def test_blank_publish_targets_are_refused_before_any_io(client, blank):
    with pytest.raises(exc.EventDBXArgumentError, match="plugin must be provided"):
        PublishTarget(plugin=blank)
    with pytest.raises(exc.EventDBXArgumentError):
        client.create(aggregate_type="pt", aggregate_id="never", event_type="e",
                      payload_json="{}", publish_targets=[{"plugin": blank}])
    assert not client.get(aggregate_type="pt", aggregate_id="never").found


@FEW
@given(plugin_names, st.sampled_from([None, "all", "event-only", "state-only", "async"]),
       st.sampled_from([None, "high", "normal", "low"]), st.booleans())
def test_unknown_plugins_are_named_and_nothing_is_written(client, plugin, mode, priority,
                                                          as_mapping):
    name = f"x-{plugin}"  # never a configured plugin
    target: Any = {"plugin": name, "mode": mode, "priority": priority} if as_mapping \
        else PublishTarget(plugin=name, mode=mode, priority=priority)
    aggregate_id = uuid.uuid4().hex
    # The server refuses a target naming no configured plugin before writing anything.
    with pytest.raises(exc.EventDBXValidationError) as raised:
        client.create(aggregate_type="pt", aggregate_id=aggregate_id, event_type="e",
                      payload_json="{}", publish_targets=[target])
    assert f"plugin '{name}' is not configured" in raised.value.message
    assert not client.get(aggregate_type="pt", aggregate_id=aggregate_id).found


# ------------------------------------------------------------------ sorting and cursors

FIELDS = ["aggregate_type", "aggregate_id", "version", "archived", "created_at", "updated_at"]


@pytest.fixture(scope="module")
def sorted_tenant(server) -> Iterator[Tuple[str, List[Dict[str, Any]]]]:
    """A tenant of its own with aggregates of two types, various versions and some archived."""
    tenant = f"sort-{uuid.uuid4().hex[:8]}"
    with server.client(tenant_id=tenant) as client:
        for n in range(9):
            kind = "alpha" if n % 3 else "beta"
            aggregate_id = f"a{(n * 7) % 9}"
            client.create(aggregate_type=kind, aggregate_id=aggregate_id, event_type="created",
                          payload_json=json.dumps({"n": n}))
            for k in range(n % 4):
                client.apply(aggregate_type=kind, aggregate_id=aggregate_id, event_type="tick",
                             payload_json=json.dumps({"k": k}))
            if n % 4 == 1:
                client.archive(aggregate_type=kind, aggregate_id=aggregate_id)
        everything = list(client.iter_list(include_archived=True, take=100))
        yield tenant, everything


def _millis(timestamp: str) -> Tuple[str, int]:
    """The server orders by millisecond timestamps (RFC 3339 text, nanoseconds, UTC)."""
    seconds, _, fraction = timestamp.rstrip("Z").partition(".")
    return seconds, int((fraction + "000")[:3])


def _key(aggregate: Dict[str, Any], field: str) -> Any:
    value = aggregate.get(field)
    if field == "archived":
        return bool(value)
    if field in ("created_at", "updated_at"):
        return _millis(value)
    return value


def _expected(aggregates: List[Dict[str, Any]],
              options: List[AggregateSortOption]) -> List[Tuple[str, str]]:
    ordered = list(aggregates)
    for option in reversed(options):  # stable sorts, least significant key first
        field = option.field.value if isinstance(option.field, AggregateSortField) \
            else option.field
        ordered.sort(key=lambda a, f=field: _key(a, f), reverse=option.descending)
    return [(a["aggregate_type"], a["aggregate_id"]) for a in ordered]


@st.composite
def sort_options(draw, lead=None) -> List[AggregateSortOption]:
    fields = draw(st.permutations(FIELDS))
    if lead is not None:
        fields = [draw(st.sampled_from(lead))] + [f for f in fields if f not in lead]
    count = draw(st.integers(1, len(fields)))
    chosen = list(fields[:count])
    # Unique order: end with the aggregate's identity unless already there.
    for field in ("aggregate_type", "aggregate_id"):
        if field not in chosen:
            chosen.append(field)
    return [AggregateSortOption(
        draw(st.sampled_from([AggregateSortField(f), f])), descending=draw(st.booleans()))
        for f in chosen]


def _ids(page) -> List[Tuple[str, str]]:
    return [(a["aggregate_type"], a["aggregate_id"]) for a in page.aggregates]


def _spelled(options: List[AggregateSortOption], draw) -> str:
    parts = []
    for option in options:
        name = option.field.value if isinstance(option.field, AggregateSortField) \
            else option.field
        direction = "desc" if option.descending else draw(st.sampled_from(["asc", ""]))
        parts.append(f"{name}:{direction}" if direction else name)
    return draw(st.sampled_from([",", ", ", " , "])).join(parts)


@FEW
@given(st.data())
def test_sort_lists_and_strings_reach_the_server_and_pages_cover_every_aggregate(
        server, sorted_tenant, data):
    tenant, everything = sorted_tenant
    options = data.draw(sort_options())
    spelled = _spelled(options, data.draw)
    take = data.draw(st.integers(1, 4))
    with server.client(tenant_id=tenant) as client:
        by_list = client.list(sort=options, include_archived=True, take=100)
        by_string = client.list(sort=spelled, include_archived=True, take=100)
        assert _ids(by_list) == _ids(by_string) == _expected(everything, options)
        pages, cursor = [], None
        while True:
            page = client.list(sort=options, include_archived=True, take=take, cursor=cursor)
            assert len(page.aggregates) <= take
            pages.extend(_ids(page))
            if not page.has_next_cursor:
                break
            assert page.next_cursor
            cursor = page.next_cursor
        assert pages == _ids(by_list)
    assert encode_sort(options) == ", ".join(o.encode() for o in options)


@FEW
@given(st.data())
def test_ts_shorthand_cursors_resume_after_the_named_aggregate(server, sorted_tenant, data):
    tenant, everything = sorted_tenant
    options = data.draw(sort_options(lead=["created_at", "updated_at"]))
    order = _expected(everything, options)
    archived = {(a["aggregate_type"], a["aggregate_id"]) for a in everything if a.get("archived")}
    scope = [ident for ident in order if ident not in archived]
    after = data.draw(st.sampled_from(scope))
    with server.client(tenant_id=tenant) as client:
        page = client.list(sort=options, cursor=f"ts:{after[0]}:{after[1]}", take=100)
        assert _ids(page) == scope[scope.index(after) + 1:]
        followed = [(a["aggregate_type"], a["aggregate_id"])
                    for a in client.iter_list(sort=options, take=data.draw(st.integers(1, 3)))]
        assert followed == scope


# ---------------------------------------------------------------------- payload JSON types

json_scalars = (st.none() | st.booleans()
                | st.integers(-(2 ** 63), 2 ** 63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(st.characters(codec="utf-8"), max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8), inner,
                      max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), json_values,
                           max_size=5)


def _same(left: Any, right: Any) -> bool:
    """Equal values of equal JSON types (1 and 1.0 and True differ)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
    if isinstance(left, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    return bool(left == right)


@FEW
@given(payloads)
def test_payload_values_keep_their_json_types_through_create_and_get(client, payload):
    aggregate_id = uuid.uuid4().hex
    created = json.loads(client.create(aggregate_type="typed", aggregate_id=aggregate_id,
                                       event_type="created", payload_json=json.dumps(payload)))
    assert _same(created["state"], payload)
    found = client.get(aggregate_type="typed", aggregate_id=aggregate_id)
    assert _same(found.aggregate["state"], payload)
    (event,) = client.events(aggregate_type="typed", aggregate_id=aggregate_id).events
    assert _same(event["payload"], payload)


# ---------------------------------------------------------------------- exception pickling

EXCEPTIONS = [getattr(exc, name) for name in exc.__all__]
texts = st.text(st.characters(codec="utf-8"), max_size=40)


@FEW
@given(st.sampled_from(EXCEPTIONS), texts, texts, st.booleans())
def test_every_exception_pickles_with_any_code_and_message(cls, message, code, retriable):
    error = cls(message, code, retriable)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls
    assert (again.code, again.message, again.retriable) == (code, message, retriable)
    assert str(again) == str(error)
    assert repr(again) == repr(error)


@FEW
@given(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,30}", fullmatch=True), plugin_names)
def test_errors_raised_by_the_server_pickle(client: EventDBXClient, aggregate_id, plugin):
    with pytest.raises(exc.EventDBXNotFoundError) as missing:
        client.archive(aggregate_type="missing", aggregate_id=aggregate_id)
    with pytest.raises(exc.EventDBXValidationError) as invalid:  # a message naming `plugin`
        client.create(aggregate_type="missing", aggregate_id=aggregate_id, event_type="e",
                      payload_json="{}", publish_targets=[PublishTarget(plugin=f"x-{plugin}")])
    assert plugin in invalid.value.message
    for error in (missing.value, invalid.value):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert (again.code, again.message, again.retriable, str(again)) == \
            (error.code, error.message, error.retriable, str(error))
