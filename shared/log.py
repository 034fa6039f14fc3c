"""One JSON line per event on stdout, in the shape Cloud Logging parses.

Cloud Run and Cloud Functions turn each stdout line that is a JSON object
into a structured log entry: `severity` sets the level, `message` the text,
`logging.googleapis.com/trace` / `spanId` / `trace_sampled` correlate it with
the request's trace, and `logging.googleapis.com/labels` become entry labels.
A stable `event` field is what the log-based metrics filter on.

Writing a line is a system call, and one that blocks when the reader of
stdout falls behind. A logger made with `write_behind_seconds` (the ingest
function's) collects its lines for stdout and writes them together, whole lines
only and in order, at most that long after each one:
- called in a running event loop (the function serves every request from one),
  the loop itself writes them, one os.write per interval, and only when the
  write cannot block: stdout a regular file, or a pipe with room for all of it.
  Otherwise (a full pipe, a socket) they go to a background thread, and so does
  everything after them until it has caught up. A thread beside the loop costs
  more CPU in interpreter-lock hand-offs than the writes it saves (measured by
  `make bench-ingest`), so it only takes what the loop must not wait for;
- called from threads without a loop, a background thread writes them.
An ERROR or CRITICAL line is written at once (by the loop, or by the thread,
woken for it) together with everything before it. Lines still pending when the
interpreter exits are written then, and write_at_once_on_shutdown() covers the
servers that end a graceful shutdown by re-raising the signal. Without
`write_behind_seconds` (the threaded handlers) every line is written before
log() returns. Either way the logger is safe to share between threads.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import functools
import json
import os
import random
import re
import signal
import stat
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Final, Literal, TextIO

Severity = Literal["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"]

TRACE_KEY: Final = "logging.googleapis.com/trace"
SPAN_KEY: Final = "logging.googleapis.com/spanId"
SAMPLED_KEY: Final = "logging.googleapis.com/trace_sampled"
LABELS_KEY: Final = "logging.googleapis.com/labels"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?$")


@dataclass(frozen=True)
class TraceContext:
    """The trace a request belongs to, from its `traceparent` or Google's header."""

    trace_id: str
    span_id: str | None = None
    sampled: bool = False

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> TraceContext | None:
        """Parse W3C `traceparent` first, then `X-Cloud-Trace-Context`; None if neither.

        `headers` has lower-case keys, as the entry points pass them.
        """
        traceparent = (headers.get("traceparent") or "").strip().lower()
        match = _TRACEPARENT.match(traceparent)
        if match and set(match.group(1)) != {"0"}:
            flags = int(match.group(3), 16)
            return cls(match.group(1), match.group(2), bool(flags & 1))
        cloud = (headers.get("x-cloud-trace-context") or "").strip()
        match = _CLOUD_TRACE.match(cloud)
        if match:
            span = match.group(2)
            # Google's header carries the span id in decimal; the log field wants 16 hex digits.
            span_hex = f"{int(span):016x}" if span and int(span) < 2**64 else None
            return cls(match.group(1).lower(), span_hex, match.group(3) == "1")
        return None

    @classmethod
    def from_traceparent(cls, value: str | None) -> TraceContext | None:
        """A W3C `traceparent` value (a message attribute, a task's header); None if invalid."""
        return cls.from_headers({"traceparent": value}) if value else None

    @classmethod
    def new(cls) -> TraceContext:
        """A trace of its own: for a request that came without one, or a recovered event."""
        return cls(f"{random.getrandbits(128):032x}", _new_span_id())

    def child(self) -> TraceContext:
        """The same trace, a span of its own: the next hop's lines under the same trace."""
        return TraceContext(self.trace_id, _new_span_id(), self.sampled)

    @property
    def traceparent(self) -> str:
        """This context in W3C form, for the next hop to continue (a span made up if none)."""
        span = self.span_id or _new_span_id()
        return f"00-{self.trace_id}-{span}-{'01' if self.sampled else '00'}"

    @staticmethod
    def next_hop(parent: TraceContext | None) -> TraceContext | None:
        """The trace a hop continues from `parent`, with a span of its own; None without one."""
        return parent.child() if parent is not None else None

    def log_fields(self, project_id: str | None) -> dict[str, object]:
        fields: dict[str, object] = {SAMPLED_KEY: self.sampled}
        trace = self.trace_id
        fields[TRACE_KEY] = f"projects/{project_id}/traces/{trace}" if project_id else trace
        if self.span_id:
            fields[SPAN_KEY] = self.span_id
        return fields


def _new_span_id() -> str:
    # Not a secret: ids only need to be unique. `random` reseeds in a forked child.
    return f"{random.getrandbits(64) or 1:016x}"


