"""The results model: one measured run, a point (the runs of one variant on one system), and
the CPU clocks read from ``/proc``.

CPU is what the processes spent on a CPU, never wall time: the client is this process (every
thread, the SDK's Rust runtime included); a server is its whole process tree (PostgreSQL forks
a backend per connection). A ``CpuSnapshot`` holds each live thread's time on a CPU from
``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds) because ``utime + stime`` in
``/proc/<pid>/stat`` is rounded to clock ticks (10 ms) per process: 64 PostgreSQL backends each
below a tick add up to nothing. Two snapshots are compared thread by thread, so a thread that
exits in between (tokio retires idle blocking-pool threads) cannot make the total go backwards,
and a thread born in between counts from zero; when a process's ``stat`` total (which keeps dead
threads' time) grew by more than two ticks beyond its live threads' sum, a thread died with CPU
time and the coarse total is taken instead. Children a process reaps in between count through
its ``cutime + cstime``. Where the kernel has no
schedstat, a process counts as one "thread" read from ``stat``.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

#: The latency percentiles every point reports.
PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def _stat_fields(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return text[text.rindex(")") + 2:].split()


def _threads(pid: int, fields: List[str]) -> Dict[Tuple[int, int], float]:
    """Seconds on a CPU of each live thread of ``pid``, keyed ``(pid, tid)``."""
    out: Dict[Tuple[int, int], float] = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                out[(pid, int(tid))] = int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        # After the command: state is index 0, so utime and stime are 11 and 12.
        return {(pid, -1): (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND}
    return out


#: Two clock ticks: a process whose ``stat`` total grew by more than its live threads' sum
#: plus this lost a thread with CPU time in between.
_TICK_SLACK = 2 / TICKS_PER_SECOND


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per live thread; per process its ``stat`` total (dead threads included,
    tick-rounded) and the children it has reaped."""

    threads: Dict[Tuple[int, int], float] = field(default_factory=dict)
    totals: Dict[int, float] = field(default_factory=dict)
    reaped: Dict[int, float] = field(default_factory=dict)

    def since(self, before: "CpuSnapshot") -> float:
        """CPU seconds spent between ``before`` and this snapshot."""
        total = 0.0
        for pid, now in self.totals.items():
            live = sum(v - before.threads.get(k, 0.0) for k, v in self.threads.items()
                       if k[0] == pid)
            coarse = now - before.totals.get(pid, now)
            # The precise per-thread sum, unless a thread died with time the sum cannot see.
            total += coarse if coarse > live + _TICK_SLACK else live
        total += sum(v - before.reaped.get(k, 0.0) for k, v in self.reaped.items())
        return max(0.0, total)


def _snapshot(pids: Dict[int, List[str]]) -> CpuSnapshot:
    snap = CpuSnapshot()
    for pid, fields in pids.items():
        snap.threads.update(_threads(pid, fields))
        snap.totals[pid] = (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
        snap.reaped[pid] = (int(fields[13]) + int(fields[14])) / TICKS_PER_SECOND
    return snap


def tree_cpu(*roots: int) -> CpuSnapshot:
    """A snapshot of each of ``roots`` and every live descendant."""
    parents: Dict[int, int] = {}
    stats: Dict[int, List[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            stats[int(entry)] = fields
            parents[int(entry)] = int(fields[1])
    members: Dict[int, List[str]] = {}
    for pid, fields in stats.items():
        ancestor = pid
        while ancestor not in roots and ancestor not in (0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor in roots:
            members[pid] = fields
    return _snapshot(members)


def client_cpu() -> CpuSnapshot:
    """A snapshot of this process."""
    pid = os.getpid()
    fields = _stat_fields(pid)
    return _snapshot({pid: fields} if fields is not None else {})


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when there are none)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


@dataclass
class Run:
    """One measured run: operations completed, their latencies in seconds, failures, and the
    CPU the client and the server spent over it."""

    ops: int = 0
    seconds: float = 0.0
    latencies: List[float] = field(default_factory=list)
    errors: int = 0
    conflicts: int = 0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    first_error: Optional[str] = None

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def latency(self, pct: float) -> float:
        return percentile(sorted(self.latencies), pct)

    def cpu_per_op(self, seconds: float) -> float:
        return seconds / self.ops * 1e6 if self.ops else float("nan")


@dataclass(frozen=True)
class Spread:
    """The median of a metric over a point's runs, with its min and max."""

    median: float
    low: float
    high: float

    @staticmethod
    def of(values: Sequence[float]) -> "Spread":
        finite = [v for v in values if v == v]
        if not finite:
            return Spread(float("nan"), float("nan"), float("nan"))
        return Spread(statistics.median(finite), min(finite), max(finite))


@dataclass
class Point:
    """One variant of one workload on one system: its runs and their summary."""

    workload: str
    variant: str
    system_key: str
    unit: str = "ops/s"
    runs: List[Run] = field(default_factory=list)
    #: Extra numbers a workload reports beside the standard ones (e.g. pages/s).
    extra: Dict[str, float] = field(default_factory=dict)
    failure: Optional[str] = None

    @property
    def throughput(self) -> Spread:
        return Spread.of([r.throughput for r in self.runs])

    def latency(self, pct: float) -> Spread:
        return Spread.of([r.latency(pct) for r in self.runs])

    @property
    def client_cpu_us(self) -> Spread:
        return Spread.of([r.cpu_per_op(r.client_cpu) for r in self.runs])

    @property
    def server_cpu_us(self) -> Spread:
        return Spread.of([r.cpu_per_op(r.server_cpu) for r in self.runs])

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def conflicts(self) -> int:
        return sum(r.conflicts for r in self.runs)

    @property
    def first_error(self) -> Optional[str]:
        if self.failure is not None:
            return self.failure
        return next((r.first_error for r in self.runs if r.first_error), None)

    @property
    def failed(self) -> bool:
        return self.failure is not None or self.errors > 0
