"""Ingest benchmark (`make bench-ingest`): the ingest function against what else a user runs.

What it measures
    Five receivers on 127.0.0.1, each its own process tree, under the same load:
    - ingest: ingest_fn/main.py as deployed, by the functions-framework CLI (gunicorn,
      uvicorn worker, WORKERS workers), publishing to a Pub/Sub emulator started here;
    - node: the receiver Supaglue's webhook tutorial has users write
      (ops/bench/node_receiver: Express 4, svix, BullMQ on a redis-server started
      here, the enqueue awaited before the 200);
    - bare async: an `@functions_framework.aio.http` function that only answers 204
      (ops/bench/bare.py), served as ingest is: the server stack's own cost;
    - bare threaded: the same for a Flask function (gunicorn gthread, THREADS threads),
      what ingest was served as before;
    - floor: ops/bench/floor.py, ingest's own code with a publisher that confirms at
      once without sending: what ingest costs before the publish. Not a target; it
      splits ingest's gap to bare async into the function's work and the publish.
    wrk drives each with CONNECTIONS keep-alive connections sending `sync.complete`
    webhooks, each with its own svix-id and the current timestamp. wrk cannot compute
    HMAC, so the requests are signed here just before each run and ops/bench/wrk.lua
    replays them, each once, and reports p50/p99 latency and counts as one JSON line.

How
    Before the first round, the emulator's JVM is warmed with unmeasured ingest load.
    Each round runs every receiver in turn (rounds interleave): a short warm-up run,
    then a measured one: requests/s, p50 and p99, non-2xx answers; CPU per request is
    the utime+stime (from /proc) of the receiver's process tree (the gunicorn master
    and its workers; node), before and after, divided by the requests answered. The
    emulator's and redis's trees are read the same way and shown apart as "backend".
    A pull subscription on the events topic counts what ingest stored: every 2xx must
    have produced exactly one message, by svix-id. The CPU that processes outside the
    benchmark used meanwhile (machine busy time from /proc/stat, less ours and wrk's)
    is "others": above ~0.1 core a run was disturbed: repeat it.

Run
    make bench-ingest
    python -m ops.bench.ingest --rounds 3 --workers 1 --stack auto
    --stack h11 serves the async functions with uvicorn's h11/asyncio worker instead
    of the CLI's (httptools/uvloop when installed); --only picks receivers. Flags
    default to the environment (BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS,
    BENCH_EMULATOR_WARMUP, WORKERS). wrk and redis-server come from apt-get and the
    receiver's packages from npm when missing. Every process started here is stopped
    on exit, Ctrl-C and errors included. The exit status is 1 only when the figures
    cannot be trusted (a message missing or duplicated, an id sent twice), not for a
    missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

# Whether mypy finds this attribute depends on which modules it checks together.
from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]

from ops import pubsub_admin
from ops.defaults import LOOPBACK
from ops.local.emulators import Emulator, start_pubsub
from ops.local.processes import Process, free_port, spawn, wait_http, wait_tcp
from ops.signing import DEV_SECRET, new_webhook_id, signed_headers
from shared.contract import Attr

REPO: Final = Path(__file__).resolve().parents[2]
BENCH: Final = REPO / "ops" / "bench"
SAMPLE: Final = REPO / "shared" / "samples" / "sync.complete.json"
WRK_SCRIPT: Final = BENCH / "wrk.lua"
NODE_RECEIVER: Final = BENCH / "node_receiver"
# The CLI of this venv, so the servers run the pinned functions-framework and gunicorn.
FUNCTIONS_FRAMEWORK: Final = str(Path(sys.executable).parent / "functions-framework")

PROJECT: Final = "bench-ingest"
EVENTS_TOPIC: Final = "bench-events"
QUARANTINE_TOPIC: Final = "bench-quarantine"
SUBSCRIPTION: Final = "bench-events-count"

# The targets, checked (not enforced) in the report.
MAX_CPU_RATIO_TO_NODE: Final = 1.0
MIN_THROUGHPUT_RATIO_TO_NODE: Final = 1.0
MAX_INGEST_P99_MS: Final = 25.0
STRETCH_CPU_RATIO_TO_BARE_ASYNC: Final = 1.5

INGEST, NODE, BARE_ASYNC, BARE_THREADED, FLOOR = (
    "ingest",
    "node",
    "bare async",
    "bare threaded",
    "floor",
)
RECEIVERS: Final = (INGEST, NODE, BARE_ASYNC, BARE_THREADED, FLOOR)
DEFAULT_CONNECTIONS: Final = 16
# The threaded baseline's threads: one per connection, as the threaded ingest was run.
BARE_THREADS: Final = DEFAULT_CONNECTIONS
# One wrk thread drives far more than a Python server answers; a second would
# only take CPU from the servers on this 2-core machine.
WRK_THREADS: Final = 1
# Generous, so that a slow request shows in p99 instead of vanishing as a wrk timeout.
WRK_TIMEOUT_SECONDS: Final = 10
# Before a receiver's first run its rate is unknown: sign for more than any of them
# answers on 2 cores. Later runs sign for a margin over the last rate seen.
FIRST_RATE_GUESS: Final = 8000.0
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
    workers: int
    stack: str
    only: tuple[str, ...]


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
    backend: float
    children: float
    machine: float

    @classmethod
    def take(cls, server_pid: int, backend_pid: int) -> CpuSample:
        server, backend = cpu_ms_of_trees([server_pid, backend_pid])
        # wrk is a child this script has waited for, so its CPU shows here once it exits;
        # this script's own share is added so that "others" is truly everyone else.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        spent = children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime
        return cls(server, backend, spent * 1000, machine_busy_ms())

    def minus(self, earlier: CpuSample) -> CpuSample:
        return CpuSample(
            self.server - earlier.server,
            self.backend - earlier.backend,
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
    def backend_ms_per_request(self) -> float:
        return self.per_request(self.cpu.backend)

    @property
    def wrk_ms_per_request(self) -> float:
        return self.per_request(self.cpu.children)

    @property
    def others_cores(self) -> float:
        """Cores kept busy by processes not part of this benchmark: noise when above ~0.1."""
        ours = self.cpu.server + self.cpu.backend + self.cpu.children
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
    runs: dict[str, Measurement]
    delivery: Delivery | None


@dataclass
class Receiver:
    name: str
    served: Served
    # The process tree whose CPU is shown as "backend": the emulator, or redis.
    backend: Emulator
    # The most requests/s seen so far, to size the next batch of signed requests: a run
    # slowed by the machine's other load must not leave the next one short.
    rate_guess: float = FIRST_RATE_GUESS
    runs: int = 0

    @property
    def url(self) -> str:
        return self.served.url + "/"


# ---------------------------------------------------------------- installing what is missing


def raise_on_sigterm() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so that every cleanup runs."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        # A signal ignored on purpose (nohup) stays ignored.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handler)


def ensure_binary(binary: str, package: str) -> str:
    """`binary`, installed from the system's packages (apt-get) when missing."""
    found = shutil.which(binary)
    if found:
        return found
    print(f"{binary} not found: installing {package} with apt-get", flush=True)
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
    found = shutil.which(binary)
    if not found:
        raise BenchError(f"{binary} is still missing after apt-get install {package}")
    return found


