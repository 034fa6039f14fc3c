"""The one way the local stack starts, watches and stops a process.

Every emulator, service and function runs in a session of its own, so that
Ctrl-C at a terminal reaches it only through `stop`, in order, and so that
`stop` can end its whole process group: gcloud starts Java underneath, and
gunicorn forks workers, either of which would keep a port open if left behind.
Output goes to a log file, and, for `make run`, also line by line to a queue
its console prints from.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from ops.defaults import LOOPBACK

REPO: Final = Path(__file__).resolve().parents[2]
_STOP_TIMEOUT_SECONDS: Final = 10.0
# Ports are picked from [_PICK_FLOOR, start of the ephemeral range) when it spans this many.
_PICK_FLOOR: Final = 20000
_PICK_MIN_SPAN: Final = 2000

# (process name, line): what a process printed, for a console to show.
Lines = queue.Queue[tuple[str, str]]


class NotReady(RuntimeError):
    """A process exited or did not answer in time; the message carries its last lines."""


class PortTaken(NotReady):
    """What answered on the port is another process's: ours could not bind it."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, *, avoid: Collection[int] = ()) -> list[int]:
    """`count` distinct free loopback ports, none of them in `avoid`.

    Every socket stays bound until all are picked: released one at a time,
    the same port may be handed out twice, and a stack given one port twice
    refuses to start. The ports lie below the kernel's ephemeral range, from
    which every outgoing connection takes its local port: a port picked from
    that range can be taken by a client socket before the server binds it.
    """
    ports: list[int] = []
    with contextlib.ExitStack() as held:
        while len(ports) < count:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((LOOPBACK, _candidate_port()))
            except OSError:
                continue  # in use: try another
            port: int = sock.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    return ports


def _candidate_port() -> int:
    """A port to try: random, above the fixed ports developers use and below the ephemeral
    range; 0 (the kernel's pick) where no such gap exists."""
    low = _ephemeral_range_start()
    if low - _PICK_FLOOR < _PICK_MIN_SPAN:
        return 0
    return _PICK_FLOOR + secrets.randbelow(low - _PICK_FLOOR)


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # not Linux: no gap known, let the kernel pick


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _reader: threading.Thread | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        """Whether the leader runs; an exited one is left unreaped, for `stop` to end its group."""
        return self.popen.returncode is None and not self._exited(0)

    def stop(self, timeout: float = _STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM the group, SIGKILL if it outstays `timeout`, then whatever is left; idempotent.

        The group is signalled only while its leader is exited but not yet reaped: until
        then its pid, which is the group's id, cannot be given to another process (the
        machine reuses pids quickly, and every process here leads a group of its own).
        """
        if self.popen.returncode is None:
            self._signal_group(signal.SIGTERM)
            if not self._exited(timeout):
                self._signal_group(signal.SIGKILL)
                self._exited(timeout)
            # The leader is gone but not reaped: a child it started may linger (gcloud's Java).
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=timeout)
        self._finish_output()

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, not a shutdown."""
        if self.popen.returncode is None:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=_STOP_TIMEOUT_SECONDS)
        self._finish_output()

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def _exited(self, timeout: float) -> bool:
        """Wait for the leader to exit without reaping it (its pid stays ours)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                return True  # reaped meanwhile
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _finish_output(self) -> None:
        if self._reader is not None:
            # Let the reader copy what the process wrote last.
            self._reader.join(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    console: Lines | None = None,
    append: bool = False,
) -> Process:
    """Start `argv` in its own session; its output goes to `log_path` (and `console`),
    after what is there already with `append` (a restart), else from an empty file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab" if append else "wb")
    popen = subprocess.Popen(
        list(argv),
        cwd=REPO,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=log if console is None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if console is None:
        return Process(name, popen, log_path, _log=log)
    reader = threading.Thread(
        target=_pump, args=(name, popen.stdout, log, console), name=f"{name}-log", daemon=True
    )
    reader.start()
    return Process(name, popen, log_path, _reader=reader)


def _pump(name: str, stream: IO[bytes] | None, log: IO[bytes], console: Lines) -> None:
    """Copy a process's output to its log file and to the console queue, line by line."""
    if stream is None:
        return
    with stream, log:
        for raw in stream:
            log.write(raw)
            log.flush()
            console.put((name, raw.decode(errors="replace").rstrip("\r\n")))


def wait_http(
    process: Process, url: str, *, statuses: Collection[int] = (200,), timeout: float = 60
) -> None:
    """Until a GET of `url` answers one of `statuses`."""
    # No proxy: an HTTP(S)_PROXY in the environment must not intercept loopback calls.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def answered() -> bool:
        try:
            with opener.open(url, timeout=1) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError):
            return False
        return status in statuses

    _wait(process, answered, timeout, f"answer on {url}", port=urllib.parse.urlsplit(url).port)


def wait_tcp(process: Process, port: int, *, timeout: float = 60) -> None:
    """Until something accepts connections on `port` (loopback)."""

    def accepting() -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            return False

    _wait(process, accepting, timeout, f"listen on {LOOPBACK}:{port}", port=port)


def listening_pids(port: int) -> set[int] | None:
    """The processes listening on TCP `port`, from Linux's /proc; None where it cannot tell."""
    inodes: set[str] = set()
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    for table in tables:
        with contextlib.suppress(OSError):
            for row in table.read_text().splitlines()[1:]:
                fields = row.split()
                # fields: sl, local address (hex ip:port), remote, state (0A = LISTEN), ..., inode
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    sockets = {f"socket:[{inode}]" for inode in inodes}
    pids: set[int] = set()
    for fds in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in sockets for fd in fds.iterdir()):
                pids.add(int(fds.parent.name))
    return pids if pids else None


def _owned(process: Process, port: int) -> bool:
    """Whether only `process`'s group listens on `port` (assumed where it cannot be told).

    Only: gRPC servers bind with SO_REUSEPORT, so a second one on the same port shares its
    connections with the first instead of failing to start.
    """
    pids = listening_pids(port)
    if pids is None:
        return True
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # exited meanwhile
            groups.add(os.getpgid(pid))
    return groups <= {process.pid}


def _wait(
    process: Process, ready: Callable[[], bool], timeout: float, what: str, *, port: int | None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not process.running():
            process.stop()
            raise NotReady(
                f"{process.name} exited with code {process.popen.returncode} while starting; "
                f"its log ({process.log_path}) ends:\n{process.tail()}"
            )
        if ready():
            # A free port picked earlier may have been taken since by another run's server:
            # what answers must be ours, or every request would go to someone else's.
            if port is not None and not _owned(process, port):
                process.stop()
                raise PortTaken(f"{process.name}: port {port} is held by another process")
            return
        if time.monotonic() > deadline:
            process.stop()
            raise NotReady(
                f"{process.name} did not {what} within {timeout:.0f}s; its log ends:\n"
                f"{process.tail()}"
            )
        time.sleep(0.1)
