"""Server lifecycles: each server is started by the harness on a fresh data directory, is ready
when it says so (a line it prints once it listens, never a sleep), and is always stopped and
its directory removed, whatever happened in between.

- ``DbxServer``: our ``dbx serve`` with a config written for the run (ports 0, durability,
  plaintext allowed, the busy-poll budget); ready on its ``dbx listening:`` line.
- ``PostgresServer``: a scratch cluster (``initdb`` in a temp dir, run as the ``postgres`` user
  when we are root, since initdb refuses root) on a free loopback port; ready on its "ready to
  accept connections" log line.
- ``ReferenceServer``: EventDBX's own ``dbx`` (``EVENTDBX_REFERENCE_DBX``) in a private network
  namespace, since its HTTP port binds 0.0.0.0; reached over a veth pair private to this host.
"""

from __future__ import annotations

import abc
import atexit
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable, List, Optional, Set

#: How long a server may take to say it is ready.
START_TIMEOUT = 60.0
#: How long a server has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0


class StartFailed(RuntimeError):
    """A server did not come up; the message carries the end of its output."""


def _watch_lines(stream: IO[bytes], sink: "queue.Queue[Optional[str]]", keep: List[str]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        keep.append(line)
        del keep[:-40]
        sink.put(line)
    sink.put(None)


class Process:
    """A server process whose output is read line by line on a thread (so it never blocks on a
    full pipe) and kept for error messages."""

    def __init__(self, argv: List[str], *, cwd: str, env: Optional[dict] = None,
                 user: Optional[str] = None, merge_stderr: bool = True) -> None:
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.tail: List[str] = []
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, user=user, group=user, extra_groups=[] if user else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else None,
            start_new_session=True)
        assert self.popen.stdout is not None
        self._reader = threading.Thread(
            target=_watch_lines, args=(self.popen.stdout, self.lines, self.tail), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for(self, match: Callable[[str], Optional[re.Match]], what: str) -> re.Match:
        """Blocks until a line of output satisfies ``match``; fails when the process exits or
        ``START_TIMEOUT`` passes first."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise StartFailed(f"{self.argv[0]}: no {what} within {START_TIMEOUT:.0f} s; "
                                  f"output: {' | '.join(self.tail[-8:])}") from None
            if line is None:
                self.popen.wait()
                raise StartFailed(f"{self.argv[0]} exited ({self.popen.returncode}) before "
                                  f"{what}: {' | '.join(self.tail[-8:])}")
            found = match(line)
            if found:
                return found

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after ``STOP_TIMEOUT``; always reaped."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._reader.join(timeout=STOP_TIMEOUT)


#: Servers started and not yet stopped: stopped at exit if the run ends some other way (an
#: exception outside a workload, SIGTERM turned into SystemExit), so none outlives the harness.
_LIVE: "Set[Server]" = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()


class Server(abc.ABC):
    """A running server: ``pid`` is its main process; ``cpu_roots`` the roots of the process
    trees whose CPU is charged to it. Subclasses call ``_started()`` once their process exists
    and ``_stopped()`` in ``stop``."""

    version: str = "?"

    def _started(self) -> None:
        _LIVE.add(self)

    def _stopped(self) -> None:
        _LIVE.discard(self)

    @property
    @abc.abstractmethod
    def pid(self) -> int: ...

    @property
    def cpu_roots(self) -> List[int]:
        """The processes whose trees the server's CPU is measured over."""
        return [self.pid]

    @abc.abstractmethod
    def stop(self) -> None: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---- dbx ------------------------------------------------------------------------------------

_LISTENING = re.compile(r"^dbx listening: control ([\d.]+):(\d+) .*server key (\S+)")


@dataclass(frozen=True)
class DbxConfig:
    """What differs between our server entries."""

    durability: str  # "fsync" or "relaxed"
    busy_poll_us: Optional[int] = None  # None: the server's default
    #: `[storage] wal_direct_io`; None: the server's default (buffered log writes)
    wal_direct_io: Optional[bool] = None
    #: `[storage] checkpoint_bytes`; None: the server's default
    checkpoint_bytes: Optional[int] = None
    #: "embedded" (the server's own store) or "postgres": then the server starts a scratch
    #: PostgreSQL cluster of its own and stores there.
    backend: str = "embedded"


class DbxServer(Server):
    def __init__(self, binary: str, config: DbxConfig) -> None:
        self.workdir = tempfile.mkdtemp(prefix="bench-dbx-")
        self._process: Optional[Process] = None
        self._database: Optional[PostgresServer] = None
        self._started()
        try:
            subprocess.run([binary, "init"], cwd=self.workdir, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            path = os.path.join(self.workdir, ".dbx", "config.toml")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r"(?m)^port = \d+$", "port = 0", text)
            text = re.sub(r'(?m)^bind_addr = ".*"$', 'bind_addr = "127.0.0.1:0"', text)
            text = re.sub(r"(?m)^allow_plaintext = \w+$", "allow_plaintext = true", text)
            text = re.sub(r'(?m)^durability = ".*"$', f'durability = "{config.durability}"',
                          text)
            if config.busy_poll_us is not None:
                text = re.sub(r"(?m)^busy_poll_us = \d+$",
                              f"busy_poll_us = {config.busy_poll_us}", text)
            storage = []
            if config.wal_direct_io is not None:
                storage.append(f"wal_direct_io = {'true' if config.wal_direct_io else 'false'}")
            if config.checkpoint_bytes is not None:
                storage.append(f"checkpoint_bytes = {config.checkpoint_bytes}")
            if storage:
                text, found = re.subn(r"(?m)^\[storage\]$",
                                      "\n".join(["[storage]", *storage]), text)
                if found != 1:
                    raise RuntimeError("dbx init wrote no [storage] section")
            if config.backend == "postgres":
                # The server creates its tables itself (its migrations) on first start.
                self._database = PostgresServer("SELECT 1")
                db = self._database
                url = f"postgres://{db.user}@{db.host}:{db.port}/{db.dbname}"
                text = re.sub(r'(?m)^backend = ".*"$', f'backend = "postgres"\nurl = "{url}"',
                              text)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            with open(os.path.join(self.workdir, ".dbx", "cli.token"), encoding="utf-8") as f:
                self.token = f.read().strip()
            self.version = subprocess.run([binary, "--version"], check=True, text=True,
                                          capture_output=True).stdout.strip().split()[-1]
            if self._database is not None:
                self.version += f" on PostgreSQL {self._database.version}"
            env = dict(os.environ, RUST_LOG="warn")
            env.pop("DBX_POSTGRES_URL", None)  # the file's url, not one from the caller
            self._process = Process([binary, "serve"], cwd=self.workdir, env=env)
            found = self._process.wait_for(_LISTENING.match, "'dbx listening' line")
            self.host, self.port, self.fingerprint = found[1], int(found[2]), found[3]
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def cpu_roots(self) -> List[int]:
        roots = [self.pid]
        if self._database is not None:
            roots.append(self._database.pid)  # the server's CPU includes its database's
        return roots

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        if self._database is not None:
            self._database.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._stopped()


# ---- PostgreSQL -----------------------------------------------------------------------------

_PG_READY = re.compile(r"database system is ready to accept connections")


def postgres_bindir() -> Optional[str]:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian's layout), or the one on PATH."""
    root = "/usr/lib/postgresql"
    if os.path.isdir(root):
        majors = sorted((d for d in os.listdir(root) if d.isdigit()), key=int)
        for major in reversed(majors):
            bindir = os.path.join(root, major, "bin")
            if os.path.exists(os.path.join(bindir, "initdb")):
                return bindir
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


class PostgresServer(Server):
    user = "bench"
    dbname = "bench"

    def __init__(self, schema: str) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise StartFailed("PostgreSQL is not installed (initdb not found)")
        # initdb refuses to run as root: then the cluster belongs to the postgres user.
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self.workdir = tempfile.mkdtemp(prefix="bench-pg-")
        self._process: Optional[Process] = None
        self._started()
        try:
            if self._run_as is not None:
                entry = pwd.getpwnam(self._run_as)
                os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            data = os.path.join(self.workdir, "data")
            subprocess.run(
                [os.path.join(bindir, "initdb"), "-D", data, "-U", self.user, "-A", "trust",
                 "--no-sync", "-E", "UTF8", "--locale", "C"],
                check=True, user=self._run_as, group=self._run_as,
                extra_groups=[] if self._run_as else None, cwd=self.workdir, capture_output=True)
            self.host, self.port = "127.0.0.1", free_port()
            self._process = Process(
                [os.path.join(bindir, "postgres"), "-D", data, "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                 "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=200",
                 "-c", "shared_buffers=256MB", "-c", "logging_collector=off"],
                cwd=self.workdir, user=self._run_as)
            self._process.wait_for(_PG_READY.search, "'ready to accept connections'")
            self._setup(schema)
        except BaseException:
            self.stop()
            raise

    def _setup(self, schema: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.dbname}")
        with psycopg.connect(host=self.host, port=self.port, user=self.user,
                             dbname=self.dbname, autocommit=True) as conn:
            conn.execute(schema)
            row = conn.execute("SHOW server_version").fetchone()
            self.version = str(row[0]).split()[0] if row else "?"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._stopped()


# ---- EventDBX's own server ------------------------------------------------------------------

#: The private link to the namespace: host side .1, namespace side .2.
_LINK_HOST, _LINK_NS = "10.213.77.1", "10.213.77.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class ReferenceServer(Server):
    """EventDBX's own server in the network namespace ``ns``: loopback and a veth pair whose
    far end is the only address outside it that reaches the server, so neither of its ports
    (6363 control, 7070 HTTP, both on 0.0.0.0 there) is visible on the machine's interfaces."""

    control_port = 6363

    def __init__(self, binary: str) -> None:
        if os.geteuid() != 0:
            raise StartFailed("the reference server needs root for its network namespace")
        self.ns = f"bench-ref-{os.getpid()}"
        self.workdir = tempfile.mkdtemp(prefix="bench-ref-")
        self._process: Optional[Process] = None
        self._netns = False
        self._started()
        try:
            _ip("netns", "add", self.ns)
            self._netns = True
            host_end, ns_end = f"bref{os.getpid() % 100000}h", f"bref{os.getpid() % 100000}n"
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", self.ns)
            _ip("addr", "add", f"{_LINK_HOST}/30", "dev", host_end)
            _ip("link", "set", host_end, "up")
            for cmd in (["addr", "add", f"{_LINK_NS}/30", "dev", ns_end],
                        ["link", "set", ns_end, "up"], ["link", "set", "lo", "up"]):
                _ip("netns", "exec", self.ns, "ip", *cmd)
            env = dict(os.environ, HOME=self.workdir)
            subprocess.run([binary, "init"], cwd=self.workdir, env=env, check=True,
                           capture_output=True)
            self.version = subprocess.run([binary, "--version"], text=True, env=env,
                                          capture_output=True).stdout.strip() or "?"
            self.token = _read_token(self.workdir)
            self._process = Process(
                ["ip", "netns", "exec", self.ns, binary, "serve", "start", "--foreground"],
                cwd=self.workdir, env=env)
            self.host, self.port = _LINK_NS, self.control_port
            self._await_listener()
        except BaseException:
            self.stop()
            raise

    def _await_listener(self) -> None:
        # Its start-up line is not ours to parse: readiness is its control port accepting.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError as exc:
                if self._process is not None and self._process.popen.poll() is not None:
                    raise StartFailed(f"reference dbx exited: {' | '.join(self._process.tail)}"
                                      ) from exc
                if time.monotonic() > deadline:
                    raise StartFailed(f"reference dbx not listening: {exc}") from exc
                # A refused connect returns at once; wait on the process instead of spinning.
                try:
                    assert self._process is not None
                    self._process.popen.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        if self._netns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            self._netns = False
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._stopped()


def _read_token(workdir: str) -> str:
    for path in (os.path.join(workdir, ".dbx", "cli.token"),
                 os.path.join(workdir, ".eventdbx", "cli.token")):
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
    raise StartFailed(f"reference dbx init wrote no cli.token under {workdir}")