def ensure_node_receiver() -> str:
    """node, with the receiver's locked packages in its (ignored) node_modules."""
    node = ensure_binary("node", "nodejs")
    npm = ensure_binary("npm", "npm")
    if not (NODE_RECEIVER / "node_modules").is_dir():
        print("installing the Node receiver's packages (npm ci)", flush=True)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_RECEIVER,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return node


# ---------------------------------------------------------------- receivers


def function_env(opts: Options, emulator: Emulator) -> dict[str, str]:
    """One environment for every Python function, so that they differ only by their code."""
    return {
        "WORKERS": str(opts.workers),
        "THREADS": str(BARE_THREADS),
        "WEBHOOK_SECRETS": DEV_SECRET,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "EVENTS_TOPIC": EVENTS_TOPIC,
        "QUARANTINE_TOPIC": QUARANTINE_TOPIC,
        "PUBSUB_EMULATOR_HOST": emulator.host_port,
    }


def function_argv(opts: Options, target: str, source: Path, port: int, *, asgi: bool) -> list[str]:
    if asgi and opts.stack == "h11":
        # functions-framework's own app and server class, with uvicorn's h11/asyncio worker.
        return [sys.executable, "-m", "ops.bench.serve_h11", target, str(source), str(port)]
    argv = [FUNCTIONS_FRAMEWORK, "--target", target, "--source", str(source)]
    return [*argv, "--host", LOOPBACK, "--port", str(port)]


def start_function(
    opts: Options, name: str, target: str, source: Path, env: dict[str, str], workdir: Path
) -> Served:
    port = free_port()
    argv = function_argv(opts, target, source, port, asgi=name != BARE_THREADED)
    return serve(name.replace(" ", "-"), argv, env, workdir, port=port)


@dataclass
class Served:
    process: Process
    url: str

    def stop(self) -> None:
        self.process.stop()


