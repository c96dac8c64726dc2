"""Sequential ``apply`` (or ``get``) round trips from one Python client, and the client's CPU
per request.

    python crates/eventdbx-py/bench/bench_apply.py [--requests 20000] [--warmup 2000]

By default the server is ``eventdbx.testing.EventDBXServer(in_process=False)``: a child process
(``python -m eventdbx.server --relaxed``, no plugins), so it shares neither this interpreter's
GIL nor its CPU accounting. ``--in-process`` runs it on this process's threads instead (then
the CPU figure includes the server's). ``--host/--port/--token/--server-key`` measure against
a running server.

Client CPU per request is this process's CPU time (``time.process_time()``: every thread, the
Rust runtime's included) over the measured requests. Build in release first
(``pip install .`` or ``maturin develop --release``); a debug build measures the debug build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from typing import Any, Dict, List

import eventdbx
from eventdbx import EventDBXClient
from eventdbx.testing import EventDBXServer


def measure(client: EventDBXClient, op: str, requests: int, warmup: int,
            rounds: int) -> Dict[str, Any]:
    aggregate_id = f"bench-{uuid.uuid4().hex[:8]}"
    client.create(aggregate_type="bench", aggregate_id=aggregate_id, event_type="created",
                  payload_json='{"n": 0}')
    payloads = [json.dumps({"n": n}) for n in range(requests)]

    def apply(payload: str) -> Any:
        return client.apply(aggregate_type="bench", aggregate_id=aggregate_id,
                            event_type="tick", payload_json=payload)

    def get(payload: str) -> Any:
        return client.get(aggregate_type="bench", aggregate_id=aggregate_id)

    call = apply if op == "apply" else get
    for n in range(warmup):
        call(payloads[n % requests])
    rates: List[float] = []
    cpu: List[float] = []
    for _ in range(rounds):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for payload in payloads:
            call(payload)
        wall, used = time.perf_counter() - wall0, time.process_time() - cpu0
        rates.append(requests / wall)
        cpu.append(used / requests * 1e6)
    return {
        "requests_per_round": requests,
        "rounds": rounds,
        "rate_per_s": rates,
        "median_rate_per_s": statistics.median(rates),
        "client_cpu_us_per_request": cpu,
        "median_client_cpu_us": statistics.median(cpu),
    }


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--op", choices=["apply", "get"], default="apply",
                        help="the request measured (get: to compare with the Rust client's "
                             "roundtrips example)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server on this process's threads")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="measure a running server")
    parser.add_argument("--token")
    parser.add_argument("--server-key")
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    server = None
    if args.port is None:
        # No plugins: every apply is one write, with no plugin jobs fanned out.
        server = EventDBXServer(in_process=args.in_process, plugins=[])
        host, port, token, key = server.host, server.port, server.token, server.fingerprint
        where = "in-process" if args.in_process else f"child process pid {server.pid}"
    else:
        host, port, token, key = args.host, args.port, args.token, args.server_key
        where = f"external {host}:{port}"
    try:
        results = {}
        for verbose in (True, False):
            with EventDBXClient(token=token, tenant_id=args.tenant, host=host, port=port,
                                server_key=key, verbose=verbose) as client:
                results["verbose" if verbose else "terse"] = measure(
                    client, args.op, args.requests, args.warmup, args.rounds)
                protocol = client.protocol
    finally:
        if server is not None:
            server.close()

    info = {
        "server": where,
        "protocol": protocol,
        "python": platform.python_version(),
        "eventdbx": eventdbx.__version__,
        "cpus": os.cpu_count(),
        "results": results,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"server: {where} (relaxed), protocol {protocol}, Python {info['python']}, "
          f"{info['cpus']} CPUs")
    for name, result in results.items():
        rates = ", ".join(f"{r:,.0f}" for r in result["rate_per_s"])
        cpus = ", ".join(f"{c:.1f}" for c in result["client_cpu_us_per_request"])
        print(f"{args.op} ({name}): {result['median_rate_per_s']:,.0f}/s median of "
              f"{result['rounds']} x {result['requests_per_round']} [{rates}]; client CPU "
              f"{result['median_client_cpu_us']:.1f} us/request [{cpus}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
