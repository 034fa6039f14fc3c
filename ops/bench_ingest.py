"""Ingest benchmark (`make bench-ingest`): the ingest function against a bare one.

What it measures
    Three functions served the same way, by the `functions-framework` CLI (gunicorn,
    gthread worker, 1 worker, the same THREADS) on 127.0.0.1:
    - ingest: ingest_fn/main.py, publishing to a Pub/Sub emulator started here;
    - bare: ops/bench_bare.py, which only answers 204, so it shows what the server,
      Flask and the load generator cost on their own;
    - floor: ops/bench_floor.py, ingest's own code with a publisher that confirms at
      once without sending: what ingest costs before it waits for Pub/Sub. It is not
      a target, it shows how the gap to bare splits between the work and the wait.
    All get the same load from wrk: CONNECTIONS keep-alive connections sending
    `sync.complete` webhooks, each with its own svix-id and the current timestamp.
    wrk cannot compute HMAC, so every request is signed here just before each run
    and ops/bench_wrk.lua replays them, each once, and reports p50/p99 latency and
    counts as one JSON line.

How
    Each server is warmed up with a short run, then measured for a fixed duration:
    requests/s, p50 and p99 latency, non-2xx answers; CPU per request is the
    utime+stime (from /proc) of the server's process tree, the gunicorn master
    and the worker it forks, read before and after the run and divided by the
    requests answered. The emulator's process tree is read the same way and
    reported apart, so ingest's own cost shows separately from the fake Pub/Sub's.
    A pull subscription on the events topic counts the messages stored: every 2xx
    from ingest must have produced exactly one, by svix-id. The CPU that processes
    outside the benchmark used meanwhile (machine busy time from /proc/stat, less
    ours and wrk's) is printed as "others": above ~0.1 core the run was disturbed.

Run
    make bench-ingest
    python -m ops.bench_ingest --threads 16 --batch-latency 0.005 --rounds 3
    Flags default to the environment (THREADS, PUBLISH_BATCH_MAX_LATENCY_SECONDS,
    PUBLISH_BATCH_MAX_MESSAGES, BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS), then to
    the ingest settings' defaults. Every process started here is stopped on exit,
    Ctrl-C and errors included. The exit status is 1 only when the figures cannot be
    trusted (a message missing or duplicated, an id sent twice), not for a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

# Whether mypy finds this attribute depends on which modules it checks together.
from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]

from ops import pubsub_admin
from ops.defaults import LOOPBACK
from ops.local.emulators import Emulator, start_pubsub
from ops.local.processes import free_port
from ops.signing import DEV_SECRET, new_webhook_id, signed_headers
from shared.contract import Attr
from shared.settings import IngestSettings

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLE: Final = REPO / "shared" / "samples" / "sync.complete.json"
WRK_SCRIPT: Final = REPO / "ops" / "bench_wrk.lua"
# The CLI of this venv, so the servers run the pinned functions-framework and gunicorn.
FUNCTIONS_FRAMEWORK: Final = str(Path(sys.executable).parent / "functions-framework")

PROJECT: Final = "bench-ingest"
EVENTS_TOPIC: Final = "bench-events"
QUARANTINE_TOPIC: Final = "bench-quarantine"
SUBSCRIPTION: Final = "bench-events-count"

# The targets, checked (not enforced) in the report.
MAX_CPU_RATIO: Final = 1.3
MIN_THROUGHPUT_RATIO: Final = 0.75
MAX_INGEST_P99_MS: Final = 50.0

DEFAULT_CONNECTIONS: Final = 16
# One thread per connection: an ingest thread is blocked until Pub/Sub confirms,
# so fewer threads than connections leave requests queued behind those waits
# (THREADS=4 halves ingest's throughput); more threads only add GIL contention.
DEFAULT_THREADS: Final = DEFAULT_CONNECTIONS
# One wrk thread drives far more than a Python server answers; a second would
# only take CPU from the servers on this 2-core machine.
WRK_THREADS: Final = 1
# Generous, so that a slow request shows in p99 instead of vanishing as a wrk timeout.
WRK_TIMEOUT_SECONDS: Final = 10
# Before a server's first run its rate is unknown: sign for more than a Python
# server answers on 2 cores. Later runs sign for a margin over the last rate seen.
FIRST_RATE_GUESS: Final = 5000.0
RATE_MARGIN: Final = 2.0
MIN_RATE_GUESS: Final = 500.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark could not run, or its figures would be wrong; the message says why."""


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    emulator_warmup: int
    rounds: int
    connections: int
    threads: int
    batch_latency: float
    batch_messages: int


