"""SUB: subscriptions (``docs/subscriptions.md``) under write load, on our server only.

``writers alone`` and ``stalled subscriber``: ``Sizes.sub_writers`` connections append at full
speed for ``Sizes.sub_stall_seconds`` (30 s; 2 s in a smoke run). In the second, a subscriber
of exactly those events is live (it has read its first event) but reads nothing while they
write; afterwards it reads again and must get every acknowledged event once, in position order,
each aggregate's versions consecutive (anything else is an error of the run). The writers'
throughput with and without it is the first verdict (drop < 10%). In both, the server's RSS is
sampled every 100 ms over the writing: ``rss_growth_mb`` (peak minus start) of the stalled run
against the writers alone is the second (the stalled subscriber adds no memory per event).

``delivery at 1,000/s``: writers offer a steady 1,000 appends/s (open loop, as W3) for
``Sizes.sub_latency_seconds`` while a subscriber reads; an event's latency runs from its
writer's acknowledgement (the commit as the client sees it; event timestamps have whole
seconds) to its delivery to the subscriber's iterator. Writer and subscriber share this
process's event loop, so a delivery may be seen before its acknowledgement: that counts as 0.
``p99_from_send_ms`` is the same from the moment the write was sent.

Each run writes aggregates of its own type, and subscribes with that type as its filter, after
a marker event whose position it reads from the event page (the positions of ``events``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Dict, List, Optional, Tuple

from eventdbx import AsyncEventDBXClient
from eventdbx.subscription import AsyncSubscription

from ..measure import Run, percentile
from ..servers import DbxServer
from . import OK, Sizes, Target, Workload, close_all, measure, timed

ALONE = "writers alone"
STALLED = "stalled subscriber"
STEADY_RATE = 1_000
STEADY = f"delivery at {STEADY_RATE:,}/s"
AGGREGATES_PER_WRITER = 4
#: Connections of the steady writers' pool.
STEADY_CONNECTIONS = 8
#: How long a subscriber may wait for one event before the run counts it as lost.
DELIVERY_TIMEOUT = 60.0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


async def _sample_rss(pid: int, samples: List[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(_rss_mb(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.1)  # the sampling period, not synchronisation
        except asyncio.TimeoutError:
            pass


def _client(target: Target) -> AsyncEventDBXClient:
    server = target.server
    assert isinstance(server, DbxServer), "SUB runs on our server only"
    return AsyncEventDBXClient(token=server.token, tenant_id="default", host=server.host,
                               port=server.port, protocol_version=2,
                               server_key=server.fingerprint, verbose=False)


async def _subscribe_after_marker(client: AsyncEventDBXClient, kind: str
                                  ) -> AsyncSubscription:
    """A live subscription to ``kind`` whose first event, the marker, has been read."""
    await client.create(aggregate_type=kind, aggregate_id="marker", event_type="opened",
                        payload_json="{}")
    page = await client.events(aggregate_type=kind, aggregate_id="marker")
    marker = page.position(0)
    if marker is None:
        raise RuntimeError("the server sent no position with the event page")
    events = client.subscribe(from_position=marker - 1, aggregate_type=kind)
    first = await asyncio.wait_for(events.__anext__(), DELIVERY_TIMEOUT)
    if first.aggregate_id != "marker":
        raise RuntimeError(f"the first event is {first.aggregate_id}, not the marker")
    return events


def _check_order(events: List[Tuple[int, str, int]]) -> Optional[str]:
    """``(position, aggregate id, version)`` in delivery order: what is wrong, if anything."""
    last = 0
    versions: Dict[str, int] = {}
    for position, aggregate_id, version in events:
        if position <= last:
            return f"position {position} after {last}"
        last = position
        if aggregate_id in versions and version != versions[aggregate_id] + 1:
            return f"{aggregate_id}: version {version} after {versions[aggregate_id]}"
        versions[aggregate_id] = version
    return None


class Subscriptions(Workload):
    id = "SUB"
    title = "subscriptions: a stalled subscriber under full-speed writers; delivery latency"
    unit = "appends/s"
    transport = "v2"

    def __init__(self) -> None:
        self._rss_growth: Dict[str, List[float]] = {}
        self._from_send: List[float] = []

    def variants(self, sizes: Sizes) -> List[str]:
        return [ALONE, STALLED, STEADY]

    def unit_of(self, variant: str) -> str:
        return "events delivered/s" if variant == STEADY else self.unit

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        kind = f"sub_s{target.slot}_{variant.split()[0]}_{index}"
        if variant == STEADY:
            return await self._steady(target, kind, sizes)
        return await self._stall(target, kind, variant, sizes)

    async def _stall(self, target: Target, kind: str, variant: str, sizes: Sizes) -> Run:
        drivers = await target.connect(sizes.sub_writers)
        reader = _client(target)
        events = await _subscribe_after_marker(reader, kind) if variant == STALLED else None
        acked: List[int] = [0] * sizes.sub_writers
        samples: List[float] = []

        async def writer(w: int, run: Run, deadline: float) -> None:
            k = 0
            while time.perf_counter() < deadline:
                payload = f'{{"w":{w},"k":{k},"note":"benchmark event payload"}}'
                aggregate_id = f"w{w}-{k % AGGREGATES_PER_WRITER}"
                if await timed(run, drivers[w].append(kind, aggregate_id, "deposited",
                                                      payload)) == OK:
                    acked[w] += 1
                k += 1

        async def body(run: Run) -> None:
            stop = asyncio.Event()
            sampler = asyncio.ensure_future(_sample_rss(target.server.pid, samples, stop))
            deadline = time.perf_counter() + sizes.sub_stall_seconds
            try:
                await asyncio.gather(*(writer(w, run, deadline)
                                       for w in range(sizes.sub_writers)))
            finally:
                stop.set()
                await sampler

        try:
            run = await measure(target, body)
            finite = [s for s in samples if s == s]
            if finite:
                self._rss_growth.setdefault(variant, []).append(max(finite) - finite[0])
            if events is not None:
                await self._drain(events, sum(acked), run)
            return run
        finally:
            if events is not None:
                await events.aclose()
            await reader.close()
            await close_all(drivers)

    @staticmethod
    async def _drain(events: AsyncSubscription, want: int, run: Run) -> None:
        """Reads the stalled subscriber's backlog: every acknowledged event, in order."""
        got: List[Tuple[int, str, int]] = []
        try:
            while len(got) < want:
                event = await asyncio.wait_for(events.__anext__(), DELIVERY_TIMEOUT)
                got.append((event.position, event.aggregate_id, event.version))
        except Exception as exc:  # counted: the run is then an error of the report
            run.error(RuntimeError(f"after the stall the subscriber got {len(got)} of {want} "
                                   f"events: {type(exc).__name__}: {exc}"))
            return
        problem = _check_order(got)
        if problem is not None:
            run.error(RuntimeError(f"after the stall: {problem}"))

    async def _steady(self, target: Target, kind: str, sizes: Sizes) -> Run:
        total = int(STEADY_RATE * sizes.sub_latency_seconds)
        drivers = await target.connect(STEADY_CONNECTIONS)
        reader = _client(target)
        events = await _subscribe_after_marker(reader, kind)
        free: "asyncio.Queue" = asyncio.Queue()
        for driver in drivers:
            free.put_nowait(driver)
        sent: Dict[int, float] = {}
        acked: Dict[int, float] = {}
        delivered: Dict[int, float] = {}
        order: List[Tuple[int, str, int]] = []

        async def write(run: Run, n: int) -> None:
            driver = await free.get()
            try:
                sent[n] = time.perf_counter()
                payload = f'{{"n":{n},"note":"benchmark event payload"}}'
                operation = driver.append(kind, f"a-{n % 64}", "deposited", payload)
                try:
                    await operation
                    acked[n] = time.perf_counter()
                except Exception as exc:  # counted like any failed operation
                    run.error(exc)
            finally:
                free.put_nowait(driver)

        async def subscriber(run: Run) -> None:
            while len(delivered) < total:
                event = await asyncio.wait_for(events.__anext__(), DELIVERY_TIMEOUT)
                delivered[event.payload["n"]] = time.perf_counter()
                order.append((event.position, event.aggregate_id, event.version))

        async def body(run: Run) -> None:
            reading = asyncio.ensure_future(subscriber(run))
            start = time.perf_counter()
            tasks = []
            for n in range(total):
                delay = start + n / STEADY_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
                tasks.append(asyncio.ensure_future(write(run, n)))
            await asyncio.gather(*tasks)
            try:
                await reading
            except Exception as exc:
                run.error(RuntimeError(f"the subscriber got {len(delivered)} of {total} "
                                       f"events: {type(exc).__name__}: {exc}"))
            run.ops = len(delivered)

        try:
            run = await measure(target, body)
            run.latencies = [max(0.0, delivered[n] - acked[n]) for n in delivered if n in acked]
            self._from_send.append(percentile(
                sorted(delivered[n] - sent[n] for n in delivered if n in sent), 99))
            problem = _check_order(order)
            if problem is not None:
                run.error(RuntimeError(problem))
            return run
        finally:
            await events.aclose()
            await reader.close()
            await close_all(drivers)

    def extra(self, variant: str, runs: List[Run]) -> Dict[str, float]:
        if variant == STEADY:
            values, self._from_send = sorted(self._from_send), []
            return {"p99_from_send_ms": values[len(values) // 2] * 1e3} if values else {}
        growth = sorted(self._rss_growth.pop(variant, []))
        return {"rss_growth_mb": growth[len(growth) // 2]} if growth else {}

