"""The report: markdown (``report.md``), the raw numbers (``results.json``) and, with
``--write-docs``, the comparison section at the top of ``docs/benchmarks.md`` (the engineering
history below it is kept as it is).

Every row is labelled with system, version, durability and transport; every figure is the
median of the point's runs with its min and max; ours is compared with each peer of the same
durability class measured in the same run; the issue's targets are stated as met or missed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from .measure import PERCENTILES, Point, Spread
from .systems import System

if TYPE_CHECKING:
    from .__main__ import Outcome

#: Client CPU (cores) from which a row is marked client-bound.
CLIENT_BOUND = 0.8

BEGIN = "<!-- bench:comparison:begin (bench/run --write-docs rewrites up to the end marker) -->"
END = "<!-- bench:comparison:end -->"


def _num(value: float, digits: int = 0) -> str:
    if value != value:
        return "n/a"
    return f"{value:,.{digits}f}"


def _ms(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:,.0f}"


def _spread(s: Spread, digits: int = 0) -> str:
    return f"{_num(s.median, digits)} ({_num(s.low, digits)}–{_num(s.high, digits)})"


def _find(outcome: "Outcome", workload: str, variant_prefix: str, key: str) -> Optional[Point]:
    for p in outcome.points:
        if p.workload == workload and p.system_key == key and p.variant.startswith(
                variant_prefix) and p.runs:
            return p
    return None


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    status: str  # "met", "missed", "not measured"
    #: The issue whose acceptance names the target (set by :func:`verdicts`).
    issue: int = 0


def _of_issue(issue: int, found: List[Verdict]) -> List[Verdict]:
    return [replace(v, issue=issue) for v in found]


def _ratio_target(outcome: "Outcome", target: str, workload: str, variants: List[str],
                  ours: str, peer: str, at_least: float) -> Verdict:
    parts, met = [], True
    for variant in variants:
        a, b = _find(outcome, workload, variant, ours), _find(outcome, workload, variant, peer)
        if a is None or b is None or b.throughput.median <= 0:
            return Verdict(target, f"{variant}: not measured (a system did not run)",
                           "not measured")
        ratio = a.throughput.median / b.throughput.median
        met = met and ratio >= at_least
        parts.append(f"{variant}: {_num(a.throughput.median)} vs {_num(b.throughput.median)} "
                     f"{a.unit} = {ratio:.2f}×")
    return Verdict(target, "; ".join(parts), "met" if met else "missed")


def verdicts(outcome: "Outcome") -> List[Verdict]:
    """The issue's acceptance targets, each met or missed with the numbers behind it."""
    from .workloads.reads import SELECTIVITY, SORTS

    out = _of_issue(15, [
        _ratio_target(outcome, "durable W2 (uniform) at N=16 and N=64 ≥ 1.5× PostgreSQL "
                      "synchronous_commit=on", "W2", ["N=16 uniform", "N=64 uniform"],
                      "dbx-fsync-v2", "pg-sync-on", 1.5),
        _ratio_target(outcome, "durable W2 (uniform) at N=1 ≥ 1× PostgreSQL "
                      "synchronous_commit=on", "W2", ["N=1 uniform"],
                      "dbx-fsync-v2", "pg-sync-on", 1.0),
    ])
    out += _of_issue(17, [
        _ratio_target(outcome, "durable W2 (uniform) through dbx on PostgreSQL at N=16 and "
                      "N=64 ≥ 0.8× psycopg's statement on that PostgreSQL", "W2",
                      ["N=16 uniform", "N=64 uniform"], "dbx-pg-v2", "pg-sync-on", 0.8),
    ])
    out += _of_issue(13, [
        _ratio_target(outcome, "relaxed W1 ≥ 3× PostgreSQL synchronous_commit=off", "W1",
                      ["create"], "dbx-relaxed-v2", "pg-sync-off", 3.0),
        _ratio_target(outcome, "W4 pages/s ≥ 2× PostgreSQL keyset pagination, same filter",
                      "W4", [f"{p}% by {s}" for s in SORTS for p in SELECTIVITY],
                      "dbx-relaxed-v2", "pg-sync-off", 2.0),
    ])
    parts, met, seen = [], True, False
    for key in ("dbx-fsync-v2", "dbx-relaxed-v2"):
        long, fresh = _find(outcome, "W5", "append at", key), _find(outcome, "W5",
                                                                    "append on a fresh", key)
        if long is None or fresh is None:
            continue
        seen = True
        ratio = long.latency(50).median / fresh.latency(50).median
        met = met and ratio <= 1.10
        parts.append(f"{key}: p50 {_ms(long.latency(50).median)} vs "
                     f"{_ms(fresh.latency(50).median)} ms = {ratio * 100:.0f}%")
    out += _of_issue(13, [
        Verdict("W5 append latency on the long aggregate within 10% of a fresh one",
                "; ".join(parts) or "not measured", ("met" if met else "missed")
                if seen else "not measured"),
        _client_cost(outcome),
    ])
    out += _of_issue(15, [_sync_append_latency(outcome), _async_client_cost(outcome),
                          _sync_client_cost(outcome), *_idle(outcome)])
    out += _of_issue(18, _subscriptions(outcome))
    return out


