"""PNG plots with matplotlib (headless): W2 throughput against concurrency per system (uniform
and hot), and for each workload the latency percentiles of every system and variant."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, List

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from .measure import PERCENTILES, Point  # noqa: E402

if TYPE_CHECKING:
    from .__main__ import Outcome


def _concurrency(outcome: "Outcome", out: str) -> List[str]:
    points = [p for p in outcome.points if p.workload == "W2" and p.runs]
    if not points:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, shape in zip(axes, ("uniform", "hot")):
        series: Dict[str, List[Point]] = {}
        for p in points:
            if p.variant.endswith(shape):
                series.setdefault(p.system_key, []).append(p)
        for key, pts in series.items():
            pts.sort(key=lambda p: int(p.variant[2:].split()[0]))
            xs = [int(p.variant[2:].split()[0]) for p in pts]
            med = [p.throughput.median for p in pts]
            err = [[m - p.throughput.low for m, p in zip(med, pts)],
                   [p.throughput.high - m for m, p in zip(med, pts)]]
            ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=key)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent connections (N)")
        ax.set_ylabel("appends/s (median, min–max)")
        ax.set_title(f"W2 {shape}" + (" (8 hot aggregates)" if shape == "hot" else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "w2_throughput_vs_concurrency.png"
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return [name]


def _latencies(outcome: "Outcome", out: str) -> List[str]:
    names = []
    workloads = sorted({p.workload for p in outcome.points
                        if p.runs and p.workload not in ("IDLE", "CLIENT")})
    for workload in workloads:
        points = [p for p in outcome.points if p.workload == workload and p.runs]
        variants = list(dict.fromkeys(p.variant for p in points))
        systems = list(dict.fromkeys(p.system_key for p in points))
        cols = min(4, len(variants))
        rows = -(-len(variants) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
        width = 0.8 / max(1, len(systems))
        for ax, variant in zip(axes.flat, variants):
            drawn = False
            for i, key in enumerate(systems):
                match = [p for p in points if p.variant == variant and p.system_key == key]
                if not match:
                    continue
                # A point without latencies (NaN) draws as nothing rather than failing.
                values = [max(0.0, match[0].latency(q).median * 1e3) if
                          match[0].latency(q).median == match[0].latency(q).median else 0.0
                          for q in PERCENTILES]
                drawn = drawn or any(v > 0 for v in values)
                ax.bar([x + i * width for x in range(len(PERCENTILES))], values, width,
                       label=key)
            ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(PERCENTILES))])
            ax.set_xticklabels([f"p{q:g}" for q in PERCENTILES])
            if drawn:
                ax.set_yscale("log")
            ax.set_ylabel("ms")
            ax.set_title(variant, fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
        for ax in list(axes.flat)[len(variants):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"{workload} latency percentiles (median of runs)")
        fig.tight_layout()
        name = f"{workload.lower()}_latency.png"
        fig.savefig(os.path.join(out, name), dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def _client_cost(outcome: "Outcome", out: str) -> List[str]:
    points = [p for p in outcome.points if p.workload == "CLIENT" and p.runs]
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [f"{p.variant}\n{p.system_key}" for p in points]
    values = [p.client_cpu_us.median for p in points]
    ax.barh(range(len(points)), values,
            xerr=[[v - p.client_cpu_us.low for v, p in zip(values, points)],
                  [p.client_cpu_us.high - v for v, p in zip(values, points)]], capsize=3)
    ax.set_yticks(range(len(points)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("client CPU per request, µs (median, min–max)")
    ax.set_title("Client cost: sequential get (psycopg: SELECT by primary key)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    name = "client_cpu_per_request.png"
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return [name]


def draw(outcome: "Outcome", out: str) -> List[str]:
    """Draws every plot into ``out``; returns the file names."""
    return _concurrency(outcome, out) + _latencies(outcome, out) + _client_cost(outcome, out)
