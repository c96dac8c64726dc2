"""``python -m eventdbx serve [options]``: the same server as ``python -m eventdbx.server``."""

import sys

from .server import main

USAGE = "usage: python -m eventdbx serve [--data-dir DIR] [--port 6363] [--http-port 7070] " \
        "[--print-token] ...\n"

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "serve":
        sys.stderr.write(USAGE)
        sys.exit(2)
    sys.exit(main(args[1:], prog="python -m eventdbx serve"))
