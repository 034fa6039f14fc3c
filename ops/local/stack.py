"""The whole pipeline on the emulators: the one stack `make run`, the tests, the benchmarks
and the reliability suite all start.

Every service of the routing table runs under gunicorn as its container runs it,
the ingest function under the Functions Framework as Cloud Functions serves it,
and the Pub/Sub topology is created as Terraform creates it (ops/local/topology.py).
Which services there are, and their ports under `make run`, come from the
routing table: a service added there runs here without another change.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from handlers.hooks import hooks, load_hook_modules
from ops.defaults import LOOPBACK
from ops.inspector.app import HEALTH_PATH as INSPECTOR_HEALTH_PATH
from ops.inspector.settings import pipeline_variables
from ops.local import topology
from ops.local.emulators import Emulator, start_firestore, start_pubsub, start_tasks
from ops.local.fake_supaglue import DEV_API_KEY, FakeSupaglue
from ops.local.processes import Lines, Process, free_ports, spawn, wait_http, wait_tcp
from ops.signing import DEV_SECRET
from shared.names import Names
from shared.routing import RoutingTable, load_table
from shared.settings import list_items

TASKS_LOCATION: Final = "local"
# The venv's console scripts (beside this interpreter), so the stack runs the venv's pins.
BIN: Final = Path(sys.executable).parent
INGEST_SOURCE: Final = "ingest_fn/main.py"
HEALTH_PATH: Final = "/healthz"

Shield = Callable[[], contextlib.AbstractContextManager[None]]


def tasks_queue_path(project: str, names: Names) -> str:
    return f"projects/{project}/locations/{TASKS_LOCATION}/queues/{names.tasks_queue}"


@dataclass
class Emulators:
    pubsub: Emulator
    firestore: Emulator
    tasks: Emulator

    def all(self) -> tuple[Emulator, ...]:
        return (self.pubsub, self.firestore, self.tasks)

    def stop(self) -> None:
        for emulator in reversed(self.all()):
            emulator.stop()


@dataclass(frozen=True)
class EmulatorPorts:
    """Fixed ports for `make run`; None picks a free one."""

    pubsub: int | None = None
    firestore: int | None = None
    tasks: int | None = None


def start_emulators(
    project: str,
    log_dir: Path,
    *,
    ports: EmulatorPorts = EmulatorPorts(),
    shield: Shield = contextlib.nullcontext,
    say: Callable[[str], None] = lambda _text: None,
) -> Emulators:
    """Start the Pub/Sub, Firestore and Cloud Tasks emulators, or none of them."""
    starts: tuple[tuple[str, Callable[[], Emulator]], ...] = (
        ("Pub/Sub", lambda: start_pubsub(project, port=ports.pubsub, log_dir=log_dir)),
        ("Firestore", lambda: start_firestore(project, port=ports.firestore, log_dir=log_dir)),
        ("Cloud Tasks", lambda: start_tasks(port=ports.tasks, log_dir=log_dir)),
    )
    started: list[Emulator] = []
    try:
        for name, start in starts:
            say(f"Starting the {name} emulator ...")
            # Shielded: an emulator interrupted before it answers could not be stopped.
            with shield():
                started.append(start())
    except BaseException:
        for emulator in reversed(started):
            emulator.stop()
        raise
    return Emulators(*started)


@dataclass(frozen=True)
class StackSpec:
    """What to run: the project, names, ports and settings of one stack."""

    project: str
    names: Names
    log_dir: Path
    hook_modules: str
    # Each service's port; every service of the routing table must have one.
    service_ports: Mapping[str, int]
    # Serve the ingest function too, on this port.
    ingest_port: int | None = None
    secret: str = DEV_SECRET
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ingest_extra_env: Mapping[str, str] = field(default_factory=dict)
    delivery: topology.Delivery = field(default_factory=topology.Delivery)
    # A pull subscription on the events topic too, for `ops watch`.
    watch_events: bool = False
    routing: RoutingTable = field(default_factory=load_table)
    # The fake Supaglue management API the reconciler reads; 0 picks a free port.
    supaglue_port: int = 0
    # The reconciler's own settings beside the shared ones (RECONCILE_*).
    reconciler_env: Mapping[str, str] = field(default_factory=dict)
    # Serve the inspector (ops/inspector/) too, on this port.
    inspector_port: int | None = None

    @classmethod
    def on_free_ports(
        cls,
        project: str,
        log_dir: Path,
        *,
        hook_modules: str,
        with_ingest: bool = False,
        with_inspector: bool = False,
        **options: Any,
    ) -> StackSpec:
        """A stack beside others on the same emulators: free ports, names of its own."""
        routing: RoutingTable = options.pop("routing", None) or with_hook_events(
            load_table(), hook_modules
        )
        ports = iter(free_ports(len(routing.services) + with_ingest + with_inspector))
        return cls(
            project=project,
            names=Names(f"p{uuid.uuid4().hex[:6]}"),
            log_dir=log_dir,
            hook_modules=hook_modules,
            service_ports={service: next(ports) for service in routing.services},
            ingest_port=next(ports) if with_ingest else None,
            inspector_port=next(ports) if with_inspector else None,
            routing=routing,
            **options,
        )

    def service_url(self, service: str) -> str:
        return f"http://{LOOPBACK}:{self.service_ports[service]}"

    @property
    def ingest_url(self) -> str:
        assert self.ingest_port is not None
        return f"http://{LOOPBACK}:{self.ingest_port}/"

    @property
    def inspector_url(self) -> str:
        assert self.inspector_port is not None
        return f"http://{LOOPBACK}:{self.inspector_port}/"


def with_hook_events(table: RoutingTable, hook_modules: str) -> RoutingTable:
    """The table with the hook-events route receiving what the hooks of `hook_modules` want,
    as Terraform's hook_events would list them (importing the modules registers the hooks)."""
    modules = list_items(hook_modules)
    load_hook_modules(modules)
    return table.with_hook_events(hooks.on_event_types(modules))


