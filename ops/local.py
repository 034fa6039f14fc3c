"""`make run`: the whole pipeline on local emulators, in the foreground.

Starts the Pub/Sub, Firestore and Cloud Tasks emulators, every handler
service and the backfill worker under gunicorn, and the ingest function under
the Functions Framework CLI (the command lines and settings of ops.processes
and ops.stack, which the integration tests use); creates the Pub/Sub topology
from the routing table with push subscriptions to the local services, plus a
pull subscription on the events topic for `ops watch`; prints how to send a
signed event and see its effects, then streams every service's log lines
prefixed with its name. Ctrl-C or SIGTERM stops every process the stack
started, with their children.

Fixed ports keep the printed commands valid from one run to the next; each
is overridable by flag or environment variable when it clashes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Final, TextIO

from ops import pubsub_admin, topology
from ops.emulators import (
    LOOPBACK,
    Emulator,
    EmulatorError,
    start_firestore,
    start_pubsub,
    start_tasks,
    stop_process_group,
)
from ops.processes import handler_argv, ingest_argv
from ops.signing import DEV_SECRET
from ops.stack import HANDLER_SERVICES as PUSH_SERVICES
from ops.stack import WORKER, tasks_queue_path
from ops.stack import handler_env as emulator_handler_env

REPO: Final = Path(__file__).resolve().parent.parent
LOG_DIR: Final = REPO / ".local"

# The emulator only namespaces resources by project; a fixed name lets `ops watch` find them.
LOCAL_PROJECT: Final = "local-dev"
DEFAULT_PUBSUB_PORT: Final = 8085
DEFAULT_INGEST_PORT: Final = 8080
DEFAULT_FIRESTORE_PORT: Final = 8086
DEFAULT_TASKS_PORT: Final = 8123
# Service n (from 1) of HANDLER_SERVICES listens on base + n: alerts 8091, connections 8092,
# transforms 8093, backfills 8094, backfill-worker 8095; clear of the emulators' ports.
DEFAULT_HANDLERS_BASE_PORT: Final = 8090
PUBSUB_PORT_ENV: Final = "LOCAL_PUBSUB_PORT"
INGEST_PORT_ENV: Final = "LOCAL_INGEST_PORT"
FIRESTORE_PORT_ENV: Final = "LOCAL_FIRESTORE_PORT"
TASKS_PORT_ENV: Final = "LOCAL_TASKS_PORT"
HANDLERS_PORT_ENV: Final = "LOCAL_HANDLERS_BASE_PORT"
LOG_DIR_ENV: Final = "LOCAL_LOG_DIR"

TOPOLOGY: Final = topology.Topology(LOCAL_PROJECT, "supaglue")
EVENTS_TOPIC: Final = TOPOLOGY.events_topic
QUARANTINE_TOPIC: Final = TOPOLOGY.quarantine_topic
# A pull subscription per topic that nothing consumes but `ops watch`: what was
# published, what was quarantined, and what each handler dead-lettered.
WATCH_SUBSCRIPTIONS: Final[Mapping[str, str]] = {
    topic: TOPOLOGY.watch_subscription(topic)
    for topic in (
        EVENTS_TOPIC,
        QUARANTINE_TOPIC,
        *(TOPOLOGY.dead_letter_topic(route) for route in TOPOLOGY.routes),
    )
}
# Every service the handler image runs (handlers.services.services()), in port order.
HANDLER_SERVICES: Final = (*PUSH_SERVICES, WORKER)
# The example hooks: a mapping change starts a real backfill, a sync runs a transform.
HOOK_MODULES: Final = "handlers.examples.contacts"

_READY_TIMEOUT_SECONDS: Final = 60.0
_STOP_TIMEOUT_SECONDS: Final = 10.0


class StackError(RuntimeError):
    """The stack cannot start or keep running; the message says why and what to do."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM asked the stack to stop.

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the
    way up can swallow it.
    """


@dataclass(frozen=True)
class StackConfig:
    pubsub_port: int = DEFAULT_PUBSUB_PORT
    ingest_port: int = DEFAULT_INGEST_PORT
    project: str = LOCAL_PROJECT
    secret: str = DEV_SECRET
    log_dir: Path = LOG_DIR
    firestore_port: int = DEFAULT_FIRESTORE_PORT
    tasks_port: int = DEFAULT_TASKS_PORT
    handlers_base_port: int = DEFAULT_HANDLERS_BASE_PORT

    @property
    def pubsub_host(self) -> str:
        return f"{LOOPBACK}:{self.pubsub_port}"

    @property
    def firestore_host(self) -> str:
        return f"{LOOPBACK}:{self.firestore_port}"

    @property
    def tasks_host(self) -> str:
        return f"{LOOPBACK}:{self.tasks_port}"

    def handler_port(self, service: str) -> int:
        return self.handlers_base_port + 1 + HANDLER_SERVICES.index(service)

    def handler_url(self, service: str) -> str:
        return f"http://{LOOPBACK}:{self.handler_port(service)}"

    @property
    def ingest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ingest_port}/"


@dataclass(frozen=True)
class ServiceSpec:
    """An HTTP process of the stack, started as production starts it."""

    name: str
    argv: tuple[str, ...]
    port: int
    port_option: str  # how to choose another port, for the "port busy" message
    env: Mapping[str, str]
    # A GET on ready_path answers one of ready_statuses once the app has loaded its settings.
    ready_path: str = "/"
    ready_statuses: frozenset[int] = frozenset({200})

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"


_PYTHON_ENV: Final = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def ingest_spec(config: StackConfig) -> ServiceSpec:
    """The ingest function, served by the Functions Framework as in Cloud Functions."""
    return ServiceSpec(
        name="ingest",
        argv=tuple(ingest_argv(config.ingest_port)),
        port=config.ingest_port,
        port_option=f"--ingest-port / {INGEST_PORT_ENV}",
        env={
            "GOOGLE_CLOUD_PROJECT": config.project,
            "EVENTS_TOPIC": EVENTS_TOPIC,
            "QUARANTINE_TOPIC": QUARANTINE_TOPIC,
            "WEBHOOK_SECRETS": config.secret,
            # Set for every service, so nothing can reach a real project's Pub/Sub.
            "PUBSUB_EMULATOR_HOST": config.pubsub_host,
            **_PYTHON_ENV,
        },
        # The function answers only POST: a 405 proves the app loaded with valid settings.
        ready_statuses=frozenset({405}),
    )


def handler_env(config: StackConfig) -> dict[str, str]:
    """The settings every local handler service and the worker share: the test stack's."""
    return emulator_handler_env(
        config.project,
        pubsub_host=config.pubsub_host,
        firestore_host=config.firestore_host,
        tasks_host=config.tasks_host,
        topic_prefix=TOPOLOGY.prefix,
        hook_modules=HOOK_MODULES,
        worker_url=config.handler_url(WORKER),
    )


