"""Reliability suite: load, faults and bad input on the emulators, with nothing lost or doubled.

    python -m ops.reliability [--events 10000] [--senders 64] [--dropped-events 1000]
                              [--phase load|faults|dropped|all]

load    N signed webhooks of mixed types from concurrent senders; 10% are
        delivered twice and 2% three times, as Svix retries do. Checks: zero
        5xx from ingest, and every event's effect exactly once.
faults  (1) the Pub/Sub emulator is frozen in the middle of a burst: ingest
        must answer 503 for what it could not store, never 2xx; senders retry
        like Svix (same svix-id) and, once it is back, everything is stored
        once. (2) a handler service is killed mid-burst and restarted: zero
        lost, zero doubled. (3) the backfill worker is killed mid-backfill: it
        completes, and no committed chunk runs again.
dropped "webhooks dropped before ingest": N sync runs in the fake Supaglue API, 10% of their
        webhooks never sent (as when Svix gave up). Two reconciliation passes at once, then
        passes until one covers everything: every run's effect exactly once, the dropped
        ones recovered (one events_reconciled line each), and their webhooks, delivered
        late afterwards, change nothing. It runs first, on a registry no other phase
        filled, so a pass compares only its own runs.
Bad input is property-based fuzzing with hypothesis (tests/unit/test_fuzz_ingest.py,
tests/integration/test_fuzz_push.py); `make reliability` runs it too.

Prints its figures; exits non-zero on any violation. Everything runs on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import requests
from google.cloud import firestore
from google.protobuf import timestamp_pb2

from handlers.backfill_store import backfill_id
from handlers.idempotency import event_key
from handlers.ledger import Ledger
from handlers.reconcile.passes import RECOVERED
from handlers.reconcile.synthetic import run_webhook_id
from handlers.store import BACKFILLS, CONNECTIONS, SYNC_STATE, doc_id
from ops import pubsub_admin, synthetic_backfill
from ops.local.stack import Stack, pipeline
from ops.local.topology import Delivery
from ops.signing import signed_headers
from shared.events import normalise_customer_id, parse_event
from shared.routing import routes_for
from shared.samples import SAMPLES_DIR, sample

PROJECT: Final = "reliability"
BACKFILL_HOOK: Final = "ops.synthetic_backfill.synthetic"
# No handler progress for this long while events are pending: the emulator gave up on them.
STALL_SECONDS: Final = 15.0
# Svix's schedule (immediately, 5 s, 5 min, ...) compressed so a run takes minutes.
RETRY_DELAYS: Final = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0)
MIX: Final[tuple[tuple[str, dict[str, Any], int], ...]] = (
    ("sync.complete", {"result": "SUCCESS"}, 40),
    ("sync.complete", {"result": "ERROR", "num_records_synced": 0}, 15),
    ("sync.paused", {"pause_reason": "Unauthorized: token revoked"}, 8),
    ("connection.created", {"result": "SUCCESS"}, 10),
    ("connection.deleted", {}, 8),
    ("object.field_mapping.updated", {"result": "SUCCESS"}, 2),
    ("brand.new_event", {}, 5),
    ("sync.paused", {}, 12),
)


class Violation(AssertionError):
    """What the suite promises did not hold."""


@dataclass
class Event:
    webhook_id: str
    event_type: str
    payload: dict[str, Any]
    deliveries: int
    body: bytes = b""
    statuses: list[int] = field(default_factory=list)
    stored_at: float | None = None

    def __post_init__(self) -> None:
        self.body = json.dumps(self.payload).encode()


def make_events(count: int, rng: random.Random) -> list[Event]:
    """Mixed types, each for its own customer so every effect can be checked alone."""
    weights = [weight for _, _, weight in MIX]
    events = []
    for number in range(count):
        event_type, changes, _ = rng.choices(MIX, weights)[0]
        customer = f"c{number}-{uuid.uuid4().hex[:6]}"
        sample = SAMPLES_DIR / f"{event_type}.json"
        base = json.loads(sample.read_text()) if sample.exists() else {}
        payload = {
            **base,
            "webhook_event_type": event_type,
            "customer_id": customer,
            "provider_name": "hubspot",
            **changes,
        }
        if event_type == "connection.deleted":
            payload["customer_id"] = f"app:{customer}"
        if event_type == "object.field_mapping.updated":
            payload["object_name"] = "contact"
        if "run_id" in payload:
            payload["run_id"] = f"run-{uuid.uuid4().hex}"
        roll = rng.random()
        deliveries = 3 if roll < 0.02 else 2 if roll < 0.12 else 1
        events.append(Event(f"msg_{uuid.uuid4().hex}", event_type, payload, deliveries))
    return events


class Sender:
    """Delivers like Svix: every delivery retried with the same svix-id until a 2xx."""

    def __init__(self, url: str, senders: int) -> None:
        self._url = url
        self._pool = ThreadPoolExecutor(senders)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.latencies: list[float] = []

    def deliver_all(self, events: list[Event], rng: random.Random) -> None:
        deliveries = [event for event in events for _ in range(event.deliveries)]
        rng.shuffle(deliveries)
        list(self._pool.map(self._deliver, deliveries))

    def _deliver(self, event: Event) -> None:
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        for delay in RETRY_DELAYS:
            time.sleep(delay)
            started = time.time()
            try:
                status = session.post(
                    self._url,
                    data=event.body,
                    headers=signed_headers(event.body, webhook_id=event.webhook_id),
                    timeout=20,
                ).status_code
            except requests.RequestException:
                status = 0
            finished = time.time()
            with self._lock:
                event.statuses.append(status)
                if 200 <= status < 300:
                    self.latencies.append(finished - started)
                    event.stored_at = min(event.stored_at or finished, finished)
            if 200 <= status < 300:
                return


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Checker:
    """Reads the effects back and compares them with what was sent."""

    stack: Stack
    db: firestore.Client = field(default_factory=lambda: firestore.Client(project=PROJECT))

    def ledger_states(self, events: list[Event]) -> dict[tuple[str, str], str | None]:
        ledger = Ledger(self.db, lease_seconds=1, retention=timedelta(days=1))
        pairs = [
            (route.name, event_key(parse_event(e.payload), e.webhook_id))
            for e in events
            for route in routes_for(e.event_type)
        ]
        refs = [ledger.ref(name, webhook_id) for name, webhook_id in pairs]
        found = {
            snapshot.id: (snapshot.to_dict() or {}).get("state")
            for snapshot in self.db.get_all(refs)
            if snapshot.exists
        }
        return {pair: found.get(ref.id) for pair, ref in zip(pairs, refs, strict=True)}

    redeliveries: int = 0

    def wait_until_handled(self, events: list[Event], timeout: float) -> float:
        """Wait until every routed (handler, event) is done in the ledger; return when."""
        deadline = time.monotonic() + timeout
        pending = events
        progress_at, left = time.monotonic(), len(events) + 1
        while True:
            states = self.ledger_states(pending)
            unfinished = {pair for pair, state in states.items() if state != "done"}
            open_ = {key for _, key in unfinished}
            if not open_:
                return time.time()
            if time.monotonic() > deadline:
                raise Violation(f"{len(open_)} events not handled after {timeout:.0f}s")
            if len(open_) < left:
                progress_at, left = time.monotonic(), len(open_)
            elif time.monotonic() - progress_at > STALL_SECONDS:
                stored = [e.stored_at for e in pending if e.stored_at is not None]
                since = min(stored, default=time.time()) - 5
                self.redeliver({route for route, _ in unfinished}, since)
                progress_at = time.monotonic()
            pending = [
                e for e in pending if event_key(parse_event(e.payload), e.webhook_id) in open_
            ]
            time.sleep(1.0)

    def redeliver(self, routes: set[str], since: float) -> None:
        """Deliver again what the emulator gave up on, as the real service's retries would.

        The emulator pushes a message that keeps failing only a few times, within about
        ten seconds, and then never again, not even to its dead-letter topic (README, Local
        runs). A handler killed mid-burst makes pushes fail for as long as its attempts'
        leases live. The real service keeps retrying with the retry policy's backoff; a seek
        of the routes still waiting, back to before their oldest pending event, does the
        same here (the ledger skips what already took effect).
        """
        subscriber = pubsub_admin.subscriber_client(self.stack.emulators.pubsub.host_port)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromSeconds(int(since))
        for route in sorted(routes):
            name = subscriber.subscription_path(PROJECT, self.stack.names.subscription(route))
            subscriber.seek(request={"subscription": name, "time": stamp})
        self.redeliveries += 1

    def wait_for_backfills(self, events: list[Event], timeout: float) -> None:
        """Backfills run on after their trigger was handled: wait for them to end."""
        deadline = time.monotonic() + timeout
        while True:
            running = [
                event
                for event, snapshot in self._documents(events, "object.", self._backfill_ref)
                if (snapshot.to_dict() or {}).get("state") in (None, "scheduled", "running")
            ]
            if not running or time.monotonic() > deadline:
                return
            time.sleep(1.0)

    def effects(self, events: list[Event]) -> dict[str, float]:
        """Check each event's effect happened exactly once; return sync-state commit times."""
        problems: list[str] = []
        committed: dict[str, float] = {}
        for event, snapshot in self._documents(events, "sync.complete", self._sync_state_ref):
            data = snapshot.to_dict() or {}
            expected_failures = 1 if event.payload["result"] == "ERROR" else 0
            if (data.get("total_runs"), data.get("consecutive_failures")) != (1, expected_failures):
                problems.append(
                    f"{event.webhook_id}: sync state runs {data.get('total_runs')}, "
                    f"failures {data.get('consecutive_failures')}"
                )
            elif snapshot.update_time is not None:
                committed[event.webhook_id] = snapshot.update_time.timestamp()
        for prefix, ref in (("connection.", self._connection_ref), ("object.", self._backfill_ref)):
            for event, snapshot in self._documents(events, prefix, ref):
                data = snapshot.to_dict() or {}
                if prefix == "connection." and data.get("last_webhook_id") != event.webhook_id:
                    problems.append(f"{event.webhook_id}: connection registry not updated")
                if prefix == "object." and data.get("state") != "done":
                    problems.append(f"{event.webhook_id}: backfill {data.get('state')}")

        alert_lines = Counter(
            (line.get("event"), line.get("webhook_id")) for line in self.log_lines("alerts")
        )
        for event in events:
            expected = self._expected_alert(event)
            if expected and alert_lines[(expected, event.webhook_id)] != 1:
                problems.append(
                    f"{event.webhook_id}: {alert_lines[(expected, event.webhook_id)]} {expected} lines"
                )
        dead = self.dead_letters()
        if dead:
            problems.append(f"{dead} messages on dead-letter topics")
        if problems:
            raise Violation(f"{len(problems)} problems, first: " + "; ".join(problems[:5]))
        return committed

    def _documents(
        self, events: list[Event], type_prefix: str, ref: Callable[[Event], Any]
    ) -> Iterator[tuple[Event, Any]]:
        """Each matching event with its effect document, read in one batch."""
        chosen = [e for e in events if e.event_type.startswith(type_prefix)]
        refs = {ref(e).path: e for e in chosen}
        for snapshot in self.db.get_all([ref(e) for e in chosen]):
            yield refs[snapshot.reference.path], snapshot

    def _sync_state_ref(self, event: Event) -> Any:
        key = doc_id(event.payload["customer_id"], "hubspot", event.payload["object"])
        return self.db.collection(SYNC_STATE).document(key)

    def _connection_ref(self, event: Event) -> Any:
        customer = normalise_customer_id(event.payload["customer_id"])
        return self.db.collection(CONNECTIONS).document(doc_id(customer, "hubspot"))

    def _backfill_ref(self, event: Event) -> Any:
        return self.db.collection(BACKFILLS).document(backfill_id(event.webhook_id, BACKFILL_HOOK))

    @staticmethod
    def _expected_alert(event: Event) -> str | None:
        if event.event_type == "sync.complete" and event.payload["result"] == "ERROR":
            return "sync_failed"
        if event.event_type == "sync.paused":
            return "reconnect_required" if event.payload.get("pause_reason") else "sync_paused"
        return None

    def log_lines(self, service: str) -> Iterator[dict[str, Any]]:
        for line in self.stack.services[service].log().splitlines():
            if line.startswith("{"):
                yield json.loads(line)

    def dead_letters(self) -> int:
        subscriber = pubsub_admin.subscriber_client(self.stack.emulators.pubsub.host_port)
        names = self.stack.names
        count = 0
        for route in self.stack.spec.routing.active_routes():
            path = subscriber.subscription_path(
                PROJECT, names.watch_subscription(names.dead_letter_topic(route.name))
            )
            count += len(pubsub_admin.pull(subscriber, path, ack=False))
        return count


