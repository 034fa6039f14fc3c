"""`make run` as a developer uses it: `python -m ops.local` in the foreground, then Ctrl-C.

The stack runs on free ports chosen here (never the fixed defaults, so a
developer's own `make run` is left alone), is driven with the CLI commands
the banner prints, and must leave no process behind when interrupted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from handlers.backfill_store import backfill_id
from handlers.store import BACKFILLS, SYNC_STATE, doc_id
from ops import defaults
from ops.defaults import LOCAL_PROJECT, LOOPBACK
from ops.local.processes import REPO, free_port, free_ports
from ops.local.run import ensure_port_free
from shared.routing import load_table
from shared.samples import sample
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BANNER_END = "Streaming the services' logs below"
# Every service of the routing table: the stack must run each of them.
SERVICES = list(load_table().services.values())
CONTACTS_BACKFILL = "hooks.contacts.backfill_contacts"


@dataclass(frozen=True)
class Proc:
    """A process as /proc shows it; the start time tells a reused pid apart."""

    pid: int
    ppid: int
    pgid: int
    start: int
    command: str


def processes() -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue  # a zombie has exited; only its parent's wait is missing
        pid = int(entry.name)
        found[pid] = Proc(pid, int(fields[1]), int(fields[2]), int(fields[19]), command.strip())
    return found


def descendants(root: int) -> list[Proc]:
    table = processes()
    children: dict[int, list[Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child.pid)
    return found


def listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses sockets listen on at `port`, from /proc/net/tcp and tcp6."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            # Each 32-bit word is in host (little-endian) byte order.
            raw = b"".join(
                int(address[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(address), 8)
            )
            found.add(ipaddress.ip_address(raw))
    return found


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def service_ports(base: int) -> list[int]:
    """The services' ports under --handlers-base-port `base`."""
    return [service.local_port - defaults.HANDLERS_BASE_PORT + base for service in SERVICES]


def free_base_port() -> int:
    """A --handlers-base-port under which every service's port is free."""
    for _ in range(50):
        base = free_port()
        if max(service_ports(base)) > 65535:
            continue
        try:
            for port in service_ports(base):
                ensure_port_free(port, "test", "-")
        except RuntimeError:
            continue
        return base
    raise RuntimeError("no free ports for the services")


@dataclass
class LocalStack:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)
    # What the stack started, seen while it ran: each child leads a process group of its own.
    children: list[Proc] = field(default_factory=list)
    _queue: queue.Queue[str] = field(default_factory=queue.Queue)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    @property
    def ingest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['ingest-port']}/"

    @property
    def inspector_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['inspector-port']}/"

    @property
    def pubsub_host(self) -> str:
        return f"{LOOPBACK}:{self.ports['pubsub-port']}"

    @property
    def firestore_host(self) -> str:
        return f"{LOOPBACK}:{self.ports['firestore-port']}"

    def every_port(self) -> list[int]:
        return [
            port for name, port in self.ports.items() if name != "handlers-base-port"
        ] + service_ports(self.ports["handlers-base-port"])

    def record_children(self) -> list[Proc]:
        self.children = descendants(self.process.pid)
        return self.children

    def groups(self) -> set[int]:
        return {proc.pgid for proc in self.children} | {self.process.pid}

    def left_running(self) -> list[Proc]:
        started = {(proc.pid, proc.start) for proc in self.children}
        return [
            proc
            for proc in processes().values()
            if proc.pgid in self.groups() or (proc.pid, proc.start) in started
        ]

    def drain(self) -> None:
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def output(self) -> str:
        self.drain()
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.5)  # let the reader catch the last lines
                pytest.fail(f"no {text!r} from ops.local; it printed:\n{self.output()}")
            with contextlib.suppress(queue.Empty):
                self.lines.append(self._queue.get(timeout=0.2))