def handler_spec(config: StackConfig, service: str) -> ServiceSpec:
    """A handler service (or the backfill worker) under gunicorn, as its container runs it."""
    port = config.handler_port(service)
    return ServiceSpec(
        name=service,
        argv=tuple(handler_argv(port)),
        port=port,
        port_option=f"--handlers-base-port / {HANDLERS_PORT_ENV}",
        env={**handler_env(config), "SERVICE": service, **_PYTHON_ENV},
        ready_path="/healthz",
    )


def service_specs(config: StackConfig) -> list[ServiceSpec]:
    """The stack's services in start order: handlers first, so pushes find them."""
    return [*(handler_spec(config, s) for s in HANDLER_SERVICES), ingest_spec(config)]


def provision_pubsub(config: StackConfig) -> None:
    """Topics and subscriptions from the routing table, as Terraform creates them (idempotent)."""
    layout = topology.Topology(config.project, TOPOLOGY.prefix)
    topology.create(
        layout,
        config.pubsub_host,
        {service: config.handler_url(service) for service in HANDLER_SERVICES},
    )
    subscriber = pubsub_admin.subscriber_client(config.pubsub_host)
    try:
        pubsub_admin.ensure_pull_subscription(
            subscriber, config.project, EVENTS_TOPIC, WATCH_SUBSCRIPTIONS[EVENTS_TOPIC]
        )
    finally:
        subscriber.close()


def _require_executable(spec: ServiceSpec) -> None:
    """The venv's console scripts (beside this interpreter), so the stack runs the venv's pins."""
    if not Path(spec.argv[0]).is_file():
        raise StackError(f"{spec.argv[0]} not found (for {spec.name}): run `make venv` first")


