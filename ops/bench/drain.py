"""What a delivery costs the handlers, on the claim-first path and the one-transaction path:
Firestore operations per event type and route, and how fast the handlers drain a backlog.

    python -m ops.bench.drain [--events 1000] [--rounds 2]

1. Operations: each route's real app, in this process, its Firestore client counted
   (ops/firestore_ops.py). One delivery of each event type to every route that receives it
   in a deployment without user hooks, then the same delivery again (a duplicate).
2. Drain: every service as `make run` runs it (gunicorn, one worker, 8 threads), on the
   emulators. A burst of `sync.complete` events, each its own customer and run, is published
   at once to the events topic with the attributes the ingest function gives them; the
   figure is events per second until both their routes (alerts, sync-state) have answered
   every one, with the two services' CPU per delivery. The paths alternate in interleaved
   rounds: the services are restarted with CLAIM_EVERY_DELIVERY=true (every delivery claims
   first, as all did before) or false (the default).

A script that prints figures, not a test (tests/integration/test_one_transaction.py asserts
the behaviour).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from handlers.app import create_app
from handlers.envelope import encode_push
from handlers.hooks import HookRegistry
from handlers.runtime import Runtime
from handlers.services import handlers_for
from ops import pubsub_admin
from ops.bench.ingest import cpu_ms_of_trees
from ops.firestore_ops import Operations, count
from ops.local.stack import Stack, environment, pipeline
from shared.contract import delivery_attributes, event_attributes
from shared.events import parse_event
from shared.log import JsonLogger, TraceContext
from shared.routing import load_table
from shared.samples import sample
from shared.settings import HandlerSettings

PROJECT: Final = "bench-drain"
# The setting's value for each path.
PATHS: Final = {"claim-first": "true", "one transaction": "false"}
# What each event type's first delivery is, as the table shows it: (label, type, changes).
EVENTS: Final = [
    ("sync.complete SUCCESS", "sync.complete", {"result": "SUCCESS"}),
    ("sync.complete ERROR", "sync.complete", {"result": "ERROR"}),
    ("sync.paused", "sync.paused", {}),
    ("connection.created", "connection.created", {}),
    ("connection.deleted", "connection.deleted", {}),
    ("entity mapping change", "entity.entity_mapping.created", {}),
    ("field mapping change", "object.field_mapping.created", {}),
]
DRAINED: Final = {"event_handled", "duplicate_ignored"}
WARMUP: Final = 20


# A deployment without user hooks: the routes each event type reaches.
TABLE: Final = load_table().with_hook_events(())


def new_event(event_type: str, changes: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A sample of its own customer (and run): its body and the attributes ingest gives it."""
    payload = {**sample(event_type), **changes, "customer_id": f"bench-{uuid.uuid4().hex[:12]}"}
    if "run_id" in payload:
        payload["run_id"] = f"run-{uuid.uuid4().hex}"
    attributes = delivery_attributes(
        webhook_id=f"msg_{uuid.uuid4().hex}",
        webhook_timestamp=str(int(time.time())),
        source="supaglue",
        trace=TraceContext.new(),
    ) | event_attributes(parse_event(payload))
    return json.dumps(payload).encode(), attributes


# ---------------------------------------------------------------- operations


@dataclass(frozen=True)
class Cost:
    first: Operations
    duplicate: Operations


def operation_costs(stack: Stack) -> dict[tuple[str, str, str], Cost]:
    """(path, event label, route) -> what a first delivery and its duplicate cost."""
    costs: dict[tuple[str, str, str], Cost] = {}
    for path, claim_first in PATHS.items():
        for label, event_type, changes in EVENTS:
            for route in TABLE.routes_for(event_type):
                env = {**stack.handler_env, "SERVICE": route.service}
                with environment({**env, "CLAIM_EVERY_DELIVERY": claim_first}):
                    settings = HandlerSettings()
                lines = io.StringIO()
                logger = JsonLogger(route.service, stream=lines)
                runtime = Runtime(settings, hooks=HookRegistry(), logger=logger)
                client = create_app(handlers_for(route.service, TABLE), runtime).test_client()
                counter = count(runtime.firestore)
                data, attributes = new_event(event_type, changes)
                spent = []
                for _copy in range(2):
                    before = counter.total
                    body = encode_push(data, attributes, message_id=uuid.uuid4().hex)
                    status = client.post(route.push_path, data=body).status_code
                    if status != 204:
                        raise RuntimeError(f"{route.name} answered {status}:\n{lines.getvalue()}")
                    spent.append(counter.total - before)
                costs[(path, label, route.name)] = Cost(*spent)
    return costs


def ops_text(ops: Operations) -> str:
    return f"{ops.reads}/{ops.writes}/{ops.transactions}"


