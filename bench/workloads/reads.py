"""Read-heavy workloads on seeded data: W4 (filtered listings walked to the end with cursors),
W5 (a 10,000-event aggregate: its events in pages, and append latency on it against a fresh
aggregate) and W6 (verify at growing aggregate sizes).

Seeding goes through each system's own write path (the same creates and appends as the write
workloads), once per server, and is not measured.
"""

from __future__ import annotations

import json
import random
from typing import List

from ..drivers import BucketFilter
from ..measure import Run
from . import (
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
    timed_result,
)

LISTED = "customer"
TYPE = "account"
PAGE = 100
SELECTIVITY = (1, 10, 50)
SORTS = ("aggregate_id", "updated_at")
SEED_CONNECTIONS = 8


class W4List(Workload):
    """Aggregates carry ``bucket`` (0..99, shuffled), so ``bucket < k`` selects k percent."""

    id = "W4"
    title = "filtered listing walked to the end with cursors, pages of 100"
    unit = "pages/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [f"{pct}% by {sort}" for sort in SORTS for pct in SELECTIVITY]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        if not once(target, "W4"):
            return
        count = sizes.w4_aggregates
        rng = random.Random(f"{SEED}:W4")
        buckets = [i % 100 for i in range(count)]
        rng.shuffle(buckets)
        drivers = await target.connect(SEED_CONNECTIONS)
        try:
            await fill(drivers, [
                lambda d, i=i, b=b: d.create(
                    LISTED, f"c{i:07d}", "registered",
                    json.dumps({"bucket": b, "name": f"customer {i}", "tier": "standard"}))
                for i, b in enumerate(buckets)])
        finally:
            await close_all(drivers)

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        pct, sort = variant.split("% by ")
        where = BucketFilter(LISTED, int(pct))
        (driver,) = await target.connect(1)
        rows: List[int] = []

        async def body(run: Run) -> None:
            cursor = None
            total = 0
            while True:
                status, page = await timed_result(run, driver.list_page(where, sort, cursor,
                                                                        PAGE))
                if status != OK:
                    break
                count, cursor = page
                total += count
                if cursor is None:
                    break
            rows.append(total)

        try:
            run = await measure(target, body)
        finally:
            await close_all([driver])
        expected = sizes.w4_aggregates * int(pct) // 100
        if rows and rows[0] != expected:
            run.error(AssertionError(f"walked {rows[0]} aggregates, expected {expected}"))
        return run


class W5LongAggregate(Workload):
    id = "W5"
    title = "an aggregate with 10,000 events: pages of events, append latency on it"
    unit = "pages/s"

    def unit_of(self, variant: str) -> str:
        return "pages/s" if variant.startswith("events") else "appends/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return ["events, pages of 100", "events, pages of 1000",
                f"append at v{sizes.w5_events}", "append on a fresh aggregate"]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        if once(target, "W5"):
            await _grow(target, "w5-long", sizes.w5_events)

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        if variant.startswith("events"):
            return await self._pages(target, int(variant.rsplit(" ", 1)[1]), sizes)
        ring = payloads(("W5", index), sizes.w5_appends)
        if variant.startswith("append at"):
            ids = ["w5-long"] * sizes.w5_appends
        else:
            ids = [target.aggregate_id("w5-fresh", index, i) for i in range(sizes.w5_appends)]
            creators = await target.connect(SEED_CONNECTIONS)
            try:
                await fill(creators, [lambda d, i=i: d.create(TYPE, i, "opened", ring[0])
                                      for i in ids])
            finally:
                await close_all(creators)
        (driver,) = await target.connect(1)

        async def body(run: Run) -> None:
            for n, aggregate_id in enumerate(ids):
                await timed(run, driver.append(TYPE, aggregate_id, "deposited", ring[n]))

        try:
            return await measure(target, body)
        finally:
            await close_all([driver])

    async def _pages(self, target: Target, take: int, sizes: Sizes) -> Run:
        (driver,) = await target.connect(1)
        seen: List[int] = []

        async def body(run: Run) -> None:
            cursor = None
            total = 0
            while True:
                status, page = await timed_result(run, driver.events_page(TYPE, "w5-long",
                                                                          cursor, take))
                if status != OK:
                    break
                count, cursor = page
                total += count
                if cursor is None:
                    break
            seen.append(total)

        try:
            run = await measure(target, body)
        finally:
            await close_all([driver])
        if seen and seen[0] < sizes.w5_events:
            run.error(AssertionError(f"read {seen[0]} events, expected at least "
                                     f"{sizes.w5_events}"))
        return run


async def _grow(target: Target, aggregate_id: str, events: int) -> None:
    """Creates ``aggregate_id`` and appends until it has ``events`` events (appends to one
    aggregate are serialised by every system: several connections keep the pipe full)."""
    ring = payloads(("grow", aggregate_id), 64)
    drivers = await target.connect(SEED_CONNECTIONS)
    try:
        await drivers[0].create(TYPE, aggregate_id, "opened", ring[0])
        await fill(drivers, [lambda d, n=n: d.append(TYPE, aggregate_id, "deposited",
                                                     ring[n % 64])
                             for n in range(events - 1)])
    finally:
        await close_all(drivers)


class W6Verify(Workload):
    id = "W6"
    title = "verify (Merkle root recomputed from the stored events)"
    unit = "verifies/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [f"{n} events" for n in sizes.w6_sizes]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        if once(target, "W6"):
            for n in sizes.w6_sizes:
                await _grow(target, f"w6-{n}", n)

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        events = int(variant.split()[0])
        calls = max(3, min(50, 200_000 // max(events, 1)))
        (driver,) = await target.connect(1)

        async def body(run: Run) -> None:
            for _ in range(calls):
                await timed(run, driver.verify(TYPE, f"w6-{events}"))

        try:
            return await measure(target, body)
        finally:
            await close_all([driver])
