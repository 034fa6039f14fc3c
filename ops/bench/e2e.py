"""End-to-end latency: ingest answered 2xx -> the handler's effect committed in Firestore.

Serves the whole pipeline on the emulators (ops/local/stack.py), sends N signed
`sync.complete` webhooks, each for its own customer, from a few concurrent
senders, and records the moment each 2xx arrived. The effect is the
sync-state document the `sync-state` handler commits; its Firestore
`update_time` is the commit time. Both clocks are this machine's.

    python -m ops.bench.e2e [--events 500] [--concurrency 8] [--rate 20]

`--rate` paces the senders (events per second; 0 sends as fast as they can),
so the figure is the pipeline's latency rather than the queueing of a burst
that exceeds what the emulators can absorb on this machine.

A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from google.cloud import firestore

from handlers.store import SYNC_STATE, doc_id
from ops.local.stack import pipeline
from ops.signing import signed_headers
from shared.samples import sample

PROJECT = "bench-e2e"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def send_all(
    url: str, customers: list[str], concurrency: int, rate: float = 0
) -> tuple[dict[str, float], list[float]]:
    """Send one webhook per customer; return when each 2xx arrived, and ingest latencies."""
    template = sample("sync.complete")
    answered: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    begin = time.monotonic()
    order = {customer: index for index, customer in enumerate(customers)}

    def send(customer: str) -> None:
        if rate > 0:
            time.sleep(max(0.0, begin + order[customer] / rate - time.monotonic()))
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = json.dumps({**template, "customer_id": customer}).encode()
        started = time.time()
        response = session.post(url, data=body, headers=signed_headers(body), timeout=15)
        done = time.time()
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")
        with lock:
            answered[customer] = done
            latencies.append(done - started)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, customers))
    return answered, latencies


def wait_for_effects(
    db: firestore.Client, customers: list[str], timeout: float
) -> dict[str, float]:
    """Commit time of each customer's sync-state document, once all exist."""
    refs = {
        c: db.collection(SYNC_STATE).document(doc_id(c, "hubspot", "contact")) for c in customers
    }
    committed: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(committed) < len(customers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(committed)}/{len(customers)} effects after {timeout}s")
        missing = [refs[c] for c in customers if c not in committed]
        for snapshot in db.get_all(missing):
            if snapshot.exists and snapshot.update_time is not None:
                committed[snapshot.get("customer_id")] = snapshot.update_time.timestamp()
        time.sleep(0.2)
    return committed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    print(f"starting emulators and services (logs in {log_dir}) ...", flush=True)
    with pipeline(PROJECT, log_dir, hook_modules="") as stack:
        url = stack.spec.ingest_url
        run = uuid.uuid4().hex[:6]
        warmup = [f"warm-{run}-{i}" for i in range(20)]
        customers = [f"cust-{run}-{i}" for i in range(args.events)]
        db = firestore.Client(project=PROJECT)
        send_all(url, warmup, args.concurrency)
        wait_for_effects(db, warmup, 60)

        started = time.monotonic()
        answered, ingest_latencies = send_all(url, customers, args.concurrency, args.rate)
        committed = wait_for_effects(db, customers, 120)
        elapsed = time.monotonic() - started

    end_to_end = [(committed[c] - answered[c]) * 1000 for c in customers]
    ingest_ms = [v * 1000 for v in ingest_latencies]
    pace = f"{args.rate:g}/s" if args.rate > 0 else "unpaced"
    print(f"\nend-to-end: {args.events} events, {args.concurrency} concurrent senders, {pace}")
    print(
        f"  ingest 2xx latency      p50 {percentile(ingest_ms, 50):7.1f} ms   p99 {percentile(ingest_ms, 99):7.1f} ms"
    )
    print(
        f"  2xx -> effect committed p50 {percentile(end_to_end, 50):7.1f} ms   "
        f"p99 {percentile(end_to_end, 99):7.1f} ms   max {max(end_to_end):7.1f} ms   "
        f"mean {statistics.mean(end_to_end):7.1f} ms"
    )
    print(f"  all {args.events} effects committed {elapsed:.1f} s after the first send")
    negative = sum(1 for v in end_to_end if v < 0)
    if negative:
        print(f"  note: {negative} effects committed before the sender saw its 2xx (clock order)")


if __name__ == "__main__":
    main()
