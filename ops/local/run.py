"""`make run`: the whole pipeline on local emulators, in the foreground.

Starts the emulators and the stack (ops/local/stack.py) on fixed loopback
ports, prints how to send a signed event and see its effects, then streams
every process's log lines prefixed with its name. Ctrl-C, SIGINT or SIGTERM
stops every process the stack started, with their children, even when this
runs in the background of a script (which would otherwise ignore SIGINT).

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
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

from dotenv import dotenv_values

from ops import defaults
from ops.local.emulators import EmulatorError
from ops.local.processes import REPO, Lines, NotReady
from ops.local.stack import (
    EmulatorPorts,
    Emulators,
    Stack,
    StackSpec,
    start_emulators,
    tasks_queue_path,
    with_hook_events,
)
from ops.signing import DEV_SECRET
from shared.names import Names
from shared.routing import RoutingTable, load_table

LOG_DIR: Final = REPO / ".local"
PUBSUB_PORT_ENV: Final = "LOCAL_PUBSUB_PORT"
INGEST_PORT_ENV: Final = "LOCAL_INGEST_PORT"
FIRESTORE_PORT_ENV: Final = "LOCAL_FIRESTORE_PORT"
TASKS_PORT_ENV: Final = "LOCAL_TASKS_PORT"
SUPAGLUE_PORT_ENV: Final = "LOCAL_SUPAGLUE_PORT"
HANDLERS_PORT_ENV: Final = "LOCAL_HANDLERS_BASE_PORT"
INSPECTOR_PORT_ENV: Final = "LOCAL_INSPECTOR_PORT"
LOG_DIR_ENV: Final = "LOCAL_LOG_DIR"
# The example hooks: a mapping change starts a real backfill, a sync runs a transform.
HOOK_MODULES: Final = "hooks.contacts"
# Your hooks' settings and secrets for make run, and HOOK_MODULES if not the example's.
ENV_FILE: Final = REPO / ".env.local"
ENV_FILE_ENV: Final = "LOCAL_ENV_FILE"
NAMES: Final = Names()


class StackError(RuntimeError):
    """The stack cannot start or keep running; the message says why and what to do."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM asked the stack to stop.

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the
    way up can swallow it.
    """


@dataclass(frozen=True)
class Ports:
    pubsub: int = defaults.PUBSUB_PORT
    ingest: int = defaults.INGEST_PORT
    firestore: int = defaults.FIRESTORE_PORT
    tasks: int = defaults.TASKS_PORT
    handlers_base: int = defaults.HANDLERS_BASE_PORT
    supaglue: int = defaults.SUPAGLUE_PORT
    inspector: int = defaults.INSPECTOR_PORT

    def services(self, table: RoutingTable | None = None) -> dict[str, int]:
        """Each service at its routing table's local_port, shifted by the base port."""
        shift = self.handlers_base - defaults.HANDLERS_BASE_PORT
        table = table or load_table()
        return {name: service.local_port + shift for name, service in table.services.items()}

    def every_port(self) -> list[tuple[int, str, str]]:
        """(port, what, how to move it) for every port the stack binds."""
        return [
            (self.pubsub, "Pub/Sub emulator", f"--pubsub-port / {PUBSUB_PORT_ENV}"),
            (self.firestore, "Firestore emulator", f"--firestore-port / {FIRESTORE_PORT_ENV}"),
            (self.tasks, "Cloud Tasks emulator", f"--tasks-port / {TASKS_PORT_ENV}"),
            *(
                (port, name, f"--handlers-base-port / {HANDLERS_PORT_ENV}")
                for name, port in self.services().items()
            ),
            (self.ingest, "ingest function", f"--ingest-port / {INGEST_PORT_ENV}"),
            (self.supaglue, "fake Supaglue API", f"--supaglue-port / {SUPAGLUE_PORT_ENV}"),
            (self.inspector, "inspector", f"--inspector-port / {INSPECTOR_PORT_ENV}"),
        ]


@dataclass(frozen=True)
class RunConfig:
    ports: Ports = Ports()
    log_dir: Path = LOG_DIR
    project: str = defaults.LOCAL_PROJECT
    secret: str = DEV_SECRET
    # What .env.local says: HOOK_MODULES, and every other entry for every handler service.
    env_file: Mapping[str, str] = field(default_factory=dict)

    @property
    def hook_modules(self) -> str:
        return self.env_file.get("HOOK_MODULES") or HOOK_MODULES

    def spec(self) -> StackSpec:
        hook_modules = self.hook_modules
        return StackSpec(
            project=self.project,
            names=NAMES,
            log_dir=self.log_dir,
            hook_modules=hook_modules,
            service_ports=self.ports.services(),
            ingest_port=self.ports.ingest,
            secret=self.secret,
            extra_env={k: v for k, v in self.env_file.items() if k != "HOOK_MODULES"},
            watch_events=True,
            routing=with_hook_events(load_table(), hook_modules),
            supaglue_port=self.ports.supaglue,
            inspector_port=self.ports.inspector,
        )

    def host(self, port: int) -> str:
        return f"{defaults.LOOPBACK}:{port}"


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines (dotenv syntax); none when the file does not exist."""
    if not path.exists():
        return {}
    values = dotenv_values(path)
    return {key: value for key, value in values.items() if value is not None}


def ensure_port_free(port: int, what: str, option: str) -> None:
    """Fail early, naming the port, rather than let a child die with a bind error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port left in TIME_WAIT by the previous run is free, a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((defaults.LOOPBACK, port))
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
    the clean-up short and leave orphans. SIGINT is handled even where it was
    inherited as ignored (a background job of a script): the stack must be
    stoppable the way its banner says.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._shield_depth = 0
        self._armed = True

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
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
    return command if in_repo else f"cd {shlex.quote(str(REPO))} && {command}"


