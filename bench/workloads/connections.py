"""Connection workloads: W7 (connect, handshake, one call, close; sequential and 8-way) and
IDLE (what a server burns at rest with 64 open, idle connections)."""

from __future__ import annotations

import asyncio
from typing import Dict, List

from ..measure import Run
from . import Sizes, Target, Workload, close_all, measure, once, payloads, timed

TYPE = "account"
IDLE_CONNECTIONS = 64


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
    """64 connections each make one call, then stay open and silent while the server's CPU is
    read over ``Sizes.idle_seconds``: the run's one "operation" is that interval, so its server
    CPU per op is the CPU of the whole idle interval."""

    id = "IDLE"
    title = "server CPU at rest with 64 idle connections"
    unit = "intervals/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [f"{IDLE_CONNECTIONS} idle connections"]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        await _seed_one(target)

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        drivers = await target.connect(IDLE_CONNECTIONS)
        try:
            await asyncio.gather(*(d.get(TYPE, "w7-probe") for d in drivers))

            async def body(run: Run) -> None:
                await asyncio.sleep(sizes.idle_seconds)  # the measured interval itself
                run.ops = 1

            return await measure(target, body)
        finally:
            await close_all(drivers)

    def extra(self, variant: str, runs: List[Run]) -> Dict[str, float]:
        shares = sorted(r.server_cpu / r.seconds * 100 for r in runs if r.seconds > 0)
        return {"server_core_pct": shares[len(shares) // 2]} if shares else {}