def ensure_port_free(port: int, what: str, option: str) -> None:
    """Fail early, naming the port, rather than let a child die with a bind error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port left in TIME_WAIT by the previous run is free, a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise StackError(
                f"port {port} ({what}) is already in use ({exc.strerror}). Stop what listens "
                f"there (`ss -ltnp 'sport = :{port}'` shows it; a previous `make run`?) "
                f"or choose another port with {option}."
            ) from None


class Signals:
    """SIGINT and SIGTERM stop the stack, but never halfway through starting or stopping.

    Outside a shielded section a signal raises Interrupted where the main
    thread is; inside one it is held until the section ends, so a process is
    never started without the stack knowing it must stop it. Once disarmed
    (while stopping) signals are only noted, so a second Ctrl-C cannot cut
    the clean-up short and leave orphans.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._shield_depth = 0
        self._armed = True

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            # As Python does for SIGINT: an inherited "ignore" stays, since that is
            # how a shell keeps Ctrl-C at the terminal away from its background jobs.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._handle)

    def disarm(self) -> None:
        self._armed = False

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self._shield_depth += 1
        try:
            yield
        finally:
            self._shield_depth -= 1
        self._raise_if_pending()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        self._raise_if_pending()

    def _raise_if_pending(self) -> None:
        if self.received is not None and self._armed and self._shield_depth == 0:
            # Raised once: the stop that follows must not be interrupted in turn.
            self._armed = False
            raise Interrupted(signal.Signals(self.received).name)


@dataclass
class RunningService:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    reader: threading.Thread | None = field(default=None, repr=False)

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_output(self) -> None:
        """Let the reader copy what a finished process wrote last."""
        if self.reader is not None:
            self.reader.join(timeout=2)

    def stop(self) -> None:
        """Stop the process and its whole group (gunicorn forks workers); idempotent."""
        stop_process_group(self.process, timeout=_STOP_TIMEOUT_SECONDS)
        self.wait_output()


class Stack:
    """The emulators and services of one local run: start, follow their logs, stop."""

    def __init__(self, config: StackConfig, signals: Signals) -> None:
        self.config = config
        self._signals = signals
        self._emulators: list[Emulator] = []
        self._services: list[RunningService] = []
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()

    def start(self, out: TextIO) -> None:
        config = self.config
        specs = service_specs(config)
        # Every check before anything starts: a busy port fails in a second, not half-way.
        for spec in specs:
            _require_executable(spec)
        for port, what, option in (
            (config.pubsub_port, "Pub/Sub emulator", f"--pubsub-port / {PUBSUB_PORT_ENV}"),
            (
                config.firestore_port,
                "Firestore emulator",
                f"--firestore-port / {FIRESTORE_PORT_ENV}",
            ),
            (config.tasks_port, "Cloud Tasks emulator", f"--tasks-port / {TASKS_PORT_ENV}"),
            *((spec.port, spec.name, spec.port_option) for spec in specs),
        ):
            ensure_port_free(port, what, option)
        config.log_dir.mkdir(parents=True, exist_ok=True)

        queue = tasks_queue_path(config.project)
        starts: tuple[tuple[str, str, Callable[[], Emulator]], ...] = (
            (
                "Pub/Sub",
                config.pubsub_host,
                lambda: start_pubsub(
                    config.project, port=config.pubsub_port, log_dir=config.log_dir
                ),
            ),
            (
                "Firestore",
                config.firestore_host,
                lambda: start_firestore(
                    config.project, port=config.firestore_port, log_dir=config.log_dir
                ),
            ),
            (
                "Cloud Tasks",
                config.tasks_host,
                lambda: start_tasks([queue], port=config.tasks_port, log_dir=config.log_dir),
            ),
        )
        for name, host, start in starts:
            _say(out, f"Starting the {name} emulator on {host} ...")
            # Shielded: an emulator is returned only once it answers, and one
            # interrupted before then could not be stopped.
            with self._signals.shield():
                self._emulators.append(start())
        for spec in specs:
            _say(out, f"Starting {spec.name} on {spec.url} ...")
            self._start_service(spec, out)
        _say(out, "Creating topics and push subscriptions from shared/routing.json ...")
        provision_pubsub(config)

    def _start_service(self, spec: ServiceSpec, out: TextIO) -> None:
        log_path = self.config.log_dir / f"{spec.name}.log"
        with self._signals.shield():
            process = subprocess.Popen(
                spec.argv,
                cwd=REPO,
                env={**os.environ, **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Its own group, so Ctrl-C reaches it only through stop(), in order.
                start_new_session=True,
            )
            service = RunningService(spec, process, log_path)
            self._services.append(service)
        service.reader = threading.Thread(
            target=_pump,
            args=(spec.name, process.stdout, log_path, self._lines),
            name=f"{spec.name}-log",
            daemon=True,
        )
        service.reader.start()
        self._wait_ready(service, out)

    def _wait_ready(self, service: RunningService, out: TextIO) -> None:
        spec = service.spec
        # No proxy: an HTTP(S)_PROXY in the environment must not intercept loopback calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._print_lines(out)
            if not service.running():
                service.wait_output()
                self._print_lines(out)
                raise StackError(
                    f"{spec.name} exited with code {service.process.returncode} while "
                    f"starting; its log is {service.log_path}"
                )
            try:
                with opener.open(spec.url + spec.ready_path.lstrip("/"), timeout=1) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, OSError):
                status = None
            if status in spec.ready_statuses:
                return
            time.sleep(0.2)
        raise StackError(
            f"{spec.name} did not answer on {spec.url} within {_READY_TIMEOUT_SECONDS:.0f}s:\n"
            f"{service.tail()}"
        )

    def follow(self, out: TextIO) -> int:
        """Print the services' log lines until a process dies; then return 1."""
        while True:
            with contextlib.suppress(queue.Empty):
                name, line = self._lines.get(timeout=0.5)
                print(f"{name} | {line}", file=out, flush=True)
            for emulator in self._emulators:
                if not emulator.running():
                    _say(out, f"The {emulator.name} emulator exited:\n{emulator.tail()}")
                    return 1
            for service in self._services:
                if not service.running():
                    service.wait_output()
                    self._print_lines(out)
                    _say(
                        out,
                        f"{service.spec.name} exited with code {service.process.returncode}; "
                        f"its log is {service.log_path}",
                    )
                    return 1

    def _print_lines(self, out: TextIO) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            print(f"{name} | {line}", file=out, flush=True)

    def stop(self, out: TextIO) -> None:
        """Stop services first (they use the emulators), then emulators; safe to repeat."""
        self._signals.disarm()
        if not (self._services or self._emulators):
            return
        _say(out, "Stopping the local stack ...")
        for service in reversed(self._services):
            service.stop()
        self._services.clear()
        for emulator in reversed(self._emulators):
            emulator.stop()
        self._emulators.clear()
        _say(out, "Stopped.")


