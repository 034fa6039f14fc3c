"""Serve the real entry points as separate processes, as production serves them.

Used by the integration tests and the benchmark scripts. `make run`
(ops/local.py) starts the same command lines from here, but pipes their output
to its console instead of a log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from ops.emulators import LOOPBACK, free_port, stop_process_group

REPO = Path(__file__).resolve().parent.parent
INGEST_SOURCE = str(REPO / "ingest_fn" / "main.py")

BIN = Path(sys.executable).parent


@dataclass
class Served:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process_group(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, *, port: int, ready_path: str
) -> Served:
    log_path = log_dir / f"{name}.log"
    process = subprocess.Popen(
        argv,
        env={**os.environ, **env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
    )
    served = Served(name, f"http://{LOOPBACK}:{port}", process, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(served.url + ready_path, timeout=1)
            return served
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                served.stop()
                raise RuntimeError(f"{name} did not start:\n{served.log()}") from None
            time.sleep(0.1)


def ingest_argv(port: int) -> list[str]:
    """The ingest function under the Functions Framework CLI, as Cloud Functions serves it:
    an ASGI app on gunicorn with uvicorn workers (WORKERS, default 1).

    Loopback only: the dev secret is public, so the endpoint must not be
    reachable from the network. Production binds all interfaces in its container.
    """
    return [
        str(BIN / "functions-framework"),
        "--target=ingest",
        f"--source={INGEST_SOURCE}",
        f"--host={LOOPBACK}",
        f"--port={port}",
    ]


def handler_argv(port: int) -> list[str]:
    """A handler service (or the backfill worker) under gunicorn, as its container runs it.

    SERVICE in the environment chooses which; it answers GET /healthz once loaded.
    """
    return [
        str(BIN / "gunicorn"),
        f"--bind={LOOPBACK}:{port}",
        "--workers=1",
        "--threads=8",
        "--timeout=0",
        # Several gunicorns run side by side here; the default control socket is one
        # path in $HOME that each would take from the one started before it.
        "--no-control-socket",
        "handlers.main:create_service_app()",
    ]


def serve_ingest(env: dict[str, str], log_dir: Path, *, threads: int | None = None) -> Served:
    """The ingest function on a free port; it answers GET with 405 once loaded.

    `threads` means nothing to the async function and is ignored: ops.stack still
    passes it.
    """
    del threads
    port = free_port()
    return serve("ingest", ingest_argv(port), env, log_dir, port=port, ready_path="/")


def serve_handlers(
    service: str, env: dict[str, str], log_dir: Path, *, port: int | None = None
) -> Served:
    """A handler service (or the backfill worker) under gunicorn, as its container runs it."""
    port = port or free_port()
    return serve(
        service,
        handler_argv(port),
        {**env, "SERVICE": service},
        log_dir,
        port=port,
        ready_path="/healthz",
    )
