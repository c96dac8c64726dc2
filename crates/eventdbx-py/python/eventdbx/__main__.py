"""``python -m eventdbx serve [options]``: the same as ``python -m eventdbx.server``."""

import sys

from .server import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "serve":
        sys.stderr.write("usage: python -m eventdbx serve [--data-dir DIR] [--port PORT] ...\n")
        sys.exit(2)
    sys.exit(main(args[1:]))
