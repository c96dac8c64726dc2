"""The operations every workload performs, one driver per kind of system.

A ``Driver`` is one connection. Workloads call only these methods, so every system does the
same operations with the same payloads: ``create`` (an aggregate with its first event),
``append`` (one event, optionally at an expected version), ``get``, ``list_page`` (a filtered,
sorted page walked with a cursor), ``events_page`` and ``verify``.

PostgreSQL does what an event store built on it does: an ``aggregates`` row holding the current
version and merged state, an ``events`` table keyed ``(aggregate_type, aggregate_id, version)``,
and each write as ONE statement that bumps the version and inserts the event. Its ``verify``
reads every event and folds their SHA-256 hashes into one, the same amount of work as
recomputing a Merkle root over stored events.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import psycopg

from eventdbx import AsyncEventDBXClient
from eventdbx.exceptions import EventDBXConflictError


class VersionConflict(Exception):
    """The aggregate was not at the expected version (an optimistic-concurrency loss)."""


@dataclass(frozen=True)
class BucketFilter:
    """Aggregates of ``aggregate_type`` whose state's ``bucket`` (0..99) is below ``below``:
    ``below`` percent of them."""

    aggregate_type: str
    below: int


#: A page: how many items it held and the cursor of the next one (None at the end).
Page = Tuple[int, Optional[str]]


class Driver(abc.ABC):
    """One connection to a system under test."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create(self, aggregate_type: str, aggregate_id: str, event_type: str,
                     payload: str) -> None: ...

    @abc.abstractmethod
    async def append(self, aggregate_type: str, aggregate_id: str, event_type: str,
                     payload: str, expected_version: Optional[int] = None) -> None:
        """Appends one event; raises ``VersionConflict`` when ``expected_version`` (the
        version before this event) does not hold."""

    @abc.abstractmethod
    async def get(self, aggregate_type: str, aggregate_id: str) -> Optional[int]:
        """Reads the aggregate's current state; its version, None when it does not exist."""

    @abc.abstractmethod
    async def list_page(self, where: BucketFilter, sort: str, cursor: Optional[str],
                        take: int) -> Page:
        """One page of aggregates matching ``where``, sorted by ``sort`` (``aggregate_id`` or
        ``updated_at``)."""

    @abc.abstractmethod
    async def events_page(self, aggregate_type: str, aggregate_id: str, cursor: Optional[str],
                          take: int) -> Page: ...

    @abc.abstractmethod
    async def verify(self, aggregate_type: str, aggregate_id: str) -> str: ...


@dataclass(frozen=True)
class DbxEndpoint:
    """How to reach a running ``dbx``: address, root token, pinned key, tenant."""

    host: str
    port: int
    token: str
    fingerprint: str
    tenant_id: str = "default"