def report(
    name: str, events: list[Event], sender: Sender, sent_for: float, committed: dict[str, float]
) -> None:
    deliveries = sum(len(e.statuses) for e in events)
    statuses = Counter(s for e in events for s in e.statuses)
    e2e = [
        (committed[e.webhook_id] - e.stored_at) * 1000
        for e in events
        if e.webhook_id in committed and e.stored_at is not None
    ]
    ingest = [v * 1000 for v in sender.latencies]
    print(
        f"\n[{name}] {len(events)} events, {deliveries} requests ({dict(sorted(statuses.items()))})"
    )
    print(f"  ingest throughput      {deliveries / sent_for:8.1f} requests/s over {sent_for:.1f} s")
    print(
        f"  ingest latency (2xx)   p50 {percentile(ingest, 50):7.1f} ms   p99 {percentile(ingest, 99):7.1f} ms"
    )
    if e2e:
        print(
            f"  2xx -> sync state      p50 {percentile(e2e, 50):7.1f} ms   p99 {percentile(e2e, 99):7.1f} ms"
            f"   (mean {statistics.mean(e2e):.1f} ms, {len(e2e)} events)"
        )


def run_load(
    stack: Stack,
    count: int,
    senders: int,
    rng: random.Random,
    *,
    drain: float,
    name: str = "load",
) -> list[Event]:
    events = make_events(count, rng)
    sender = Sender(stack.spec.ingest_url, senders)
    started_wall = time.time()
    started = time.monotonic()
    sender.deliver_all(events, rng)
    sent_for = time.monotonic() - started
    fivexx = sum(1 for e in events for s in e.statuses if s >= 500 or s == 0)
    if name == "load" and fivexx:
        raise Violation(f"ingest answered {fivexx} requests with 5xx under load")
    unstored = [e.webhook_id for e in events if e.stored_at is None]
    if unstored:
        raise Violation(f"{len(unstored)} events never got a 2xx")
    checker = Checker(stack)
    handled_at = checker.wait_until_handled(events, timeout=drain)
    checker.wait_for_backfills(events, timeout=drain)
    committed = checker.effects(events)
    report(name, events, sender, sent_for, committed)
    print(f"  all handled            {handled_at - started_wall:.1f} s after the first request")
    if checker.redeliveries:
        print(
            f"  emulator gave up       {checker.redeliveries} time(s); "
            "the routes still waiting were sought back, as the real service would retry"
        )
    return events


