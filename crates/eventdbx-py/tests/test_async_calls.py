"""How an awaited call runs (issue 15): the request goes out from the event loop's thread, one
runtime thread reads the answer and wakes the loop once, and the loop finishes the call; a
cancelled call lets go of what it held at once. Also the synchronous client's answer polling
(``busy_poll_us``)."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import threading
from typing import Dict, Tuple

import pytest

from eventdbx import exceptions as exc

CALLS = 200
#: The names of the embedded server's threads (its runtime's, its store's flusher), as
#: ``/proc`` shows them (15 characters at most).
SERVER_THREADS = ("eventdbx-server", "eventdbx-store-")


def _threads() -> Dict[int, Tuple[str, int]]:
    """Each live thread of this process: its name and its nanoseconds on a CPU."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                ran = int(f.read().split()[0])
        except OSError:  # the thread exited meanwhile
            continue
        out[int(tid)] = (name, ran)
    return out


def _create(server, kind: str) -> None:
    with server.client() as client:
        client.create(aggregate_type=kind, aggregate_id="a-1", event_type="opened",
                      payload_json="{}")


def test_sequential_awaited_calls_run_on_one_runtime_thread(server, uid):
    """Besides the loop's thread, only the runtime's worker runs (one per four CPUs): no
    thread is woken to send a request, none to hand an answer over to the loop, and the
    runtime has no spare workers that wake each other (the embedded server's threads, which
    serve the calls, are left out). Before: two workers, one of which spun for each answer,
    and a blocking-pool thread per call to take the GIL (six threads ran on two CPUs)."""
    kind = f"calls{uid}"
    _create(server, kind)
    loop_thread = threading.get_native_id()

    async def scenario():
        async with server.async_client() as client:
            await client.get(aggregate_type=kind, aggregate_id="a-1")
            before = _threads()
            for _ in range(CALLS):
                found = await client.get(aggregate_type=kind, aggregate_id="a-1")
                assert found.found
            return before, _threads()

    before, after = asyncio.run(scenario())
    ran = {f"{name}/{tid}" for tid, (name, cpu) in after.items()
           if tid != loop_thread and not name.startswith(SERVER_THREADS)
           and cpu > before.get(tid, ("", 0))[1]}
    workers = max(1, len(os.sched_getaffinity(0)) // 4)
    assert len(ran) <= workers, f"{len(ran)} threads ran for {CALLS} calls: {sorted(ran)}"


class _CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Counts the times the loop woke with something to read."""

    wakes = 0

    def select(self, timeout=None):
        ready = super().select(timeout)
        if ready:
            self.wakes += 1
        return ready


def test_an_awaited_call_wakes_the_event_loop_once(server, uid):
    kind = f"wakes{uid}"
    _create(server, kind)
    selector = _CountingSelector()
    loop = asyncio.SelectorEventLoop(selector)

    async def scenario():
        async with server.async_client() as client:
            await client.get(aggregate_type=kind, aggregate_id="a-1")
            woken = selector.wakes
            for _ in range(CALLS):
                await client.get(aggregate_type=kind, aggregate_id="a-1")
            return selector.wakes - woken

    try:
        wakes = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert wakes <= CALLS, f"the loop woke {wakes} times for {CALLS} calls"


class _NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch a file descriptor (as Windows' proactor loop)."""

    def add_reader(self, fd, callback, *args):
        # What asyncio's ProactorEventLoop answers: the SDK must fall back to
        # call_soon_threadsafe.
        raise NotImplementedError("this loop cannot watch file descriptors")


def test_a_loop_that_cannot_watch_a_socket_still_gets_its_answers(server, uid):
    kind = f"noreader{uid}"
    loop = _NoReaderLoop()

    async def scenario():
        async with server.async_client() as client:
            await client.create(aggregate_type=kind, aggregate_id="a-1",
                                event_type="opened", payload_json="{}")
            got = await asyncio.gather(*[
                client.get(aggregate_type=kind, aggregate_id="a-1") for _ in range(20)])
            assert all(g.found for g in got)
            with pytest.raises(exc.EventDBXAlreadyExistsError):
                await client.create(aggregate_type=kind, aggregate_id="a-1",
                                    event_type="opened", payload_json="{}")

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_a_cancelled_call_lets_go_of_its_subscription(server, uid):
    """A `next` cancelled while it waits for an event drops its Rust future at once: the
    following `next` gets the event (a future left running would take the subscription's
    lock and the event with it)."""
    kind = f"cancel{uid}"

    async def scenario():
        async with server.async_client() as client:
            async with client.subscribe(from_position="start", aggregate_type=kind) as events:
                waiting = asyncio.ensure_future(events.__anext__())
                # Until the task waits in the Rust call (the subscription started, `next`
                # sent): each round lets it take one step.
                for _ in range(1_000):
                    await asyncio.sleep(0)
                    if events._core is not None:
                        break
                for _ in range(10):
                    await asyncio.sleep(0)
                assert not waiting.done()
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                await client.create(aggregate_type=kind, aggregate_id="a-1",
                                    event_type="opened", payload_json='{"n": 0}')
                event = await asyncio.wait_for(events.__anext__(), 60)
                assert (event.aggregate_id, event.version) == ("a-1", 1)

    asyncio.run(scenario())


def test_an_async_client_round_trips_on_a_fresh_loop_each_time(server, uid):
    """Each `asyncio.run` brings a new loop: a client made on each is served on its own."""
    kind = f"loops{uid}"
    _create(server, kind)

    async def scenario():
        async with server.async_client(verbose=False) as client:
            return (await client.get(aggregate_type=kind, aggregate_id="a-1")).found

    assert all(asyncio.run(scenario()) for _ in range(3))


def test_the_sync_client_polls_for_answers_only_when_asked(server, uid):
    kind = f"poll{uid}"
    _create(server, kind)
    for busy_poll_us in (0, 50, None):
        with server.client(busy_poll_us=busy_poll_us) as client:
            assert client.get(aggregate_type=kind, aggregate_id="a-1").found
    for wrong in (-1, 1.5, True, "10"):
        with pytest.raises(exc.EventDBXArgumentError, match="busy_poll_us"):
            server.client(busy_poll_us=wrong)


def test_awaited_gets_and_appends_build_no_generic_request(server, uid, monkeypatch):
    """An asyncio caller's hottest calls, ``get`` and ``apply``, go to the core without the
    generic request (`_Request`, its argument tuple and keyword dictionary, unpacked again by
    ``_run``): Python objects made per call are CPU the event loop's thread spends (issue 15).
    Before: one `_Request` per call."""
    from eventdbx import _commands

    kind = f"fast{uid}"
    _create(server, kind)
    built = []

    class Counted(_commands._Request):
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            built.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_commands, "_Request", Counted)

    async def scenario():
        async with server.async_client() as client:
            found = await client.get(aggregate_type=kind, aggregate_id="a-1")
            assert found.found
            missing = await client.get(aggregate_type=kind, aggregate_id="no-such")
            assert not missing.found
            written = await client.apply(aggregate_type=kind, aggregate_id="a-1",
                                         event_type="ticked", payload_json='{"n": 1}',
                                         expected_version=1)
            assert written
            with pytest.raises(exc.EventDBXConflictError):
                await client.apply(aggregate_type=kind, aggregate_id="a-1",
                                   event_type="ticked", payload_json='{"n": 2}',
                                   expected_version=1)
            with pytest.raises(exc.EventDBXArgumentError):
                client.apply(aggregate_type=kind, aggregate_id="", event_type="ticked",
                             payload_json="{}")
            with pytest.raises(exc.EventDBXArgumentError):
                client.get(aggregate_type="", aggregate_id="a-1")
            # A create through `apply` keeps the general path.
            await client.apply(aggregate_type=kind, aggregate_id="a-2", event_type="opened",
                               payload_json="{}", create=True)

    asyncio.run(scenario())
    assert built == ["write"], built