def serve(name: str, argv: list[str], env: dict[str, str], workdir: Path, *, port: int) -> Served:
    """`argv` in its own process group, once it answers HTTP at all (GET / is refused)."""
    process = spawn(name, argv, env=env, log_path=workdir / f"{name}.log")
    served = Served(process, f"http://{LOOPBACK}:{port}")
    wait_http(process, served.url + "/", statuses=range(100, 600), timeout=30)  # stops it if not
    return served


def start_redis(workdir: Path) -> Emulator:
    """A throw-away redis-server on loopback, for BullMQ; it keeps nothing on disk."""
    redis = ensure_binary("redis-server", "redis-server")
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-redis-", dir=workdir))
    argv = [redis, "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(data_dir)]
    process = spawn("redis", argv, env={}, log_path=workdir / "redis.log")
    emulator = Emulator("redis", f"{LOOPBACK}:{port}", process, data_dir)
    try:
        wait_tcp(process, port, timeout=30)
    except Exception:
        emulator.stop()
        raise
    return emulator


def start_node(redis: Emulator, workdir: Path) -> Served:
    node = ensure_node_receiver()
    port = free_port()
    env = {"PORT": str(port), "REDIS_PORT": str(redis.port), "WEBHOOK_SECRET": DEV_SECRET}
    return serve("node", [node, str(NODE_RECEIVER / "server.js")], env, workdir, port=port)


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
    popen = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    process = Process("wrk", popen, Path(os.devnull))
    try:
        # Bounded even if wrk hangs: its own duration plus time to load the requests.
        out, err = popen.communicate(timeout=seconds + 60)
    finally:
        process.stop()
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
    receiver: Receiver, wrk: str, seconds: int, connections: int, workdir: Path
) -> Measurement:
    """One wrk run of `seconds` against `receiver`, with fresh signatures and CPU deltas."""
    signed = workdir / "signed.txt"
    presign(signed, math.ceil(max(receiver.rate_guess, MIN_RATE_GUESS) * RATE_MARGIN * seconds))
    before = CpuSample.take(receiver.served.process.pid, receiver.backend.process.pid)
    load = run_wrk(wrk, receiver.url, seconds, signed, connections)
    after = CpuSample.take(receiver.served.process.pid, receiver.backend.process.pid)
    if load.resent and receiver.name == INGEST:
        raise BenchError(
            f"{receiver.name}: wrk ran out of signed requests and sent {load.resent} ids "
            "twice; the rate rose over twice the highest one seen: run again"
        )
    receiver.rate_guess = load.rps if receiver.runs == 0 else max(receiver.rate_guess, load.rps)
    receiver.runs += 1
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


@dataclass
class Bench:
    """The running backends and receivers, and how to load them."""

    opts: Options
    wrk: str
    subscriber: pubsub_v1.SubscriberClient
    subscription: str
    receivers: dict[str, Receiver]
    workdir: Path
    warmups: dict[str, Load] = field(default_factory=dict)

    def warm_up_emulator(self) -> None:
        """Load ingest, unmeasured, until the emulator's JVM has compiled its hot paths.

        Its CPU per message falls several-fold over the first minute of load; real
        Pub/Sub is not on this machine at all, so only the warm state is fair.
        """
        ingest = self.receivers.get(INGEST)
        if ingest is not None and self.opts.emulator_warmup > 0:
            self._delivered(self._measure(ingest, self.opts.emulator_warmup).load)

    def run_round(self) -> Round:
        runs: dict[str, Measurement] = {}
        delivery: Delivery | None = None
        for name, receiver in self.receivers.items():
            warm = self._measure(receiver, self.opts.warmup).load
            if name == INGEST:
                self._delivered(warm)
            runs[name] = self._measure(receiver, self.opts.duration)
            if name == INGEST:
                delivery = self._delivered(runs[name].load)
        return Round(runs, delivery)

    def _measure(self, receiver: Receiver, seconds: int) -> Measurement:
        return measure(receiver, self.wrk, seconds, self.opts.connections, self.workdir)

    def _delivered(self, load: Load) -> Delivery:
        ids = drain_ids(self.subscriber, self.subscription)
        delivery = Delivery(load.ok, len(ids), len(set(ids)), self.opts.connections)
        if not delivery.valid:
            raise BenchError(f"ingest answers and stored messages disagree: {delivery}")
        return delivery


