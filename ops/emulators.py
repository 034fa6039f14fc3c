"""Start and stop the Google Cloud emulators as child processes on loopback.

Used by the test fixtures and by `make run`, so both run the same emulators
the same way. Each emulator gets a free port and its own data directory, and
is stopped with its whole process group (gcloud starts Java underneath).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

LOOPBACK: Final = "127.0.0.1"


class EmulatorError(RuntimeError):
    """An emulator could not be started; the message says what to install or read."""


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process started with start_new_session=True and every process in its group.

    SIGTERM to the group, SIGKILL if it has not exited within `timeout`, then
    SIGKILL to whatever is left in the group: a child that outlived its parent
    (gcloud's Java, a gunicorn worker) would keep a port open. Idempotent.
    """
    pgid = process.pid  # start_new_session made it the group leader
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Emulator:
    name: str
    host_port: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.host_port.rsplit(":", 1)[1])

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the emulator and every process it started; idempotent."""
        # gcloud may exit before its Java child: the whole group goes.
        stop_process_group(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _require_gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud not found: install the Google Cloud SDK with the Pub/Sub and "
            "Firestore emulators (gcloud components install pubsub-emulator "
            "cloud-firestore-emulator) and Java 11+"
        )
    return gcloud


def _spawn(name: str, argv: list[str], port: int, data_dir: Path, log_dir: Path | None) -> Emulator:
    log_path = (log_dir or data_dir) / f"{name}-emulator.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Emulator(name, f"{LOOPBACK}:{port}", process, log_path, data_dir, log)


def _wait_http_ok(emulator: Emulator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{emulator.host_port}/"
    while time.monotonic() < deadline:
        if not emulator.running():
            raise EmulatorError(f"{emulator.name} emulator exited:\n{emulator.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    emulator.stop()
    raise EmulatorError(f"{emulator.name} emulator not ready in {timeout:.0f}s:\n{emulator.tail()}")


def start_pubsub(
    project: str, *, port: int | None = None, log_dir: Path | None = None, timeout: float = 90
) -> Emulator:
    """Start `gcloud beta emulators pubsub start` and wait until it answers."""
    gcloud = _require_gcloud()
    port = port or free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
    argv = [
        gcloud,
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port={LOOPBACK}:{port}",
        f"--project={project}",
        f"--data-dir={data_dir}",
        "--quiet",
    ]
    emulator = _spawn("pubsub", argv, port, data_dir, log_dir)
    _wait_http_ok(emulator, timeout)
    return emulator


def start_firestore(
    project: str, *, port: int | None = None, log_dir: Path | None = None, timeout: float = 90
) -> Emulator:
    """Start `gcloud emulators firestore start` (native mode) and wait until it answers."""
    gcloud = _require_gcloud()
    port = port or free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="firestore-emulator-"))
    argv = [
        gcloud,
        "emulators",
        "firestore",
        "start",
        f"--host-port={LOOPBACK}:{port}",
        f"--project={project}",
        "--database-mode=firestore-native",
        "--quiet",
    ]
    emulator = _spawn("firestore", argv, port, data_dir, log_dir)
    _wait_http_ok(emulator, timeout)
    return emulator


TASKS_EMULATOR: Final = Path(__file__).resolve().parent.parent / ".venv-tasks" / "bin"

# gcloud-tasks-emulator listens on [::] whatever host it is given, and anyone who reaches it
# can have this machine POST to any URL. Run by its own interpreter, this binds it to loopback
# as the other emulators are; it then starts the emulator's CLI with the arguments given.
_TASKS_ON_LOOPBACK: Final = f"""
import grpc
from gcloud_tasks_emulator.__main__ import main

_server = grpc.server

def _loopback_server(*args, **kwargs):
    server = _server(*args, **kwargs)
    add = server.add_insecure_port
    server.add_insecure_port = lambda address: add("{LOOPBACK}:" + address.rsplit(":", 1)[1])
    return server

grpc.server = _loopback_server
main()
"""


def start_tasks(
    queue_paths: list[str],
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    timeout: float = 30,
) -> Emulator:
    """Start gcloud-tasks-emulator (from .venv-tasks, see the Makefile) with these queues.

    On loopback only, when the emulator's own interpreter sits beside it (as in
    .venv-tasks); a TASKS_EMULATOR_BIN elsewhere is run as it is.
    """
    binary = Path(os.environ.get("TASKS_EMULATOR_BIN", TASKS_EMULATOR / "gcloud-tasks-emulator"))
    if not binary.exists():
        raise EmulatorError(f"{binary} not found: run `make venv` to install the Tasks emulator")
    port = port or free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="tasks-emulator-"))
    interpreter = binary.with_name("python")
    if interpreter.exists():
        argv = [str(interpreter), "-c", _TASKS_ON_LOOPBACK, "start", f"--port={port}"]
    else:
        argv = [str(binary), "start", f"--port={port}"]
    for queue in queue_paths:
        argv.append(f"--default-queue={queue}")
    emulator = _spawn("tasks", argv, port, data_dir, log_dir)
    _wait_tcp(emulator, timeout)
    return emulator


def _wait_tcp(emulator: Emulator, timeout: float) -> None:
    """The Tasks emulator speaks only gRPC: ready once its port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not emulator.running():
            raise EmulatorError(f"{emulator.name} emulator exited:\n{emulator.tail()}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, emulator.port), 0.5):
            return
        time.sleep(0.1)
    emulator.stop()
    raise EmulatorError(f"{emulator.name} emulator not ready in {timeout:.0f}s:\n{emulator.tail()}")