def inspector_page(url: str, **search: str) -> str:
    """The inspector's page as HTML, fetched without any proxy (loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}?{urllib.parse.urlencode(search)}", timeout=30) as response:
        assert response.status == 200
        page: str = response.read().decode()
        return page


def ops(*args: str, timeout: float = 30) -> str:
    """Run `python -m ops ARGS` as a developer would (from the repository); its output."""
    done = subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"ops {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    for name in ("WEBHOOK_SECRET", "PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    base = free_base_port()
    flags = ["--pubsub-port", "--ingest-port", "--firestore-port", "--tasks-port"]
    flags += ["--supaglue-port", "--inspector-port"]
    # None inside the services' range: a free port picked on its own may fall in it.
    picked = free_ports(len(flags), avoid=service_ports(base))
    ports = {**dict(zip(flags, picked, strict=True)), "--handlers-base-port": base}
    argv = [sys.executable, "-m", "ops.local", "--log-dir", str(tmp_path / "logs")]
    for flag, port in ports.items():
        argv += [flag, str(port)]
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own group, as a shell gives a job; and SIGINT ignored, as a script's background
        # job inherits it: the stack must stop on SIGINT all the same.
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509 (no threads yet)
    )
    stack = LocalStack(process, {flag.removeprefix("--"): port for flag, port in ports.items()})
    threading.Thread(target=stack.read, daemon=True).start()
    try:
        yield stack
    finally:
        # A failed test must not leave a stack running: the same clean stop, then force.
        if process.poll() is None:
            stack.record_children()
            os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        for pgid in stack.groups():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=10)


def test_make_run_serves_the_whole_pipeline_and_ctrl_c_leaves_nothing_behind(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    local_stack.wait_for_line(BANNER_END, timeout=60)
    banner = local_stack.output()
    # A quiet start: the readiness checks leave no line that looks like a refused webhook.
    assert not [line for line in banner.splitlines() if line.startswith("ingest | ")], banner
    assert local_stack.ingest_url in banner
    assert local_stack.inspector_url in banner
    assert f"--firestore-host {local_stack.firestore_host}" in banner
    assert f"--emulator-host {local_stack.pubsub_host}" in banner

    # Every process the stack runs, each in a process group of its own.
    commands = " ".join(proc.command for proc in local_stack.record_children())
    assert commands.count("handlers.main:create_service_app()") >= 2 * len(SERVICES)
    assert "functions-framework" in commands
    assert "gcloud_tasks_emulator" in commands
    assert commands.count("java") >= 2  # the Pub/Sub and Firestore emulators
    assert "ops.inspector" in commands
    # make run itself, the emulators, the services, the function and the inspector.
    assert len(local_stack.groups()) == 1 + 3 + len(SERVICES) + 1 + 1
    # Loopback only, emulators included: the dev secret is public, and the emulators would
    # have this machine deliver pushes and tasks wherever a caller asked.
    for port in local_stack.every_port():
        addresses = listening_addresses(port)
        assert addresses, f"nothing listens on {port}"
        assert all(is_loopback(a) for a in addresses), (port, addresses)

    # A failed sync, and a mapping change that starts a backfill, as the banner suggests.
    sync = sample("sync.complete")
    mapping = sample("object.field_mapping.created")
    url = ["--url", local_stack.ingest_url]
    ops("send", "sync.complete", "--result", "ERROR", *url)
    webhook_id = f"msg_{uuid.uuid4().hex}"
    ops(
        "send",
        "object.field_mapping.created",
        "--result",
        "SUCCESS",
        "--set",
        "object_name=contact",
        "--webhook-id",
        webhook_id,
        *url,
    )

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", local_stack.firestore_host)
    db = firestore.Client(project=LOCAL_PROJECT)

    def doc(collection: str, key: str) -> dict[str, Any]:
        return db.collection(collection).document(key).get().to_dict() or {}

    state = wait_for(
        lambda: doc(SYNC_STATE, doc_id(str(sync["customer_id"]), "hubspot", "contact")),
        what="the sync state",
    )
    assert (state["last_result"], state["consecutive_failures"]) == ("ERROR", 1)
    backfill = backfill_id(webhook_id, CONTACTS_BACKFILL)
    record = wait_for(
        lambda: (r := doc(BACKFILLS, backfill)) and r.get("state") == "done" and r,
        what="the backfill to run through Cloud Tasks and the worker",
    )
    assert record["object"] == "contact"

    # The page and the commands the banner prints for seeing the effects; the page first, as
    # `watch` acknowledges what it prints.
    page = inspector_page(local_stack.inspector_url, webhook=webhook_id)
    assert page.count(f">{webhook_id}<") == 1, page
    assert CONTACTS_BACKFILL in page
    status = ops("status", "--firestore-host", local_stack.firestore_host)
    [state_row] = [line for line in status.splitlines() if " contact " in line and "ERROR" in line]
    assert str(sync["customer_id"]) in state_row
    [backfill_row] = [line for line in status.splitlines() if line.startswith(backfill)]
    assert " done " in backfill_row
    watched = ops("watch", "--once", "--emulator-host", local_stack.pubsub_host)
    assert "=== supaglue-events-watch" in watched
    assert f"webhook_id: {webhook_id}" in watched
    assert str(mapping["connection_id"]) in watched
    # The services' logs are streamed, each line prefixed with its service.
    local_stack.drain()
    assert any(line.startswith("backfill-worker | ") for line in local_stack.lines)
    assert any(line.startswith("transforms | ") for line in local_stack.lines)

    # SIGINT, as Ctrl-C at a terminal or `kill -INT` sends it, although it was inherited ignored.
    os.killpg(local_stack.process.pid, signal.SIGINT)
    assert local_stack.process.wait(timeout=30) == 0
    output = local_stack.output()
    assert "[local] Stopped." in output, output
    left = local_stack.left_running()
    assert left == [], f"left running after Ctrl-C: {left}"
    # And every port is free for the next run.
    for port in local_stack.every_port():
        assert not listening_addresses(port), port
    assert time.monotonic() - started < 60