def start_bench(opts: Options, wrk: str, stack: contextlib.ExitStack) -> Bench:
    """Start the backends and the receivers; `stack` stops them all, whatever happens."""
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
    env = function_env(opts, emulator)
    functions = {
        INGEST: ("ingest", REPO / "ingest_fn" / "main.py"),
        BARE_ASYNC: ("bare_async", BENCH / "bare.py"),
        BARE_THREADED: ("bare", BENCH / "bare.py"),
        FLOOR: ("ingest", BENCH / "floor.py"),
    }
    receivers: dict[str, Receiver] = {}
    for name in opts.only:
        if name == NODE:
            redis = start_redis(workdir)
            stack.callback(redis.stop)
            served = start_node(redis, workdir)
            backend = redis
        else:
            target, source = functions[name]
            served = start_function(opts, name, target, source, env, workdir)
            backend = emulator
        stack.callback(served.stop)
        receivers[name] = Receiver(name, served, backend)
    return Bench(opts, wrk, subscriber, subscription, receivers, workdir)


# ---------------------------------------------------------------- report


def print_header(opts: Options) -> None:
    stack = (
        "gunicorn + uvicorn worker, httptools/uvloop where installed (the CLI's)"
        if opts.stack == "auto"
        else "gunicorn + uvicorn's h11/asyncio worker"
    )
    print(
        f"load: wrk, {opts.connections} keep-alive connections, freshly signed sync.complete, "
        f"{opts.emulator_warmup} s of ingest load first to warm the emulator's JVM, then "
        f"{opts.warmup} s warm-up + {opts.duration} s measured per receiver, "
        f"{opts.rounds} interleaved round(s)"
    )
    print(
        f"servers: async functions: functions-framework on {stack}, WORKERS={opts.workers}; "
        f"bare threaded: gunicorn gthread, THREADS={BARE_THREADS}; node: Express 4 + BullMQ"
    )
    print(
        "columns: receiver, backend (Pub/Sub emulator or redis) and wrk CPU in ms per "
        "request; others: cores used meanwhile by processes outside this benchmark "
        "(figures are noisy when above ~0.1)"
    )


def print_round(number: int, total: int, result: Round) -> None:
    print(f"\nround {number}/{total}")
    print(
        f"  {'receiver':14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
        f"{'errors':>6} {'CPU':>7} {'backend':>7} {'wrk':>6} {'others':>6}"
    )
    for name, m in result.runs.items():
        load = m.load
        print(
            f"  {name:14} {load.rps:8.1f} {load.p50_ms:7.2f} {load.p99_ms:7.2f} "
            f"{load.non_2xx:7d} {load.socket_errors + load.timeouts:6d} "
            f"{m.server_ms_per_request:7.3f} {m.backend_ms_per_request:7.3f} "
            f"{m.wrk_ms_per_request:6.3f} {m.others_cores:6.2f}"
        )
    d = result.delivery
    if d is not None:
        print(
            f"  Pub/Sub: {d.messages} messages, {d.distinct_ids} distinct svix-ids, "
            f"for {d.answered_2xx} 2xx answers"
        )
    for other in (NODE, BARE_ASYNC, BARE_THREADED):
        if INGEST in result.runs and other in result.runs:
            print(
                f"  ingest/{other}: throughput {throughput_ratio(result, other):.2f}, "
                f"CPU per request {cpu_ratio(result, other):.2f}"
            )


def throughput_ratio(result: Round, other: str, name: str = INGEST) -> float:
    return result.runs[name].load.rps / result.runs[other].load.rps


def cpu_ratio(result: Round, other: str, name: str = INGEST) -> float:
    ours = result.runs[name].server_ms_per_request
    return ours / result.runs[other].server_ms_per_request


def spread(rounds: Sequence[Round], figure: Callable[[Round], float], fmt: str) -> str:
    """Median, and the range when there is more than one round."""
    values = [figure(r) for r in rounds]
    text = format(statistics.median(values), fmt)
    if len(values) > 1:
        text += f" [{min(values):{fmt}}-{max(values):{fmt}}]"
    return text


