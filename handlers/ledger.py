"""The idempotency ledger: each (handler, key) takes effect once.

Pub/Sub and Svix both deliver at least once, so the same webhook reaches a
handler several times, sometimes concurrently. A delivery whose effects are
all Firestore writes needs no claim: `commit` applies them and creates the
done entry in one transaction, and a duplicate's transaction fails on that
entry, so only one commits. A delivery with effects outside Firestore (a
hook, a Cloud Tasks enqueue, an alert line) claims the entry first; the
claim is a lease (handlers/lease.py), so an attempt that crashed stops
blocking the event once the lease expires, and its Firestore effects commit
with the done mark (`commit_claimed`), never after a lost lease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, TypeVar

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from handlers.errors import AlreadyDone, Busy, StorageBusy
from handlers.lease import RELEASED, Lease, Leases

T = TypeVar("T")

COLLECTION: Final = "processed_events"
# Entries carry this field for the Firestore TTL policy Terraform sets on it.
EXPIRES_FIELD: Final = "expires_at"
# The id of the webhook whose delivery created an entry keyed on something else (a sync run).
RECEIVED_FIELD: Final = "received_webhook_id"


class ClaimState(StrEnum):
    ACQUIRED = "acquired"  # ours to run
    DONE = "done"  # already took effect: acknowledge without effect
    BUSY = "busy"  # another attempt holds a live lease: retry later


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    ref: firestore.DocumentReference
    attempt: int
    lease: Lease | None = None


class Ledger:
    def __init__(
        self,
        client: firestore.Client,
        *,
        lease_seconds: float,
        retention: timedelta,
        collection: str = COLLECTION,
    ) -> None:
        self._client = client
        self._leases = Leases(client, timedelta(seconds=lease_seconds))
        self._retention = retention
        self._collection = collection

    def ref(self, handler: str, webhook_id: str) -> firestore.DocumentReference:
        # Document ids may not contain '/', and webhook ids come from outside: hash them.
        digest = hashlib.sha256(webhook_id.encode()).hexdigest()[:40]
        return self._client.collection(self._collection).document(f"{handler}:{digest}")

    def claim(
        self,
        handler: str,
        webhook_id: str,
        *,
        received: str | None = None,
        now: datetime | None = None,
    ) -> Claim:
        """Take the event, or say it is done or held by a live attempt. `received`: the id of
        the webhook being delivered, where the entry's key is not it (a sync run's)."""
        now = now or datetime.now(UTC)
        ref = self.ref(handler, webhook_id)
        lease, held = self._leases.grant(ref, now)
        running = {
            "state": "running",
            **held,
            "updated_at": now,
            EXPIRES_FIELD: now + self._retention,
        }
        try:
            # The usual case, a first delivery: one write that fails if the entry exists, so
            # concurrent duplicates need no transaction and wait on no lock.
            ref.create(
                {
                    "handler": handler,
                    "webhook_id": webhook_id,
                    **_received(webhook_id, received),
                    **running,
                    "attempts": 1,
                    "first_claimed_at": now,
                }
            )
            return Claim(ClaimState.ACQUIRED, ref, 1, lease)
        except api_exceptions.AlreadyExists:
            pass
        # Seen before. Done and a live lease need no transaction either: done is final, and a
        # lease that is live now is still live when the redelivery is answered with 503.
        snapshot = ref.get()
        seen = self._settled(ref, snapshot.to_dict() or {}, now)
        if seen is not None:
            return seen
        # A failed attempt, or one whose lease expired: take it over with a write that fails if
        # the entry changed since it was read. Concurrent takeovers then wait on no lock: one
        # write wins, and the others read what it wrote.
        attempts = int((snapshot.to_dict() or {}).get("attempts", 0)) + 1
        if not self._leases.take_over(snapshot, {**running, "attempts": attempts}):
            settled = self._settled(ref, ref.get().to_dict() or {}, now)
            if settled is None:
                # Changed, yet neither done nor held: a release in between; retry later.
                raise StorageBusy(f"claiming {ref.id} raced another attempt")
            return settled
        return Claim(ClaimState.ACQUIRED, ref, attempts, lease)

    @staticmethod
    def _settled(
        ref: firestore.DocumentReference, entry: dict[str, Any], now: datetime
    ) -> Claim | None:
        attempts = int(entry.get("attempts", 0))
        if entry.get("state") == "done":
            return Claim(ClaimState.DONE, ref, attempts)
        if entry.get("state") == "running" and Leases.is_held(entry, now):
            return Claim(ClaimState.BUSY, ref, attempts)
        return None

    def commit_claimed(self, claim: Claim, work: Callable[[firestore.Transaction], T]) -> T:
        """Run `work` and mark the claimed entry done in one transaction, if the lease is
        still ours (LeaseLost if not: nothing of it is stored)."""

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> T:
            # Firestore wants every read before the first write: check the lease first.
            assert claim.lease is not None
            Leases.check(claim.lease, transaction)
            result = work(transaction)
            transaction.update(claim.ref, {**_marked_done(datetime.now(UTC)), **RELEASED})
            return result

        result: T = run(self._client.transaction())
        return result

    def complete(self, claim: Claim) -> None:
        """Mark a claimed entry done (its effects were outside Firestore)."""
        self.commit_claimed(claim, lambda transaction: None)

    def commit(
        self,
        handler: str,
        key: str,
        work: Callable[[firestore.Transaction], T],
        *,
        received: str | None = None,
    ) -> T:
        """Run `work` and create the done entry in one transaction, without a claim.

        AlreadyDone if the entry is done, Busy if another attempt holds it. `work` may run
        more than once (Firestore retries contended transactions, and a transaction that
        found the entry runs again with it read): it must only read and write through the
        transaction. Nothing of it is stored unless the entry is created or taken over.
        """
        ref = self.ref(handler, key)
        entry = self._done_entry(handler, key, received)

        @firestore.transactional
        def first(transaction: firestore.Transaction) -> T:
            # No read of the entry: the create fails the commit if it exists, which is the
            # same check at one read less, on every first delivery.
            result = work(transaction)
            transaction.create(ref, entry)
            return result

        try:
            result: T = first(self._client.transaction())
            return result
        except Exception as exc:
            if not _caused_by(exc, api_exceptions.AlreadyExists):
                raise
            found = exc
        return self._commit_over(ref, work, found)

    def record_done(self, handler: str, key: str, *, received: str | None = None) -> None:
        """Record a delivery that had no effect: one write, or AlreadyDone / Busy as `commit`."""
        ref = self.ref(handler, key)
        try:
            ref.create(self._done_entry(handler, key, received))
        except api_exceptions.AlreadyExists as exc:
            self._commit_over(ref, lambda transaction: None, exc)

    def _done_entry(self, handler: str, key: str, received: str | None) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "handler": handler,
            "webhook_id": key,
            **_received(key, received),
            **_marked_done(now),
            "attempts": 1,
            EXPIRES_FIELD: now + self._retention,
        }

    def _commit_over(
        self,
        ref: firestore.DocumentReference,
        work: Callable[[firestore.Transaction], T],
        found: Exception,
    ) -> T:
        """The entry existed: a duplicate, a live attempt, or one that failed or expired,
        which this delivery takes over, reading the entry in its transaction this time."""

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> T:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                # What already existed was not the entry, but something `work` creates.
                raise found
            entry: dict[str, Any] = snapshot.to_dict() or {}
            now = datetime.now(UTC)
            settled = self._settled(ref, entry, now)
            if settled is not None and settled.state is ClaimState.DONE:
                raise AlreadyDone(ref.id)
            if settled is not None:
                raise Busy(f"another attempt holds {ref.id}")
            result = work(transaction)
            transaction.update(
                ref,
                {
                    **_marked_done(now),
                    "attempts": int(entry.get("attempts", 0)) + 1,
                    **RELEASED,
                },
            )
            return result

        result: T = run(self._client.transaction())
        return result

    def acquire(self, handler: str, webhook_id: str, *, received: str | None = None) -> Claim:
        """`claim`, held by this attempt: AlreadyDone if the event took effect, Busy while
        another attempt holds it."""
        claim = self.claim(handler, webhook_id, received=received)
        if claim.state is ClaimState.DONE:
            raise AlreadyDone(f"{handler}/{webhook_id}")
        if claim.state is ClaimState.BUSY:
            raise Busy(f"another attempt holds {handler}/{webhook_id}")
        return claim

    def release(self, claim: Claim, *, error: str) -> None:
        """Give the event back after a failed attempt, so a redelivery can run it at once."""
        assert claim.lease is not None
        self._leases.release(
            claim.lease,
            {"state": "failed", "last_error": error[:1500], "updated_at": datetime.now(UTC)},
        )

    def once(
        self,
        handler: str,
        webhook_id: str,
        work: Callable[[], object],
        *,
        received: str | None = None,
    ) -> bool:
        """Run `work` unless (handler, webhook_id) already took effect; False if it had.

        The same guarantees as a delivery's own claim: one attempt at a time (Busy while
        another holds it), a failed attempt released so the next runs at once, done only
        after `work` returned.
        """
        try:
            claim = self.acquire(handler, webhook_id, received=received)
        except AlreadyDone:
            return False
        try:
            work()
        except BaseException as exc:
            self.release(claim, error=f"{type(exc).__name__}: {exc}")
            raise
        self.complete(claim)
        return True

    def state(self, handler: str, webhook_id: str) -> dict[str, Any] | None:
        snapshot = self.ref(handler, webhook_id).get()
        data: dict[str, Any] | None = snapshot.to_dict() if snapshot.exists else None
        return data


def _marked_done(now: datetime) -> dict[str, Any]:
    return {"state": "done", "completed_at": now, "updated_at": now}


def _received(key: str, received: str | None) -> dict[str, str]:
    """The webhook that created the entry, where its key is not that webhook's id."""
    return {RECEIVED_FIELD: received} if received and received != key else {}


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """`exc` is, or was raised while handling, a `kind`: a transaction whose commit failed is
    rolled back, and an error of the rollback would otherwise hide the commit's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
