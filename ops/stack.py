"""The whole pipeline on emulators, as a context manager for scripts and tests.

Starts (or reuses) the Pub/Sub, Firestore and Cloud Tasks emulators, serves
every handler service and the backfill worker under gunicorn on free ports,
and creates the Pub/Sub topology from the routing table. The ingest function
is served too when asked. `make run` is the interactive sibling (ops/local.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ops import topology
from ops.emulators import (
    LOOPBACK,
    Emulator,
    free_port,
    start_firestore,
    start_pubsub,
    start_tasks,
)
from ops.processes import Served, serve_handlers, serve_ingest
from ops.signing import DEV_SECRET

TASKS_LOCATION = "local"
TASKS_QUEUE = "backfills"
# The services with push subscriptions (the routing table's), and the worker Cloud Tasks calls.
HANDLER_SERVICES = ("alerts", "connections", "transforms", "backfills")
WORKER = "backfill-worker"


def tasks_queue_path(project: str) -> str:
    return f"projects/{project}/locations/{TASKS_LOCATION}/queues/{TASKS_QUEUE}"


def handler_env(
    project: str,
    *,
    pubsub_host: str,
    firestore_host: str,
    tasks_host: str,
    topic_prefix: str,
    hook_modules: str,
    worker_url: str,
) -> dict[str, str]:
    """The settings of every handler service and the worker on the emulators (no SERVICE)."""
    return {
        "GOOGLE_CLOUD_PROJECT": project,
        # Set for every service, so nothing can reach a real project.
        "PUBSUB_EMULATOR_HOST": pubsub_host,
        "FIRESTORE_EMULATOR_HOST": firestore_host,
        "TOPIC_PREFIX": topic_prefix,
        # No OIDC token comes from the emulators; the services log a warning about it.
        "PUSH_AUTH_DISABLED": "true",
        "HOOK_MODULES": hook_modules,
        "TASKS_LOCATION": TASKS_LOCATION,
        "TASKS_QUEUE": TASKS_QUEUE,
        "BACKFILL_WORKER_URL": worker_url,
        "CLOUD_TASKS_EMULATOR_HOST": tasks_host,
    }


@dataclass
class Emulators:
    pubsub: Emulator
    firestore: Emulator
    tasks: Emulator

    def stop(self) -> None:
        for emulator in (self.pubsub, self.firestore, self.tasks):
            emulator.stop()


def start_emulators(project: str, log_dir: Path) -> Emulators:
    queue = tasks_queue_path(project)
    started: list[Emulator] = []
    try:
        started.append(start_pubsub(project, log_dir=log_dir))
        started.append(start_firestore(project, log_dir=log_dir))
        started.append(start_tasks([queue], log_dir=log_dir))
    except BaseException:
        for emulator in started:
            emulator.stop()
        raise
    return Emulators(*started)


@dataclass
class Stack:
    project: str
    layout: topology.Topology
    emulators: Emulators
    log_dir: Path
    handler_env: dict[str, str]
    worker_port: int
    services: dict[str, Served] = field(default_factory=dict)
    ingest: Served | None = None

    @property
    def ingest_env(self) -> dict[str, str]:
        return {
            "WEBHOOK_SECRETS": DEV_SECRET,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "EVENTS_TOPIC": self.layout.events_topic,
            "QUARANTINE_TOPIC": self.layout.quarantine_topic,
            "PUBSUB_EMULATOR_HOST": self.emulators.pubsub.host_port,
        }

    def restart_worker(self, **extra_env: str) -> None:
        """Replace the worker on its port (the tasks carry its URL) with new settings."""
        self.services[WORKER].stop()
        self.services[WORKER] = serve_handlers(
            WORKER, {**self.handler_env, **extra_env}, self.log_dir, port=self.worker_port
        )

    def stop(self) -> None:
        for served in [*self.services.values(), *([self.ingest] if self.ingest else [])]:
            served.stop()


@contextlib.contextmanager
def running_stack(
    project: str,
    emulators: Emulators,
    log_dir: Path,
    *,
    hook_modules: str,
    with_ingest: bool = False,
    ingest_threads: int = 8,
    extra_env: Mapping[str, str] | None = None,
    ingest_extra_env: Mapping[str, str] | None = None,
    max_delivery_attempts: int = topology.MAX_DELIVERY_ATTEMPTS,
    maximum_backoff_seconds: int = 2,
) -> Iterator[Stack]:
    """Serve the handlers (and optionally ingest) against running emulators; stop them after."""
    layout = topology.Topology(project, f"p{uuid.uuid4().hex[:6]}")
    worker_port = free_port()
    env = {
        **handler_env(
            project,
            pubsub_host=emulators.pubsub.host_port,
            firestore_host=emulators.firestore.host_port,
            tasks_host=emulators.tasks.host_port,
            topic_prefix=layout.prefix,
            hook_modules=hook_modules,
            worker_url=f"http://{LOOPBACK}:{worker_port}",
        ),
        **(extra_env or {}),
    }
    stack = Stack(project, layout, emulators, log_dir, env, worker_port)
    try:
        for service in HANDLER_SERVICES:
            stack.services[service] = serve_handlers(service, env, log_dir)
        stack.services[WORKER] = serve_handlers(WORKER, env, log_dir, port=worker_port)
        topology.create(
            layout,
            emulators.pubsub.host_port,
            {name: served.url for name, served in stack.services.items()},
            max_delivery_attempts=max_delivery_attempts,
            minimum_backoff_seconds=1,
            maximum_backoff_seconds=maximum_backoff_seconds,
        )
        if with_ingest:
            stack.ingest = serve_ingest(
                {**stack.ingest_env, **(ingest_extra_env or {})}, log_dir, threads=ingest_threads
            )
        # Clients this process creates (reading effects) talk to the same emulators.
        saved = {k: os.environ.get(k) for k in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")}
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulators.firestore.host_port
        os.environ["PUBSUB_EMULATOR_HOST"] = emulators.pubsub.host_port
        try:
            yield stack
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        stack.stop()
