"""Backfill records in Firestore (`backfills/{id}`): state, cursor and progress.

A record is created by the scheduler (handlers/scheduler.py) and advanced by
the worker (handlers/worker.py), one chunk at a time: a chunk takes the
record's lease, and commits its cursor in a transaction that also checks the
chunk is still the next one and the backfill was not cancelled meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from handlers.errors import Busy, LeaseLost
from handlers.lease import RELEASED, Lease, Leases
from handlers.store import BACKFILLS


class BackfillState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: Final = frozenset({BackfillState.DONE, BackfillState.FAILED, BackfillState.CANCELLED})
UNFINISHED: Final = (BackfillState.SCHEDULED.value, BackfillState.RUNNING.value)


def backfill_id(trigger_webhook_id: str, hook_name: str) -> str:
    """Deterministic: the same trigger and hook always name the same backfill."""
    digest = hashlib.sha256(f"{trigger_webhook_id}\n{hook_name}".encode()).hexdigest()
    return f"bf-{digest[:32]}"


class BackfillStore:
    def __init__(self, db: firestore.Client, *, lease: timedelta) -> None:
        self._db = db
        self._leases = Leases(db, lease)

    def ref(self, backfill: str) -> firestore.DocumentReference:
        return self._db.collection(BACKFILLS).document(backfill)

    def get(self, backfill: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.read(backfill).to_dict()
        return record

    def read(self, backfill: str) -> firestore.DocumentSnapshot[Any]:
        """The record as stored now; `claim_chunk` takes the lease only if it is still so."""
        snapshot: firestore.DocumentSnapshot[Any] = self.ref(backfill).get()
        return snapshot

    def create(self, backfill: str, record: dict[str, Any]) -> bool:
        """Write a new record, scheduled; False when it exists already."""
        now = datetime.now(UTC)
        try:
            self.ref(backfill).create(
                {
                    **record,
                    "state": BackfillState.SCHEDULED.value,
                    "cursor": None,
                    "chunks_done": 0,
                    "records": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        except api_exceptions.AlreadyExists:
            return False
        return True

    def unfinished_for(self, customer_id: str, provider_name: str) -> Iterator[str]:
        """Ids of the backfills of a customer's connection that are scheduled or running."""
        query = (
            self._db.collection(BACKFILLS)
            .where(filter=firestore.FieldFilter("customer_id", "==", customer_id))
            .where(filter=firestore.FieldFilter("provider_name", "==", provider_name))
            .where(filter=firestore.FieldFilter("state", "in", list(UNFINISHED)))
        )
        for snapshot in query.stream():
            yield snapshot.id

    def cancel(self, backfill: str) -> None:
        """Mark the backfill cancelled unless it already ended; its next chunk stops."""
        ref = self.ref(backfill)

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> None:
            current = ref.get(transaction=transaction).to_dict() or {}
            if current and current.get("state") not in FINAL_STATES:
                now = datetime.now(UTC)
                transaction.update(
                    ref,
                    {"state": BackfillState.CANCELLED.value, "finished_at": now, "updated_at": now},
                )

        run(self._db.transaction())

    def claim_chunk(self, snapshot: firestore.DocumentSnapshot[Any], chunk: int) -> Lease:
        """Take the lease of the unfinished record `snapshot` read, for `chunk`.

        Busy if another attempt holds the lease, or if anyone wrote the record since it was
        read (another attempt took the lease, committed a chunk, or the backfill ended):
        duplicate deliveries of a task arrive together, and the retry sees who won. A chunk
        thus runs from the cursor of the very record it leased.
        """
        backfill = snapshot.reference.id
        current = snapshot.to_dict() or {}
        if current.get("state") in FINAL_STATES:
            raise ValueError(f"backfill {backfill} has ended: its chunks take no lease")
        now = datetime.now(UTC)
        if Leases.is_held(current, now):
            raise Busy(f"chunk {chunk} of {backfill} is running elsewhere")
        lease, held = self._leases.grant(snapshot.reference, now)
        update: dict[str, Any] = {"state": BackfillState.RUNNING.value, **held, "updated_at": now}
        if "started_at" not in current:
            update["started_at"] = now
        if not self._leases.take_over(snapshot, update):
            raise Busy(f"chunk {chunk} of {backfill} changed since it was read")
        return lease

    def release_chunk(self, lease: Lease, error: str) -> None:
        """Let another attempt run the chunk at once, from the last committed cursor."""
        self._leases.release(lease, {"last_error": error[:1500], "updated_at": datetime.now(UTC)})

    def commit_chunk(
        self, lease: Lease, chunk: int, *, records: int, next_cursor: str | None
    ) -> bool:
        """Store the chunk's progress once; False when the backfill was cancelled meanwhile.

        Raises LeaseLost when another attempt took the chunk over.
        """

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> bool:
            current = Leases.check(lease, transaction)
            if current.get("state") == BackfillState.CANCELLED.value:
                return False
            if int(current.get("chunks_done", 0)) != chunk:
                # Unreachable while the lease holds; kept so that a chunk never commits twice.
                raise LeaseLost(f"chunk {chunk} of {lease.ref.id} was committed by another attempt")
            now = datetime.now(UTC)
            done = next_cursor is None
            transaction.update(
                lease.ref,
                {
                    "cursor": next_cursor,
                    "chunks_done": chunk + 1,
                    "records": int(current.get("records", 0)) + records,
                    "state": (BackfillState.DONE if done else BackfillState.RUNNING).value,
                    **RELEASED,
                    "updated_at": now,
                    **({"finished_at": now} if done else {}),
                },
            )
            return True

        committed: bool = run(self._db.transaction())
        return committed

    def fail(self, lease: Lease, error: str) -> None:
        """End the backfill on a permanent error, if the lease is still ours."""
        now = datetime.now(UTC)
        self._leases.release(
            lease,
            {
                "state": BackfillState.FAILED.value,
                "last_error": error[:1500],
                "finished_at": now,
                "updated_at": now,
            },
        )
