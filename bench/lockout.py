"""``python -m bench.lockout``: can an authenticated client still get in while thousands of
unauthenticated connections sit on the server? (Not in CI; see docs/reliability.md.)

Starts ``dbx serve`` (a release build) with a descriptor limit high enough for the flood, makes
one warm-up call and 20 baseline tries, then opens ``--connections`` TCP connections (default
5,000) that never send a byte, from ``--sources`` loopback addresses (127.0.0.2 and up; with
``--beside-client``, from the client's own 127.0.0.1), in a separate process so the flood
never holds this process's GIL. Then, for each phase:

- ``held``: the connections are held open as they are (the server closes the ones over its
  pending budget and the rest at its handshake deadline; the attacker keeps its ends open);
- ``reopen``: every connection the server closes is opened again at once, as an attacker
  that keeps the pending budget full would.

In each phase, 20 tries: connect an authenticated client (the Python SDK, protocol v2 with the
server key pinned), one ``get``, close; the time of connect plus answer is printed. Exits 1 when
any try of a flood phase takes over ``--limit-ms`` (default 100) or fails.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Dict, List, Optional, Tuple

from eventdbx import EventDBXClient

from .servers import DbxConfig, DbxServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIES = 20


def raise_fd_limit(needed: int) -> int:
    """Raises this process's RLIMIT_NOFILE (inherited by the server it starts) to ``needed``;
    returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            needed = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


# ---- the flood (a child process) --------------------------------------------------------------


