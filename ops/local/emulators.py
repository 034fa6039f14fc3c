"""The Google Cloud emulators as child processes on loopback.

The test fixtures, `make run`, the benchmarks and the reliability suite all
start them from here, the same way: each on a port of its own (free unless
given) with its own data directory, stopped with its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ops.defaults import LOOPBACK
from ops.local.processes import REPO, NotReady, PortTaken, Process, free_port, spawn
from ops.local.processes import wait_http as _wait_http
from ops.local.processes import wait_tcp as _wait_tcp

TASKS_EMULATOR: Final = REPO / ".venv-tasks" / "bin" / "gcloud-tasks-emulator"
_START_TIMEOUT_SECONDS: Final = 90.0
_PORT_ATTEMPTS: Final = 3


class EmulatorError(RuntimeError):
    """An emulator could not be started; the message says what to install or read."""


@dataclass
class Emulator:
    name: str
    host_port: str
    process: Process
    data_dir: Path

    @property
    def port(self) -> int:
        return int(self.host_port.rsplit(":", 1)[1])

    def running(self) -> bool:
        return self.process.running()

    def stop(self) -> None:
        """Stop the emulator and every process it started; idempotent."""
        self.process.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        return self.process.tail(lines)


def _require_gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud not found: install the Google Cloud SDK with the Pub/Sub and "
            "Firestore emulators (gcloud components install pubsub-emulator "
            "cloud-firestore-emulator) and Java 11+"
        )
    return gcloud


def _start(name: str, argv: list[str], port: int, data_dir: Path, log_dir: Path | None) -> Emulator:
    log_path = (log_dir or data_dir) / f"{name}-emulator.log"
    process = spawn(f"{name}-emulator", argv, env={}, log_path=log_path)
    return Emulator(name, f"{LOOPBACK}:{port}", process, data_dir)


def _on_port(start: Callable[[int], Emulator], port: int | None) -> Emulator:
    """Start on `port`, or on a free one, and on another if a different process took that
    one between the pick and the emulator's bind (another run's server, on a shared machine)."""
    if port is not None:
        return start(port)
    for _ in range(_PORT_ATTEMPTS - 1):
        with contextlib.suppress(PortTaken):
            return start(free_port())
    return start(free_port())


def _ready(emulator: Emulator, *, http: bool) -> Emulator:
    try:
        if http:
            _wait_http(
                emulator.process, f"http://{emulator.host_port}/", timeout=_START_TIMEOUT_SECONDS
            )
        else:
            # The Tasks emulator speaks only gRPC: ready once its port accepts connections.
            _wait_tcp(emulator.process, emulator.port, timeout=_START_TIMEOUT_SECONDS)
    except PortTaken:
        emulator.stop()
        raise
    except NotReady as exc:
        emulator.stop()
        raise EmulatorError(f"the {emulator.name} emulator: {exc}") from None
    return emulator


def start_pubsub(project: str, *, port: int | None = None, log_dir: Path | None = None) -> Emulator:
    """`gcloud beta emulators pubsub start`, once it answers."""
    gcloud = _require_gcloud()

    def start(port: int) -> Emulator:
        data_dir = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
        argv = [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={LOOPBACK}:{port}"]
        argv += [f"--project={project}", f"--data-dir={data_dir}", "--quiet"]
        return _ready(_start("pubsub", argv, port, data_dir, log_dir), http=True)

    return _on_port(start, port)


def start_firestore(
    project: str, *, port: int | None = None, log_dir: Path | None = None
) -> Emulator:
    """`gcloud emulators firestore start` in native mode, once it answers."""
    gcloud = _require_gcloud()

    def start(port: int) -> Emulator:
        data_dir = Path(tempfile.mkdtemp(prefix="firestore-emulator-"))
        argv = [gcloud, "emulators", "firestore", "start", f"--host-port={LOOPBACK}:{port}"]
        argv += [f"--project={project}", "--database-mode=firestore-native", "--quiet"]
        return _ready(_start("firestore", argv, port, data_dir, log_dir), http=True)

    return _on_port(start, port)


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


def start_tasks(*, port: int | None = None, log_dir: Path | None = None) -> Emulator:
    """gcloud-tasks-emulator (from .venv-tasks, see the Makefile); queues are created by the stack.

    On loopback only, when the emulator's own interpreter sits beside it (as in
    .venv-tasks); a TASKS_EMULATOR_BIN elsewhere is run as it is.
    """
    binary = Path(os.environ.get("TASKS_EMULATOR_BIN", TASKS_EMULATOR))
    if not binary.exists():
        raise EmulatorError(f"{binary} not found: run `make venv` to install the Tasks emulator")
    interpreter = binary.with_name("python")

    def start(port: int) -> Emulator:
        data_dir = Path(tempfile.mkdtemp(prefix="tasks-emulator-"))
        if interpreter.exists():
            argv = [str(interpreter), "-c", _TASKS_ON_LOOPBACK, "start", f"--port={port}"]
        else:
            argv = [str(binary), "start", f"--port={port}"]
        return _ready(_start("tasks", argv, port, data_dir, log_dir), http=False)

    return _on_port(start, port)
