"""The workload interface and the registry of workloads.

A workload has variants (the points of the report: ``N=16 uniform``, ``sort updated_at, 10%``);
for each system it takes part in, ``prepare`` seeds what it reads (once per server, not
measured), then each variant is run ``Sizes.runs`` times. ``run`` opens what it needs, then
measures only the operations with ``measure`` (wall time, the client's and the server's CPU
from /proc) and records each operation's latency with ``timed``.

Every system gets the same operations, payloads and ids: ids carry the system's slot (``s3``)
only so that two entries sharing a server (our transports, PostgreSQL's two commit modes) never
collide, and payloads come from one seeded generator per (workload, variant, run).
"""

from __future__ import annotations

import abc
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ..drivers import Driver, VersionConflict
from ..measure import Run, client_cpu, tree_cpu
from ..servers import Server
from ..systems import System

SEED = 20261206


@dataclass(frozen=True)
class Sizes:
    """How much each workload does: the full suite and the smoke run differ only here."""

    runs: int
    w1_aggregates: int
    w2_concurrency: Tuple[int, ...]
    w2_seconds: float
    w2_pool: int
    w3_rates: Tuple[int, ...]
    w3_seconds: float
    w3_connections: int
    w4_aggregates: int
    w5_events: int
    w5_appends: int
    w6_sizes: Tuple[int, ...]
    w7_cycles: int
    idle_seconds: float
    client_requests: int
    fsync_probes: int
    #: SUB: writer connections, the stall and the steady-rate run (seconds).
    sub_writers: int = 16
    sub_stall_seconds: float = 30.0
    sub_latency_seconds: float = 5.0

    @staticmethod
    def full() -> "Sizes":
        # W2 runs 5 s, as issue 15 measured it: the embedded engine checkpoints every 4-6 s at
        # these rates, and a 2 s run met a checkpoint or not by chance (docs/benchmarks.md).
        return Sizes(runs=5, w1_aggregates=200, w2_concurrency=(1, 4, 16, 64), w2_seconds=5.0,
                     w2_pool=1024, w3_rates=(500, 1000, 2000), w3_seconds=3.0,
                     w3_connections=16, w4_aggregates=100_000, w5_events=10_000,
                     w5_appends=200, w6_sizes=(10, 1_000, 10_000, 100_000), w7_cycles=200,
                     idle_seconds=10.0, client_requests=20_000, fsync_probes=500)

    @staticmethod
    def quick() -> "Sizes":
        return Sizes(runs=3, w1_aggregates=12, w2_concurrency=(1, 4, 16, 64), w2_seconds=0.25,
                     w2_pool=128, w3_rates=(200, 500), w3_seconds=0.4, w3_connections=8,
                     w4_aggregates=1_000, w5_events=1_000, w5_appends=30,
                     w6_sizes=(10, 100, 1_000), w7_cycles=12, idle_seconds=0.5,
                     client_requests=500, fsync_probes=50, sub_stall_seconds=2.0,
                     sub_latency_seconds=0.5)


@dataclass
class Target:
    """A system ready to be driven: its entry, its running server, its slot in the id space
    and what has been seeded on its server (shared by the entries that share the server)."""

    system: System
    server: Server
    slot: int
    seeded: Dict[str, Any] = field(default_factory=dict)

    def driver(self) -> Driver:
        return self.system.driver(self.server)

    def aggregate_id(self, *parts: object) -> str:
        return "-".join([f"s{self.slot}", *(str(p) for p in parts)])

    async def connect(self, count: int) -> List[Driver]:
        drivers = [self.driver() for _ in range(count)]
        try:
            await asyncio.gather(*(d.connect() for d in drivers))
        except BaseException:
            await close_all(drivers)
            raise
        return drivers


async def close_all(drivers: Sequence[Driver]) -> None:
    await asyncio.gather(*(d.close() for d in drivers), return_exceptions=True)


def payloads(seed: object, count: int) -> List[str]:
    """``count`` event payloads from a generator seeded by ``seed`` (about 100 bytes each)."""
    rng = random.Random(f"{SEED}:{seed}")
    return [json.dumps({"amount": rng.randrange(1, 100_000), "currency": "EUR",
                        "reference": f"{rng.getrandbits(64):016x}",
                        "note": "benchmark event payload"}) for _ in range(count)]


