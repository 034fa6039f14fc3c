"""Passes that start together: one takes the reconciler's lease, the others do nothing, at once.

With a transaction that reads and then writes the one document, two such passes on Firestore
could each abort the other until both ran out of attempts (seen: both answered 503 after 10 s).
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from handlers.reconcile import store as reconcile_store
from handlers.reconcile.store import Store

pytestmark = pytest.mark.integration
PASSES = 8


def begin_together(client: firestore.Client, now: datetime) -> list[bool]:
    """Whether each of PASSES passes, started at the same moment, took the lease."""
    stores = [Store(client, lease=timedelta(minutes=5)) for _ in range(PASSES)]
    start = threading.Barrier(PASSES)

    def begin(one: Store) -> bool:
        start.wait()
        return one.begin(now) is not None

    with ThreadPoolExecutor(PASSES) as pool:
        return list(pool.map(begin, stores))


def test_one_of_many_passes_starting_together_takes_the_lease(
    firestore_client: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_store, "COLLECTION", f"reconciler-{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC)
    # The first pass ever (no document yet), then one after a pass whose lease expired.
    assert sum(begin_together(firestore_client, now)) == 1
    assert sum(begin_together(firestore_client, now + timedelta(minutes=6))) == 1
