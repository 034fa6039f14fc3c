"""Duplicate deliveries of one chunk that start together: one takes the record's lease, the
others are told at once that the chunk runs elsewhere (a quiet retry), never a storage error.

Cloud Tasks delivers a task at least once, so two attempts at the same chunk can arrive
together. A transaction that reads and then writes the one record lets them abort each other.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from handlers.backfill_store import BackfillStore
from handlers.errors import Busy
from handlers.lease import EXPIRES, Lease

pytestmark = pytest.mark.integration
ATTEMPTS = 8


def claim_together(client: firestore.Client, backfill: str, chunk: int) -> list[Lease | str]:
    """What each of ATTEMPTS attempts, started at the same moment, got: a lease or 'busy'."""
    stores = [BackfillStore(client, lease=timedelta(minutes=5)) for _ in range(ATTEMPTS)]
    start = threading.Barrier(ATTEMPTS)

    def claim(store: BackfillStore) -> Lease | str:
        start.wait()
        try:
            lease = store.claim_chunk(store.read(backfill), chunk)
        except Busy:
            return "busy"
        return lease

    with ThreadPoolExecutor(ATTEMPTS) as pool:
        return list(pool.map(claim, stores))


def test_one_of_many_attempts_at_a_chunk_takes_the_lease_and_the_others_are_busy(
    firestore_client: firestore.Client,
) -> None:
    backfill = f"bf-{uuid.uuid4().hex}"
    store = BackfillStore(firestore_client, lease=timedelta(minutes=5))
    assert store.create(backfill, {"customer_id": "c", "provider_name": "hubspot"})

    got = claim_together(firestore_client, backfill, 0)
    leases = [one for one in got if isinstance(one, Lease)]
    assert len(leases) == 1, got
    assert got.count("busy") == ATTEMPTS - 1

    # The chunk commits, and the next chunk's duplicates race for the released lease.
    assert store.commit_chunk(leases[0], 0, records=3, next_cursor="c1")
    got = claim_together(firestore_client, backfill, 1)
    assert sum(isinstance(one, Lease) for one in got) == 1, got
    record = store.get(backfill)
    assert record is not None
    assert record["state"] == "running"
    assert record["chunks_done"] == 1
    assert record["cursor"] == "c1"

    # The holder crashed and its lease expired: the retries all find it free at once.
    store.ref(backfill).update({EXPIRES: datetime.now(UTC) - timedelta(seconds=1)})
    got = claim_together(firestore_client, backfill, 1)
    assert sum(isinstance(one, Lease) for one in got) == 1, got
