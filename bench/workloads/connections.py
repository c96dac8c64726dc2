"""Connection workloads: W7 (connect, handshake, one call, close; sequential and 8-way) and
IDLE (what a server burns at rest with 64 open connections, silent or each sending a `get` every
100 ms)."""

from __future__ import annotations

import asyncio
from typing import Dict, List

from ..drivers import Driver
from ..measure import Run
from . import Sizes, Target, Workload, close_all, measure, once, payloads, timed

TYPE = "account"
IDLE_CONNECTIONS = 64
#: How often each connection of the paced IDLE variant sends its `get`.
PACED_PERIOD = 0.1
SILENT = f"{IDLE_CONNECTIONS} idle connections"
PACED = f"{IDLE_CONNECTIONS} connections, a get every 100 ms each"


async def _seed_one(target: Target) -> None:
    if once(target, "W7"):
        (driver,) = await target.connect(1)
        try:
            await driver.create(TYPE, "w7-probe", "opened", payloads("W7", 1)[0])
        finally:
            await close_all([driver])


class W7Connect(Workload):
    id = "W7"
    title = "connect, handshake, one call (get), close"
    unit = "connections/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return ["sequential", "8-way"]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        await _seed_one(target)

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        ways = 1 if variant == "sequential" else 8

        async def cycle() -> None:
            driver = target.driver()
            try:
                await driver.connect()
                if await driver.get(TYPE, "w7-probe") is None:
                    raise LookupError("w7-probe not found")
            finally:
                await driver.close()

        async def lane(run: Run, cycles: int) -> None:
            for _ in range(cycles):
                await timed(run, cycle())

        async def body(run: Run) -> None:
            per_lane = max(1, sizes.w7_cycles // ways) if ways > 1 else sizes.w7_cycles
            await asyncio.gather(*(lane(run, per_lane) for _ in range(ways)))

        return await measure(target, body)


class Idle(Workload):
    """64 connections each make one call, then, while the server's CPU is read over
    ``Sizes.idle_seconds``, either stay open and silent (``SILENT``: the run's one "operation"
    is that interval, so its server CPU per op is the CPU of the whole idle interval) or each
    send one `get` every 100 ms (``PACED``: mostly idle but not silent, where a busy-poll that
    did not adapt would spin after every answer; its operations are the requests)."""

    id = "IDLE"
    title = "server CPU at rest: 64 idle connections, and 64 sending a get every 100 ms each"
    unit = "intervals/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [SILENT, PACED]

    def unit_of(self, variant: str) -> str:
        return self.unit if variant == SILENT else "requests/s"

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        await _seed_one(target)

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        drivers = await target.connect(IDLE_CONNECTIONS)
        try:
            await asyncio.gather(*(d.get(TYPE, "w7-probe") for d in drivers))
            if variant == SILENT:
                async def silent(run: Run) -> None:
                    await asyncio.sleep(sizes.idle_seconds)  # the measured interval itself
                    run.ops = 1

                return await measure(target, silent)
            ticks = max(1, round(sizes.idle_seconds / PACED_PERIOD))

            async def lane(run: Run, driver: Driver, offset: float) -> None:
                # On a fixed schedule (no drift), the connections spread over the period.
                loop = asyncio.get_running_loop()
                start = loop.time() + offset
                for tick in range(ticks):
                    await asyncio.sleep(max(0.0, start + tick * PACED_PERIOD - loop.time()))
                    await timed(run, driver.get(TYPE, "w7-probe"))

            async def paced(run: Run) -> None:
                await asyncio.gather(*(lane(run, d, i * PACED_PERIOD / IDLE_CONNECTIONS)
                                       for i, d in enumerate(drivers)))

            return await measure(target, paced)
        finally:
            await close_all(drivers)

    def extra(self, variant: str, runs: List[Run]) -> Dict[str, float]:
        shares = sorted(r.server_cpu / r.seconds * 100 for r in runs if r.seconds > 0)
        return {"server_core_pct": shares[len(shares) // 2]} if shares else {}