# What makes Error Reporting take a line as an error event, with the stack in its message
# (cloud.google.com/error-reporting/docs/formatting-error-messages).
REPORTED_ERROR_TYPE: Final = (
    "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"
)


class JsonLogger:
    """Writes one JSON object per call; safe to share between threads."""

    def __init__(
        self,
        component: str,
        *,
        project_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
        write_behind_seconds: float = 0.0,
    ) -> None:
        self._project_id = project_id
        self._labels = {"component": component, **(labels or {})}
        self._stream = stream
        self._lock = threading.Lock()
        # Only stdout (not a stream given here) is written behind, and only while
        # it is a real file descriptor: a test's captured stdout is written at once.
        self._write_behind = write_behind_seconds if stream is None else 0.0

    def log(
        self,
        severity: Severity,
        event: str,
        message: str,
        *,
        trace: TraceContext | None = None,
        stack: str | None = None,
        **fields: object,
    ) -> None:
        """One line; with `stack` (a crash's traceback) a line Error Reporting groups."""
        record: dict[str, object] = {
            "severity": severity,
            "message": message,
            "event": event,
            "time": _rfc3339_now(),
            LABELS_KEY: self._labels,
        }
        if stack:
            record["@type"] = REPORTED_ERROR_TYPE
            record["message"] = f"{message}\n{stack}"
            record["serviceContext"] = {"service": self._labels["component"]}
        if trace is not None:
            record.update(trace.log_fields(self._project_id))
        record.update({k: v for k, v in fields.items() if v is not None})
        line = _encode(record) + "\n"
        stream = self._stream or sys.stdout
        if self._write_behind > 0:
            fd = _fileno(stream)
            if fd is not None:
                urgent = severity in _AT_ONCE
                loop = _running_loop()
                if loop is not None:
                    _loop_writer(loop, fd, self._write_behind).add(line, urgent=urgent)
                    return
                writer = _writer(fd, self._write_behind)
                writer.add(line, urgent=urgent)
                if _shutting_down:
                    writer.flush()
                return
        with self._lock:
            stream.write(line)
            stream.flush()


_AT_ONCE: Final = frozenset({"ERROR", "CRITICAL"})
# One encoder for every line, instead of one built per json.dumps call with these options.
_encode: Final = json.JSONEncoder(default=str, separators=(",", ":"), ensure_ascii=False).encode


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


class _WriteBehind:
    """Lines for one file descriptor, written by a background thread once per interval.

    Adding a line takes an uncontended lock and, for the first line of an
    interval, wakes the writer; it never makes a system call. The writer waits
    the interval (cut short by an urgent line), then writes everything collected
    with as few os.write calls as the kernel allows. `_write_lock` keeps the
    order when flush() runs meanwhile (at exit).
    """

    def __init__(self, fd: int, interval: float) -> None:
        self._fd = fd
        self.interval = interval
        self._write_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []
        # Held while the writer has nothing to do; released once to wake it. `_woken` (under
        # `_lock`) says it was released and not yet taken back, so it is never released twice.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._woken = False
        # Held while nothing is urgent; released (never blocking, so a signal handler
        # may) by an urgent line: the writer's timed acquire returns at once, and takes
        # it back for the next round.
        self._hurry = threading.Lock()
        self._hurry.acquire()
        self._started = False

    def after_fork(self) -> None:
        """In a forked child: no writer thread yet, and the parent writes its own lines."""
        self._write_lock = threading.Lock()
        self._reset()

    def add(self, line: str, *, urgent: bool = False) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="log-writer", daemon=True).start()
            self._lines.append(line)
            if not self._woken:
                self._woken = True
                self._wake.release()
        if urgent:
            self.hurry()

    def hurry(self) -> None:
        """Have the writer write what is pending now; safe in a signal handler."""
        with contextlib.suppress(RuntimeError):  # already released: already hurried
            self._hurry.release()

    @property
    def busy(self) -> bool:
        """Lines still pending or being written: whatever follows them must queue here."""
        return bool(self._lines) or self._write_lock.locked()

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                lines, self._lines = self._lines, []
            _write_all(self._fd, "".join(lines).encode())

    def _run(self) -> None:
        while True:
            self._wake.acquire()
            with self._lock:
                self._woken = False
            # Taken back before the lines are: an urgent line added after this is either
            # in this write, or leaves the lock released for the next round.
            self._hurry.acquire(timeout=self.interval)
            with contextlib.suppress(OSError):
                # stdout closed: nothing to do but keep the process serving.
                self.flush()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