class DbxDriver(Driver):
    """Our SDK's ``AsyncEventDBXClient`` (terse acknowledgements: no JSON to parse per write)
    over one transport: ``v2`` (pinned key), ``v1`` or ``plaintext``."""

    def __init__(self, endpoint: DbxEndpoint, transport: str) -> None:
        options: dict = dict(token=endpoint.token, tenant_id=endpoint.tenant_id,
                             host=endpoint.host, port=endpoint.port, verbose=False)
        if transport == "v2":
            options.update(protocol_version=2, server_key=endpoint.fingerprint)
        elif transport == "v1":
            options.update(protocol_version=1)
        elif transport == "plaintext":
            options.update(no_noise=True)
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self._client = AsyncEventDBXClient(**options)

    async def connect(self) -> None:
        await self._client.connect()

    async def close(self) -> None:
        await self._client.close()

    async def create(self, aggregate_type: str, aggregate_id: str, event_type: str,
                     payload: str) -> None:
        await self._client.create(aggregate_type=aggregate_type, aggregate_id=aggregate_id,
                                  event_type=event_type, payload_json=payload)

    async def append(self, aggregate_type: str, aggregate_id: str, event_type: str,
                     payload: str, expected_version: Optional[int] = None) -> None:
        try:
            await self._client.apply(aggregate_type=aggregate_type, aggregate_id=aggregate_id,
                                     event_type=event_type, payload_json=payload,
                                     expected_version=expected_version)
        except EventDBXConflictError as exc:
            raise VersionConflict(str(exc)) from exc

    async def get(self, aggregate_type: str, aggregate_id: str) -> Optional[int]:
        result = await self._client.get(aggregate_type=aggregate_type, aggregate_id=aggregate_id)
        if not result.found or result.aggregate_json is None:
            return None
        return int(json.loads(result.aggregate_json)["version"])

    async def list_page(self, where: BucketFilter, sort: str, cursor: Optional[str],
                        take: int) -> Page:
        expr = f"aggregate_type = '{where.aggregate_type}' AND bucket < {where.below}"
        page = await self._client.list(cursor=cursor, take=take, filter_expr=expr, sort=sort)
        count = len(json.loads(page.aggregates_json))
        return count, page.next_cursor if page.has_next_cursor else None

    async def events_page(self, aggregate_type: str, aggregate_id: str, cursor: Optional[str],
                          take: int) -> Page:
        page = await self._client.events(aggregate_type=aggregate_type,
                                         aggregate_id=aggregate_id, cursor=cursor, take=take)
        count = len(json.loads(page.events_json))
        return count, page.next_cursor if page.has_next_cursor else None

    async def verify(self, aggregate_type: str, aggregate_id: str) -> str:
        return str(await self._client.verify(aggregate_type=aggregate_type,
                                             aggregate_id=aggregate_id))


#: The PostgreSQL schema (applied once per cluster).
POSTGRES_SCHEMA = """
CREATE TABLE aggregates (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    version bigint NOT NULL,
    state jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE INDEX aggregates_by_updated_at ON aggregates (aggregate_type, updated_at, aggregate_id);
CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    version bigint NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, version)
);
"""

_CREATE = """
WITH created AS (
    INSERT INTO aggregates (aggregate_type, aggregate_id, version, state, created_at, updated_at)
    VALUES (%(t)s, %(i)s, 1, %(p)s::jsonb, now(), now())
    RETURNING version
)
INSERT INTO events (aggregate_type, aggregate_id, version, event_type, payload, created_at)
SELECT %(t)s, %(i)s, version, %(e)s, %(p)s::jsonb, now() FROM created
"""

_APPEND = """
WITH bumped AS (
    UPDATE aggregates SET version = version + 1, state = state || %(p)s::jsonb,
        updated_at = now()
    WHERE aggregate_type = %(t)s AND aggregate_id = %(i)s
    RETURNING version
)
INSERT INTO events (aggregate_type, aggregate_id, version, event_type, payload, created_at)
SELECT %(t)s, %(i)s, version, %(e)s, %(p)s::jsonb, now() FROM bumped
"""

_APPEND_EXPECTED = _APPEND.replace(
    "WHERE aggregate_type = %(t)s AND aggregate_id = %(i)s",
    "WHERE aggregate_type = %(t)s AND aggregate_id = %(i)s AND version = %(v)s")

_GET = "SELECT version, state FROM aggregates WHERE aggregate_type = %s AND aggregate_id = %s"

_LIST_BY_ID = """
SELECT aggregate_id, version, state, created_at, updated_at FROM aggregates
WHERE aggregate_type = %(t)s AND (state->>'bucket')::int < %(b)s AND aggregate_id > %(after)s
ORDER BY aggregate_id LIMIT %(n)s
"""

_LIST_BY_UPDATED = """
SELECT aggregate_id, version, state, created_at, updated_at FROM aggregates
WHERE aggregate_type = %(t)s AND (state->>'bucket')::int < %(b)s
  AND (updated_at, aggregate_id) > (%(ts)s::timestamptz, %(after)s)
ORDER BY updated_at, aggregate_id LIMIT %(n)s
"""