def print_summary(rounds: Sequence[Round]) -> None:
    label = "median [min-max]" if len(rounds) > 1 else "single round"
    names = list(rounds[0].runs)
    print(f"\nsummary ({label} over {len(rounds)} round(s))")
    print(f"  {'receiver':14} {'req/s':>20} {'p50 ms':>18} {'p99 ms':>18} {'CPU ms/req':>22}")
    for name in names:

        def of(get: Callable[[Measurement], float], name: str = name) -> Callable[[Round], float]:
            return lambda r: get(r.runs[name])

        print(
            f"  {name:14} {spread(rounds, of(lambda m: m.load.rps), '.0f'):>20} "
            f"{spread(rounds, of(lambda m: m.load.p50_ms), '.1f'):>18} "
            f"{spread(rounds, of(lambda m: m.load.p99_ms), '.1f'):>18} "
            f"{spread(rounds, of(lambda m: m.server_ms_per_request), '.3f'):>22}"
        )
    others = spread(rounds, lambda r: max(m.others_cores for m in r.runs.values()), ".2f")
    print(f"  others' cores (noise): {others}")
    if INGEST not in names:
        return
    for other in (NODE, BARE_ASYNC, BARE_THREADED, FLOOR):
        if other in names:
            throughput = spread(rounds, functools.partial(throughput_ratio, other=other), ".2f")
            cpu = spread(rounds, functools.partial(cpu_ratio, other=other), ".2f")
            print(f"  ingest/{other:13} throughput {throughput}, CPU per request {cpu}")
    targets: list[tuple[str, Callable[[Round], float], str, float, bool]] = [
        ("ingest p99 ms", lambda r: r.runs[INGEST].load.p99_ms, ".1f", MAX_INGEST_P99_MS, False)
    ]
    if NODE in names:
        targets += [
            ("ingest/node throughput", lambda r: throughput_ratio(r, NODE), ".2f",
             MIN_THROUGHPUT_RATIO_TO_NODE, True),
            ("ingest/node CPU per request", lambda r: cpu_ratio(r, NODE), ".2f",
             MAX_CPU_RATIO_TO_NODE, False),
        ]  # fmt: skip
    if BARE_ASYNC in names:
        targets.append(
            ("ingest/bare async CPU (stretch)", lambda r: cpu_ratio(r, BARE_ASYNC), ".2f",
             STRETCH_CPU_RATIO_TO_BARE_ASYNC, False)
        )  # fmt: skip
    for name, figure, fmt, bound, at_least in targets:
        value = statistics.median(figure(r) for r in rounds)
        met = value >= bound if at_least else value <= bound
        sign = ">=" if at_least else "<="
        verdict = "met" if met else "MISSED"
        print(f"  {name:31} {spread(rounds, figure, fmt)}  target {sign} {bound:g}: {verdict}")


# ---------------------------------------------------------------- main


def _env(name: str, default: object) -> str:
    return os.environ.get(name) or str(default)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.ingest",
        description="Throughput, latency and CPU of the ingest function against other receivers.",
    )
    add = parser.add_argument
    add("--duration", type=int, default=_env("BENCH_DURATION", 10), help="measured s per run")
    add("--warmup", type=int, default=_env("BENCH_WARMUP", 3), help="warm-up s per run")
    add(
        "--emulator-warmup",
        type=int,
        default=_env("BENCH_EMULATOR_WARMUP", 45),
        help="s of unmeasured ingest load before the first round (0: none)",
    )
    add("--rounds", type=int, default=_env("BENCH_ROUNDS", 3), help="interleaved rounds")
    add("--connections", type=int, default=DEFAULT_CONNECTIONS, help="wrk connections")
    add("--workers", type=int, default=_env("WORKERS", 1), help="WORKERS (gunicorn workers)")
    add(
        "--stack",
        choices=("auto", "h11"),
        default="auto",
        help="the async functions' server: the CLI's (auto) or uvicorn's h11/asyncio worker",
    )
    add(
        "--only",
        default=",".join(RECEIVERS),
        help=f"comma-separated receivers, in this order (default: {','.join(RECEIVERS)})",
    )
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = set(only) - set(RECEIVERS)
    if unknown or not only:
        parser.error(f"--only takes some of {', '.join(RECEIVERS)}")
    if min(args.duration, args.warmup, args.rounds, args.connections, args.workers) < 1:
        parser.error("durations, rounds, connections and workers must be at least 1")
    if args.emulator_warmup < 0:
        parser.error("--emulator-warmup must not be negative")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        emulator_warmup=args.emulator_warmup,
        rounds=args.rounds,
        connections=args.connections,
        workers=args.workers,
        stack=args.stack,
        only=only,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    raise_on_sigterm()
    wrk = ensure_binary("wrk", "wrk")
    print_header(opts)
    rounds: list[Round] = []
    try:
        with contextlib.ExitStack() as stack:
            bench = start_bench(opts, wrk, stack)
            bench.warm_up_emulator()
            for number in range(1, opts.rounds + 1):
                rounds.append(bench.run_round())
                print_round(number, opts.rounds, rounds[-1])
    except (BenchError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; all processes stopped", file=sys.stderr)
        return 130
    print_summary(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
