"""Serve the real entry points as separate processes, as production serves them.

Used by the integration tests and the benchmark scripts; `make run` keeps its
own foreground stack (ops/local.py) that streams every process's output.
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

from ops.emulators import LOOPBACK, free_port

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
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

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


def serve_ingest(env: dict[str, str], log_dir: Path, *, threads: int = 4) -> Served:
    port = free_port()
    argv = [
        str(BIN / "functions-framework"),
        "--target=ingest",
        f"--source={INGEST_SOURCE}",
        f"--host={LOOPBACK}",
        f"--port={port}",
    ]
    return serve(
        "ingest", argv, {**env, "THREADS": str(threads)}, log_dir, port=port, ready_path="/"
    )


def serve_handlers(
    service: str, env: dict[str, str], log_dir: Path, *, port: int | None = None
) -> Served:
    """A handler service (or the backfill worker) under gunicorn, as its container runs it."""
    port = port or free_port()
    argv = [
        str(BIN / "gunicorn"),
        f"--bind={LOOPBACK}:{port}",
        "--workers=1",
        "--threads=8",
        "--timeout=0",
        "handlers.main:create_service_app()",
    ]
    return serve(
        service, argv, {**env, "SERVICE": service}, log_dir, port=port, ready_path="/healthz"
    )
