"""The Python SDK's side of the PostgreSQL outage test (``tests/it/pg_outage.rs``).

Usage: ``outage_client.py PORT TOKEN``. Talks to the test on stdin and stdout, one line each:

1. connects two clients (one retrying, one not), creates ``order/py-1``, prints ``ready``;
2. waits for ``go`` (the database is down), then:
   - an ``apply`` without retries, which must fail at once with the server's ``unavailable``
     (``EventDBXAPIError``, ``retriable`` true) and store nothing;
   - ``get``, ``list`` and an ``apply`` with retries, each in its own thread; once each has been
     answered ``unavailable`` at least once (the SDK logs every retry at DEBUG on the
     ``eventdbx`` logger), prints ``retrying`` so the test starts the database again;
3. prints one JSON line with every call's outcome and exits.
"""

import json
import logging
import sys
import threading

from eventdbx import EventDBXClient, RetryOptions
from eventdbx.exceptions import EventDBXAPIError, EventDBXError

CALLS = ("get", "list", "apply")


class Retries(logging.Handler):
    """Counts the SDK's retries after an `unavailable` answer, per thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.guard = threading.Lock()
        self.threads = set()
        self.done = set()
        self.seen = threading.Condition(self.guard)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "retrying" in text and "unavailable" in text:
            with self.guard:
                self.threads.add(record.thread)
                self.seen.notify_all()


def outcome(call):
    try:
        value = call()
        return {"ok": True, "value": value}
    except EventDBXError as err:
        return {
            "ok": False,
            "class": type(err).__name__,
            "api_error": isinstance(err, EventDBXAPIError),
            "code": err.code,
            "message": err.message,
            "retriable": err.retriable,
        }


def main() -> None:
    port, token = int(sys.argv[1]), sys.argv[2]
    retries = Retries()
    logger = logging.getLogger("eventdbx")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(retries)
    common = dict(token=token, tenant_id="default", port=port, known_v2_hosts="off")
    patient = EventDBXClient(
        retry=RetryOptions(attempts=200, initial_delay_ms=50, max_delay_ms=250), **common
    )
    impatient = EventDBXClient(**common)
    patient.create(aggregate_type="order", aggregate_id="py-1", event_type="opened",
                   payload_json="{}")
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected go")

    results = {
        "impatient_apply": outcome(lambda: impatient.apply(
            aggregate_type="order", aggregate_id="py-1", event_type="touched",
            payload_json='{"py": "impatient"}')),
    }
    calls = {
        "get": lambda: patient.get(aggregate_type="order", aggregate_id="py-1").found,
        "list": lambda: len(patient.list(take=10).aggregates),
        "apply": lambda: json.loads(patient.apply(
            aggregate_type="order", aggregate_id="py-1", event_type="touched",
            payload_json='{"py": "patient"}'))["version"],
    }

    def run(name):
        results[name] = outcome(calls[name])
        with retries.guard:
            retries.done.add(threading.get_ident())
            retries.seen.notify_all()

    threads = [threading.Thread(target=run, args=(name,)) for name in CALLS]
    for thread in threads:
        thread.start()
    with retries.guard:
        # A thread that finished has its outcome; one still running has met the outage once
        # it logged a retry after `unavailable`.
        retries.seen.wait_for(lambda: all(
            t.ident in retries.threads or t.ident in retries.done for t in threads))
        met = sorted(name for name, t in zip(CALLS, threads) if t.ident in retries.threads)
    results["met_the_outage"] = met
    print("retrying", flush=True)
    for thread in threads:
        thread.join()
    print(json.dumps(results), flush=True)
    patient.close()
    impatient.close()


if __name__ == "__main__":
    main()
