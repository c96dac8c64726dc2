"""CLIENT: what one request costs the client's CPU (issues 13 and 15), sequential `get`s on one
connection:

- our Python SDK over protocol v1, so that every client of our server speaks the same
  protocol: synchronous (``EventDBXClient``, with the Rust client's answer polling and with it
  off) and asynchronous (``AsyncEventDBXClient``, awaited one at a time; also over v2, the
  default transport);
- a pure-Python stack doing the same work (``bench/pure_client.py``: socket, pycapnp,
  noiseprotocol);
- our Rust client (the ``roundtrips`` example of ``eventdbx-client`` against this server, which
  reports its own thread's CPU per request; ``bench/run`` builds it): the async client, and the
  blocking one (what the SDK's synchronous client runs) with its answer polling off;
- on PostgreSQL, what an asyncio application would use instead: psycopg's async ``SELECT`` of
  one row by primary key (the harness's PostgreSQL driver, ``bench/drivers.py``).

The Python clients run in this process, so their CPU is this process's (every thread, the SDK's
Rust runtime included).
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any, Dict, List, Optional

from eventdbx import AsyncEventDBXClient, EventDBXClient

from ..drivers import PostgresDriver
from ..machine import build_dir
from ..measure import Run, tree_cpu
from ..pure_client import PureV1Client
from ..servers import DbxServer
from ..systems import System
from . import Sizes, Target, Workload, measure, once, payloads

TYPE = "account"
PROBE = "client-probe"
WARMUP = 200
SDK_SYNC = "SDK sync v1 get"
SDK_SYNC_NO_POLL = "SDK sync v1 get, busy-poll off"
SDK_ASYNC = "SDK async v1 get"
SDK_ASYNC_V2 = "SDK async v2 get"
PURE = "pure Python v1 get"
RUST = "Rust client v1 get"
RUST_BLOCKING_NO_POLL = "Rust blocking client v1 get, busy-poll off"
PSYCOPG = "psycopg async SELECT"
_RUST_LINE = re.compile(r"^(\d+) sequential .*: ([\d.]+) requests/s, ([\d.]+) us per round")
_RUST_CPU = re.compile(r"^client CPU: ([\d.]+) us per request")


def roundtrips_binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "target")
    return os.path.join(target, build_dir(), "examples", "roundtrips")


class ClientCost(Workload):
    id = "CLIENT"
    title = "client CPU per request: our SDK and Rust client, a pure-Python stack and psycopg"
    unit = "requests/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [SDK_SYNC, SDK_SYNC_NO_POLL, SDK_ASYNC, SDK_ASYNC_V2, PURE, RUST,
                RUST_BLOCKING_NO_POLL, PSYCOPG]

    def variants_for(self, system: System, sizes: Sizes) -> List[str]:
        # PostgreSQL takes part only with psycopg; our server with everything else.
        if system.ours:
            return [v for v in self.variants(sizes) if v != PSYCOPG]
        return [PSYCOPG]

    def transport_of(self, variant: str) -> Optional[str]:
        return None if variant == PSYCOPG else "v2" if variant == SDK_ASYNC_V2 else "v1"

    async def prepare(self, target: Target, sizes: Sizes) -> None:
        if once(target, "CLIENT"):
            (driver,) = await target.connect(1)
            try:
                await driver.create(TYPE, PROBE, "opened", payloads("CLIENT", 1)[0])
            finally:
                await driver.close()

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        requests = sizes.client_requests
        if variant == PSYCOPG:
            return await self._psycopg(target, requests)
        server = target.server
        if not isinstance(server, DbxServer):
            raise TypeError(f"{variant} runs against our dbx")
        if variant == RUST:
            return self._rust(server, requests)
        if variant == RUST_BLOCKING_NO_POLL:
            return self._rust(server, requests, blocking=True, busy_poll_us=0)
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
        options: Dict[str, Any] = dict(token=server.token, tenant_id="default",
                                       host=server.host, port=server.port, protocol_version=1,
                                       verbose=False)
        if variant in (SDK_SYNC, SDK_SYNC_NO_POLL):
            if variant == SDK_SYNC_NO_POLL:
                options["busy_poll_us"] = 0
            with EventDBXClient(**options) as client:
                for _ in range(WARMUP):
                    client.get(aggregate_type=TYPE, aggregate_id=PROBE)

                async def body(run: Run) -> None:
                    for _ in range(requests):
                        client.get(aggregate_type=TYPE, aggregate_id=PROBE)
                    run.ops = requests

                return await measure(target, body)
        if variant == SDK_ASYNC_V2:
            options["protocol_version"] = 2
            options["server_key"] = server.fingerprint
        async with AsyncEventDBXClient(**options) as aclient:
            for _ in range(WARMUP):
                await aclient.get(aggregate_type=TYPE, aggregate_id=PROBE)

            async def body(run: Run) -> None:
                for _ in range(requests):
                    await aclient.get(aggregate_type=TYPE, aggregate_id=PROBE)
                run.ops = requests

            return await measure(target, body)

    async def _psycopg(self, target: Target, requests: int) -> Run:
        driver = target.driver()
        if not isinstance(driver, PostgresDriver):
            raise TypeError(f"{PSYCOPG} runs against PostgreSQL")
        await driver.connect()
        try:
            for _ in range(WARMUP):
                await driver.get(TYPE, PROBE)

            async def body(run: Run) -> None:
                for _ in range(requests):
                    await driver.get(TYPE, PROBE)
                run.ops = requests

            return await measure(target, body)
        finally:
            await driver.close()

    def _rust(self, server: DbxServer, requests: int, blocking: bool = False,
              busy_poll_us: Optional[int] = None) -> Run:
        binary = roundtrips_binary()
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"{binary} is not built (bench/run builds it)")
        env = dict(os.environ, EVENTDBX_TOKEN=server.token, EVENTDBX_HOST=server.host,
                   EVENTDBX_PORT=str(server.port), EVENTDBX_TENANT_ID="default")
        if busy_poll_us is not None:
            env["EVENTDBX_BUSY_POLL_US"] = str(busy_poll_us)
        mode = ["blocking"] if blocking else ["async"]
        server0 = tree_cpu(*server.cpu_roots)
        out = subprocess.run([binary, str(requests), "v1", "get", *mode], env=env, text=True,
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