#: Issue 15's bound on the synchronous client's sequential durable append p50, in multiples
#: of the disk's append-plus-``fdatasync`` p50 measured at the start of the same run.
SYNC_APPEND_FSYNCS = 2.0


def _sync_append_latency(outcome: "Outcome") -> Verdict:
    from .workloads.sync_writes import VARIANT

    target = (f"sequential durable append p50 through the synchronous client ≤ "
              f"{SYNC_APPEND_FSYNCS:.0f}× the disk's append + fdatasync p50")
    point = _find(outcome, "W1S", VARIANT, "dbx-fsync-v2")
    fsync_us = outcome.machine.fsync_p50_us
    if point is None or not fsync_us == fsync_us or fsync_us <= 0:
        return Verdict(target, "not measured", "not measured")
    p50_us = point.latency(50).median * 1e6
    ratio = p50_us / fsync_us
    return Verdict(target, f"p50 {p50_us:,.0f} µs vs fsync p50 {fsync_us:,.0f} µs = "
                   f"{ratio:.2f}×", "met" if ratio <= SYNC_APPEND_FSYNCS else "missed")


#: Our server with its busy-polling on (the default) and off, the same otherwise.
POLL_ON, POLL_OFF = "dbx-relaxed-v2", "dbx-relaxed-v2-nopoll"


def _idle(outcome: "Outcome") -> List[Verdict]:
    from .workloads.connections import PACED, SILENT

    target = "a server with 64 idle connections uses < 1% of a core"
    idle = _find(outcome, "IDLE", SILENT, "dbx-fsync-v2")
    if idle is not None and "server_core_pct" in idle.extra:
        pct = idle.extra["server_core_pct"]
        silent = Verdict(target, f"{pct:.2f}% of a core (median over {len(idle.runs)} intervals)",
                         "met" if pct < 1.0 else "missed")
    else:
        silent = Verdict(target, "not measured", "not measured")
    # Busy-polling must never cost more than it saves: where connections are mostly idle, the
    # server with it on uses no more CPU than with it off (10% for the noise of the run).
    target = ("64 connections sending a get every 100 ms each: server CPU with busy-polling "
              "≤ with it off")
    on, off = (_find(outcome, "IDLE", PACED, key) for key in (POLL_ON, POLL_OFF))
    if on is None or off is None or not all("server_core_pct" in p.extra for p in (on, off)):
        return [silent, Verdict(target, "not measured", "not measured")]
    a, b = on.extra["server_core_pct"], off.extra["server_core_pct"]
    measured = (f"{a:.2f}% vs {b:.2f}% of a core ({_num(on.server_cpu_us.median, 1)} vs "
                f"{_num(off.server_cpu_us.median, 1)} µs per request)")
    return [silent, Verdict(target, measured, "met" if a <= b * 1.10 else "missed")]