def fault_pubsub_frozen(
    stack: Stack, count: int, senders: int, rng: random.Random, drain: float
) -> None:
    """Freeze the Pub/Sub emulator mid-burst; 503s only, then everything stored once."""
    pubsub = stack.emulators.pubsub

    def freeze_then_thaw() -> None:
        time.sleep(1.0)
        os.killpg(pubsub.process.pid, signal.SIGSTOP)
        time.sleep(6.0)
        os.killpg(pubsub.process.pid, signal.SIGCONT)

    chaos = threading.Thread(target=freeze_then_thaw)
    chaos.start()
    try:
        events = run_load(stack, count, senders, rng, drain=drain, name="faults: pubsub frozen")
    finally:
        chaos.join()
    refused = sum(1 for e in events for s in e.statuses if s == 503)
    other = Counter(s for e in events for s in e.statuses if not (200 <= s < 300 or s == 503))
    print(
        f"  503 while frozen       {refused} requests (retried by the sender); other failures {dict(other)}"
    )
    if other:
        raise Violation(f"unexpected statuses while Pub/Sub was frozen: {dict(other)}")


def fault_handler_killed(
    stack: Stack, count: int, senders: int, rng: random.Random, drain: float
) -> None:
    """SIGKILL the transforms service's worker process mid-burst; its supervisor starts a new one.

    Like a crashed instance: requests in flight die with it, whatever it had
    claimed but not finished must be taken over once the lease expires, and
    nothing may be lost or done twice.
    """
    master = stack.services["transforms"].pid

    def kill_worker() -> None:
        time.sleep(2.0)
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)

    chaos = threading.Thread(target=kill_worker)
    chaos.start()
    try:
        run_load(stack, count, senders, rng, drain=drain, name="faults: handler killed")
    finally:
        chaos.join()