_EVENTS = """
SELECT version, event_type, payload, created_at FROM events
WHERE aggregate_type = %s AND aggregate_id = %s AND version > %s
ORDER BY version LIMIT %s
"""

_VERIFY = """
SELECT encode(sha256(string_agg(sha256(convert_to(payload::text, 'UTF8')), ''::bytea
                                ORDER BY version)), 'hex')
FROM events WHERE aggregate_type = %s AND aggregate_id = %s
"""


@dataclass(frozen=True)
class PostgresEndpoint:
    """How to reach the scratch cluster, and the session's ``synchronous_commit``."""

    host: str
    port: int
    user: str
    dbname: str
    synchronous_commit: bool


class PostgresDriver(Driver):
    """psycopg 3's ``AsyncConnection`` in autocommit mode (each statement its own transaction;
    psycopg prepares a statement server-side from its fifth use on)."""

    def __init__(self, endpoint: PostgresEndpoint) -> None:
        self._endpoint = endpoint
        self._conn: Optional[Any] = None

    async def connect(self) -> None:
        e = self._endpoint
        sync = "on" if e.synchronous_commit else "off"
        self._conn = await psycopg.AsyncConnection.connect(
            host=e.host, port=e.port, user=e.user, dbname=e.dbname, autocommit=True,
            options=f"-c synchronous_commit={sync}")

    @property
    def _c(self) -> Any:
        if self._conn is None:
            raise RuntimeError("not connected")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def create(self, aggregate_type: str, aggregate_id: str, event_type: str,
                     payload: str) -> None:
        await self._c.execute(_CREATE, {"t": aggregate_type, "i": aggregate_id,
                                        "e": event_type, "p": payload})

    async def append(self, aggregate_type: str, aggregate_id: str, event_type: str,
                     payload: str, expected_version: Optional[int] = None) -> None:
        params = {"t": aggregate_type, "i": aggregate_id, "e": event_type, "p": payload,
                  "v": expected_version}
        query = _APPEND if expected_version is None else _APPEND_EXPECTED
        cur = await self._c.execute(query, params)
        if cur.rowcount != 1:
            if expected_version is not None:
                raise VersionConflict(f"{aggregate_type}/{aggregate_id} not at {expected_version}")
            raise LookupError(f"no aggregate {aggregate_type}/{aggregate_id}")

    async def get(self, aggregate_type: str, aggregate_id: str) -> Optional[int]:
        cur = await self._c.execute(_GET, (aggregate_type, aggregate_id))
        row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def list_page(self, where: BucketFilter, sort: str, cursor: Optional[str],
                        take: int) -> Page:
        params: dict = {"t": where.aggregate_type, "b": where.below, "n": take, "after": ""}
        if sort == "aggregate_id":
            query = _LIST_BY_ID
            if cursor is not None:
                params["after"] = cursor
        elif sort == "updated_at":
            query = _LIST_BY_UPDATED
            params["ts"] = "-infinity"
            if cursor is not None:
                params["ts"], params["after"] = cursor.split("|", 1)
        else:
            raise ValueError(f"unsupported sort {sort!r}")
        cur = await self._c.execute(query, params)
        rows = await cur.fetchall()
        if len(rows) < take:
            return len(rows), None
        last = rows[-1]
        next_cursor = last[0] if sort == "aggregate_id" else f"{last[4].isoformat()}|{last[0]}"
        return len(rows), next_cursor

    async def events_page(self, aggregate_type: str, aggregate_id: str, cursor: Optional[str],
                          take: int) -> Page:
        after = int(cursor) if cursor is not None else 0
        cur = await self._c.execute(_EVENTS, (aggregate_type, aggregate_id, after, take))
        rows = await cur.fetchall()
        if len(rows) < take:
            return len(rows), None
        return len(rows), str(rows[-1][0])

    async def verify(self, aggregate_type: str, aggregate_id: str) -> str:
        cur = await self._c.execute(_VERIFY, (aggregate_type, aggregate_id))
        row = await cur.fetchone()
        return str(row[0]) if row else ""
