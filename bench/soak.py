"""``python -m bench.soak``: a long steady mixed load on one ``dbx serve`` (not in CI; see
docs/reliability.md). Samples the server's memory, open descriptors and the clients' latency
every few seconds, writes a CSV and a PNG plot, and exits 1 when memory or descriptors grow
without bound or a request failed unexpectedly.

The load, each part at a fixed pace so the run is steady rather than saturating:

- writers appending small events to a pool of aggregates, one in five to one long aggregate
  (no expected version);
- readers cycling ``get``, an ``events`` page, a filtered ``list`` page and ``verify``;
- a large-response reader: ``list`` pages of 1,000 and ``events`` pages of 1,000 of the long
  aggregate;
- a large-request sender: a write just under the server's payload cap at an impossible expected
  version (refused as a conflict) and one of ``--large-mib`` MiB (refused as
  ``payload_too_large``), both read whole by the server and neither stored;
- a churner: connect, one ``get``, close;
- idle connections: authenticated clients opened at the start and never used again, and raw TCP
  connections that never send a byte (the server closes them at its handshake deadline; they
  are reopened).

The growth rule (``verdict``): the first ``--warmup`` fraction of the run is ignored (caches,
pools and buffers filling); of the samples after it, the peak of the second half may exceed the
peak of the first half by at most 20 % + 16 MiB for RSS and by at most 10 % + 8 for open
descriptors. A leak that grows steadily fails it; a plateau passes. The database file grows with
every write and redb caches its pages, so the write pace is kept low enough that the data
written in 30 minutes stays well inside that slack; the CSV has the data size beside the RSS.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Type

from eventdbx import EventDBXClient
from eventdbx.exceptions import (
    EventDBXConflictError,
    EventDBXNotFoundError,
    EventDBXValidationError,
)

from .servers import DbxConfig, DbxServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGGREGATE_TYPE = "soak"
POOL = 500
#: The server's payload cap (docs/errors.md, ``payload_too_large``), less room for the JSON.
NEAR_CAP_BYTES = 262_144 - 1_024
#: An expected version no aggregate of the run reaches: the write is refused as a conflict.
IMPOSSIBLE_VERSION = 1 << 40
MIB = 1024 * 1024


# ---- what the server uses --------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def data_bytes(root: str) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass  # a temporary file renamed away between the listing and the stat
    return total


# ---- latencies ---------------------------------------------------------------------------------


class Recorder:
    """Latencies (seconds) and unexpected errors since the last ``take``, shared by every load
    thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latencies: List[float] = []
        self._errors: List[str] = []

    def timed(self, call: Callable[[], object],
              answers: Tuple[Type[BaseException], ...] = (),
              refused: Optional[Type[BaseException]] = None) -> None:
        """Runs ``call`` and records its latency. An exception in ``answers`` is an answer (a
        read of an aggregate no writer reached yet); with ``refused``, the call must raise that
        (a request the server is expected to refuse). Anything else is an error."""
        start = time.perf_counter()
        try:
            call()
        except Exception as err:  # noqa: BLE001 (every failure is counted and reported)
            expected = answers + ((refused,) if refused is not None else ())
            if not isinstance(err, expected):
                self.error(f"{type(err).__name__}: {err}")
                return
        else:
            if refused is not None:
                self.error(f"expected {refused.__name__}, the call succeeded")
                return
        elapsed = time.perf_counter() - start
        with self._lock:
            self._latencies.append(elapsed)

    def error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def take(self) -> Tuple[List[float], List[str]]:
        with self._lock:
            latencies, self._latencies = self._latencies, []
            errors, self._errors = self._errors, []
        return latencies, errors