def busy_poll_pairs(outcome: "Outcome") -> List[Tuple[Point, Point]]:
    """(busy-polling on, off) for every point both of those servers measured."""
    on = {(p.workload, p.variant): p for p in outcome.points
          if p.system_key == POLL_ON and p.runs}
    return [(on[(p.workload, p.variant)], p) for p in outcome.points
            if p.system_key == POLL_OFF and p.runs and (p.workload, p.variant) in on]


def _busy_poll_section(outcome: "Outcome", heading: str) -> List[str]:
    pairs = busy_poll_pairs(outcome)
    if not pairs:
        return []
    lines = ["", f"{heading}# The server's busy-polling on and off, same run", "",
             f"`{POLL_ON}` (`busy_poll_us` at its default) against `{POLL_OFF}` (`0`); the "
             "clients are the same in both (ours poll for their answers either way). Each "
             "cell is on / off.", "",
             "| workload | variant | throughput | server CPU µs/op | client CPU µs/op "
             "| server % of a core |", "|---|---|---:|---:|---:|---:|"]
    for a, b in pairs:
        share = " / ".join(f"{p.extra['server_core_pct']:.2f}" for p in (a, b)) \
            if all("server_core_pct" in p.extra for p in (a, b)) else ""
        lines.append(f"| {a.workload} | {a.variant} | {_num(a.throughput.median)} / "
                     f"{_num(b.throughput.median)} {a.unit} | "
                     f"{_num(a.server_cpu_us.median, 1)} / {_num(b.server_cpu_us.median, 1)} | "
                     f"{_num(a.client_cpu_us.median, 1)} / {_num(b.client_cpu_us.median, 1)} | "
                     f"{share} |")
    return lines


def _subscriptions(outcome: "Outcome") -> List[Verdict]:
    """SUB's three targets (issue 18), on the one system that runs it."""
    from .workloads.subscriptions import ALONE, STALLED, STEADY

    key = "dbx-relaxed-v2"
    throughput = "a stalled subscriber costs full-speed writers < 10% of their throughput"
    memory = ("with a stalled subscriber the server's RSS stays bounded, and the subscriber "
              "then gets every event in order")
    latency = "p99 commit → delivery < 10 ms with writers at a steady 1,000 events/s"
    alone, stalled = _find(outcome, "SUB", ALONE, key), _find(outcome, "SUB", STALLED, key)
    out = []
    if alone is None or stalled is None or alone.throughput.median <= 0:
        out += [Verdict(throughput, "not measured", "not measured"),
                Verdict(memory, "not measured", "not measured")]
    else:
        a, b = stalled.throughput.median, alone.throughput.median
        drop = (1 - a / b) * 100
        out.append(Verdict(throughput, f"{_num(a)} vs {_num(b)} appends/s alone: "
                           f"{drop:+.1f}% drop", "met" if drop < 10 else "missed"))
        grown = stalled.extra.get("rss_growth_mb", float("nan"))
        base = alone.extra.get("rss_growth_mb", float("nan"))
        # Bounded: no more growth than the writers cause alone, give or take 16 MiB of noise.
        bounded = grown == grown and base == base and grown <= base + 16
        everything = "every event in order afterwards" if not stalled.failed else (
            f"NOT every event: {stalled.first_error}")
        out.append(Verdict(memory, f"RSS growth {_num(grown, 1)} MiB (writers alone "
                           f"{_num(base, 1)} MiB); {everything}",
                           "met" if bounded and not stalled.failed else "missed"))
    steady = _find(outcome, "SUB", STEADY, key)
    if steady is None:
        out.append(Verdict(latency, "not measured", "not measured"))
    else:
        p50, p99 = steady.latency(50).median, steady.latency(99).median
        out.append(Verdict(latency, f"p50 {_ms(p50)} ms, p99 {_ms(p99)} ms (loopback)",
                           "met" if p99 < 0.010 and not steady.failed else "missed"))
    return out