def hook_events(table: RoutingTable) -> str:
    """HOOK_EVENTS for the services: the hook-events route's event types."""
    return ",".join(
        t for route in table.routes.values() if route.from_hook_events for t in route.event_types
    )


def handler_env(spec: StackSpec, emulators: Emulators) -> dict[str, str]:
    """The settings every local handler service and the worker share (SERVICE aside)."""
    return {
        "GOOGLE_CLOUD_PROJECT": spec.project,
        # Set for every service, so nothing can reach a real project.
        "PUBSUB_EMULATOR_HOST": emulators.pubsub.host_port,
        "FIRESTORE_EMULATOR_HOST": emulators.firestore.host_port,
        "TOPIC_PREFIX": spec.names.prefix,
        # No OIDC token comes from the emulators; the services log a warning about it.
        "PUSH_AUTH_DISABLED": "true",
        "HOOK_MODULES": spec.hook_modules,
        "HOOK_EVENTS": hook_events(spec.routing),
        "TASKS_LOCATION": TASKS_LOCATION,
        "TASKS_QUEUE": spec.names.tasks_queue,
        "BACKFILL_WORKER_URL": spec.service_url(spec.routing.worker.name),
        "CLOUD_TASKS_EMULATOR_HOST": emulators.tasks.host_port,
        # The claim on an event lasts as long as an attempt can, as Terraform sets it.
        "LEDGER_LEASE_SECONDS": str(spec.delivery.ack_deadline_seconds),
        **spec.extra_env,
    }


def reconciler_env(spec: StackSpec, supaglue_url: str) -> dict[str, str]:
    """What the reconciler adds to handler_env: the fake API, and no settle time, so that a
    run added to the fake is recovered by the next pass."""
    return {
        "SUPAGLUE_API_URL": supaglue_url,
        "SUPAGLUE_API_KEY": DEV_API_KEY,
        "RECONCILE_SETTLE_SECONDS": "0",
        **spec.reconciler_env,
    }


def ingest_env(spec: StackSpec, emulators: Emulators) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": spec.project,
        "EVENTS_TOPIC": spec.names.events_topic,
        "QUARANTINE_TOPIC": spec.names.quarantine_topic,
        "WEBHOOK_SECRETS": spec.secret,
        "PUBSUB_EMULATOR_HOST": emulators.pubsub.host_port,
        **spec.ingest_extra_env,
    }


def inspector_env(spec: StackSpec, emulators: Emulators) -> dict[str, str]:
    """The handlers' own values of what the inspector reads: it sees what they keep."""
    shared = handler_env(spec, emulators)
    return {name: shared[name] for name in pipeline_variables() if name in shared}


def inspector_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "ops.inspector", f"--port={port}"]


def handler_argv(port: int) -> list[str]:
    """A handler service (or the backfill worker) under gunicorn, as its container runs it."""
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


def spawn_ingest(
    env: Mapping[str, str], log_path: Path, port: int, console: Lines | None = None
) -> Process:
    return spawn("ingest", ingest_argv(port), env=env, log_path=log_path, console=console)


def wait_ingest(process: Process, port: int) -> None:
    """The function loads its settings before its server binds the port: a connection is
    enough, and no probe is logged as a refused webhook."""
    wait_tcp(process, port)


def serve_ingest(env: Mapping[str, str], log_path: Path, port: int) -> Process:
    """The ingest function alone, served as Cloud Functions serves it, once it listens."""
    process = spawn_ingest(env, log_path, port)
    wait_ingest(process, port)
    return process