def banner(config: RunConfig, environ: Mapping[str, str] = os.environ) -> str:
    """What is running where, and the commands to try it and see the effects."""
    ports, spec = config.ports, config.spec()
    # Flags only where the CLI's defaults (some read from the environment) would miss this stack.
    target = []
    if ports.ingest != defaults.INGEST_PORT:
        target += ["--url", spec.ingest_url]
    # `ops send` signs with $WEBHOOK_SECRET when set; that one would be refused here.
    if environ.get("WEBHOOK_SECRET", config.secret) != config.secret:
        target += ["--secret", config.secret]

    def send(*args: str) -> str:
        return _ops_command("send", *args, *target)

    pubsub_host = config.host(ports.pubsub)
    watch = ["watch"]
    if pubsub_host != (environ.get("PUBSUB_EMULATOR_HOST") or defaults.PUBSUB_HOST):
        watch += ["--emulator-host", pubsub_host]
    if config.project != defaults.LOCAL_PROJECT:
        watch += ["--project", config.project]
    supaglue_url = f"http://{config.host(ports.supaglue)}"
    supaglue = [] if supaglue_url == defaults.SUPAGLUE_URL else ["--url", supaglue_url]
    recovery = []
    reconciler = load_table().reconciler
    if reconciler is not None:
        reconcile = ["reconcile"]
        if ports.handlers_base != defaults.HANDLERS_BASE_PORT:
            reconcile += ["--url", spec.service_url(reconciler.name)]
        recovery = [
            "A sync run whose webhook never came, recovered by a reconciliation pass:",
            f"  {_ops_command('supaglue', *supaglue, 'add-run', '--customer', 'acme')}",
            f"  {_ops_command(*reconcile)}",
        ]
    # Always explicit: without an emulator host, `status` reads the real project's Firestore.
    status = ["status", "--firestore-host", config.host(ports.firestore)]
    if config.project != defaults.LOCAL_PROJECT:
        status += ["--project", config.project]
    return "\n".join(
        [
            "",
            f"Local stack is up (project {config.project}).",
            f"  ingest function   {spec.ingest_url}",
            f"  Pub/Sub emulator  {pubsub_host}",
            f"  Firestore         {config.host(ports.firestore)}",
            f"  Cloud Tasks       {config.host(ports.tasks)}  "
            f"(queue {tasks_queue_path(config.project, NAMES)})",
            f"  fake Supaglue API {supaglue_url}  (what the reconciler reads)",
            f"  inspector         {spec.inspector_url}  (read-only: each webhook's journey)",
            *(f"  {service:<17} {spec.service_url(service)}" for service in spec.service_ports),
            f"  topics            {NAMES.events_topic}, {NAMES.quarantine_topic}, "
            f"{NAMES.dead_letter_topic('<route>')}",
            f"                    (each with a pull subscription "
            f"{NAMES.watch_subscription('<topic>')}, which `ops watch` reads)",
            f"  hook modules      {config.hook_modules}"
            + (f"  (and the settings in {ENV_FILE.name})" if config.env_file else ""),
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
            "See the effects: the inspector above, in a browser; or the handlers' state in",
            "Firestore, and what reached the topics (events, quarantine, dead letters; without",
            "--once, watch keeps watching; what it prints it acknowledges, so the inspector",
            "and `dlq list` no longer show it):",
            f"  {_ops_command(*status)}",
            f"  {_ops_command(*watch, '--once')}",
            *recovery,
            "",
            "Streaming the services' logs below. Ctrl-C stops everything, and so does SIGINT or",
            f"SIGTERM to this process (`kill {os.getpid()}`), or SIGTERM to a `make run` around it.",
            "",
        ]
    )


def _print_lines(lines: Lines, out: TextIO, *, wait: float = 0.0) -> None:
    """Print what the processes wrote; wait up to `wait` seconds for the first line."""
    try:
        name, line = lines.get(timeout=wait) if wait else lines.get_nowait()
    except queue.Empty:
        return
    while True:
        print(f"{name} | {line}", file=out, flush=True)
        try:
            name, line = lines.get_nowait()
        except queue.Empty:
            return


