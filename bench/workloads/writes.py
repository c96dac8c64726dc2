"""Write workloads: W1 (one client, create then 10 appends), W2 (N connections appending at
expected versions, uniform or on 8 hot aggregates) and W3 (open loop, 80% reads, 20% appends
at fixed offered rates, latency from the intended send time)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Dict, List

from ..drivers import Driver
from ..measure import Run
from . import (
    CONFLICT,
    OK,
    SEED,
    Sizes,
    Target,
    Workload,
    close_all,
    fill,
    measure,
    once,
    payloads,
    timed,
)

TYPE = "account"
HOT_AGGREGATES = 8


class W1Sequential(Workload):
    id = "W1"
    title = "sequential create then 10 appends, one client"
    unit = "writes/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return ["create + 10 appends"]

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        (driver,) = await target.connect(1)
        ids = [target.aggregate_id("w1", index, i) for i in range(sizes.w1_aggregates)]
        ring = payloads(("W1", index), 11)

        async def body(run: Run) -> None:
            for aggregate_id in ids:
                if await timed(run, driver.create(TYPE, aggregate_id, "opened", ring[0])) != OK:
                    continue
                for k in range(1, 11):
                    await timed(run, driver.append(TYPE, aggregate_id, "deposited", ring[k]))

        try:
            return await measure(target, body)
        finally:
            await close_all([driver])


async def _create_pool(target: Target, ids: List[str]) -> Dict[str, int]:
    drivers = await target.connect(8)
    ring = payloads("pool", 1)
    try:
        await fill(drivers, [lambda d, i=i: d.create(TYPE, i, "opened", ring[0]) for i in ids])
    finally:
        await close_all(drivers)
    return {i: 1 for i in ids}


class W2Concurrent(Workload):
    """Each connection appends with the version it last saw as the expected version; a conflict
    is counted (not an error), the connection re-reads the version and goes on."""

    id = "W2"
    title = "N concurrent connections appending at expected versions"
    unit = "appends/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [f"N={n} {shape}" for shape in ("uniform", "hot") for n in sizes.w2_concurrency]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        key = f"W2:{target.slot}"
        if once(target, key):
            uniform = [target.aggregate_id("w2u", i) for i in range(sizes.w2_pool)]
            hot = [target.aggregate_id("w2h", i) for i in range(HOT_AGGREGATES)]
            target.seeded[key] = await _create_pool(target, uniform + hot)
            target.seeded[key + ":uniform"] = uniform
            target.seeded[key + ":hot"] = hot

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        key = f"W2:{target.slot}"
        known: Dict[str, int] = target.seeded[key]
        count, shape = variant[2:].split()
        pool: List[str] = target.seeded[f"{key}:{shape}"]
        drivers = await target.connect(int(count))

        async def worker(w: int, driver: Driver, run: Run, deadline: float) -> None:
            rng = random.Random(f"{SEED}:W2:{variant}:{index}:{w}")
            ring = payloads(("W2", variant, index, w), 64)
            k = 0
            while time.perf_counter() < deadline:
                aggregate_id = pool[rng.randrange(len(pool))]
                expected = known[aggregate_id]
                outcome = await timed(run, driver.append(TYPE, aggregate_id, "deposited",
                                                         ring[k % len(ring)], expected))
                k += 1
                if outcome == OK:
                    known[aggregate_id] = max(known[aggregate_id], expected + 1)
                elif outcome == CONFLICT:
                    try:
                        version = await driver.get(TYPE, aggregate_id)
                    except Exception as exc:  # counted like any failed operation
                        run.error(exc)
                        continue
                    if version is not None:
                        known[aggregate_id] = max(known[aggregate_id], version)

        async def body(run: Run) -> None:
            deadline = time.perf_counter() + sizes.w2_seconds
            await asyncio.gather(*(worker(w, d, run, deadline) for w, d in enumerate(drivers)))

        try:
            return await measure(target, body)
        finally:
            await close_all(drivers)


class W3OpenLoop(Workload):
    """Operations are issued at fixed intended times whatever the system's answers do; each
    waits for a free connection of the pool and its latency counts from its intended time,
    so a system that falls behind shows it (no coordinated omission)."""

    id = "W3"
    title = "open loop, 80% reads and 20% appends at fixed offered rates"
    unit = "ops/s"
    READ_SHARE = 0.8

    def variants(self, sizes: Sizes) -> List[str]:
        return [f"{rate}/s offered" for rate in sizes.w3_rates]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        key = f"W3:{target.slot}"
        if once(target, key):
            ids = [target.aggregate_id("w3", i) for i in range(128)]
            await _create_pool(target, ids)
            target.seeded[key] = ids

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        ids: List[str] = target.seeded[f"W3:{target.slot}"]
        rate = int(variant.split("/")[0])
        total = int(rate * sizes.w3_seconds)
        rng = random.Random(f"{SEED}:W3:{variant}:{index}")
        plan = [(rng.random() < self.READ_SHARE, ids[rng.randrange(len(ids))])
                for _ in range(total)]
        ring = payloads(("W3", variant, index), 64)
        drivers = await target.connect(sizes.w3_connections)
        free: "asyncio.Queue[Driver]" = asyncio.Queue()
        for driver in drivers:
            free.put_nowait(driver)

        async def issue(run: Run, n: int, intended: float) -> None:
            driver = await free.get()
            try:
                read, aggregate_id = plan[n]
                operation = (driver.get(TYPE, aggregate_id) if read else
                             driver.append(TYPE, aggregate_id, "deposited", ring[n % 64]))
                await timed(run, operation, since=intended)
            finally:
                free.put_nowait(driver)

        async def body(run: Run) -> None:
            start = time.perf_counter()
            tasks = []
            for n in range(total):
                intended = start + n / rate
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
                tasks.append(asyncio.ensure_future(issue(run, n, intended)))
            await asyncio.gather(*tasks)

        try:
            return await measure(target, body)
        finally:
            await close_all(drivers)