def fault_worker_killed(stack: Stack) -> None:
    """Kill the worker in the middle of a chunk; the backfill completes, committed chunks once."""
    worker = stack.spec.routing.worker.name
    stack.restart(worker, BENCH_SLOW_CHUNK="2")
    payload = sample("object.field_mapping.updated")
    payload |= {
        "customer_id": f"worker-kill-{uuid.uuid4().hex[:6]}",
        "result": "SUCCESS",
        "object_name": "contact",
    }
    body = json.dumps(payload).encode()
    headers = signed_headers(body)
    requests.post(stack.spec.ingest_url, data=body, headers=headers, timeout=20).raise_for_status()
    backfill = backfill_id(headers["svix-id"], BACKFILL_HOOK)
    db = firestore.Client(project=PROJECT)
    runs = db.collection(synthetic_backfill.RUNS)
    deadline = time.monotonic() + 120
    while not runs.document(f"{backfill}:2").get().exists:
        if time.monotonic() > deadline:
            raise Violation("chunk 2 never started")
        time.sleep(0.2)
    stack.services[worker].kill()
    stack.restart(worker)
    while (db.collection(BACKFILLS).document(backfill).get().to_dict() or {}).get(
        "state"
    ) != "done":
        if time.monotonic() > deadline:
            raise Violation("backfill did not complete after the worker was killed")
        time.sleep(0.2)
    record = db.collection(BACKFILLS).document(backfill).get().to_dict() or {}
    counts = [
        (runs.document(f"{backfill}:{c}").get().to_dict() or {}).get("runs")
        for c in range(int(record["chunks_done"]))
    ]
    print(
        f"\n[faults: worker killed] chunks {record['chunks_done']}, records {record['records']}, runs per chunk {counts}"
    )
    if record["records"] != int(stack.handler_env["BENCH_BACKFILL_RECORDS"]):
        raise Violation(f"backfill committed {record['records']} records")
    if any(runs_ != 1 for number, runs_ in enumerate(counts) if number != 2):
        raise Violation(f"a committed chunk ran again: {counts}")


