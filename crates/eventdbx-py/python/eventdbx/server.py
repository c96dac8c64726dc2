"""``python -m eventdbx.server``: a foreground EventDBX server in this process.

Prints its addresses and key fingerprint (and, with ``--print-token``, a root token), then a
line ``ready``, and serves until SIGINT or SIGTERM. Output lines, in this order::

    listening on 127.0.0.1:<port>
    http on 127.0.0.1:<http port>          (unless --no-http)
    server key <fingerprint>
    token <root token>                     (with --print-token)
    ready
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import List, Optional

from . import _core


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(os.getcwd(), ".dbx-data"),
                        help="data directory (created when missing; default ./.dbx-data)")
    parser.add_argument("--port", type=int, default=6363,
                        help="control port on 127.0.0.1 (0: any free one; default 6363)")
    parser.add_argument("--http-port", type=int, default=7070,
                        help="/health and /metrics HTTP port on 127.0.0.1 (0: any free one; "
                             "default 7070)")
    parser.add_argument("--no-http", action="store_true", help="serve no HTTP endpoint")
    parser.add_argument("--print-token", action="store_true", help="print a root token")
    parser.add_argument("--allow-plaintext", action="store_true",
                        help="let clients ask for no_noise (testing only)")
    parser.add_argument("--relaxed", action="store_true",
                        help="acknowledge writes before fsync (faster, may lose the last 50 ms)")
    parser.add_argument("--terse", action="store_true",
                        help="terse write acknowledgements (the server's verbose_responses off)")
    return parser


def main(argv: Optional[List[str]] = None, prog: str = "python -m eventdbx.server") -> int:
    """Runs the server until SIGINT/SIGTERM; returns the exit status."""
    args = _parser(prog).parse_args(argv)
    stop = threading.Event()
    # Installed before the server starts, so a signal arriving during start-up is not lost.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = _core.EmbeddedServer.start(
        args.data_dir, port=args.port, allow_plaintext=args.allow_plaintext,
        durable=not args.relaxed, verbose_responses=not args.terse,
        http_port=None if args.no_http else args.http_port,
    )
    try:
        lines = [f"listening on 127.0.0.1:{server.port}"]
        if server.http_port is not None:
            lines.append(f"http on 127.0.0.1:{server.http_port}")
        lines.append(f"server key {server.fingerprint}")
        if args.print_token:
            lines.append(f"token {server.issue_token()}")
        lines.append("ready")
        print("\n".join(lines), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