def _open(host: str, port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((host, port))
    sock.setblocking(False)
    return sock


def flood(host: str, port: int, connections: int, sources: int, beside_client: bool,
          control: Connection) -> None:
    """Opens the connections, says ``ready``, then serves commands: ``reopen`` starts reopening
    every connection the server closes, ``stop`` ends and answers with the counts."""
    raise_fd_limit(connections + 1024)
    addresses = (["127.0.0.1"] if beside_client
                 else [f"127.0.0.{2 + i % 250}" for i in range(max(1, sources))])
    selector = selectors.DefaultSelector()
    failures = 0
    for i in range(connections):
        source = addresses[i % len(addresses)]
        try:
            selector.register(_open(host, port, source), selectors.EVENT_READ, source)
        except OSError:
            failures += 1
    control.send(("ready", connections - failures, failures))
    reopening = False
    reopened = 0
    closed_by_server = 0
    # Ends the server closed while they were held: (socket, its source address).
    held: List[Tuple[socket.socket, str]] = []
    while True:
        if control.poll(0 if reopening else 0.05):
            command = control.recv()
            if command == "reopen":
                reopening = True
                for sock, source in held:
                    sock.close()
                    try:
                        selector.register(_open(host, port, source), selectors.EVENT_READ,
                                          source)
                        reopened += 1
                    except OSError:
                        failures += 1
                    if control.poll(0):
                        break  # "stop" arrived during the storm
                held.clear()
            elif command == "stop":
                break
        for key, _ in selector.select(timeout=0.05 if reopening else 0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(1)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # the server never speaks first; ignore it if it does
            # The server closed it: keep our end (held) or replace it (reopen).
            selector.unregister(sock)
            closed_by_server += 1
            if not reopening:
                held.append((sock, key.data))
            else:
                sock.close()
                try:
                    selector.register(_open(host, port, key.data), selectors.EVENT_READ,
                                      key.data)
                    reopened += 1
                except OSError:
                    failures += 1
    control.send(("stopped", closed_by_server, reopened, failures))


# ---- the tries --------------------------------------------------------------------------------


def one_try(server: DbxServer) -> Tuple[float, Optional[str]]:
    """Connect, one ``get``, close: (milliseconds to the answer, error or None)."""
    start = time.perf_counter()
    try:
        # known_v2_hosts="": remember nothing (a throwaway server on a reused loopback port).
        client = EventDBXClient(token=server.token, tenant_id="default", host=server.host,
                                port=server.port, server_key=server.fingerprint,
                                known_v2_hosts="", connect_timeout=5.0, read_timeout=5.0)
        try:
            client.get(aggregate_type="probe", aggregate_id="p-1")
            elapsed = (time.perf_counter() - start) * 1000
        finally:
            client.close()
    except Exception as err:  # noqa: BLE001 (a failed try is reported, not raised)
        return (time.perf_counter() - start) * 1000, f"{type(err).__name__}: {err}"
    return elapsed, None


def tries(server: DbxServer, phase: str, spacing: float) -> List[Tuple[float, Optional[str]]]:
    results = []
    for n in range(1, TRIES + 1):
        elapsed, error = one_try(server)
        results.append((elapsed, error))
        print(f"{phase:>8} try {n:2}: {elapsed:7.2f} ms" + (f"  FAILED {error}" if error else ""),
              flush=True)
        time.sleep(spacing)  # pacing between tries, not synchronisation
    return results


def summary(results: List[Tuple[float, Optional[str]]]) -> str:
    times = sorted(t for t, _ in results)
    failed = sum(1 for _, e in results if e)
    return (f"min {times[0]:.2f} ms, median {times[len(times) // 2]:.2f} ms, "
            f"max {times[-1]:.2f} ms, {failed} failed")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.lockout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--sources", type=int, default=100,
                        help="loopback source addresses of the flood, from 127.0.0.2 up")
    parser.add_argument("--beside-client", action="store_true",
                        help="flood from 127.0.0.1, the client's own address")
    parser.add_argument("--phases", default="held,reopen")
    parser.add_argument("--limit-ms", type=float, default=100.0)
    parser.add_argument("--spacing", type=float, default=0.2,
                        help="seconds between two tries (default 0.2)")
    parser.add_argument("--dbx", default=os.path.join(target, "release", "dbx"),
                        help="the dbx binary (default: $CARGO_TARGET_DIR or target/release/dbx)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    limit = raise_fd_limit(2 * args.connections + 1024)
    print(f"descriptor limit {limit} (server and flood inherit it)")
    server = DbxServer(args.dbx, DbxConfig(durability="fsync"))
    failures: List[str] = []
    results: Dict[str, List[Tuple[float, Optional[str]]]] = {}
    flooder: Optional[multiprocessing.process.BaseProcess] = None
    control: Optional[Connection] = None
    try:
        warm, error = one_try(server)
        print(f"warm-up: {warm:.2f} ms (the SDK's first client starts its runtime)"
              + (f" FAILED {error}" if error else ""))
        results["baseline"] = tries(server, "baseline", args.spacing)
        control, child_end = multiprocessing.Pipe()
        flooder = multiprocessing.get_context("spawn").Process(
            target=flood, args=(server.host, server.port, args.connections, args.sources,
                                args.beside_client, child_end), daemon=True)
        started = time.monotonic()
        flooder.start()
        if not control.poll(120):
            raise RuntimeError("the flood did not open its connections within 120 s")
        _, opened, refused = control.recv()
        where = "127.0.0.1" if args.beside_client else f"{args.sources} source address(es)"
        print(f"flood: {opened} connections open from {where} in "
              f"{time.monotonic() - started:.1f} s ({refused} failed to open)", flush=True)
        for phase in args.phases.split(","):
            if phase == "reopen":
                control.send("reopen")
            elif phase != "held":
                raise SystemExit(f"unknown phase {phase!r}")
            results[phase] = tries(server, phase, args.spacing)
            for elapsed, error in results[phase]:
                if error or elapsed > args.limit_ms:
                    failures.append(f"{phase}: {elapsed:.2f} ms" + (f" ({error})" if error else ""))
        control.send("stop")
        if control.poll(60):
            _, closed, reopened, open_failures = control.recv()
            print(f"flood: the server closed {closed} of its connections; {reopened} reopened; "
                  f"{open_failures} failed to open")
    finally:
        if flooder is not None:
            flooder.join(timeout=30)
            if flooder.is_alive():
                flooder.kill()
        server.stop()
    for phase, phase_results in results.items():
        print(f"{phase:>8}: {summary(phase_results)}")
    for line in failures:
        print(f"FAIL (over {args.limit_ms:g} ms or failed): {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