def percentile(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# ---- the load -----------------------------------------------------------------------------------


@dataclass
class Load:
    server: DbxServer
    recorder: Recorder
    stop: threading.Event
    large_mib: int
    threads: List[threading.Thread] = field(default_factory=list)
    idle: List[EventDBXClient] = field(default_factory=list)

    def client(self) -> EventDBXClient:
        # known_v2_hosts="": remember nothing (a throwaway server on a reused loopback port).
        return EventDBXClient(token=self.server.token, tenant_id="default",
                              host=self.server.host, port=self.server.port,
                              server_key=self.server.fingerprint, known_v2_hosts="",
                              read_timeout=30.0)

    def paced(self, name: str, per_second: float, step: Callable[[int], None]) -> None:
        """Runs ``step(n)`` ``per_second`` times a second until the run stops; a step that
        overruns delays the next rather than bunching the following ones."""

        def run() -> None:
            period = 1.0 / per_second
            due = time.monotonic()
            n = 0
            while not self.stop.is_set():
                step(n)
                n += 1
                due = max(due + period, time.monotonic())
                self.stop.wait(max(0.0, due - time.monotonic()))

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def start(self, writers: int, write_rate: float, readers: int, read_rate: float,
              idle_sessions: int, idle_raw: int) -> None:
        rec = self.recorder
        for w in range(writers):
            client = self.client()
            rng = random.Random(w)

            def write(n: int, client: EventDBXClient = client, rng: random.Random = rng,
                      w: int = w) -> None:
                # One write in five goes to one long aggregate, the large reader's events.
                aggregate_id = "long" if n % 5 == 0 else f"a-{rng.randrange(POOL)}"
                payload = f'{{"writer": {w}, "n": {n}, "bucket": {rng.randrange(100)}}}'
                rec.timed(lambda: client.apply(aggregate_type=AGGREGATE_TYPE,
                                               aggregate_id=aggregate_id,
                                               event_type="ticked", payload_json=payload))

            self.paced(f"writer-{w}", write_rate, write)
        for r in range(readers):
            client = self.client()
            rng = random.Random(1000 + r)

            def read(n: int, client: EventDBXClient = client, rng: random.Random = rng) -> None:
                aggregate_id = f"a-{rng.randrange(POOL)}"
                kind = n % 4
                if kind == 0:
                    rec.timed(lambda: client.get(aggregate_type=AGGREGATE_TYPE,
                                                 aggregate_id=aggregate_id),
                              answers=(EventDBXNotFoundError,))
                elif kind == 1:
                    rec.timed(lambda: client.events(aggregate_type=AGGREGATE_TYPE,
                                                    aggregate_id=aggregate_id, take=100),
                              answers=(EventDBXNotFoundError,))
                elif kind == 2:
                    rec.timed(lambda: client.list(take=100, filter_expr="bucket < 10"))
                else:
                    rec.timed(lambda: client.verify(aggregate_type=AGGREGATE_TYPE,
                                                    aggregate_id=aggregate_id),
                              answers=(EventDBXNotFoundError,))

            self.paced(f"reader-{r}", read_rate, read)

        big_reader = self.client()

        def read_big(n: int) -> None:
            if n % 2 == 0:
                rec.timed(lambda: big_reader.list(take=1000))
            else:
                rec.timed(lambda: big_reader.events(aggregate_type=AGGREGATE_TYPE,
                                                    aggregate_id="long", take=1000))

        self.paced("big-reader", 0.5, read_big)

        large = self.client()
        near_cap = '{"blob": "' + "y" * NEAR_CAP_BYTES + '"}'
        oversize = '{"blob": "' + "x" * (self.large_mib * MIB) + '"}'

        def send_large(n: int) -> None:
            # Both are read whole and refused, so they load the request buffers without
            # growing the data: one under the payload cap at an impossible expected version,
            # one far over the cap.
            if n % 2 == 0:
                rec.timed(lambda: large.apply(aggregate_type=AGGREGATE_TYPE,
                                              aggregate_id="long", event_type="blob",
                                              payload_json=near_cap,
                                              expected_version=IMPOSSIBLE_VERSION),
                          refused=EventDBXConflictError)
            else:
                rec.timed(lambda: large.apply(aggregate_type=AGGREGATE_TYPE,
                                              aggregate_id="long", event_type="blob",
                                              payload_json=oversize),
                          refused=EventDBXValidationError)

        self.paced("large", 0.2, send_large)

        def churn(_: int) -> None:
            def once() -> None:
                with self.client() as client:
                    client.get(aggregate_type=AGGREGATE_TYPE, aggregate_id="a-0")

            rec.timed(once, answers=(EventDBXNotFoundError,))

        self.paced("churn", 2.0, churn)

        self.idle = [self.client() for _ in range(idle_sessions)]
        raw: List[Optional[socket.socket]] = [None] * idle_raw

        def keep_raw(_: int) -> None:
            # A closed raw connection reads as EOF; reopen it so a few are always pending.
            for i, sock in enumerate(raw):
                if sock is not None:
                    try:
                        sock.setblocking(False)
                        if sock.recv(1) != b"":
                            continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    sock.close()
                try:
                    raw[i] = socket.create_connection((self.server.host, self.server.port), 5)
                except OSError as err:
                    raw[i] = None
                    rec.error(f"raw connect: {err}")

        self.paced("raw-idle", 1.0, keep_raw)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for client in self.idle:
            client.close()


# ---- samples, verdict, outputs -------------------------------------------------------------------

COLUMNS = ["elapsed_s", "rss_mib", "open_fds", "threads", "data_mib", "requests", "errors",
           "p50_ms", "p99_ms", "max_ms"]


def sample(server: DbxServer, elapsed: float, recorder: Recorder,
           log_errors: Dict[str, int]) -> Dict[str, float]:
    latencies, errors = recorder.take()
    for text in errors:
        log_errors[text] = log_errors.get(text, 0) + 1
    return {
        "elapsed_s": round(elapsed, 1),
        "rss_mib": round(rss_bytes(server.pid) / MIB, 2),
        "open_fds": open_fds(server.pid),
        "threads": threads(server.pid),
        "data_mib": round(data_bytes(server.workdir) / MIB, 2),
        "requests": len(latencies),
        "errors": len(errors),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 3),
    }


