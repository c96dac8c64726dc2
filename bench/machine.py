"""The machine note every report starts with: cores, load average, memory, kernel, and the
disk's fsync latency measured at the start of the run (4 KiB appended then ``fdatasync``, in a
temporary directory like the servers' data directories)."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict

from .measure import percentile


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu_model: str
    memory_gb: float
    kernel: str
    load_average: str
    fsync_p50_us: float
    fsync_probes: int
    git_commit: str
    started_utc: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def fsync_p50_us(probes: int) -> float:
    block = b"\0" * 4096
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-fsync-") as tmp:
        fd = os.open(os.path.join(tmp, "probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(probes):
                os.write(fd, block)
                start = time.perf_counter()
                os.fdatasync(fd)
                samples.append((time.perf_counter() - start) * 1e6)
        finally:
            os.close(fd)
    return percentile(sorted(samples), 50.0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _git_commit(repo: str) -> str:
    try:
        out = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def note(repo: str, probes: int) -> Machine:
    one, five, fifteen = os.getloadavg()
    return Machine(
        cores=os.cpu_count() or 0, cpu_model=_cpu_model(), memory_gb=round(_memory_gb(), 1),
        kernel=platform.release(), load_average=f"{one:.2f} {five:.2f} {fifteen:.2f}",
        fsync_p50_us=fsync_p50_us(probes), fsync_probes=probes, git_commit=_git_commit(repo),
        started_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def build_dir() -> str:
    """Where our binaries are under the Cargo target directory: ``release``, or ``debug`` when
    ``BENCH_PROFILE=dev`` (the test suite's smoke run, which measures nothing)."""
    return "debug" if os.environ.get("BENCH_PROFILE") == "dev" else "release"
