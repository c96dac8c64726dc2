"""``python -m eventdbx.server``: a foreground EventDBX server in this process.

Prints its address and key fingerprint (and, with ``--print-token``, a root token), then serves
until interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import List, Optional

from . import _core


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventdbx.server", description=__doc__)
    parser.add_argument("--data-dir", default=os.path.join(os.getcwd(), ".dbx-data"),
                        help="data directory (created when missing)")
    parser.add_argument("--port", type=int, default=6363, help="control port (0: any free one)")
    parser.add_argument("--print-token", action="store_true", help="print a root token")
    parser.add_argument("--allow-plaintext", action="store_true",
                        help="let clients ask for no_noise (testing only)")
    parser.add_argument("--relaxed", action="store_true",
                        help="acknowledge writes before fsync (faster, may lose the last 50 ms)")
    args = parser.parse_args(argv)
    server = _core.EmbeddedServer.start(
        args.data_dir, port=args.port, allow_plaintext=args.allow_plaintext,
        durable=not args.relaxed,
    )
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    print(f"server key {server.fingerprint}", flush=True)
    if args.print_token:
        print(f"token {server.issue_token()}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
