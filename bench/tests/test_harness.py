"""The harness's own logic, without servers: percentiles, CPU snapshots, target verdicts and
the docs rewrite (``.venv/bin/python -m pytest bench/tests``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List

from bench.__main__ import Outcome
from bench.machine import Machine
from bench.measure import CpuSnapshot, Point, Run, percentile
from bench.report import BEGIN, END, verdicts, write_docs
from bench.systems import SYSTEMS
from bench.workloads import Sizes


def _outcome(points: List[Point]) -> Outcome:
    machine = Machine(cores=2, cpu_model="test", memory_gb=1.0, kernel="test",
                      load_average="0 0 0", fsync_p50_us=100.0, fsync_probes=1,
                      git_commit="abc", started_utc="2026-12-06 00:00 UTC")
    return Outcome(quick=False, sizes=Sizes.full(), machine=machine, systems=list(SYSTEMS),
                   points=points)


def _point(workload: str, variant: str, key: str, ops: int, seconds: float = 1.0) -> Point:
    run = Run(ops=ops, seconds=seconds, latencies=[seconds / max(ops, 1)] * max(ops, 1))
    return Point(workload, variant, key, runs=[run])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert math.isnan(percentile([], 50))


def test_cpu_snapshot_survives_threads_coming_and_going() -> None:
    before = CpuSnapshot(threads={(1, 1): 1.0, (1, 2): 5.0}, totals={1: 6.0}, reaped={1: 0.0})
    # Thread 2 exited idle, thread 3 was born and ran 0.5 s, thread 1 ran 0.25 s.
    after = CpuSnapshot(threads={(1, 1): 1.25, (1, 3): 0.5}, totals={1: 6.75}, reaped={1: 0.0})
    assert after.since(before) == 0.75
    # Thread 2 exited after running 2 s: only the process total (dead threads kept) shows it.
    died = CpuSnapshot(threads={(1, 1): 1.25}, totals={1: 8.25}, reaped={1: 0.5})
    assert died.since(before) == 2.25 + 0.5


def test_targets_are_met_missed_or_not_measured() -> None:
    outcome = _outcome([
        _point("W1", "create + 10 appends", "dbx-relaxed-v2", 3_100),
        _point("W1", "create + 10 appends", "pg-sync-off", 1_000),
        _point("W2", "N=16 uniform", "dbx-fsync-v2", 1_000),
        _point("W2", "N=16 uniform", "pg-sync-on", 1_000),
        _point("W2", "N=64 uniform", "dbx-fsync-v2", 3_000),
        _point("W2", "N=64 uniform", "pg-sync-on", 1_000),
    ])
    by_target = {v.target.split(" ≥")[0]: v for v in verdicts(outcome)}
    assert by_target["relaxed W1"].status == "met"
    assert "3.10×" in by_target["relaxed W1"].measured
    assert by_target["durable W2 (uniform) at N=16 and N=64"].status == "missed"
    assert by_target["W4 pages/s"].status == "not measured"


def test_every_target_names_its_issue_and_the_postgresql_backend_is_judged() -> None:
    outcome = _outcome([
        _point("W2", "N=1 uniform", "dbx-fsync-v2", 1_000),
        _point("W2", "N=1 uniform", "pg-sync-on", 999),
        _point("W2", "N=16 uniform", "dbx-pg-v2", 800),
        _point("W2", "N=16 uniform", "pg-sync-on", 1_000),
        _point("W2", "N=64 uniform", "dbx-pg-v2", 790),
        _point("W2", "N=64 uniform", "pg-sync-on", 1_000),
    ])
    found = verdicts(outcome)
    assert all(v.issue in (13, 15, 17, 18) for v in found)
    by_target = {v.target.split(" ≥")[0]: v for v in found}
    alone = by_target["durable W2 (uniform) at N=1"]
    assert (alone.issue, alone.status) == (15, "met")
    backend = by_target["durable W2 (uniform) through dbx on PostgreSQL at N=16 and N=64"]
    assert (backend.issue, backend.status) == (17, "missed")
    assert "N=16 uniform: 800 vs 1,000 ops/s = 0.80×" in backend.measured


def test_write_docs_keeps_the_history_below_and_replaces_itself(tmp_path: Path) -> None:
    history = "# Storage benchmarks\n\nEngineering history, kept as written.\n"
    (tmp_path / "benchmarks.md").write_text(history, encoding="utf-8")
    outcome = _outcome([_point("W1", "create + 10 appends", "dbx-relaxed-v2", 100)])
    for _ in range(2):
        write_docs(outcome, str(tmp_path), str(tmp_path), figures=[])
    text = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert text.startswith(BEGIN)
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.split(END, 1)[1].lstrip("\n") == history


def test_the_smoke_check_names_what_did_not_run(tmp_path: Path) -> None:
    from bench.check_smoke import problems

    assert problems(tmp_path) == [f"{tmp_path / 'report.md'} is missing or empty",
                                  f"{tmp_path / 'results.json'} is missing or empty"]
    (tmp_path / "report.md").write_text("# report\n")
    (tmp_path / "plot.png").write_bytes(b"png")
    skipped = {s.key: "not installed" for s in SYSTEMS if s.key != "dbx-fsync-v1"}
    points = [{"workload": "W1", "system": "dbx-fsync-v1", "runs": 3}]
    (tmp_path / "results.json").write_text(json.dumps(
        {"quick": True, "skipped": skipped, "points": points}))
    assert problems(tmp_path) == ["W7 did not run on dbx-fsync-v1"]
    points.append({"workload": "W7", "system": "dbx-fsync-v1", "runs": 3})
    (tmp_path / "results.json").write_text(json.dumps(
        {"quick": True, "skipped": skipped, "points": points}))
    assert problems(tmp_path) == []



def test_the_subscription_targets() -> None:
    def sub(variant: str, ops: int, rss: float) -> Point:
        point = _point("SUB", variant, "dbx-relaxed-v2", ops)
        point.extra = {"rss_growth_mb": rss}
        return point

    steady = _point("SUB", "delivery at 1,000/s", "dbx-relaxed-v2", 1_000)  # 1 ms each
    outcome = _outcome([sub("writers alone", 1_000, 10.0), sub("stalled subscriber", 950, 12.0),
                        steady])
    throughput, memory, latency = verdicts(outcome)[-3:]
    assert "throughput" in throughput.target and "RSS" in memory.target
    assert (throughput.status, memory.status, latency.status) == ("met", "met", "met")
    assert "+5.0% drop" in throughput.measured
    assert "p99 1.00 ms" in latency.measured
    outcome = _outcome([sub("writers alone", 1_000, 10.0), sub("stalled subscriber", 800, 90.0)])
    assert [v.status for v in verdicts(outcome)[-3:]] == ["missed", "missed", "not measured"]


def _client_point(variant: str, key: str, cpu_us: float) -> Point:
    run = Run(ops=1_000, seconds=1.0, client_cpu=cpu_us * 1_000 / 1e6)
    return Point("CLIENT", variant, key, runs=[run])


def test_client_cost_targets_compare_exact_variants() -> None:
    from bench.workloads.client_cost import (
        PSYCOPG,
        SDK_ASYNC,
        SDK_ASYNC_V2,
        SDK_SYNC,
        SDK_SYNC_NO_POLL,
    )

    def targets(points: List[Point]) -> dict:
        return {v.target: v for v in verdicts(_outcome(points))}

    async_target = "async client CPU per get ≤ psycopg async per SELECT"
    sync_target = "sync client CPU per get ≤ 15 µs, busy-poll off"
    found = targets([])
    assert found[async_target].status == found[sync_target].status == "not measured"
    points = [
        # Listed first: a prefix match would take it for the busy-poll-off row.
        _client_point(SDK_SYNC, "dbx-relaxed-v2", 30.0),
        _client_point(SDK_SYNC_NO_POLL, "dbx-relaxed-v2", 14.0),
        _client_point(SDK_ASYNC, "dbx-relaxed-v2", 90.0),
        _client_point(SDK_ASYNC_V2, "dbx-relaxed-v2", 100.0),
        _client_point(PSYCOPG, "pg-sync-off", 120.0),
    ]
    found = targets(points)
    assert found[sync_target].status == "met", found[sync_target]
    assert found[async_target].status == "met", found[async_target]
    assert "psycopg 120.0 µs" in found[async_target].measured
    # Either transport over psycopg's cost misses.
    points[3] = _client_point(SDK_ASYNC_V2, "dbx-relaxed-v2", 121.0)
    assert targets(points)[async_target].status == "missed"


def test_idle_verdicts_and_the_busy_poll_pairs() -> None:
    from bench.report import POLL_OFF, POLL_ON, busy_poll_pairs, markdown
    from bench.workloads.connections import PACED, SILENT

    def idle(variant: str, key: str, pct: float) -> Point:
        point = _point("IDLE", variant, key, 100, seconds=10.0)
        point.extra = {"server_core_pct": pct}
        return point

    points = [idle(SILENT, "dbx-fsync-v2", 0.4), idle(PACED, POLL_ON, 2.1),
              idle(PACED, POLL_OFF, 2.0), idle(SILENT, POLL_OFF, 0.3),
              _point("W1", "create + 10 appends", POLL_ON, 3_000)]
    by_target = {v.target: v for v in verdicts(_outcome(points))}
    silent = by_target["a server with 64 idle connections uses < 1% of a core"]
    assert (silent.status, silent.measured.split(" (")[0]) == ("met", "0.40% of a core")
    paced = next(v for t, v in by_target.items() if t.startswith("64 connections sending"))
    assert paced.status == "met", paced  # within the 10% the run's noise is allowed
    assert paced.measured.startswith("2.10% vs 2.00% of a core")
    points[1].extra = {"server_core_pct": 2.3}
    paced = next(v for v in verdicts(_outcome(points)) if v.target.startswith("64 connections"))
    assert paced.status == "missed"
    # Only the points both servers measured are paired (W1 ran with polling on only here).
    pairs = busy_poll_pairs(_outcome(points))
    assert [(a.variant, a.system_key, b.system_key) for a, b in pairs] == [
        (PACED, POLL_ON, POLL_OFF)]
    assert "| IDLE | " + PACED + " | " in markdown(_outcome(points), figures=[])
    empty = {v.target: v.status for v in verdicts(_outcome([]))}
    assert empty["a server with 64 idle connections uses < 1% of a core"] == "not measured"


def test_the_sync_append_target_compares_with_the_runs_fsync_p50() -> None:
    from bench.workloads.sync_writes import VARIANT

    target = ("sequential durable append p50 through the synchronous client ≤ 2× the disk's "
              "append + fdatasync p50")

    def verdict(latency_s: float, key: str = "dbx-fsync-v2"):  # type: ignore[no-untyped-def]
        point = _point("W1S", VARIANT, key, 1_000, seconds=latency_s * 1_000)
        return {v.target: v for v in verdicts(_outcome([point]))}[target]

    # The machine note's fsync p50 is 100 µs (`_outcome`).
    met = verdict(0.000150)
    assert met.status == "met", met
    assert met.measured == "p50 150 µs vs fsync p50 100 µs = 1.50×"
    assert verdict(0.000250).status == "missed"
    # Only the durable server's row counts.
    assert verdict(0.000150, key="dbx-relaxed-v2").status == "not measured"


def test_runs_are_interleaved_and_each_round_starts_one_system_further() -> None:
    from bench.__main__ import interleaved

    assert interleaved(["a", "b", "c"], 4) == [
        (0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
        (2, "c"), (2, "a"), (2, "b"), (3, "a"), (3, "b"), (3, "c")]
    assert interleaved(["a"], 2) == [(0, "a"), (1, "a")]
    assert interleaved([], 3) == []


def test_every_server_runs_while_the_workloads_run_and_a_failed_run_fails_its_point_only(
) -> None:
    """Fake servers and a fake workload: the order of the runs, who was up meanwhile, and
    what a failure costs."""
    import asyncio
    from dataclasses import dataclass

    from bench.__main__ import _run
    from bench.measure import Run
    from bench.servers import Server
    from bench.systems import Environment, ServerSpec, System
    from bench.workloads import Sizes, Target, Workload

    up: List[str] = []
    stopped: List[str] = []

    class FakeServer(Server):
        def __init__(self, name: str) -> None:
            self.name, self.version = name, "1"
            up.append(name)

        @property
        def pid(self) -> int:
            return 0

        def stop(self) -> None:
            up.remove(self.name)
            stopped.append(self.name)

    @dataclass(frozen=True)
    class Spec(ServerSpec):
        name: str

        def skip_reason(self, env: Environment):  # type: ignore[no-untyped-def]
            return "not here" if self.name == "skipped" else None

        def start(self, env: Environment) -> Server:
            return FakeServer(self.name)

    calls: List[tuple] = []

    class Fake(Workload):
        id = "FAKE"

        def variants(self, sizes: Sizes) -> List[str]:
            return ["one", "two"]

        async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
            calls.append((variant, index, target.system.key, sorted(up)))
            if (target.system.key, variant, index) == ("b", "one", 1):
                raise RuntimeError("broken")
            return Run(ops=1, seconds=1.0, latencies=[1.0])

    def system(key: str, server: str) -> System:
        return System(key, key, "fsync", "durable", "v2", True, Spec(server),
                      lambda s: None, frozenset({"FAKE"}))  # type: ignore[arg-type,return-value]

    systems = [system("a", "x"), system("b", "y"), system("c", "x"), system("d", "skipped")]
    outcome = _outcome([])
    outcome.sizes = Sizes(**{**Sizes.quick().__dict__, "runs": 3})
    asyncio.run(_run(systems, Environment("", None), [Fake()], outcome))

    # Both servers were up for every run, and both were stopped at the end.
    assert all(running == ["x", "y"] for *_, running in calls), calls
    assert up == [] and sorted(stopped) == ["x", "y"]
    assert outcome.skipped == {"d": "not here"}
    # Run i of every system before run i + 1; each round starts one system further on; b's
    # failed second run of "one" ends that point, not the others nor its "two".
    assert [(v, i, k) for v, i, k, _ in calls] == [
        ("one", 0, "a"), ("one", 0, "b"), ("one", 0, "c"),
        ("one", 1, "b"), ("one", 1, "c"), ("one", 1, "a"),
        ("one", 2, "c"), ("one", 2, "a"),
        ("two", 0, "a"), ("two", 0, "b"), ("two", 0, "c"),
        ("two", 1, "b"), ("two", 1, "c"), ("two", 1, "a"),
        ("two", 2, "c"), ("two", 2, "a"), ("two", 2, "b")]
    runs = {(p.variant, p.system_key): (len(p.runs), p.failure) for p in outcome.points}
    assert runs == {("one", "a"): (3, None), ("one", "b"): (1, "RuntimeError: broken"),
                    ("one", "c"): (3, None), ("two", "a"): (3, None),
                    ("two", "b"): (3, None), ("two", "c"): (3, None)}