class Stack:
    """The services and the function of one stack, on running emulators."""

    def __init__(
        self, spec: StackSpec, emulators: Emulators, *, console: Lines | None = None
    ) -> None:
        self.spec = spec
        self.emulators = emulators
        self.handler_env = handler_env(spec, emulators)
        self.ingest_env = ingest_env(spec, emulators)
        self.services: dict[str, Process] = {}
        self.ingest: Process | None = None
        self.inspector: Process | None = None
        self.supaglue = FakeSupaglue(spec.supaglue_port)
        self._console = console

    @property
    def names(self) -> Names:
        return self.spec.names

    def start(
        self,
        *,
        shield: Shield = contextlib.nullcontext,
        say: Callable[[str], None] = lambda _text: None,
    ) -> None:
        """The fake API, the services, then the topology that pushes to them, then the
        inspector and the function."""
        spec = self.spec
        say(f"Starting the fake Supaglue management API on {self.supaglue.url} ...")
        self.supaglue.start()
        for service in spec.routing.services:
            say(f"Starting {service} on {spec.service_url(service)} ...")
            with shield():
                self.services[service] = self._start_service(service)
            self._wait_service(service)
        say("Creating topics, push subscriptions and the queue from shared/routing.json ...")
        topology.create_queue(
            self.emulators.tasks.host_port, tasks_queue_path(spec.project, spec.names)
        )
        topology.create(
            spec.names,
            spec.project,
            spec.routing.active_routes(),
            self.emulators.pubsub.host_port,
            {service: spec.service_url(service) for service in spec.routing.services},
            spec.delivery,
            watch_events=spec.watch_events,
        )
        if spec.inspector_port is not None:
            say(f"Starting the inspector on {spec.inspector_url} ...")
            with shield():
                self.inspector = spawn(
                    "inspector",
                    inspector_argv(spec.inspector_port),
                    env=inspector_env(spec, self.emulators),
                    log_path=spec.log_dir / "inspector.log",
                    console=self._console,
                )
            wait_http(self.inspector, spec.inspector_url.rstrip("/") + INSPECTOR_HEALTH_PATH)
        if spec.ingest_port is not None:
            say(f"Starting the ingest function on {spec.ingest_url} ...")
            with shield():
                self.ingest = spawn_ingest(
                    self.ingest_env, spec.log_dir / "ingest.log", spec.ingest_port, self._console
                )
            wait_ingest(self.ingest, spec.ingest_port)

    def _start_service(self, service: str, *, append: bool = False, **extra_env: str) -> Process:
        reconciler = self.spec.routing.reconciler
        own = (
            reconciler_env(self.spec, self.supaglue.url)
            if reconciler and reconciler.name == service
            else {}
        )
        return spawn(
            service,
            handler_argv(self.spec.service_ports[service]),
            env={**self.handler_env, **own, **extra_env, "SERVICE": service},
            log_path=self.spec.log_dir / f"{service}.log",
            console=self._console,
            append=append,
        )

    def _wait_service(self, service: str) -> None:
        wait_http(self.services[service], self.spec.service_url(service) + HEALTH_PATH)

    def restart(self, service: str, **extra_env: str) -> None:
        """Replace a service on its port (the topology and the tasks carry its URL)."""
        self.services[service].stop()
        self.services[service] = self._start_service(service, append=True, **extra_env)
        self._wait_service(service)

    def processes(self) -> list[Process]:
        others = [process for process in (self.inspector, self.ingest) if process is not None]
        return [*self.services.values(), *others]

    def stop(self) -> None:
        """The function and the inspector first, then the services, then the fake API; safe
        to repeat."""
        for process in reversed(self.processes()):
            process.stop()
        self.supaglue.stop()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """This process's environment with `values` set, as it was again afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def running_stack(spec: StackSpec, emulators: Emulators) -> Iterator[Stack]:
    """A started stack for a script or a test, whose own clients talk to the same emulators."""
    stack = Stack(spec, emulators)
    try:
        stack.start()
        with environment(
            {
                "FIRESTORE_EMULATOR_HOST": emulators.firestore.host_port,
                "PUBSUB_EMULATOR_HOST": emulators.pubsub.host_port,
            }
        ):
            yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def pipeline(
    project: str, log_dir: Path, *, hook_modules: str, with_ingest: bool = True, **options: Any
) -> Iterator[Stack]:
    """Emulators of its own and the whole stack on them (ingest included unless told
    otherwise), for a script."""
    spec = StackSpec.on_free_ports(
        project, log_dir, hook_modules=hook_modules, with_ingest=with_ingest, **options
    )
    emulators = start_emulators(project, log_dir)
    try:
        with running_stack(spec, emulators) as stack:
            yield stack
    finally:
        emulators.stop()
