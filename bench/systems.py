"""The systems under test: one entry per row of the report in ``SYSTEMS``.

An entry names what the report labels it with (system, durability, transport), which server it
needs (entries with equal server specs share one running server: our three transports talk to
one ``dbx``, PostgreSQL's two ``synchronous_commit`` settings to one cluster), how to open a
connection to it, and which workloads it takes part in. Adding a system is adding an entry.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional

from .drivers import (
    POSTGRES_SCHEMA,
    DbxDriver,
    DbxEndpoint,
    Driver,
    PostgresDriver,
    PostgresEndpoint,
)
from .servers import DbxConfig, DbxServer, PostgresServer, ReferenceServer, Server, StartFailed


@dataclass(frozen=True)
class Environment:
    """What the run found on the machine."""

    dbx_binary: str
    reference_binary: Optional[str]


class ServerSpec(abc.ABC):
    """How to start one server; equal specs share one running server."""

    @abc.abstractmethod
    def skip_reason(self, env: Environment) -> Optional[str]:
        """Why this server cannot run here (the run skips it cleanly), or None."""

    @abc.abstractmethod
    def start(self, env: Environment) -> Server: ...


@dataclass(frozen=True)
class DbxSpec(ServerSpec):
    config: DbxConfig

    def skip_reason(self, env: Environment) -> Optional[str]:
        return None  # ours is never optional: a missing binary is a failure to start

    def start(self, env: Environment) -> Server:
        if not os.access(env.dbx_binary, os.X_OK):
            raise StartFailed(f"no dbx binary at {env.dbx_binary}")
        return DbxServer(env.dbx_binary, self.config)


@dataclass(frozen=True)
class PostgresSpec(ServerSpec):
    def skip_reason(self, env: Environment) -> Optional[str]:
        return None

    def start(self, env: Environment) -> Server:
        return PostgresServer(POSTGRES_SCHEMA)


@dataclass(frozen=True)
class ReferenceSpec(ServerSpec):
    def skip_reason(self, env: Environment) -> Optional[str]:
        if not env.reference_binary:
            return "EVENTDBX_REFERENCE_DBX is not set"
        if not os.access(env.reference_binary, os.X_OK):
            return f"EVENTDBX_REFERENCE_DBX={env.reference_binary} is not executable"
        return None

    def start(self, env: Environment) -> Server:
        assert env.reference_binary is not None
        return ReferenceServer(env.reference_binary)


def _dbx(transport: str) -> Callable[[Server], Driver]:
    def open_driver(server: Server) -> Driver:
        assert isinstance(server, (DbxServer, ReferenceServer))
        fingerprint = getattr(server, "fingerprint", "")
        return DbxDriver(DbxEndpoint(server.host, server.port, server.token, fingerprint),
                         transport)

    return open_driver


def _postgres(synchronous_commit: bool) -> Callable[[Server], Driver]:
    def open_driver(server: Server) -> Driver:
        assert isinstance(server, PostgresServer)
        return PostgresDriver(PostgresEndpoint(server.host, server.port, server.user,
                                               server.dbname, synchronous_commit))

    return open_driver


#: Every workload id that every kind of system can run (W1S needs our server: see below).
ALL = frozenset({"W1", "W2", "W3", "W4", "W5", "W6", "W7", "IDLE", "CLIENT", "SUB"})
#: Reads do not depend on durability: one entry per server runs them.
WRITES = frozenset({"W1", "W2", "W3", "W5"})


@dataclass(frozen=True)
class System:
    """One row of the report."""

    key: str
    name: str
    durability: str
    #: ``durable`` or ``relaxed``: ours is compared with the peers of the same class.
    durability_class: str
    transport: str
    ours: bool
    server: ServerSpec
    driver: Callable[[Server], Driver] = field(compare=False)
    workloads: FrozenSet[str] = ALL

    @property
    def label(self) -> str:
        return f"{self.name} {self.durability} {self.transport}"


_FSYNC = DbxSpec(DbxConfig("fsync"))
_FSYNC_NO_POLL = DbxSpec(DbxConfig("fsync", busy_poll_us=0))
_FSYNC_DIRECT = DbxSpec(DbxConfig("fsync", wal_direct_io=True))
_FSYNC_CKPT_4M = DbxSpec(DbxConfig("fsync", checkpoint_bytes=4 << 20))
_RELAXED = DbxSpec(DbxConfig("relaxed"))
_RELAXED_NO_POLL = DbxSpec(DbxConfig("relaxed", busy_poll_us=0))
_POSTGRES = PostgresSpec()
_ON_POSTGRES = DbxSpec(DbxConfig("fsync", backend="postgres"))
_ON_POSTGRES_NO_POLL = DbxSpec(DbxConfig("fsync", busy_poll_us=0, backend="postgres"))

SYSTEMS: List[System] = [
    # W1S: the synchronous client's sequential appends, on the durable server only (issue
    # 15's target compares their p50 with the disk's fsync p50).
    System("dbx-fsync-v2", "dbx", "fsync", "durable", "v2", True, _FSYNC, _dbx("v2"),
           WRITES | {"W1S", "W7", "IDLE"}),
    # The durable server with its busy-polling off: whether polling after each answer pays
    # for itself on the durable path (each request waits for a sync anyway).
    System("dbx-fsync-v2-nopoll", "dbx (server busy-poll off)", "fsync", "durable", "v2", True,
           _FSYNC_NO_POLL, _dbx("v2"), frozenset({"W1", "W1S", "W2"})),
    # The durable server writing its log with `O_DIRECT | O_DSYNC` (`[storage] wal_direct_io =
    # true`) against the default buffered `pwrite` and `fdatasync` per record.
    System("dbx-fsync-v2-direct", "dbx (direct log writes)", "fsync", "durable", "v2", True,
           _FSYNC_DIRECT, _dbx("v2"), frozenset({"W1", "W1S", "W2"})),
    # The durable server checkpointing every 4 MiB of log (`[storage] checkpoint_bytes`, the
    # default before 32 MiB) against the default.
    System("dbx-fsync-v2-ckpt4m", "dbx (4 MiB checkpoints)", "fsync", "durable", "v2", True,
           _FSYNC_CKPT_4M, _dbx("v2"), frozenset({"W1S", "W2"})),
    System("dbx-fsync-v1", "dbx", "fsync", "durable", "v1", True, _FSYNC, _dbx("v1"),
           frozenset({"W1", "W7"})),
    System("dbx-fsync-plain", "dbx", "fsync", "durable", "plaintext", True, _FSYNC,
           _dbx("plaintext"), frozenset({"W1", "W7"})),
    System("dbx-relaxed-v2", "dbx", "relaxed", "relaxed", "v2", True, _RELAXED, _dbx("v2"),
           ALL),
    # The server's busy-polling off (`[socket] busy_poll_us = 0`): its CPU per request beside
    # the row above, at rest and with mostly idle connections (the report pairs the two).
    System("dbx-relaxed-v2-nopoll", "dbx (server busy-poll off)", "relaxed", "relaxed", "v2",
           True, _RELAXED_NO_POLL, _dbx("v2"), frozenset({"W1", "W7", "IDLE", "CLIENT"})),
    # Our server storing in PostgreSQL (its own scratch cluster; the server's CPU includes the
    # database's): what running several servers over one database costs against one alone.
    System("dbx-pg-v2", "dbx on PostgreSQL", "synchronous_commit=on", "durable", "v2", True,
           _ON_POSTGRES, _dbx("v2"), WRITES | {"W7"}),
    # The same with the server's busy-polling off: whether polling after each answer pays where
    # the server shares the CPU with its database (W2 beside `dbx-pg-v2`).
    System("dbx-pg-v2-nopoll", "dbx on PostgreSQL (server busy-poll off)",
           "synchronous_commit=on", "durable", "v2", True, _ON_POSTGRES_NO_POLL, _dbx("v2"),
           frozenset({"W2"})),
    System("pg-sync-on", "PostgreSQL", "synchronous_commit=on", "durable", "psycopg", False,
           _POSTGRES, _postgres(True), WRITES | {"W7", "IDLE"}),
    # CLIENT: psycopg's async `SELECT`, beside our SDK's `get` (the workload's only variant
    # here).
    System("pg-sync-off", "PostgreSQL", "synchronous_commit=off", "relaxed", "psycopg", False,
           _POSTGRES, _postgres(False), ALL - {"IDLE", "SUB"}),
    System("eventdbx-ref", "EventDBX (reference)", "no fsync", "relaxed", "v1", False,
           ReferenceSpec(), _dbx("v1"), frozenset({"W1", "W2", "W5", "W6", "W7"})),
]


def by_key() -> Dict[str, System]:
    return {s.key: s for s in SYSTEMS}