def _pump(
    name: str, stream: IO[bytes] | None, log_path: Path, lines: queue.Queue[tuple[str, str]]
) -> None:
    """Copy a process's output to its log file and to the console queue, line by line."""
    if stream is None:
        return
    with stream, log_path.open("wb") as log:
        for raw in stream:
            log.write(raw)
            log.flush()
            lines.put((name, raw.decode(errors="replace").rstrip("\r\n")))


def _say(out: TextIO, text: str) -> None:
    print(f"[local] {text}", file=out, flush=True)


def _ops_command(*args: str) -> str:
    """A command line for `python -m ops`, runnable from the current directory."""
    python = Path(sys.executable)
    in_repo = Path.cwd().resolve() == REPO
    with contextlib.suppress(ValueError):
        if in_repo:
            python = python.relative_to(REPO)
    command = shlex.join([str(python), "-m", "ops", *args])
    # `-m ops` needs the repository on sys.path, which the current directory gives.
    return command if in_repo else f"cd {shlex.quote(str(REPO))} && {command}"


def banner(config: StackConfig, environ: Mapping[str, str] = os.environ) -> str:
    """What is running where, and the commands to try it and see the effects."""
    # Flags only where the CLI's defaults (some read from the environment) would miss this stack.
    target = []
    if config.ingest_port != DEFAULT_INGEST_PORT:
        target += ["--url", config.ingest_url]
    # `ops send` signs with $WEBHOOK_SECRET when set; that one would be refused here.
    if environ.get("WEBHOOK_SECRET", config.secret) != config.secret:
        target += ["--secret", config.secret]

    def send(*args: str) -> str:
        return _ops_command("send", *args, *target)

    watch = ["watch"]
    default_host = environ.get("PUBSUB_EMULATOR_HOST") or f"{LOOPBACK}:{DEFAULT_PUBSUB_PORT}"
    if config.pubsub_host != default_host:
        watch += ["--emulator-host", config.pubsub_host]
    if config.project != LOCAL_PROJECT:
        watch += ["--project", config.project]
    # Always explicit: without an emulator host, `status` reads the real project's Firestore.
    status = ["status", "--firestore-host", config.firestore_host]
    if config.project != LOCAL_PROJECT:
        status += ["--project", config.project]
    return "\n".join(
        [
            "",
            f"Local stack is up (project {config.project}).",
            f"  ingest function   {config.ingest_url}",
            f"  Pub/Sub emulator  {config.pubsub_host}",
            f"  Firestore         {config.firestore_host}",
            f"  Cloud Tasks       {config.tasks_host}  (queue {tasks_queue_path(config.project)})",
            *(f"  {service:<17} {config.handler_url(service)}" for service in HANDLER_SERVICES),
            f"  topics            {EVENTS_TOPIC}, {QUARANTINE_TOPIC}, "
            f"{TOPOLOGY.dead_letter_topic('<route>')}",
            f"                    (each with a pull subscription "
            f"{TOPOLOGY.watch_subscription('<topic>')}, which `ops watch` reads)",
            f"  hooks             {HOOK_MODULES}",
            f"  webhook secret    {config.secret}  (dev only, public)",
            f"  logs              {config.log_dir}/",
            "",
            "Send a signed sample event (a failed sync: alerts logs it, transforms records it):",
            f"  {send('sync.complete', '--result', 'ERROR')}",
            "Start a backfill of contacts through Cloud Tasks and the worker (example hooks):",
            f"  {send('object.field_mapping.created', '--result', 'SUCCESS')}",
            "Other samples, e.g. a connection's lifecycle (all of them: `send --list`):",
            f"  {send('connection.created')}",
            f"  {send('connection.deleted')}",
            "See the effects: the handlers' state in Firestore, and what reached the topics",
            "(events, quarantine, dead letters; without --once, watch keeps watching):",
            f"  {_ops_command(*status)}",
            f"  {_ops_command(*watch, '--once')}",
            "",
            "Streaming the services' logs below; Ctrl-C stops everything.",
            "",
        ]
    )


