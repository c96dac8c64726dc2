"""W1S: sequential appends through the synchronous client (issue 15: their p50 on the durable
server at most twice the disk's append-plus-``fdatasync`` p50 measured at the start of the run,
the machine note's "fsync p50 at start").

One ``EventDBXClient`` (our SDK's synchronous client, terse acknowledgements) over the system's
transport appends 10 events to each aggregate in turn; the aggregates are created first,
outside the measured part, so every timed operation is one append. The client blocks this
process's event loop while it runs, which nothing else needs meanwhile.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from eventdbx import EventDBXClient

from ..measure import Run
from ..servers import DbxServer
from ..systems import System
from . import Sizes, Target, Workload, measure, payloads

TYPE = "account"
APPENDS = 10
VARIANT = "10 appends per aggregate, EventDBXClient"


def sync_options(server: DbxServer, transport: str) -> Dict[str, Any]:
    """``EventDBXClient``'s keyword arguments for ``server`` over ``transport``, as
    ``bench/drivers.py``'s ``DbxDriver`` sets them for the async client."""
    options: Dict[str, Any] = dict(token=server.token, tenant_id="default", host=server.host,
                                   port=server.port, verbose=False)
    if transport == "v2":
        options.update(protocol_version=2, server_key=server.fingerprint)
    elif transport == "v1":
        options.update(protocol_version=1)
    elif transport == "plaintext":
        options.update(no_noise=True)
    else:
        raise ValueError(f"unknown transport {transport!r}")
    return options


class W1SSyncAppends(Workload):
    id = "W1S"
    title = "sequential appends through the synchronous client (EventDBXClient)"
    unit = "appends/s"

    def variants(self, sizes: Sizes) -> List[str]:
        return [VARIANT]

    def variants_for(self, system: System, sizes: Sizes) -> List[str]:
        return self.variants(sizes) if system.ours else []

    async def run(self, target: Target, variant: str, index: int, sizes: Sizes) -> Run:
        server = target.server
        if not isinstance(server, DbxServer):
            raise TypeError(f"{self.id} runs against our dbx")
        ids = [target.aggregate_id("w1s", index, i) for i in range(sizes.w1_aggregates)]
        ring = payloads(("W1S", index), APPENDS + 1)
        with EventDBXClient(**sync_options(server, target.system.transport)) as client:
            for aggregate_id in ids:
                client.create(aggregate_type=TYPE, aggregate_id=aggregate_id,
                              event_type="opened", payload_json=ring[0])

            async def body(run: Run) -> None:
                for aggregate_id in ids:
                    for k in range(1, APPENDS + 1):
                        start = time.perf_counter()
                        try:
                            client.apply(aggregate_type=TYPE, aggregate_id=aggregate_id,
                                         event_type="deposited", payload_json=ring[k])
                        except Exception as exc:  # counted and reported, never stops the run
                            run.error(exc)
                            continue
                        run.latencies.append(time.perf_counter() - start)
                        run.ops += 1

            return await measure(target, body)
