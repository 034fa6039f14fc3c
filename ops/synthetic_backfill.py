"""A backfill hook over a synthetic source, for the backfill benchmark and the reliability suite.

The source holds BENCH_BACKFILL_RECORDS numbered records; a chunk writes up
to its record budget with batched writes (what a real hook's upserts cost),
and the cursor is the next record number. BENCH_SLOW_CHUNK makes that chunk
sleep first, so the reliability suite can kill the worker in the middle of it.
"""

from __future__ import annotations

import os
import time

from google.cloud import firestore

from handlers.hooks import BackfillChunk, ChunkResult, hooks

OUTPUT = "bench_backfill_output"
RUNS = "bench_backfill_chunk_runs"
_BATCH = 500  # Firestore's limit on writes per batch


@hooks.backfill()
def synthetic(chunk: BackfillChunk) -> ChunkResult:
    total = int(os.environ.get("BENCH_BACKFILL_RECORDS", "5000"))
    start = int(chunk.cursor or 0)
    end = min(start + chunk.max_records, total)
    db = firestore.Client()
    # Counted so the reliability suite can tell a chunk that ran twice.
    db.collection(RUNS).document(f"{chunk.backfill_id}:{chunk.chunk}").set(
        {"runs": firestore.Increment(1)}, merge=True
    )
    if os.environ.get("BENCH_SLOW_CHUNK") == str(chunk.chunk):
        time.sleep(float(os.environ.get("BENCH_SLOW_SECONDS", "30")))
    for first in range(start, end, _BATCH):
        batch = db.batch()
        for number in range(first, min(first + _BATCH, end)):
            ref = db.collection(OUTPUT).document(f"{chunk.backfill_id}:{number}")
            batch.set(ref, {"n": number, "customer_id": chunk.customer_id})
        batch.commit()
    return ChunkResult(records=end - start, next_cursor=str(end) if end < total else None)