class _LoopWriter:
    """Lines for one file descriptor from one event loop, written by that loop.

    Adding a line appends it and, for the first line of an interval, schedules
    the write `interval` later: one os.write per interval on the loop, only when
    it cannot block; else the fd's thread writer takes the lines (see the module's
    docstring). Used from the loop's thread only, so it needs no lock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, interval: float) -> None:
        self.loop = loop
        self._fd = fd
        self.interval = interval
        self._lines: list[str] = []
        self._scheduled: asyncio.TimerHandle | None = None
        self._mode = os.fstat(fd).st_mode
        self._behind = _writer(fd, interval)

    def add(self, line: str, *, urgent: bool) -> None:
        self._lines.append(line)
        if _shutting_down:
            self.flush(block=True)
        elif urgent:
            self.flush()
        elif self._scheduled is None:
            self._scheduled = self.loop.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._scheduled = None
        self.flush()

    def flush(self, *, block: bool = False) -> None:
        """Write what is pending, here if that cannot block (or `block`), else behind."""
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines = []
        behind = self._behind
        data = text.encode()
        if block or (not behind.busy and self._room_for(len(data))):
            if behind.busy:
                behind.flush()  # older lines first
            with contextlib.suppress(OSError):  # stdout closed: keep serving
                _write_all(self._fd, data)
            return
        behind.add(text, urgent=True)

    def _room_for(self, size: int) -> bool:
        """Whether writing `size` bytes now returns without waiting for a reader."""
        if stat.S_ISREG(self._mode):
            return True
        if not stat.S_ISFIFO(self._mode):
            return False
        try:
            capacity: int = fcntl.fcntl(self._fd, _F_GETPIPE_SZ)
            queued: int = struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            return False
        return capacity - queued >= size


# Linux's fcntl command for a pipe's capacity (fcntl.F_GETPIPE_SZ where Python names it).
_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_LOOP_WRITERS: dict[int, _LoopWriter] = {}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _loop_writer(loop: asyncio.AbstractEventLoop, fd: int, interval: float) -> _LoopWriter:
    writer = _LOOP_WRITERS.get(fd)
    if writer is None or writer.loop is not loop:
        if writer is not None:
            writer.flush(block=True)  # a loop before this one (tests run several)
        writer = _LOOP_WRITERS[fd] = _LoopWriter(loop, fd, interval)
    writer.interval = min(writer.interval, interval)
    return writer


_WRITERS: dict[int, _WriteBehind] = {}


def _writer(fd: int, interval: float) -> _WriteBehind:
    writer = _WRITERS.get(fd)
    if writer is None:
        # setdefault is atomic: racing threads all get the one that was stored.
        writer = _WRITERS.setdefault(fd, _WriteBehind(fd, interval))
    # Loggers sharing stdout share its writer: the shortest interval asked for holds.
    writer.interval = min(writer.interval, interval)
    return writer


def flush() -> None:
    """Write every line still waiting to be written behind (blocking if need be)."""
    for writer in list(_WRITERS.values()):
        writer.flush()
    for loop_writer in list(_LOOP_WRITERS.values()):
        loop_writer.flush(block=True)


_shutting_down = False
_chained_in_pid: int | None = None


def write_at_once_on_shutdown(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """On the first of `signals`, write what is pending and every later line at once.

    Chains onto the Python handlers installed for them (a server's graceful shutdown)
    and then runs those. For servers that end by re-raising the signal with its
    default action after draining (uvicorn's gunicorn worker does), which skips the
    atexit flush. Call it from the serving process's main thread once its server has
    installed its handlers (the first request); idempotent per process.
    """
    global _chained_in_pid  # noqa: PLW0603 -- one per process, by design
    if _chained_in_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    _chained_in_pid = os.getpid()
    for signum in signals:
        previous = signal.getsignal(signum)
        if callable(previous):
            signal.signal(signum, functools.partial(_shutdown_then, previous))


def _shutdown_then(previous: Callable[[int, FrameType | None], object], signum: int,
                   frame: FrameType | None) -> None:  # fmt: skip
    global _shutting_down  # noqa: PLW0603 -- read by every logger of the process
    _shutting_down = True
    # No locks here (the interrupted code may hold them): the thread writers only get
    # hurried, the loops are asked to write on their next turn, and each line logged
    # from now on is written before log() returns.
    for writer in list(_WRITERS.values()):
        writer.hurry()
    for loop_writer in list(_LOOP_WRITERS.values()):
        with contextlib.suppress(RuntimeError):  # that loop is closed
            loop_writer.loop.call_soon_threadsafe(loop_writer.flush)
    previous(signum, frame)


def _after_fork_in_child() -> None:
    for writer in _WRITERS.values():
        writer.after_fork()
    # The parent's loops do not run here, and the parent writes their lines.
    _LOOP_WRITERS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush)


@functools.lru_cache(maxsize=2)
def _second_text(second: int) -> str:
    # Formatting the date is most of a timestamp's cost, and it changes once a second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _rfc3339_now() -> str:
    now = time.time()
    second = int(now)
    return f"{_second_text(second)}.{int((now - second) * 1e6):06d}Z"