def _client(outcome: "Outcome", variant: str, keys: Tuple[str, ...] = ("dbx-relaxed-v2",)
            ) -> Optional[Point]:
    """The CLIENT point of ``variant`` (exactly: one variant's name begins another's) on the
    first of ``keys`` that measured it."""
    for key in keys:
        for p in outcome.points:
            if p.workload == "CLIENT" and p.variant == variant and p.system_key == key and p.runs:
                return p
    return None


def _client_cost(outcome: "Outcome") -> Verdict:
    from .workloads.client_cost import PURE, RUST, SDK_SYNC

    target = "Python client CPU per request ≤ ¼ of a pure-Python stack"
    ours, pure = (_client(outcome, v) for v in (SDK_SYNC, PURE))
    if ours is None or pure is None:
        return Verdict(target, "not measured", "not measured")
    a, b = ours.client_cpu_us.median, pure.client_cpu_us.median
    measured = f"{a:.1f} vs {b:.1f} µs = {a / b:.2f}×"
    rust = _client(outcome, RUST)
    if rust is not None:
        measured += (f" (Rust client {rust.client_cpu_us.median:.1f} µs = "
                     f"{rust.client_cpu_us.median / b:.2f}× the pure-Python stack)")
    return Verdict(target, measured, "met" if a <= b / 4 else "missed")


def _async_client_cost(outcome: "Outcome") -> Verdict:
    """Issue 15: ``AsyncEventDBXClient`` costs no more client CPU per ``get`` than psycopg's
    async ``SELECT`` (both awaited one at a time), over v1 and v2 alike."""
    from .workloads.client_cost import PSYCOPG, SDK_ASYNC, SDK_ASYNC_V2

    target = "async client CPU per get ≤ psycopg async per SELECT"
    peer = _client(outcome, PSYCOPG, ("pg-sync-off", "pg-sync-on"))
    ours = [p for p in (_client(outcome, v) for v in (SDK_ASYNC, SDK_ASYNC_V2)) if p]
    if peer is None or not ours:
        return Verdict(target, "not measured", "not measured")
    limit = peer.client_cpu_us.median
    parts = [f"{p.variant}: {p.client_cpu_us.median:.1f} µs" for p in ours]
    measured = f"{'; '.join(parts)}; psycopg {limit:.1f} µs"
    met = all(p.client_cpu_us.median <= limit for p in ours)
    return Verdict(target, measured, "met" if met else "missed")


#: Issue 15's bound on the synchronous client's CPU per ``get`` without answer polling.
SYNC_GET_CPU_US = 15.0


def _sync_client_cost(outcome: "Outcome") -> Verdict:
    from .workloads.client_cost import SDK_SYNC_NO_POLL

    target = f"sync client CPU per get ≤ {SYNC_GET_CPU_US:.0f} µs, busy-poll off"
    ours = _client(outcome, SDK_SYNC_NO_POLL)
    if ours is None:
        return Verdict(target, "not measured", "not measured")
    cpu = ours.client_cpu_us
    return Verdict(target, f"{_spread(cpu, 1)} µs",
                   "met" if cpu.median <= SYNC_GET_CPU_US else "missed")


def ratios(outcome: "Outcome") -> List[Tuple[Point, Point, float, float]]:
    """(ours, peer, throughput ratio, p50 ratio) for every point both measured, pairing each
    of our rows with the peers of the same durability class."""
    systems = {s.key: s for s in outcome.systems}
    by_variant: Dict[Tuple[str, str], List[Point]] = {}
    for p in outcome.points:
        if p.runs and p.workload != "IDLE":
            by_variant.setdefault((p.workload, p.variant), []).append(p)
    rows = []
    for points in by_variant.values():
        for a in points:
            sa = systems[a.system_key]
            if not sa.ours or sa.transport != "v2":
                continue
            for b in points:
                sb = systems[b.system_key]
                if sb.ours or sb.durability_class != sa.durability_class:
                    continue
                tp = a.throughput.median / b.throughput.median if b.throughput.median else 0.0
                p50 = a.latency(50).median / b.latency(50).median if b.latency(50).median else 0
                rows.append((a, b, tp, p50))
    return rows