def webhooks_dropped(
    stack: Stack, count: int, senders: int, rng: random.Random, drain: float
) -> None:
    """Sync runs whose webhooks were never sent are recovered by reconciliation, once each."""
    events = [e for e in make_events(count * 4, rng) if e.event_type == "sync.complete"][:count]
    for event in events:
        payload = event.payload
        stack.supaglue.add_run(
            id=payload["run_id"],
            customer_id=payload["customer_id"],
            provider_name=payload["provider_name"],
            connection_id=payload["connection_id"],
            object=payload["object"],
            status="SUCCESS" if payload["result"] == "SUCCESS" else "FAILURE",
            num_records_synced=payload.get("num_records_synced") or 0,
        )
    dropped = rng.sample(events, len(events) // 10)
    kept = [e for e in events if e not in dropped]
    sender = Sender(stack.spec.ingest_url, senders)
    started = time.monotonic()
    sender.deliver_all(kept, rng)
    checker = Checker(stack)
    checker.wait_until_handled(kept, timeout=drain)
    url = stack.spec.service_url(stack.spec.routing.reconciler.name) + "/reconcile"  # type: ignore[union-attr]

    def one_pass(_: object = None) -> dict[str, Any]:
        answer: dict[str, Any] = requests.post(url, timeout=600).json()
        return answer

    # Two passes at once (a scheduler retry beside the next call): the lease lets one run.
    with ThreadPoolExecutor(2) as pool:
        passes = list(pool.map(one_pass, range(2)))
    while passes[-1]["outcome"] != "reconcile_pass" or passes[-1]["stopped_by"] is not None:
        if len(passes) > 20:
            raise Violation(f"reconciliation never completed: {passes[-1]}")
        passes.append(one_pass())
    # Recovered: their effects, keyed on the run, are done in every ledger.
    checker.wait_until_handled(events, timeout=drain)
    lines = Counter(
        line.get("webhook_id")
        for line in checker.log_lines("reconciler")
        if line.get("event") == RECOVERED
    )
    expected = {run_webhook_id(e.payload["run_id"]) for e in dropped}
    if set(lines) != expected or any(n != 1 for n in lines.values()):
        raise Violation(
            f"recovered {len(lines)} events for {len(expected)} dropped webhooks "
            f"({sum(n > 1 for n in lines.values())} more than once)"
        )
    # The dropped webhooks arrive late, after their runs were recovered: nothing changes.
    late = Sender(stack.spec.ingest_url, senders)
    late.deliver_all(dropped, rng)
    deadline = time.monotonic() + drain
    late_ids = {e.webhook_id for e in dropped}
    while True:
        ignored = Counter(
            line.get("webhook_id")
            for service in ("alerts", "transforms")
            for line in checker.log_lines(service)
            if line.get("event") == "duplicate_ignored" and line.get("webhook_id") in late_ids
        )
        if all(ignored[w] >= 2 for w in late_ids):
            break
        if time.monotonic() > deadline:
            raise Violation(f"{sum(ignored[w] < 2 for w in late_ids)} late webhooks not seen")
        time.sleep(1.0)
    # Effects exactly once; a recovered run's alert carries its reconciled id.
    as_recovered = [
        Event(run_webhook_id(e.payload["run_id"]), e.event_type, e.payload, 1)
        if e in dropped
        else e
        for e in events
    ]
    checker.effects(as_recovered)
    doubled = [
        line
        for line in checker.log_lines("alerts")
        if line.get("webhook_id") in late_ids and line.get("event") == "sync_failed"
    ]
    if doubled:
        raise Violation(f"{len(doubled)} late webhooks alerted again")
    statuses = Counter(s for e in events for s in e.statuses)
    recovered = sum(p.get("events_reconciled", 0) for p in passes)
    print(
        f"\n[webhooks dropped before ingest] {len(events)} sync runs, {len(dropped)} webhooks "
        f"never sent, {len(kept)} delivered ({dict(sorted(statuses.items()))})"
    )
    print(
        f"  reconciliation         {len(passes)} passes "
        f"({', '.join(p['outcome'] for p in passes)}), {recovered} events recovered, "
        f"{sum(p.get('requests', 0) for p in passes)} API requests"
    )
    print(
        f"  every effect once      {len(events)} sync states with one run each; "
        f"{len(dropped)} late webhooks ignored as duplicates; "
        f"{time.monotonic() - started:.1f} s in all"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--fault-events", type=int, default=1_000)
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--dropped-events", type=int, default=1_000)
    parser.add_argument(
        "--phase",
        choices=["load", "pubsub", "handler", "worker", "faults", "dropped", "all"],
        default="all",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=900,
        help="how long effects may take to appear; the emulator's push backoff grows to minutes "
        "after many failed pushes, whatever the retry policy says",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)  # noqa: S311 (a reproducible mix, not a secret)
    log_dir = Path(tempfile.mkdtemp(prefix="reliability-"))
    print(f"starting emulators and services (logs in {log_dir}) ...", flush=True)
    try:
        with pipeline(
            PROJECT,
            log_dir,
            hook_modules="ops.synthetic_backfill",
            extra_env={
                "BENCH_BACKFILL_RECORDS": "40",
                "BACKFILL_CHUNK_MAX_RECORDS": "10",
                "LEDGER_LEASE_SECONDS": "10",
            },
            # A frozen Pub/Sub answers nothing: ingest gives up (503) after this.
            ingest_extra_env={"PUBLISH_TIMEOUT_SECONDS": "3"},
            # Enough attempts to ride out a handler restart of a few seconds, as the
            # cloud's longer backoff does; dead-lettering is covered by the tests.
            delivery=Delivery(
                max_delivery_attempts=20, minimum_backoff_seconds=1, maximum_backoff_seconds=5
            ),
            # Passes read every page and every customer in one go.
            reconciler_env={"RECONCILE_MAX_REQUESTS": "100000", "RECONCILE_RETRIES": "6"},
        ) as stack:
            faults = args.phase in ("faults", "all")
            # First: its passes must see a registry that only its own runs filled.
            if args.phase in ("dropped", "all"):
                webhooks_dropped(stack, args.dropped_events, args.senders, rng, args.drain_timeout)
            if args.phase in ("load", "all"):
                run_load(stack, args.events, args.senders, rng, drain=args.drain_timeout)
            if faults or args.phase == "pubsub":
                fault_pubsub_frozen(stack, args.fault_events, args.senders, rng, args.drain_timeout)
            if faults or args.phase == "handler":
                fault_handler_killed(
                    stack, args.fault_events, args.senders, rng, args.drain_timeout
                )
            if faults or args.phase == "worker":
                fault_worker_killed(stack)
    except Violation as exc:
        print(f"\nVIOLATION: {exc}\n(logs in {log_dir})")
        return 1
    print("\nall reliability checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
