"""A backfill hook over a deterministic source of records, for the backfill tests.

The source is `RECORDS` numbered records; the cursor is the next record
number. Each chunk writes its records (idempotent sets) and counts its own
runs in Firestore, so tests can see which chunks ran and how often. A chunk
listed in BACKFILL_TEST_SLOW_CHUNK sleeps first, so a test can kill the
worker while it runs.
"""

from __future__ import annotations

import os
import time

from google.cloud import firestore

from handlers.hooks import BackfillChunk, ChunkResult, hooks

RECORDS = 47
OUTPUT = "test_backfill_output"
RUNS = "test_backfill_chunk_runs"


@hooks.backfill("contact")
def load_contacts(chunk: BackfillChunk) -> ChunkResult:
    db = firestore.Client()
    db.collection(RUNS).document(f"{chunk.backfill_id}:{chunk.chunk}").set(
        {"runs": firestore.Increment(1), "cursor": chunk.cursor}, merge=True
    )
    slow = os.environ.get("BACKFILL_TEST_SLOW_CHUNK")
    if slow is not None and int(slow) == chunk.chunk:
        time.sleep(float(os.environ.get("BACKFILL_TEST_SLOW_SECONDS", "30")))
    start = int(chunk.cursor or 0)
    end = min(start + chunk.max_records, RECORDS)
    batch = db.batch()
    for number in range(start, end):
        ref = db.collection(OUTPUT).document(f"{chunk.backfill_id}:{number}")
        batch.set(ref, {"backfill_id": chunk.backfill_id, "number": number})
    batch.commit()
    return ChunkResult(records=end - start, next_cursor=str(end) if end < RECORDS else None)