def _label(system: System, version: str) -> str:
    return f"{system.name} {version}"


def markdown(outcome: "Outcome", figures: List[str], figure_dir: str = "",
             heading: str = "#") -> str:
    m, sizes = outcome.machine, outcome.sizes
    systems = {s.key: s for s in outcome.systems}
    mode = "quick smoke run (`bench/run --quick`)" if outcome.quick else "full run (`bench/run`)"
    lines = [
        f"{heading} Benchmarks: our server and SDK beside PostgreSQL",
        "",
        f"{mode}, {m.started_utc}, commit `{m.git_commit}`, {outcome.seconds:.0f} s. Each "
        f"figure is the median of {sizes.runs} runs (min–max in parentheses); every server "
        "runs for the whole run and a point's runs alternate between the systems (run 1 of "
        "each, then run 2, each round starting one system further on), so the systems compared "
        "are measured in the same minutes. Written by `bench/run`; the harness is `bench/` "
        "(README there).",
    ]
    if outcome.quick:
        lines += ["", "**A smoke run**: short runs on small data, to prove the harness works. "
                  "Its numbers are not measurements; only a full run on an idle machine is."]
    lines += [
        "", f"{heading}# Machine", "",
        "| | |", "|---|---|",
        f"| cores | {m.cores} ({m.cpu_model}) |",
        f"| memory | {m.memory_gb} GB |",
        f"| kernel | {m.kernel} |",
        f"| load average at start (1, 5, 15 min) | {m.load_average} |",
        f"| fsync p50 at start | {m.fsync_p50_us:,.0f} µs (4 KiB append + fdatasync, "
        f"{m.fsync_probes} probes) |",
        "", f"{heading}# Systems", "",
        "| key | system | version | durability | transport | status |",
        "|---|---|---|---|---|---|",
    ]
    for s in outcome.systems:
        status = ("skipped: " + outcome.skipped[s.key] if s.key in outcome.skipped else
                  "**failed to start**: " + outcome.start_failures[s.key]
                  if s.key in outcome.start_failures else "ran")
        lines.append(f"| {s.key} | {s.name}{' (ours)' if s.ours else ''} | "
                     f"{outcome.versions.get(s.key, '?')} | {s.durability} | {s.transport} | "
                     f"{status} |")
    lines += ["", f"{heading}# Targets (the issues' acceptance lists)", "",
              "| issue | target | measured | status |", "|---:|---|---|---|"]
    for v in verdicts(outcome):
        status = {"met": "**met**", "missed": "**missed**"}.get(v.status, v.status)
        lines.append(f"| {v.issue} | {v.target} | {v.measured} | {status} |")
    lines += ["", f"{heading}# Ours against each peer, same run", "",
              "Throughput ratio (>1: ours faster) and p50 latency ratio (<1: ours faster), our "
              "v2 rows against the peers of the same durability class.", "",
              "| workload | variant | ours | peer | throughput ours ÷ peer | p50 ours ÷ peer |",
              "|---|---|---|---|---:|---:|"]
    for a, b, tp, p50 in ratios(outcome):
        lines.append(f"| {a.workload} | {a.variant} | {a.system_key} | {b.system_key} | "
                     f"{tp:.2f}× | {p50:.2f}× |")
    lines += ["", f"† marks rows where the client (this one Python process) used at least "
              f"{CLIENT_BOUND:.0%} of a core: there the harness, not the server, sets the pace."]
    lines += _busy_poll_section(outcome, heading)
    lines += _workload_sections(outcome, systems, heading)
    if figures:
        lines += ["", f"{heading}# Plots", ""]
        lines += [f"![{os.path.splitext(f)[0]}]({os.path.join(figure_dir, f)})" for f in figures]
    return "\n".join(lines) + "\n"