@dataclass(frozen=True)
class Load:
    """What wrk saw during one run."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    resent: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


@dataclass(frozen=True)
class CpuSample:
    """CPU ms used so far: per process tree, by this script's children, by the machine."""

    server: float
    emulator: float
    children: float
    machine: float

    @classmethod
    def take(cls, server_pid: int, emulator_pid: int) -> CpuSample:
        server, emulator = cpu_ms_of_trees([server_pid, emulator_pid])
        # wrk is a child this script has waited for, so its CPU shows here once it exits;
        # this script's own share is added so that "others" is truly everyone else.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        spent = children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime
        return cls(server, emulator, spent * 1000, machine_busy_ms())

    def minus(self, earlier: CpuSample) -> CpuSample:
        return CpuSample(
            self.server - earlier.server,
            self.emulator - earlier.emulator,
            self.children - earlier.children,
            self.machine - earlier.machine,
        )


@dataclass(frozen=True)
class Measurement:
    load: Load
    cpu: CpuSample

    def per_request(self, cpu_ms: float) -> float:
        return cpu_ms / max(1, self.load.requests)

    @property
    def server_ms_per_request(self) -> float:
        return self.per_request(self.cpu.server)

    @property
    def emulator_ms_per_request(self) -> float:
        return self.per_request(self.cpu.emulator)

    @property
    def wrk_ms_per_request(self) -> float:
        return self.per_request(self.cpu.children)

    @property
    def others_cores(self) -> float:
        """Cores kept busy by processes not part of this benchmark: noise when above ~0.1."""
        ours = self.cpu.server + self.cpu.emulator + self.cpu.children
        return max(0.0, self.cpu.machine - ours) / (self.load.seconds * 1000)


@dataclass(frozen=True)
class Delivery:
    """Messages found on the events topic for one run of the ingest function."""

    answered_2xx: int
    messages: int
    distinct_ids: int
    slack: int

    @property
    def valid(self) -> bool:
        # wrk stops with up to one request in flight per connection: the server may
        # still store those, so up to `slack` more messages than 2xx are expected.
        return (
            self.messages == self.distinct_ids
            and self.answered_2xx <= self.messages <= self.answered_2xx + self.slack
        )


@dataclass(frozen=True)
class Round:
    bare: Measurement
    ingest: Measurement
    floor: Measurement
    delivery: Delivery


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    # Requests/s last seen, to size the next batch of signed requests.
    rate_guess: float = FIRST_RATE_GUESS

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def stop(self) -> None:
        stop_group(self.process)


# ---------------------------------------------------------------- processes


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    # The leader may be gone while a forked worker lingers: end the whole group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def raise_on_sigterm() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so that every cleanup runs."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        # A signal ignored on purpose (nohup) stays ignored.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handler)


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is still missing after apt-get install wrk")
    return found


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- servers


def server_env(opts: Options, emulator: Emulator) -> dict[str, str]:
    """One environment for both servers, so that they differ only by their code."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        THREADS=str(opts.threads),
        WORKERS="1",
        WEBHOOK_SECRETS=DEV_SECRET,
        GOOGLE_CLOUD_PROJECT=PROJECT,
        EVENTS_TOPIC=EVENTS_TOPIC,
        QUARANTINE_TOPIC=QUARANTINE_TOPIC,
        PUBSUB_EMULATOR_HOST=emulator.host_port,
        PUBLISH_BATCH_MAX_LATENCY_SECONDS=repr(opts.batch_latency),
        PUBLISH_BATCH_MAX_MESSAGES=str(opts.batch_messages),
    )
    return env


def start_server(
    name: str, target: str, source: Path, env: dict[str, str], workdir: Path
) -> Server:
    port = free_port()
    log_path = workdir / f"{name}.log"
    argv = [FUNCTIONS_FRAMEWORK, "--target", target, "--source", str(source)]
    argv += ["--host", LOOPBACK, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, process, port, log_path)


def wait_ready(server: Server, timeout: float = 60) -> None:
    """Wait for any HTTP answer (ingest answers GET with 405: that is ready too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} server exited:\n{tail(server.log_path)}")
        connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=2)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            connection.close()
    raise BenchError(f"{server.name} server not ready in {timeout:.0f}s:\n{tail(server.log_path)}")


