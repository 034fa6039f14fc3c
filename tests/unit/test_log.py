"""Structured log lines in the shape Cloud Logging parses."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import log as shared_log
from shared.errors import STACK_MAX_CHARS, crash_report
from shared.log import JsonLogger, TraceContext


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True),
        ),
        (
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
            TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", False),
        ),
        (
            {"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1"},
            TraceContext("105445aa7843bc8bf206b12000100000", "0000000000000001", True),
        ),
        (
            {"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000"},
            TraceContext("105445aa7843bc8bf206b12000100000", None, False),
        ),
        ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, None),
        ({"traceparent": "garbage", "x-cloud-trace-context": "nope"}, None),
        ({}, None),
    ],
)
def test_trace_context_from_headers(headers: dict[str, str], expected: TraceContext | None) -> None:
    assert TraceContext.from_headers(headers) == expected


def test_traceparent_wins_over_cloud_header() -> None:
    context = TraceContext.from_headers(
        {
            "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            "x-cloud-trace-context": "c" * 32 + "/1;o=1",
        }
    )
    assert context is not None
    assert context.trace_id == "a" * 32


def test_one_line_with_severity_event_labels_and_trace() -> None:
    stream = io.StringIO()
    logger = JsonLogger("alerts", project_id="proj", labels={"service": "x"}, stream=stream)
    logger.log(
        "ERROR",
        "sync_failed",
        "sync failed",
        trace=TraceContext("a" * 32, "b" * 16, True),
        customer_id="c1",
        skipped=None,
    )
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["severity"] == "ERROR"
    assert record["event"] == "sync_failed"
    assert record["message"] == "sync failed"
    assert record["customer_id"] == "c1"
    assert "skipped" not in record
    assert record["logging.googleapis.com/labels"] == {"component": "alerts", "service": "x"}
    assert record["logging.googleapis.com/trace"] == f"projects/proj/traces/{'a' * 32}"
    assert record["logging.googleapis.com/spanId"] == "b" * 16
    assert record["time"].endswith("Z")


def _read_records(path: Path) -> list[dict[str, object]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a line was cut"
    return [json.loads(line) for line in text.splitlines()]


@contextlib.contextmanager
def stdout_to(path: Path) -> Iterator[None]:
    """stdout as a real file descriptor, as under a server (set in the test body:
    pytest's own capture replaces sys.stdout when the test starts)."""
    with path.open("w") as stream, contextlib.redirect_stdout(stream):
        yield
        shared_log.flush()


@pytest.fixture
def stdout_file(tmp_path: Path) -> Path:
    return tmp_path / "stdout.log"


def test_write_behind_writes_every_line_whole_and_in_order(stdout_file: Path) -> None:
    with stdout_to(stdout_file):
        _emit_from_threads()
        shared_log.flush()
        records = _read_records(stdout_file)
    assert len(records) == 400
    for thread in range(4):
        numbers = [r["number"] for r in records if r["thread"] == thread]
        assert numbers == list(range(100))


def _emit_from_threads() -> None:
    logger = JsonLogger("ingest", write_behind_seconds=0.01)

    def emit(thread: int) -> None:
        for number in range(100):
            logger.log("INFO", "webhook_published", "stored", thread=thread, number=number)

    threads = [threading.Thread(target=emit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_write_behind_lines_appear_without_a_flush(stdout_file: Path) -> None:
    with stdout_to(stdout_file):
        JsonLogger("ingest", write_behind_seconds=0.01).log("INFO", "webhook_published", "x")
        deadline = time.monotonic() + 5
        while not stdout_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        written = stdout_file.read_text()
    assert written
    [record] = _read_records(stdout_file)
    assert record["event"] == "webhook_published"


def _wait_for_lines(path: Path, count: int, timeout: float = 10) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while len(path.read_text().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return _read_records(path)


def test_write_behind_errors_wake_the_writer_at_once_after_what_is_pending(
    stdout_file: Path,
) -> None:
    with stdout_to(stdout_file):
        # An interval far longer than the test may take: only the ERROR line gets them out.
        logger = JsonLogger("ingest", write_behind_seconds=600)
        logger.log("INFO", "webhook_published", "first")
        started = time.monotonic()
        logger.log("ERROR", "publish_failed", "second")
        # Not written by the caller (the event loop): by the writer, which stops waiting.
        written = [r["message"] for r in _wait_for_lines(stdout_file, 2)]
        assert time.monotonic() - started < 10
    assert written == ["first", "second"]


def test_write_behind_never_writes_on_the_callers_thread(
    stdout_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: set[str] = set()
    write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writers.add(threading.current_thread().name)
        return write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    with stdout_to(stdout_file):
        logger = JsonLogger("ingest", write_behind_seconds=0.01)
        logger.log("INFO", "webhook_published", "info")
        logger.log("ERROR", "publish_failed", "error")
        records = _wait_for_lines(stdout_file, 2)
    assert [r["message"] for r in records] == ["info", "error"]
    assert writers == {"log-writer"}


def test_write_behind_falls_back_to_writing_at_once_without_a_file_descriptor() -> None:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        JsonLogger("ingest", write_behind_seconds=60).log("INFO", "webhook_published", "x")
    [line] = captured.getvalue().splitlines()
    assert json.loads(line)["event"] == "webhook_published"


def python(script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by a Python process of its own, from the repository; what it printed."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_write_behind_lines_pending_at_exit_are_written() -> None:
    script = (
        "from shared.log import JsonLogger\n"
        "log = JsonLogger('ingest', write_behind_seconds=60)\n"
        "for n in range(3):\n"
        "    log.log('INFO', 'webhook_published', 'stored', number=n)\n"
    )
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["number"] for line in done.stdout.splitlines()] == [0, 1, 2]


def test_write_behind_survives_errors_interleaved_with_pending_lines(stdout_file: Path) -> None:
    """ERROR lines between pending ones: every line once, in order, whatever the timing
    (a bare lock released twice raised RuntimeError in the request thread here)."""
    with stdout_to(stdout_file):
        logger = JsonLogger("ingest", write_behind_seconds=0.05)
        for number in range(50):
            logger.log("INFO", "webhook_published", "info", number=number)
            logger.log("ERROR", "publish_failed", "error", number=number)
        shared_log.flush()
        records = _read_records(stdout_file)
    assert [(r["message"], r["number"]) for r in records] == [
        (kind, number) for number in range(50) for kind in ("info", "error")
    ]


def test_lines_pending_when_a_server_dies_of_its_re_raised_sigterm_are_written() -> None:
    """uvicorn's worker drains on SIGTERM, restores the default action and raises it again:
    no atexit runs. Chained onto its handler, the logger has written everything by then."""
    script = (
        "import os, signal, time\n"
        "from shared.log import JsonLogger, write_at_once_on_shutdown\n"
        "log = JsonLogger('ingest', write_behind_seconds=600)\n"
        "captured = []\n"
        "signal.signal(signal.SIGTERM, lambda signum, frame: captured.append(signum))\n"
        "write_at_once_on_shutdown()\n"
        "for n in range(3):\n"
        "    log.log('INFO', 'webhook_published', 'stored', number=n)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "log.log('INFO', 'webhook_published', 'drained', number=3)\n"
        "time.sleep(0.1)  # the server's own pause before it waits for the last requests\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "signal.raise_signal(captured[0])\n"
    )
    done = python(script)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert [json.loads(line)["number"] for line in done.stdout.splitlines()] == [0, 1, 2, 3]


# --- in an event loop: the loop writes, unless the write could block -------------------------


def test_in_an_event_loop_the_loop_writes_its_lines_together_after_the_interval(
    stdout_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str, int]] = []
    write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writes.append((threading.current_thread().name, data.count(b"\n")))
        return write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)

    async def serve() -> None:
        logger = JsonLogger("ingest", write_behind_seconds=0.05)
        for number in range(5):
            logger.log("INFO", "webhook_published", "stored", number=number)
        assert stdout_file.read_text() == ""  # nothing written by log() itself
        await asyncio.sleep(0.2)

    with stdout_to(stdout_file):
        asyncio.run(serve())
        records = _read_records(stdout_file)
    assert [r["number"] for r in records] == list(range(5))
    assert writes == [("MainThread", 5)]  # one system call, on the loop's thread


def test_in_an_event_loop_an_error_line_is_written_before_log_returns(
    stdout_file: Path,
) -> None:
    async def serve() -> list[str]:
        logger = JsonLogger("ingest", write_behind_seconds=600)
        logger.log("INFO", "webhook_published", "first")
        logger.log("ERROR", "publish_failed", "second")
        return [str(r["message"]) for r in _read_records(stdout_file)]

    with stdout_to(stdout_file):
        assert asyncio.run(serve()) == ["first", "second"]


def test_in_an_event_loop_a_full_pipe_never_blocks_the_loop_and_loses_nothing() -> None:
    """The reader of stdout is stuck: the lines wait for a thread, the loop goes on."""
    read_end, write_end = os.pipe()
    capacity = fcntl.fcntl(write_end, getattr(fcntl, "F_GETPIPE_SZ", 1032))
    # Fill the pipe to all but a few bytes, as a reader that fell behind leaves it.
    os.set_blocking(write_end, False)
    filler = 0
    with contextlib.suppress(BlockingIOError):
        while capacity - filler > 16:
            filler += os.write(write_end, b"x" * min(4096, capacity - filler - 16))
    os.set_blocking(write_end, True)
    stream = os.fdopen(write_end, "w", closefd=False)

    async def serve() -> float:
        logger = JsonLogger("ingest", write_behind_seconds=0.01)
        started = time.monotonic()
        for number in range(200):
            logger.log("INFO", "webhook_published", "stored", number=number)
            logger.log("ERROR", "publish_failed", "failed", number=number)
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        return time.monotonic() - started

    try:
        with contextlib.redirect_stdout(stream):
            took = asyncio.run(serve())
            received = b""
            deadline = time.monotonic() + 10
            while received.count(b"\n") < 400 and time.monotonic() < deadline:
                received += os.read(read_end, 1 << 20)
    finally:
        os.close(write_end)
        os.close(read_end)
    assert took < 5  # the loop never waited for the stuck reader
    lines = [json.loads(line) for line in received.lstrip(b"x").splitlines()]
    assert [(r["message"], r["number"]) for r in lines] == [
        (kind, number) for number in range(200) for kind in ("stored", "failed")
    ]


def test_a_crash_report_keeps_the_end_of_a_long_stack() -> None:
    """Error Reporting gets the frames nearest the raise, and the line stays bounded."""

    def report(exc: Exception) -> tuple[str, str, str]:
        try:
            raise exc
        except (KeyError, ValueError) as raised:
            return *crash_report(raised), "".join(traceback.format_exception(raised))

    summary, stack, full = report(KeyError("short"))
    assert (summary, stack) == ("KeyError: 'short'", full)
    summary, stack, full = report(ValueError("long " + "x" * STACK_MAX_CHARS))
    assert summary.startswith("ValueError: long x")
    assert len(full) > STACK_MAX_CHARS
    assert stack == full[-STACK_MAX_CHARS:]