def print_costs(costs: dict[tuple[str, str, str], Cost]) -> None:
    claim_first, one = PATHS
    print("\nFirestore per delivery, reads/writes/transactions (first delivery; duplicate)")
    print(f"  {'event':<23} {'route':<19} {claim_first:<17} {one:<17}")
    for label, event_type, _ in EVENTS:
        per_webhook = {path: Operations() for path in PATHS}
        for route in TABLE.routes_for(event_type):
            old, new = costs[(claim_first, label, route.name)], costs[(one, label, route.name)]
            per_webhook[claim_first] += old.first
            per_webhook[one] += new.first
            print(
                f"  {label:<23} {route.name:<19} "
                f"{ops_text(old.first) + '; ' + ops_text(old.duplicate):<17} "
                f"{ops_text(new.first) + '; ' + ops_text(new.duplicate):<17}"
            )
        before, after = per_webhook[claim_first].billed, per_webhook[one].billed
        print(
            f"  {'':<23} {'per webhook':<19} {before} reads+writes -> {after} "
            f"({(after - before) / before:+.0%})"
        )


# ---------------------------------------------------------------- drain


@dataclass(frozen=True)
class Drain:
    path: str
    events: int
    seconds: float
    handler_cpu_ms: float
    firestore_cpu_ms: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def cpu_per_delivery(self, deliveries: int) -> float:
        return self.handler_cpu_ms / deliveries


def answered(stack: Stack, services: list[str], webhook_ids: set[str]) -> dict[str, float]:
    """webhook id -> when the last of `services` answered it (log time), for those all did."""
    seen: dict[str, list[float]] = {}
    for service in services:
        for line in stack.services[service].log().splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            webhook_id = record.get("webhook_id")
            if webhook_id in webhook_ids and record.get("event") in DRAINED:
                at = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
                seen.setdefault(webhook_id, []).append(at)
    return {w: max(times) for w, times in seen.items() if len(times) >= len(services)}


def burst(stack: Stack, services: list[str], events: int, timeout: float) -> float:
    """Publish `events` sync.complete at once; the seconds until all were answered."""
    publisher = pubsub_admin.publisher_client(stack.emulators.pubsub.host_port)
    topic = publisher.topic_path(stack.spec.project, stack.names.events_topic)
    messages = [new_event("sync.complete", {"result": "SUCCESS"}) for _ in range(events)]
    webhook_ids = {attributes["webhook_id"] for _, attributes in messages}
    started = time.time()
    futures = [publisher.publish(topic, data, **attributes) for data, attributes in messages]
    for future in futures:
        future.result(timeout=60)
    deadline = time.monotonic() + timeout
    while True:
        done = answered(stack, services, webhook_ids)
        if len(done) == events:
            return max(done.values()) - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(done)}/{events} handled after {timeout:.0f} s")
        time.sleep(0.5)


def drain(stack: Stack, path: str, events: int) -> Drain:
    services = sorted({route.service for route in TABLE.routes_for("sync.complete")})
    for service in services:
        stack.restart(service, CLAIM_EVERY_DELIVERY=PATHS[path])
    burst(stack, services, WARMUP, timeout=120)
    pids = [stack.services[s].pid for s in services]
    firestore_pid = stack.emulators.firestore.process.pid
    before = cpu_ms_of_trees([*pids, firestore_pid])
    seconds = burst(stack, services, events, timeout=max(120, events))
    after = cpu_ms_of_trees([*pids, firestore_pid])
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return Drain(path, events, seconds, sum(spent[:-1]), spent[-1])


def print_drains(drains: list[Drain], events: int) -> None:
    deliveries = events * len(TABLE.routes_for("sync.complete"))
    print(f"\nDrain: {events} sync.complete published at once, {deliveries} deliveries a round")
    print(
        f"  {'path':<17} {'events/s by round':<24} {'median':>7} "
        f"{'handler CPU ms/delivery':>24} {'emulator CPU ms/event':>22}"
    )
    medians: dict[str, tuple[float, float]] = {}
    for path in PATHS:
        mine = [d for d in drains if d.path == path]
        rate = statistics.median(d.rate for d in mine)
        cpu = statistics.median(d.cpu_per_delivery(deliveries) for d in mine)
        emulator = statistics.median(d.firestore_cpu_ms / events for d in mine)
        medians[path] = (rate, cpu)
        rounds = ", ".join(f"{d.rate:.1f}" for d in mine)
        print(f"  {path:<17} {rounds:<24} {rate:7.1f} {cpu:24.2f} {emulator:22.2f}")
    (old_rate, old_cpu), (new_rate, new_cpu) = medians.values()
    print(
        f"  one transaction / claim-first: drain {new_rate / old_rate:.2f}x, "
        f"handler CPU per delivery {new_cpu / old_cpu:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    print(f"starting emulators and services (logs in {log_dir}) ...", flush=True)
    with pipeline(PROJECT, log_dir, hook_modules="", with_ingest=False) as stack:
        print_costs(operation_costs(stack))
        drains = []
        for round_number in range(args.rounds):
            for path in PATHS:
                print(f"  round {round_number + 1}: {path} ...", flush=True)
                drains.append(drain(stack, path, args.events))
        print_drains(drains, args.events)


if __name__ == "__main__":
    main()
