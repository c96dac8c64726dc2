"""Checks that a ``bench/run --quick`` completed: its report and results exist, every system of
the suite either ran every workload it takes part in or is listed as skipped (EventDBX's own
server, without ``EVENTDBX_REFERENCE_DBX``), and every point has its runs. It never looks at a
figure: a smoke run's numbers are not measurements.

``python -m bench.check_smoke OUT_DIR`` exits 1 naming what is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

from .systems import SYSTEMS
from .workloads import registry


def problems(out: Path) -> List[str]:
    found: List[str] = []
    report, results = out / "report.md", out / "results.json"
    for path in (report, results):
        if not path.is_file() or path.stat().st_size == 0:
            found.append(f"{path} is missing or empty")
    if found:
        return found
    if not any(out.glob("*.png")):
        found.append(f"no plot was drawn in {out}")
    data = json.loads(results.read_text())
    if not data.get("quick"):
        found.append("results.json is not from a --quick run")
    skipped = set(data.get("skipped", {}))
    ran = {(p["workload"], p["system"]) for p in data.get("points", []) if p.get("runs")}
    workloads = {w.id for w in registry()}
    for system in SYSTEMS:
        if system.key in skipped:
            continue
        for workload in sorted(system.workloads & workloads):
            if (workload, system.key) not in ran:
                found.append(f"{workload} did not run on {system.key}")
    return found


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.check_smoke OUT_DIR", file=sys.stderr)
        return 2
    found = problems(Path(argv[0]))
    for problem in found:
        print(f"bench smoke run: {problem}", file=sys.stderr)
    if not found:
        print(f"bench smoke run: complete ({argv[0]}/report.md)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