def run(config: StackConfig, out: TextIO | None = None) -> int:
    """Run the stack in the foreground until a signal or a process dies; the exit code."""
    out = out or sys.stdout
    signals = Signals()
    signals.install()
    stack = Stack(config, signals)
    try:
        stack.start(out)
        print(banner(config), file=out, flush=True)
        return stack.follow(out)
    except Interrupted:
        # Ctrl-C or SIGTERM is how this is meant to end.
        return 0
    except (StackError, EmulatorError) as exc:
        print(f"[local] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop(out)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def parse_args(argv: Sequence[str] | None = None) -> StackConfig:
    parser = argparse.ArgumentParser(
        prog="python -m ops.local",
        description="Run the pipeline on local emulators in the foreground (make run).",
    )
    # A string default goes through `type`, so a bad environment value is reported like a bad flag.
    parser.add_argument(
        "--pubsub-port",
        type=_port,
        default=os.environ.get(PUBSUB_PORT_ENV, str(DEFAULT_PUBSUB_PORT)),
        help=f"Pub/Sub emulator port (env {PUBSUB_PORT_ENV}, default {DEFAULT_PUBSUB_PORT})",
    )
    parser.add_argument(
        "--ingest-port",
        type=_port,
        default=os.environ.get(INGEST_PORT_ENV, str(DEFAULT_INGEST_PORT)),
        help=f"ingest function port (env {INGEST_PORT_ENV}, default {DEFAULT_INGEST_PORT})",
    )
    parser.add_argument(
        "--firestore-port",
        type=_port,
        default=os.environ.get(FIRESTORE_PORT_ENV, str(DEFAULT_FIRESTORE_PORT)),
        help=f"Firestore emulator port (env {FIRESTORE_PORT_ENV}, "
        f"default {DEFAULT_FIRESTORE_PORT})",
    )
    parser.add_argument(
        "--tasks-port",
        type=_port,
        default=os.environ.get(TASKS_PORT_ENV, str(DEFAULT_TASKS_PORT)),
        help=f"Cloud Tasks emulator port (env {TASKS_PORT_ENV}, default {DEFAULT_TASKS_PORT})",
    )
    parser.add_argument(
        "--handlers-base-port",
        type=_port,
        default=os.environ.get(HANDLERS_PORT_ENV, str(DEFAULT_HANDLERS_BASE_PORT)),
        help=f"handler services listen on the next {len(HANDLER_SERVICES)} ports "
        f"(env {HANDLERS_PORT_ENV}, default {DEFAULT_HANDLERS_BASE_PORT})",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(os.environ.get(LOG_DIR_ENV, str(LOG_DIR))),
        help=f"where each process's log is kept (env {LOG_DIR_ENV}, default {LOG_DIR})",
    )
    args = parser.parse_args(argv)
    config = StackConfig(
        pubsub_port=args.pubsub_port,
        ingest_port=args.ingest_port,
        firestore_port=args.firestore_port,
        tasks_port=args.tasks_port,
        handlers_base_port=args.handlers_base_port,
        log_dir=args.log_dir.resolve(),
    )
    ports = [
        config.pubsub_port,
        config.ingest_port,
        config.firestore_port,
        config.tasks_port,
        *(config.handler_port(s) for s in HANDLER_SERVICES),
    ]
    if len(set(ports)) != len(ports):
        parser.error(f"two parts of the stack would share a port: {sorted(ports)}")
    if max(ports) > 65535:
        parser.error(f"--handlers-base-port {config.handlers_base_port} leaves no room above it")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