def verdict(rows: List[Dict[str, float]], warmup: float) -> List[str]:
    """The growth rule of the module docstring; returns what failed (empty: passed)."""
    if not rows:
        return ["no samples"]
    end = rows[-1]["elapsed_s"]
    steady = [r for r in rows if r["elapsed_s"] >= warmup * end]
    if len(steady) < 4:
        return [f"too few samples after the warm-up ({len(steady)}): run longer"]
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]
    failures = []
    for column, ratio, slack in (("rss_mib", 0.20, 16.0), ("open_fds", 0.10, 8.0)):
        before = max(r[column] for r in first)
        after = max(r[column] for r in second)
        limit = before * (1 + ratio) + slack
        if after > limit:
            failures.append(f"{column} grew: peak {before:g} in the first half after the "
                            f"warm-up, {after:g} in the second (limit {limit:.1f})")
    return failures


def plot(rows: List[Dict[str, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    minutes = [r["elapsed_s"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(minutes, [r["rss_mib"] for r in rows], label="server RSS")
    axes[0].plot(minutes, [r["data_mib"] for r in rows], label="data directory", linestyle="--")
    axes[0].set_ylabel("MiB")
    axes[0].legend(loc="upper left")
    axes[1].plot(minutes, [r["open_fds"] for r in rows], color="tab:green")
    axes[1].set_ylabel("open file descriptors")
    axes[2].plot(minutes, [r["p50_ms"] for r in rows], label="p50")
    axes[2].plot(minutes, [r["p99_ms"] for r in rows], label="p99")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("client latency (ms)")
    axes[2].set_xlabel("minutes")
    axes[2].legend(loc="upper left")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between samples (default 5)")
    parser.add_argument("--dbx", default=os.path.join(target, "release", "dbx"),
                        help="the dbx binary (default: $CARGO_TARGET_DIR or target/release/dbx)")
    parser.add_argument("--durability", choices=("fsync", "relaxed"), default="fsync")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--write-rate", type=float, default=5.0, help="per writer, per second")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--read-rate", type=float, default=25.0, help="per reader, per second")
    parser.add_argument("--idle-sessions", type=int, default=8)
    parser.add_argument("--idle-raw", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=15,
                        help="size of the refused large request (default 15 MiB)")
    parser.add_argument("--max-rss-mib", type=float, default=4096.0,
                        help="stop the run (and fail) when the server's RSS passes this")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="fraction of the run the growth rule ignores (default 0.1)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "out"),
                        help="where soak.csv and soak.png go")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "soak.csv")
    png_path = os.path.join(args.out, "soak.png")
    server = DbxServer(args.dbx, DbxConfig(durability=args.durability))
    rows: List[Dict[str, float]] = []
    errors: Dict[str, int] = {}
    load = Load(server, Recorder(), threading.Event(), args.large_mib)
    try:
        load.start(args.writers, args.write_rate, args.readers, args.read_rate,
                   args.idle_sessions, args.idle_raw)
        start = time.monotonic()
        end = start + args.minutes * 60
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            out = csv.DictWriter(f, fieldnames=COLUMNS)
            out.writeheader()
            next_sample = start + args.interval
            while True:
                time.sleep(max(0.0, next_sample - time.monotonic()))
                try:
                    row = sample(server, time.monotonic() - start, load.recorder, errors)
                except (OSError, RuntimeError) as err:
                    errors[f"the server is gone: {err}"] = 1
                    break
                rows.append(row)
                out.writerow(row)
                f.flush()
                print(" ".join(f"{k}={row[k]}" for k in COLUMNS), flush=True)
                if row["rss_mib"] > args.max_rss_mib:
                    # A guard for the machine, not the verdict: stop before it runs out.
                    errors[f"RSS passed --max-rss-mib {args.max_rss_mib:g}: run stopped"] = 1
                    break
                next_sample += args.interval
                if next_sample > end:
                    break
    finally:
        load.finish()
        server.stop()
    plot(rows, png_path, f"dbx serve soak: {args.minutes:g} min, durability "
         f"{args.durability}, {sum(r['requests'] for r in rows):,} requests")
    failures = verdict(rows, args.warmup)
    failures += [f"{count} × {text}" for text, count in sorted(errors.items())]
    print(f"wrote {csv_path} and {png_path}")
    for line in failures:
        print(f"FAIL: {line}", file=sys.stderr)
    if not failures:
        print("soak passed: memory and descriptors stay bounded; no unexpected error")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