def follow(stack: Stack, lines: Lines, out: TextIO) -> int:
    """Print the processes' log lines until one of them dies; then return 1."""
    while True:
        _print_lines(lines, out, wait=0.5)
        for emulator in stack.emulators.all():
            if not emulator.running():
                _say(out, f"The {emulator.name} emulator exited:\n{emulator.tail()}")
                return 1
        for process in stack.processes():
            if not process.running():
                process.stop()
                _print_lines(lines, out)
                _say(
                    out,
                    f"{process.name} exited with code {process.popen.returncode}; "
                    f"its log is {process.log_path}",
                )
                return 1


def run(config: RunConfig, out: TextIO | None = None) -> int:
    """Run the stack in the foreground until a signal or a process dies; the exit code."""
    out = out or sys.stdout
    signals = Signals()
    signals.install()
    lines: Lines = queue.Queue()
    emulators: Emulators | None = None
    stack: Stack | None = None
    try:
        # Every check before anything starts: a busy port fails in a second, not half-way.
        for port, what, option in config.ports.every_port():
            ensure_port_free(port, what, option)
        config.log_dir.mkdir(parents=True, exist_ok=True)
        ports = config.ports
        emulators = start_emulators(
            config.project,
            config.log_dir,
            ports=EmulatorPorts(ports.pubsub, ports.firestore, ports.tasks),
            shield=signals.shield,
            say=lambda text: _say(out, text),
        )
        stack = Stack(config.spec(), emulators, console=lines)
        stack.start(shield=signals.shield, say=lambda text: _say(out, text))
        _print_lines(lines, out)
        print(banner(config), file=out, flush=True)
        return follow(stack, lines, out)
    except Interrupted:
        # Ctrl-C or SIGTERM is how this is meant to end.
        return 0
    except (StackError, EmulatorError, NotReady) as exc:
        _print_lines(lines, out)
        print(f"[local] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signals.disarm()
        if stack is not None or emulators is not None:
            _say(out, "Stopping the local stack ...")
            if stack is not None:
                stack.stop()
            if emulators is not None:
                emulators.stop()
            _print_lines(lines, out)
            _say(out, "Stopped.")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    parser = argparse.ArgumentParser(
        prog="python -m ops.local",
        description="Run the pipeline on local emulators in the foreground (make run).",
    )

    def port_option(flag: str, env: str, default: int, what: str) -> None:
        # A string default goes through `type`, so a bad environment value is reported like a
        # bad flag.
        parser.add_argument(
            flag,
            type=_port,
            default=os.environ.get(env, str(default)),
            help=f"{what} (env {env}, default {default})",
        )

    port_option("--pubsub-port", PUBSUB_PORT_ENV, defaults.PUBSUB_PORT, "Pub/Sub emulator port")
    port_option("--ingest-port", INGEST_PORT_ENV, defaults.INGEST_PORT, "ingest function port")
    port_option(
        "--firestore-port", FIRESTORE_PORT_ENV, defaults.FIRESTORE_PORT, "Firestore emulator port"
    )
    port_option("--tasks-port", TASKS_PORT_ENV, defaults.TASKS_PORT, "Cloud Tasks emulator port")
    port_option(
        "--supaglue-port", SUPAGLUE_PORT_ENV, defaults.SUPAGLUE_PORT, "fake Supaglue API port"
    )
    port_option(
        "--inspector-port", INSPECTOR_PORT_ENV, defaults.INSPECTOR_PORT, "the inspector's port"
    )
    port_option(
        "--handlers-base-port",
        HANDLERS_PORT_ENV,
        defaults.HANDLERS_BASE_PORT,
        "the handler services listen at their routing table's local_port shifted by "
        f"(this - {defaults.HANDLERS_BASE_PORT})",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(os.environ.get(ENV_FILE_ENV, str(ENV_FILE))),
        help=f"your hooks' settings and secrets, and HOOK_MODULES, for every handler service "
        f"(env {ENV_FILE_ENV}, default {ENV_FILE}; it may be missing)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(os.environ.get(LOG_DIR_ENV, str(LOG_DIR))),
        help=f"where each process's log is kept (env {LOG_DIR_ENV}, default {LOG_DIR})",
    )
    args = parser.parse_args(argv)
    ports = Ports(
        pubsub=args.pubsub_port,
        ingest=args.ingest_port,
        firestore=args.firestore_port,
        tasks=args.tasks_port,
        handlers_base=args.handlers_base_port,
        supaglue=args.supaglue_port,
        inspector=args.inspector_port,
    )
    every = [port for port, _, _ in ports.every_port()]
    if len(set(every)) != len(every):
        parser.error(f"two parts of the stack would share a port: {sorted(every)}")
    if not all(1 <= port <= 65535 for port in every):
        parser.error(f"--handlers-base-port {ports.handlers_base} puts a service off the ports")
    return RunConfig(
        ports=ports, log_dir=args.log_dir.resolve(), env_file=read_env_file(args.env_file)
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))
