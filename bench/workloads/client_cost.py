"""CLIENT: what one request costs the client's CPU (issue 13, item 4), sequential `get`s on one
connection to our server, protocol v1 so that every client speaks the same protocol:

- our Python SDK, synchronous (``EventDBXClient``) and asynchronous (``AsyncEventDBXClient``);
- a pure-Python stack doing the same work (``bench/pure_client.py``: socket, pycapnp,
  noiseprotocol);
- our Rust client (the ``roundtrips`` example of ``eventdbx-client`` against this server, which
  reports its own thread's CPU per request; ``bench/run`` builds it).

The Python clients run in this process, so their CPU is this process's (every thread, the SDK's
Rust runtime included).
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import List

from eventdbx import AsyncEventDBXClient, EventDBXClient

from ..machine import build_dir
from ..measure import Run, tree_cpu
from ..pure_client import PureV1Client
from ..servers import DbxServer
from . import Sizes, Target, Workload, measure, once, payloads

TYPE = "account"
PROBE = "client-probe"
WARMUP = 200
SDK_SYNC, SDK_ASYNC, PURE, RUST = ("SDK sync v1 get", "SDK async v1 get", "pure Python v1 get",
                                   "Rust client v1 get")
_RUST_LINE = re.compile(r"^(\d+) sequential .*: ([\d.]+) requests/s, ([\d.]+) us per round")
_RUST_CPU = re.compile(r"^client CPU: ([\d.]+) us per request")


def roundtrips_binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "target")
    return os.path.join(target, build_dir(), "examples", "roundtrips")


class ClientCost(Workload):
    id = "CLIENT"
    title = "client CPU per request: our SDK and Rust client against a pure-Python stack"
    unit = "requests/s"
    transport = "v1"

    def variants(self, sizes: Sizes) -> List[str]:
        return [SDK_SYNC, SDK_ASYNC, PURE, RUST]

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        if once(target, "CLIENT"):
            (driver,) = await target.connect(1)
            try:
                await driver.create(TYPE, PROBE, "opened", payloads("CLIENT", 1)[0])
            finally:
                await driver.close()

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        server = target.server
        if not isinstance(server, DbxServer):
            raise TypeError("the client-cost workload runs against our dbx")
        requests = sizes.client_requests
        if variant == RUST:
            return self._rust(server, requests)
        if variant == PURE:
            pure = PureV1Client(server.host, server.port, server.token)
            try:
                for _ in range(WARMUP):
                    pure.get(TYPE, PROBE)

                async def body(run: Run) -> None:
                    for _ in range(requests):
                        pure.get(TYPE, PROBE)
                    run.ops = requests

                return await measure(target, body)
            finally:
                pure.close()
        options = dict(token=server.token, tenant_id="default", host=server.host,
                       port=server.port, protocol_version=1, verbose=False)
        if variant == SDK_SYNC:
            with EventDBXClient(**options) as client:
                for _ in range(WARMUP):
                    client.get(aggregate_type=TYPE, aggregate_id=PROBE)

                async def body(run: Run) -> None:
                    for _ in range(requests):
                        client.get(aggregate_type=TYPE, aggregate_id=PROBE)
                    run.ops = requests

                return await measure(target, body)
        async with AsyncEventDBXClient(**options) as aclient:
            for _ in range(WARMUP):
                await aclient.get(aggregate_type=TYPE, aggregate_id=PROBE)

            async def body(run: Run) -> None:
                for _ in range(requests):
                    await aclient.get(aggregate_type=TYPE, aggregate_id=PROBE)
                run.ops = requests

            return await measure(target, body)

    def _rust(self, server: DbxServer, requests: int) -> Run:
        binary = roundtrips_binary()
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"{binary} is not built (bench/run builds it)")
        env = dict(os.environ, EVENTDBX_TOKEN=server.token, EVENTDBX_HOST=server.host,
                   EVENTDBX_PORT=str(server.port), EVENTDBX_TENANT_ID="default")
        server0 = tree_cpu(*server.cpu_roots)
        out = subprocess.run([binary, str(requests), "v1", "get"], env=env, text=True,
                             capture_output=True, timeout=300, check=True).stdout
        # Its warm-up requests reach the server too: the server's share is only indicative.
        run = Run(server_cpu=tree_cpu(*server.cpu_roots).since(server0))
        for line in out.splitlines():
            if m := _RUST_LINE.match(line):
                run.ops = int(m[1])
                run.seconds = run.ops / float(m[2])
            elif m := _RUST_CPU.match(line):
                run.client_cpu = float(m[1]) * run.ops / 1e6
        if not run.ops:
            raise RuntimeError(f"roundtrips printed no result: {out.strip()[-200:]}")
        return run
