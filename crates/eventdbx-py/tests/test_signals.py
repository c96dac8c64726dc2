"""Ctrl-C during a blocking call of the synchronous client: the call gives way to the signal
and raises ``KeyboardInterrupt`` instead of waiting for its timeout, and the exception mapping
does not swallow it into a ``RuntimeError``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap

import pytest

# The child connects with a 60 s timeout, so a child that exits on its own before the test's
# own 30 s bound can only have been ended by the signal.
_CHILD = textwrap.dedent(
    """
    import signal
    import sys
    from eventdbx import EventDBXClient

    # A child inherits an ignored SIGINT from a runner started in the background (a shell's
    # `&`, nohup, some CI); Python then installs no handler. An interactive program has one.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    port = int(sys.argv[1])
    print("calling", flush=True)
    EventDBXClient(token="t", tenant_id="default", port=port,
                   connect_timeout=60.0, read_timeout=60.0)
    print("returned", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_sigint_interrupts_a_blocking_connect_with_keyboard_interrupt():
    # A listener that accepts (the kernel completes the TCP handshake) but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "calling"
            # The line is printed just before the call; the signal may land before the call
            # blocks, and must then be raised all the same.
            accepted, _ = listener.accept()
            with accepted:
                child.send_signal(signal.SIGINT)
                _, stderr = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    last_line = stderr.strip().splitlines()[-1]
    assert last_line == "KeyboardInterrupt", stderr
    assert child.returncode != 0
    assert "eventdbx.exceptions failed" not in stderr