def _workload_sections(outcome: "Outcome", systems: Dict[str, System],
                       heading: str) -> List[str]:
    from .workloads import registry

    lines: List[str] = []
    pct_heads = " | ".join(f"p{p:g} ms" for p in PERCENTILES)
    for workload in registry():
        points = [p for p in outcome.points if p.workload == workload.id]
        if not points:
            continue
        lines += ["", f"{heading}# {workload.id}: {workload.title}", "",
                  f"| variant | system | durability | transport | throughput | {pct_heads} "
                  "| errors | conflicts | client CPU µs/op | server CPU µs/op |",
                  "|---|---|---|---|---:|" + "---:|" * len(PERCENTILES) + "---:|---:|---:|---:|"]
        for p in points:
            s = systems[p.system_key]
            label = _label(s, outcome.versions.get(s.key, "?"))
            transport = workload.transport_of(p.variant) or s.transport
            if not p.runs:
                lines.append(f"| {p.variant} | {label} | {s.durability} | {transport} | "
                             f"**failed**: {p.first_error} |" + " |" * (len(PERCENTILES) + 4))
                continue
            pcts = " | ".join(_ms(p.latency(q).median) for q in PERCENTILES)
            # The harness is one Python process: near a core of client CPU, it is the limit.
            busy = p.client_cpu_us.median * p.throughput.median / 1e6
            bound = " †" if busy >= CLIENT_BOUND else ""
            errors = f"**{p.errors}**" if p.errors else "0"
            lines.append(f"| {p.variant} | {label} | {s.durability} | {transport} | "
                         f"{_spread(p.throughput, 1 if p.throughput.median < 100 else 0)} "
                         f"{p.unit}{bound} | "
                         f"{pcts} | {errors} | {p.conflicts} | {_num(p.client_cpu_us.median)} "
                         f"| {_num(p.server_cpu_us.median)} |")
        for p in points:
            if p.failed:
                lines.append(f"\n{p.variant} on {p.system_key}: {p.first_error}")
            for name, value in p.extra.items():
                lines.append(f"\n{p.variant} on {p.system_key}: {name} = {value:.2f}")
    return lines


def _point_json(p: Point) -> Dict[str, object]:
    def spread(s: Spread) -> Dict[str, float]:
        return {"median": s.median, "min": s.low, "max": s.high}

    return {
        "workload": p.workload, "variant": p.variant, "system": p.system_key, "unit": p.unit,
        "throughput": spread(p.throughput),
        "latency_s": {f"p{q:g}": spread(p.latency(q)) for q in PERCENTILES},
        "client_cpu_us_per_op": spread(p.client_cpu_us),
        "server_cpu_us_per_op": spread(p.server_cpu_us),
        "errors": p.errors, "conflicts": p.conflicts, "runs": len(p.runs),
        "failure": p.first_error, "extra": p.extra,
    }


def write(outcome: "Outcome", out: str, figures: List[str]) -> str:
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": outcome.machine.as_dict(), "quick": outcome.quick,
                   "versions": outcome.versions, "skipped": outcome.skipped,
                   "start_failures": outcome.start_failures,
                   "points": [_point_json(p) for p in outcome.points]}, f, indent=1)
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(outcome, figures))
    return path


def write_docs(outcome: "Outcome", docs: str, out: str, figures: List[str],
               copy: Callable[[str, str], object] = shutil.copyfile) -> str:
    """Rewrites the comparison between the markers at the top of ``docs/benchmarks.md`` (or
    puts it above everything on the first run) and copies the plots to ``docs/img/bench/``."""
    image_dir = os.path.join(docs, "img", "bench")
    os.makedirs(image_dir, exist_ok=True)
    for figure in figures:
        copy(os.path.join(out, figure), os.path.join(image_dir, figure))
    path = os.path.join(docs, "benchmarks.md")
    history = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            history = f.read()
    if BEGIN in history and END in history:
        history = history.split(END, 1)[1].lstrip("\n")
    section = markdown(outcome, figures, figure_dir="img/bench", heading="#")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{BEGIN}\n{section}{END}\n\n{history}")
    return path