class _CountingReadersLoop(asyncio.SelectorEventLoop):
    """Records what the SDK asks the loop to watch."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list = []

    def add_reader(self, fd, callback, *args):
        self.added.append(type(callback).__name__)
        return super().add_reader(fd, callback, *args)


def _run_counting(scenario) -> _CountingReadersLoop:
    """Runs ``scenario(loop)`` to its end on a fresh counting loop, then closes the loop."""
    loop = _CountingReadersLoop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()
    return loop


def _answer_readers(loop: asyncio.AbstractEventLoop) -> list:
    """The sockets the loop reads answers from: its readers that are the SDK's `AnswerReader`."""
    selector = loop._selector  # type: ignore[attr-defined]
    return [key.fd for key in selector.get_map().values()
            if key.data[0] is not None
            and type(key.data[0]._callback).__name__ == "AnswerReader"]


async def _until_the_loop_reads(client, kind: str, loop: asyncio.AbstractEventLoop) -> None:
    """Makes calls until one parked and the loop watches the connection's socket (the first
    almost always). A call whose answer the connection's reader task delivered before the call
    was first polled (the loop's thread descheduled between sending and parking, as on a busy
    machine) never parks, and offers nothing to watch."""
    for _ in range(50):
        assert (await client.get(aggregate_type=kind, aggregate_id="a-1")).found
        if _answer_readers(loop):
            break
    assert len(_answer_readers(loop)) == 1


def test_the_event_loop_reads_its_answers_from_the_connection_itself(server, uid):
    """A loop making one call at a time watches the connection's socket from the first call
    until the connection ends, and reads the answers there (one thread woken per answer, not
    the runtime's worker and then the loop): one `add_reader` for the socket however many
    calls, and none left once the client closed."""
    kind = f"loopreads{uid}"
    _create(server, kind)

    async def scenario(loop):
        async with server.async_client() as client:
            for _ in range(CALLS):
                assert (await client.get(aggregate_type=kind, aggregate_id="a-1")).found
            watched = _answer_readers(loop)
            assert len(watched) == 1, watched
        # The connection ended: the loop reads the end of its stream on its next turn and
        # lets go of the socket (each turn here is one pass of the loop, no timing involved).
        for _ in range(100):
            if not _answer_readers(loop):
                break
            await asyncio.sleep(0)
        assert _answer_readers(loop) == []

    loop = _run_counting(scenario)
    assert loop.added.count("AnswerReader") == 1, loop.added


