"""``python -m bench``: the benchmark suite (``bench/run`` installs what it needs, then runs
this). Starts every server, runs each workload on the systems that take part in it (each
variant's runs interleaved across the systems, see ``interleaved``), stops them, then writes
the report and the plots. Exits 1 when a server failed to start or a workload
errored (version conflicts are expected in W2 and never count as errors), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import machine, plots, report
from .machine import build_dir
from .measure import Point
from .servers import Server
from .systems import SYSTEMS, Environment, ServerSpec, System
from .workloads import Sizes, Target, Workload, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger("bench")


@dataclass
class Outcome:
    """Everything the report needs."""

    quick: bool
    sizes: Sizes
    machine: machine.Machine
    systems: List[System]
    versions: Dict[str, str] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    start_failures: Dict[str, str] = field(default_factory=dict)
    points: List[Point] = field(default_factory=list)
    seconds: float = 0.0
    plot_failed: bool = False

    @property
    def failed(self) -> bool:
        return (bool(self.start_failures) or self.plot_failed
                or any(p.failed for p in self.points))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer runs, shorter durations, smaller data")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "out"),
                        help="where report.md, results.json and the plots go")
    parser.add_argument("--write-docs", action="store_true",
                        help="also rewrite the comparison at the top of docs/benchmarks.md")
    parser.add_argument("--docs", default=os.path.join(REPO, "docs"),
                        help="the docs directory --write-docs writes to (default: the repo's)")
    parser.add_argument("--systems", default="",
                        help="comma-separated system keys (default: all)")
    parser.add_argument("--workloads", default="",
                        help="comma-separated workload ids (default: all)")
    parser.add_argument("--runs", type=int, default=0, help="runs per point (default by mode)")
    parser.add_argument("--dbx", default=os.environ.get("BENCH_DBX", ""),
                        help="our dbx binary (default: $CARGO_TARGET_DIR or target, then "
                        "release/dbx, or debug/dbx with BENCH_PROFILE=dev)")
    return parser


def _default_dbx() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, build_dir(), "dbx")


async def _prepare(workload: Workload, target: Target, sizes: Sizes,
                   points: List[Point]) -> bool:
    """Seeds ``workload`` on ``target`` (not measured); a failure fails each of its variants."""
    system = target.system
    began = time.perf_counter()
    try:
        await workload.prepare(target, sizes)
    except Exception as exc:
        log.error("%s on %s: seeding failed: %s", workload.id, system.key, exc)
        for variant in workload.variants_for(system, sizes):
            points.append(Point(workload.id, variant, system.key, workload.unit_of(variant),
                                failure=f"seeding failed: {type(exc).__name__}: {exc}"))
        return False
    seeded = time.perf_counter() - began
    if seeded >= 1.0:
        log.info("%-6s %-27s %-21s %26.1f s", workload.id, "(seeding)", system.key, seeded)
    return True


def interleaved(keys: List[str], runs: int) -> List[Tuple[int, str]]:
    """The order of a variant's runs: run ``i`` of every system, then run ``i + 1``, each
    round starting one system further on. The systems of a point are so measured in the same
    minutes, none always first: this machine's speed drifts within minutes (up to 2x), which
    a point measured system after system would report as a difference between systems."""
    order = []
    for index in range(runs):
        shift = index % len(keys) if keys else 0
        order.extend((index, key) for key in keys[shift:] + keys[:shift])
    return order


async def _run_workload(workload: Workload, targets: List[Target], sizes: Sizes,
                        points: List[Point]) -> None:
    """Every variant of ``workload`` on every target that takes part, runs interleaved."""
    ready = [t for t in targets if await _prepare(workload, t, sizes, points)]
    variants: List[str] = []
    for target in ready:
        variants.extend(v for v in workload.variants_for(target.system, sizes)
                        if v not in variants)
    for variant in variants:
        began = time.perf_counter()
        taking = {t.system.key: t for t in ready
                  if variant in workload.variants_for(t.system, sizes)}
        point = {key: Point(workload.id, variant, key, workload.unit_of(variant))
                 for key in taking}
        for index, key in interleaved(list(taking), sizes.runs):
            if point[key].failure is not None:
                continue
            try:
                point[key].runs.append(await workload.run(taking[key], variant, index, sizes))
            except Exception as exc:
                point[key].failure = f"{type(exc).__name__}: {exc}"
        for key, done in point.items():
            done.extra = workload.extra(variant, done.runs) if done.runs else {}
            points.append(done)
            tp = done.throughput
            log.info("%-6s %-27s %-21s %10.1f %-13s %5.1f s%s", workload.id, variant, key,
                     tp.median, done.unit, time.perf_counter() - began,
                     f"  FAILED: {done.first_error}" if done.failed else "")


async def _start(spec: ServerSpec, systems: List[System], env: Environment,
                 outcome: Outcome) -> Optional[Server]:
    """Starts the server of ``systems``; None when it is skipped or failed to start (noted)."""
    names = ", ".join(s.key for s in systems)
    reason = spec.skip_reason(env)
    if reason is not None:
        log.warning("skipping %s: %s", names, reason)
        for system in systems:
            outcome.skipped[system.key] = reason
        return None
    try:
        server: Server = await asyncio.to_thread(spec.start, env)
    except Exception as exc:
        log.error("%s failed to start: %s", names, exc)
        for system in systems:
            outcome.start_failures[system.key] = f"{type(exc).__name__}: {exc}"
        return None
    for system in systems:
        outcome.versions[system.key] = server.version
    return server


async def _run(systems: List[System], env: Environment, workloads: List[Workload],
               outcome: Outcome) -> None:
    """Starts every server, runs every workload on the systems that take part, stops them."""
    groups: Dict[ServerSpec, List[System]] = {}
    for system in systems:
        groups.setdefault(system.server, []).append(system)
    running: List[Server] = []
    try:
        targets = []
        for spec, members in groups.items():
            server = await _start(spec, members, env, outcome)
            if server is None:
                continue
            running.append(server)
            # The entries sharing a server share what has been seeded on it.
            seeded: Dict[str, object] = {}
            targets.extend(Target(system, server, systems.index(system), seeded)
                           for system in members)
        targets.sort(key=lambda t: t.slot)
        for workload in workloads:
            taking = [t for t in targets if workload.id in t.system.workloads]
            if taking:
                await _run_workload(workload, taking, outcome.sizes, outcome.points)
    finally:
        for server in running:
            await asyncio.to_thread(server.stop)


async def _main(args: argparse.Namespace) -> Outcome:
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": args.runs})
    wanted = {k for k in args.systems.split(",") if k}
    unknown = wanted - {s.key for s in SYSTEMS}
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    systems = [s for s in SYSTEMS if not wanted or s.key in wanted]
    ids = {w for w in args.workloads.split(",") if w}
    workloads = [w for w in registry() if not ids or w.id in ids]
    env = Environment(dbx_binary=args.dbx or _default_dbx(),
                      reference_binary=os.environ.get("EVENTDBX_REFERENCE_DBX") or None)
    outcome = Outcome(args.quick, sizes, machine.note(REPO, sizes.fsync_probes), systems)
    log.info("machine: %d cores, load %s, fsync p50 %.0f us; our binaries: %s builds",
             outcome.machine.cores, outcome.machine.load_average, outcome.machine.fsync_p50_us,
             build_dir())
    started = time.perf_counter()
    await _run(systems, env, workloads, outcome)
    outcome.seconds = time.perf_counter() - started
    return outcome


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.write_docs and args.quick and args.docs == os.path.join(REPO, "docs"):
        parser.error("--write-docs needs a full run: a smoke run's numbers are not measurements")
    logging.basicConfig(level=logging.INFO, format="bench %(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # SIGTERM ends the run like Ctrl-C does, so every server is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # The SDK logs each plaintext connection and every reconnect; the report has what matters.
    logging.getLogger("eventdbx").setLevel(logging.ERROR)
    # The plaintext transport warns once per client; the report labels those rows instead.
    warnings.filterwarnings("ignore", message="plaintext transport requested",
                            category=RuntimeWarning)
    try:
        outcome = asyncio.run(_main(args))
    except KeyboardInterrupt:
        log.error("interrupted: servers stopped, no report written")
        return 130
    os.makedirs(args.out, exist_ok=True)
    try:
        figures = plots.draw(outcome, args.out)
    except Exception:  # a broken plot must not cost the report: it is an error all the same
        log.exception("plotting failed")
        figures, outcome.plot_failed = [], True
    path = report.write(outcome, args.out, figures)
    log.info("report: %s (%.0f s)", path, outcome.seconds)
    if args.write_docs:
        docs = report.write_docs(outcome, args.docs, args.out, figures)
        log.info("docs: %s", docs)
    for key, why in outcome.start_failures.items():
        log.error("did not start: %s: %s", key, why)
    for point in outcome.points:
        if point.failed:
            log.error("failed: %s %s on %s: %s", point.workload, point.variant,
                      point.system_key, point.first_error)
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