# ---------------------------------------------------------------- load


def presign(path: Path, count: int) -> None:
    """Write `count` signatures of the sample, each for its own svix-id, signed now."""
    body = SAMPLE.read_bytes()
    now = int(time.time())
    with path.open("w") as out:
        for _ in range(count):
            headers = signed_headers(body, DEV_SECRET, webhook_id=new_webhook_id(), timestamp=now)
            out.write(f"{headers['svix-id']} {now} {headers['svix-signature']}\n")


def run_wrk(wrk: str, url: str, seconds: int, signed: Path, connections: int) -> Load:
    argv = [wrk, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s"]
    argv += [f"--timeout={WRK_TIMEOUT_SECONDS}s", "-s", str(WRK_SCRIPT), url]
    argv += ["--", str(SAMPLE), str(signed), str(WRK_THREADS)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Bounded even if wrk hangs: its own duration plus time to load the requests.
        out, err = process.communicate(timeout=seconds + 60)
    finally:
        stop_group(process)
    return parse_wrk(out.decode(errors="replace"), err.decode(errors="replace"))


def parse_wrk(stdout: str, stderr: str) -> Load:
    prefix = "BENCH_RESULT "
    for line in stdout.splitlines():
        if line.startswith(prefix):
            raw = json.loads(line.removeprefix(prefix))
            return Load(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                non_2xx=raw["non_2xx"],
                socket_errors=raw["socket_errors"],
                timeouts=raw["timeouts"],
                resent=raw["resent"],
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
            )
    raise BenchError(f"wrk printed no result line:\n{stdout}\n{stderr}")


# ---------------------------------------------------------------- CPU from /proc


def cpu_ms_of_trees(roots: Sequence[int]) -> list[float]:
    """utime+stime in ms of each root process and all its live descendants."""
    ticks: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited since the listing
        # The command name may hold spaces and parentheses: split after its last ')'.
        # Then fields[1] is ppid, fields[11] utime and fields[12] stime (stat(5): 4, 14, 15).
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        ticks[pid] = int(fields[11]) + int(fields[12])
        children.setdefault(int(fields[1]), []).append(pid)
    return [_tree_ticks(root, ticks, children) * 1000 / CLOCK_TICKS for root in roots]


def machine_busy_ms() -> float:
    """CPU ms all processes on the machine have used since boot (/proc/stat, first line)."""
    with Path("/proc/stat").open() as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal: all but idle and iowait is work.
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) * 1000 / CLOCK_TICKS


def _tree_ticks(root: int, ticks: dict[int, int], children: dict[int, list[int]]) -> int:
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += ticks.get(pid, 0)
        pending.extend(children.get(pid, []))
    return total


# ---------------------------------------------------------------- runs


def measure(
    server: Server, emulator: Emulator, wrk: str, seconds: int, connections: int, workdir: Path
) -> Measurement:
    """One wrk run of `seconds` against `server`, with fresh signatures and CPU deltas."""
    signed = workdir / "signed.txt"
    presign(signed, math.ceil(max(server.rate_guess, MIN_RATE_GUESS) * RATE_MARGIN * seconds))
    before = CpuSample.take(server.process.pid, emulator.process.pid)
    load = run_wrk(wrk, server.url, seconds, signed, connections)
    after = CpuSample.take(server.process.pid, emulator.process.pid)
    if load.resent:
        raise BenchError(
            f"{server.name}: wrk ran out of signed requests and sent {load.resent} ids twice; "
            "the rate rose over twice the last one seen: run again"
        )
    server.rate_guess = load.rps
    return Measurement(load, after.minus(before))


def drain_ids(subscriber: pubsub_v1.SubscriberClient, path: str) -> list[str]:
    """Pull and ack everything on the subscription; the webhook id of each message."""
    ids: list[str] = []
    empty_pulls = 0
    deadline = time.monotonic() + 120
    # A few empty pulls in a row: the publishes still in flight at the end have landed.
    while empty_pulls < 3 and time.monotonic() < deadline:
        messages = pubsub_admin.pull(subscriber, path, max_messages=1000)
        ids += [message.attributes.get(Attr.WEBHOOK_ID.value, "") for message in messages]
        empty_pulls = 0 if messages else empty_pulls + 1
        if not messages:
            time.sleep(0.2)
    return ids


def check_delivery(load: Load, ids: list[str], connections: int) -> Delivery:
    return Delivery(load.ok, len(ids), len(set(ids)), connections)


@dataclass
class Bench:
    """The running emulator and servers, and how to load them."""

    opts: Options
    wrk: str
    emulator: Emulator
    subscriber: pubsub_v1.SubscriberClient
    subscription: str
    bare: Server
    ingest: Server
    floor: Server
    workdir: Path

    def warm_up_emulator(self) -> None:
        """Load ingest, unmeasured, until the emulator's JVM has compiled its hot paths.

        Measured here: over three 13 s rounds after a 3 s warm-up, the emulator's CPU
        per message fell from 0.44 to 0.20 to 0.10 ms, and ingest's rate rose with it.
        Real Pub/Sub is not on this machine at all, so only the warm state is fair.
        """
        if self.opts.emulator_warmup > 0:
            self._delivered(self._measure(self.ingest, self.opts.emulator_warmup).load)

    def run_round(self) -> Round:
        bare = self._warm_then_measure(self.bare)
        self._delivered(self._warm_up(self.ingest))
        ingest = self._measure(self.ingest, self.opts.duration)
        delivery = self._delivered(ingest.load)
        floor = self._warm_then_measure(self.floor)
        return Round(bare, ingest, floor, delivery)

    def _warm_up(self, server: Server) -> Load:
        return self._measure(server, self.opts.warmup).load

    def _warm_then_measure(self, server: Server) -> Measurement:
        self._warm_up(server)
        return self._measure(server, self.opts.duration)

    def _measure(self, server: Server, seconds: int) -> Measurement:
        return measure(
            server, self.emulator, self.wrk, seconds, self.opts.connections, self.workdir
        )

    def _delivered(self, load: Load) -> Delivery:
        delivery = check_delivery(
            load, drain_ids(self.subscriber, self.subscription), self.opts.connections
        )
        if not delivery.valid:
            raise BenchError(f"ingest answers and stored messages disagree: {delivery}")
        return delivery


def start_bench(opts: Options, wrk: str, stack: contextlib.ExitStack) -> Bench:
    """Start the emulator and both servers; `stack` stops them all, whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    emulator = start_pubsub(PROJECT, log_dir=workdir)
    stack.callback(emulator.stop)
    publisher = pubsub_admin.publisher_client(emulator.host_port)
    subscriber = pubsub_admin.subscriber_client(emulator.host_port)
    for topic in (EVENTS_TOPIC, QUARANTINE_TOPIC):
        pubsub_admin.ensure_topic(publisher, PROJECT, topic)
    subscription = pubsub_admin.ensure_pull_subscription(
        subscriber, PROJECT, EVENTS_TOPIC, SUBSCRIPTION
    )
    env = server_env(opts, emulator)
    servers = []
    for name, target, source in (
        ("bare", "bare", REPO / "ops" / "bench_bare.py"),
        ("ingest", "ingest", REPO / "ingest_fn" / "main.py"),
        ("floor", "ingest_without_pubsub", REPO / "ops" / "bench_floor.py"),
    ):
        server = start_server(name, target, source, env, workdir)
        stack.callback(server.stop)
        servers.append(server)
    for server in servers:
        wait_ready(server)
    bare, ingest, floor = servers
    return Bench(opts, wrk, emulator, subscriber, subscription, bare, ingest, floor, workdir)


# ---------------------------------------------------------------- report


def print_header(opts: Options) -> None:
    print(
        f"settings: THREADS={opts.threads} "
        f"PUBLISH_BATCH_MAX_LATENCY_SECONDS={opts.batch_latency} "
        f"PUBLISH_BATCH_MAX_MESSAGES={opts.batch_messages}"
    )
    print(
        f"load: wrk, {opts.connections} keep-alive connections, freshly signed sync.complete, "
        f"{opts.emulator_warmup} s of ingest load first to warm the emulator's JVM, then "
        f"{opts.warmup} s warm-up + {opts.duration} s measured per function, "
        f"{opts.rounds} round(s); servers: functions-framework (gunicorn gthread, 1 worker)"
    )
    print(
        "columns: server, emulator and wrk CPU in ms per request; others: cores used meanwhile "
        "by processes outside this benchmark (figures are noisy when above ~0.1)"
    )


def print_round(number: int, total: int, result: Round) -> None:
    print(f"\nround {number}/{total}")
    print(
        f"  {'function':8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
        f"{'errors':>6} {'server':>7} {'emulator':>8} {'wrk':>6} {'others':>6}"
    )
    for name, m in (("bare", result.bare), ("ingest", result.ingest), ("floor", result.floor)):
        load = m.load
        print(
            f"  {name:8} {load.rps:8.1f} {load.p50_ms:7.2f} {load.p99_ms:7.2f} "
            f"{load.non_2xx:7d} {load.socket_errors + load.timeouts:6d} "
            f"{m.server_ms_per_request:7.3f} {m.emulator_ms_per_request:8.3f} "
            f"{m.wrk_ms_per_request:6.3f} {m.others_cores:6.2f}"
        )
    d = result.delivery
    print(
        f"  Pub/Sub: {d.messages} messages, {d.distinct_ids} distinct svix-ids, "
        f"for {d.answered_2xx} 2xx answers"
    )
    print(
        f"  ingest/bare: throughput {throughput_ratio(result):.2f}, "
        f"server CPU per request {cpu_ratio(result):.2f}"
    )
    print(
        f"  floor/bare (no Pub/Sub): throughput {floor_throughput_ratio(result):.2f}, "
        f"server CPU per request {floor_cpu_ratio(result):.2f}"
    )


def throughput_ratio(result: Round) -> float:
    return result.ingest.load.rps / result.bare.load.rps


def cpu_ratio(result: Round) -> float:
    return result.ingest.server_ms_per_request / result.bare.server_ms_per_request


def floor_throughput_ratio(result: Round) -> float:
    return result.floor.load.rps / result.bare.load.rps


def floor_cpu_ratio(result: Round) -> float:
    return result.floor.server_ms_per_request / result.bare.server_ms_per_request


def others_cores(result: Round) -> float:
    return max(m.others_cores for m in (result.bare, result.ingest, result.floor))


def ingest_p99(result: Round) -> float:
    return result.ingest.load.p99_ms


def spread(rounds: Sequence[Round], figure: Callable[[Round], float], fmt: str) -> str:
    """Median, and the range when there is more than one round."""
    values = [figure(r) for r in rounds]
    text = format(statistics.median(values), fmt)
    if len(values) > 1:
        text += f" [{min(values):{fmt}}-{max(values):{fmt}}]"
    return text


def print_summary(rounds: Sequence[Round]) -> None:
    label = "median [min-max]" if len(rounds) > 1 else "single round"
    print(f"\nsummary ({label} over {len(rounds)} round(s))")
    rows: list[tuple[str, Callable[[Round], float], str]] = [
        ("bare req/s", lambda r: r.bare.load.rps, ".0f"),
        ("ingest req/s", lambda r: r.ingest.load.rps, ".0f"),
        ("bare p50 ms", lambda r: r.bare.load.p50_ms, ".1f"),
        ("bare p99 ms", lambda r: r.bare.load.p99_ms, ".1f"),
        ("ingest p50 ms", lambda r: r.ingest.load.p50_ms, ".1f"),
        ("bare CPU ms/req", lambda r: r.bare.server_ms_per_request, ".3f"),
        ("ingest CPU ms/req", lambda r: r.ingest.server_ms_per_request, ".3f"),
        ("emulator CPU ms/req", lambda r: r.ingest.emulator_ms_per_request, ".3f"),
        ("floor req/s (no Pub/Sub)", lambda r: r.floor.load.rps, ".0f"),
        ("floor p50 ms", lambda r: r.floor.load.p50_ms, ".1f"),
        ("floor p99 ms", lambda r: r.floor.load.p99_ms, ".1f"),
        ("floor CPU ms/req", lambda r: r.floor.server_ms_per_request, ".3f"),
        ("floor/bare throughput", floor_throughput_ratio, ".2f"),
        ("floor/bare CPU per request", floor_cpu_ratio, ".2f"),
        ("others' cores (noise)", others_cores, ".2f"),
    ]
    for name, figure, fmt in rows:
        print(f"  {name:28} {spread(rounds, figure, fmt)}")
    targets: list[tuple[str, Callable[[Round], float], str, float, bool]] = [
        ("ingest/bare throughput", throughput_ratio, ".2f", MIN_THROUGHPUT_RATIO, True),
        ("ingest/bare CPU per request", cpu_ratio, ".2f", MAX_CPU_RATIO, False),
        ("ingest p99 ms", ingest_p99, ".1f", MAX_INGEST_P99_MS, False),
    ]
    for name, figure, fmt, bound, at_least in targets:
        value = statistics.median(figure(r) for r in rounds)
        met = value >= bound if at_least else value <= bound
        sign = ">=" if at_least else "<="
        verdict = "met" if met else "MISSED"
        print(f"  {name:28} {spread(rounds, figure, fmt)}  target {sign} {bound:g}: {verdict}")


# ---------------------------------------------------------------- main


def _env(name: str, default: object) -> str:
    return os.environ.get(name) or str(default)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    fields = IngestSettings.model_fields
    latency_default = fields["publish_batch_max_latency_seconds"].default
    messages_default = fields["publish_batch_max_messages"].default
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench_ingest",
        description="Throughput, latency and CPU of the ingest function against a bare one.",
    )
    add = parser.add_argument
    add("--duration", type=int, default=_env("BENCH_DURATION", 10), help="measured s per run")
    add("--warmup", type=int, default=_env("BENCH_WARMUP", 3), help="warm-up s per run")
    add(
        "--emulator-warmup",
        type=int,
        default=_env("BENCH_EMULATOR_WARMUP", 20),
        help="s of unmeasured ingest load before the first round (0: none)",
    )
    add("--rounds", type=int, default=_env("BENCH_ROUNDS", 1), help="bare+ingest+floor rounds")
    add("--connections", type=int, default=DEFAULT_CONNECTIONS, help="wrk connections")
    add("--threads", type=int, default=_env("THREADS", DEFAULT_THREADS), help="THREADS")
    add(
        "--batch-latency",
        type=float,
        default=_env("PUBLISH_BATCH_MAX_LATENCY_SECONDS", latency_default),
        help="PUBLISH_BATCH_MAX_LATENCY_SECONDS",
    )
    add(
        "--batch-messages",
        type=int,
        default=_env("PUBLISH_BATCH_MAX_MESSAGES", messages_default),
        help="PUBLISH_BATCH_MAX_MESSAGES",
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.warmup, args.rounds, args.connections, args.threads) < 1:
        parser.error("durations, rounds, connections and threads must be at least 1")
    if args.emulator_warmup < 0:
        parser.error("--emulator-warmup must not be negative")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        emulator_warmup=args.emulator_warmup,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.threads,
        batch_latency=args.batch_latency,
        batch_messages=args.batch_messages,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    raise_on_sigterm()
    wrk = ensure_wrk()
    print_header(opts)
    rounds: list[Round] = []
    try:
        with contextlib.ExitStack() as stack:
            bench = start_bench(opts, wrk, stack)
            bench.warm_up_emulator()
            for number in range(1, opts.rounds + 1):
                rounds.append(bench.run_round())
                print_round(number, opts.rounds, rounds[-1])
    except BenchError as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; all processes stopped", file=sys.stderr)
        return 130
    print_summary(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