def test_a_loop_keeps_reading_a_connection_with_a_few_calls_in_flight_together(server, uid):
    """Up to four calls in flight together on one connection (a few tasks sharing a client):
    the loop still reads their answers itself. While the loop reads, the runtime reads none,
    so the gathered calls are all in flight before the first answer is read."""
    kind = f"loopfew{uid}"
    _create(server, kind)

    async def scenario(loop):
        async with server.async_client() as client:
            await _until_the_loop_reads(client, kind, loop)
            for _ in range(10):
                for n in (2, 3, 4):
                    got = await asyncio.gather(*[
                        client.get(aggregate_type=kind, aggregate_id="a-1") for _ in range(n)])
                    assert all(g.found for g in got)
                    assert len(_answer_readers(loop)) == 1
            # Five together are more than a few: the loop lets go, for good.
            await asyncio.gather(*[
                client.get(aggregate_type=kind, aggregate_id="a-1") for _ in range(5)])
            assert _answer_readers(loop) == []

    loop = _run_counting(scenario)
    assert loop.added.count("AnswerReader") == 1, loop.added


def test_a_loop_lets_go_of_a_connection_with_answers_many_at_a_time(server, uid):
    """Calls in flight together on one connection: the runtime's worker reads their answers
    beside the loop (the loop would only do that work on its own thread), for good."""
    kind = f"loopshared{uid}"
    _create(server, kind)

    async def scenario(loop):
        async with server.async_client() as client:
            await _until_the_loop_reads(client, kind, loop)
            got = await asyncio.gather(*[
                client.get(aggregate_type=kind, aggregate_id="a-1") for _ in range(20)])
            assert all(g.found for g in got)
            assert _answer_readers(loop) == []
            for _ in range(5):
                assert (await client.get(aggregate_type=kind, aggregate_id="a-1")).found
            assert _answer_readers(loop) == []

    loop = _run_counting(scenario)
    assert loop.added.count("AnswerReader") == 1, loop.added


def test_a_call_cancelled_while_the_loop_reads_its_socket_leaves_the_connection_usable(
        server, uid):
    kind = f"loopcancel{uid}"
    _create(server, kind)

    async def scenario(loop):
        async with server.async_client() as client:
            await _until_the_loop_reads(client, kind, loop)
            cancelled = False
            # A call whose answer was already in when it began (its thread descheduled between
            # sending and reading, as on a busy machine) completes at once and cannot be
            # cancelled: it is answered, and the next call is tried.
            for _ in range(50):
                waiting = asyncio.ensure_future(
                    client.get(aggregate_type=kind, aggregate_id="a-1"))
                await asyncio.sleep(0)  # the request goes out; its answer is not read yet
                if not waiting.cancel():
                    assert waiting.result().found
                    continue
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                cancelled = True
                break
            assert cancelled
            for _ in range(20):
                assert (await client.get(aggregate_type=kind, aggregate_id="a-1")).found

    _run_counting(scenario)


def test_a_loop_reads_one_connection_itself_and_leaves_the_rest_to_the_runtime(server, uid):
    """A loop busy with many connections gains nothing from reading their answers itself:
    the runtime's worker reads all but one beside it, and every call is answered."""
    kind = f"loopmany{uid}"
    _create(server, kind)
    loop = asyncio.SelectorEventLoop()

    async def scenario():
        clients = [server.async_client() for _ in range(12)]
        for client in clients:
            await client.connect()
        try:
            for _ in range(3):
                got = await asyncio.gather(*[
                    client.get(aggregate_type=kind, aggregate_id="a-1") for client in clients])
                assert all(g.found for g in got)
            return len(_answer_readers(loop))
        finally:
            for client in clients:
                await client.close()

    try:
        read_by_the_loop = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert read_by_the_loop == 1, read_by_the_loop


class _RefusingAnswerReadersLoop(asyncio.SelectorEventLoop):
    """A loop that fails to watch the connection's socket (but rings fine)."""

    def add_reader(self, fd, callback, *args):
        if type(callback).__name__ == "AnswerReader":
            raise RuntimeError("this loop watches nothing more")
        return super().add_reader(fd, callback, *args)


def test_a_loop_that_fails_to_watch_the_connection_still_gets_every_answer(server, uid):
    """The request is out when the loop is asked to watch its socket: a refusal must not fail
    the call (a write would be applied and reported as failed); the worker reads instead."""
    kind = f"loopfails{uid}"
    loop = _RefusingAnswerReadersLoop()

    async def scenario():
        async with server.async_client() as client:
            await client.create(aggregate_type=kind, aggregate_id="a-1",
                                event_type="opened", payload_json="{}")
            for version in range(1, 6):
                await client.apply(aggregate_type=kind, aggregate_id="a-1",
                                   event_type="ticked", payload_json="{}",
                                   expected_version=version)
            found = await client.get(aggregate_type=kind, aggregate_id="a-1")
            assert found.found and json.loads(found.aggregate_json)["version"] == 6

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