async def measure(target: Target, body: Callable[[Run], Awaitable[None]]) -> Run:
    """Runs ``body`` once, charging it wall time and the client's and server's CPU."""
    run = Run()
    client0, server0 = client_cpu(), tree_cpu(*target.server.cpu_roots)
    start = time.perf_counter()
    await body(run)
    run.seconds = time.perf_counter() - start
    run.client_cpu = client_cpu().since(client0)
    run.server_cpu = tree_cpu(*target.server.cpu_roots).since(server0)
    return run


OK, CONFLICT, ERROR = "ok", "conflict", "error"


async def timed_result(run: Run, operation: Awaitable[Any],
                       since: Optional[float] = None) -> Tuple[str, Any]:
    """Awaits one operation, recording its latency (from ``since`` when given: an open loop's
    intended send time), a version conflict, or an error; returns which (``OK``...) and the
    operation's value (None unless ``OK``)."""
    start = time.perf_counter() if since is None else since
    try:
        value = await operation
    except VersionConflict:
        run.conflicts += 1
        return CONFLICT, None
    except Exception as exc:  # every failure is counted and reported, none stops the run
        run.error(exc)
        return ERROR, None
    run.latencies.append(time.perf_counter() - start)
    run.ops += 1
    return OK, value


async def timed(run: Run, operation: Awaitable[Any], since: Optional[float] = None) -> str:
    """``timed_result`` without the value."""
    return (await timed_result(run, operation, since))[0]


async def fill(drivers: Sequence[Driver], jobs: Sequence[Callable[[Driver], Awaitable[Any]]]
               ) -> None:
    """Seeds data: runs ``jobs`` spread over ``drivers`` (one job at a time per driver); any
    failure fails the seeding."""
    pending = list(reversed(jobs))

    async def worker(driver: Driver) -> None:
        while pending:
            await pending.pop()(driver)

    await asyncio.gather(*(worker(d) for d in drivers))


class Workload(abc.ABC):
    """One workload of the suite."""

    id: str = ""
    title: str = ""
    #: What ``Run.ops`` counts, for the report's throughput column.
    unit: str = "ops/s"
    #: The transport every variant uses when the workload picks its own clients (else the
    #: system's).
    transport: Optional[str] = None

    @abc.abstractmethod
    def variants(self, sizes: Sizes) -> List[str]: ...

    def variants_for(self, system: System, sizes: Sizes) -> List[str]:
        """The variants ``system`` takes part in (most workloads: every one)."""
        return self.variants(sizes)

    def transport_of(self, variant: str) -> Optional[str]:
        """The transport ``variant`` uses when the workload picks it (else the system's)."""
        return self.transport

    def unit_of(self, variant: str) -> str:
        """What a run of ``variant`` counts (most workloads: one unit for every variant)."""
        return self.unit

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        """Seeds what the workload reads; called once per system before its variants."""
        return None

    @abc.abstractmethod
    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run: ...

    def extra(self, variant: str, runs: List[Run]) -> Dict[str, float]:
        """Numbers beside the standard ones (e.g. the idle server's share of a core)."""
        return {}


def registry() -> List[Workload]:
    from .client_cost import ClientCost
    from .connections import Idle, W7Connect
    from .reads import W4List, W5LongAggregate, W6Verify
    from .subscriptions import Subscriptions
    from .sync_writes import W1SSyncAppends
    from .writes import W1Sequential, W2Concurrent, W3OpenLoop

    return [W1Sequential(), W1SSyncAppends(), W2Concurrent(), W3OpenLoop(), W4List(),
            W5LongAggregate(), W6Verify(), W7Connect(), Idle(), ClientCost(), Subscriptions()]


def once(target: Target, key: str) -> bool:
    """Whether ``key`` still has to be seeded on this target's server (and marks it done)."""
    done: Set[str] = target.seeded.setdefault("__keys__", set())
    first = key not in done
    done.add(key)
    return first
