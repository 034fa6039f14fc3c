"""Backfill throughput: records per second through a 10-chunk backfill on the emulators.

A signed `object.field_mapping.updated` webhook goes in at the ingest
function; Pub/Sub pushes it to the scheduler, which creates the backfill and
its first Cloud Task; the worker runs chunk after chunk (each writing its
records to Firestore in batches, then enqueueing the next task) until done.
The rate is records / (finished_at - started_at) from the backfill record.

    python -m ops.bench.backfill [--chunks 10] [--chunk-records 500]

A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import requests
from google.cloud import firestore

from handlers.backfill_store import backfill_id
from handlers.store import BACKFILLS
from ops.local.stack import pipeline
from ops.signing import signed_headers
from shared.samples import sample

PROJECT = "bench-backfill"
HOOK = "ops.synthetic_backfill.synthetic"


def run_backfill(url: str, db: firestore.Client, timeout: float) -> dict[str, object]:
    payload = sample("object.field_mapping.updated")
    payload |= {"customer_id": f"bench-{uuid.uuid4().hex[:8]}", "result": "SUCCESS"}
    body = json.dumps(payload).encode()
    headers = signed_headers(body)
    sent = time.time()
    response = requests.post(url, data=body, headers=headers, timeout=15)
    response.raise_for_status()
    ref = db.collection(BACKFILLS).document(backfill_id(headers["svix-id"], HOOK))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = ref.get().to_dict() or {}
        if record.get("state") in ("done", "failed", "cancelled"):
            return {**record, "sent_at": sent}
        time.sleep(0.1)
    raise RuntimeError(f"backfill not finished after {timeout}s: {ref.get().to_dict()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--chunk-records", type=int, default=500)
    args = parser.parse_args()
    total = args.chunks * args.chunk_records

    log_dir = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    print(f"starting emulators and services (logs in {log_dir}) ...", flush=True)
    with pipeline(
        PROJECT,
        log_dir,
        hook_modules="ops.synthetic_backfill",
        extra_env={
            "BENCH_BACKFILL_RECORDS": str(total),
            "BACKFILL_CHUNK_MAX_RECORDS": str(args.chunk_records),
        },
    ) as stack:
        db = firestore.Client(project=PROJECT)
        record = run_backfill(stack.spec.ingest_url, db, timeout=300)

    if record["state"] != "done":
        raise SystemExit(f"backfill ended {record['state']}: {record.get('last_error')}")
    started = record["started_at"].timestamp()  # type: ignore[attr-defined]
    finished = record["finished_at"].timestamp()  # type: ignore[attr-defined]
    records = int(record["records"])  # type: ignore[call-overload]
    print(f"\nbackfill: {record['chunks_done']} chunks, {records} records")
    print(
        f"  first chunk -> done   {finished - started:6.2f} s   {records / (finished - started):8.0f} records/s"
    )
    print(f"  webhook sent -> done  {finished - float(record['sent_at']):6.2f} s")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
