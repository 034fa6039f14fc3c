"""The idempotency ledger: each (handler, webhook_id) takes effect once.

Pub/Sub and Svix both deliver at least once, so the same webhook reaches a
handler several times, sometimes concurrently. Before working, a handler
claims the ledger entry in a Firestore transaction; the claim is a lease, so
an attempt that crashed stops blocking the event once the lease expires.
Firestore effects can commit in the same transaction that marks the entry
done (see `complete`), which makes them exactly-once, not just at-most-once
per lease.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from google.cloud import firestore

COLLECTION: Final = "processed_events"


class ClaimState(StrEnum):
    ACQUIRED = "acquired"  # ours to run
    DONE = "done"  # already took effect: acknowledge without effect
    BUSY = "busy"  # another attempt holds a live lease: retry later


class LeaseLost(RuntimeError):
    """Our lease expired and another attempt took the event over."""


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    ref: firestore.DocumentReference
    token: str
    attempt: int


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
        self._lease = timedelta(seconds=lease_seconds)
        self._retention = retention
        self._collection = collection

    def ref(self, handler: str, webhook_id: str) -> firestore.DocumentReference:
        # Document ids may not contain '/', and webhook ids come from outside: hash them.
        digest = hashlib.sha256(webhook_id.encode()).hexdigest()[:40]
        return self._client.collection(self._collection).document(f"{handler}:{digest}")

    def claim(self, handler: str, webhook_id: str, *, now: datetime | None = None) -> Claim:
        now = now or datetime.now(UTC)
        ref = self.ref(handler, webhook_id)
        token = uuid.uuid4().hex

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> Claim:
            snapshot = ref.get(transaction=transaction)
            previous: dict[str, Any] = snapshot.to_dict() or {}
            state = previous.get("state")
            if state == "done":
                return Claim(ClaimState.DONE, ref, "", previous.get("attempts", 0))
            lease_expires = previous.get("lease_expires_at")
            if state == "running" and lease_expires is not None and lease_expires > now:
                return Claim(ClaimState.BUSY, ref, "", previous.get("attempts", 0))
            attempts = int(previous.get("attempts", 0)) + 1
            transaction.set(
                ref,
                {
                    "handler": handler,
                    "webhook_id": webhook_id,
                    "state": "running",
                    "lease_token": token,
                    "lease_expires_at": now + self._lease,
                    "attempts": attempts,
                    "first_claimed_at": previous.get("first_claimed_at", now),
                    "updated_at": now,
                    # A Firestore TTL policy on this field deletes old entries.
                    "expires_at": now + self._retention,
                },
            )
            return Claim(ClaimState.ACQUIRED, ref, token, attempts)

        result: Claim = attempt(self._client.transaction())
        return result

    def check_lease(self, claim: Claim, transaction: firestore.Transaction) -> None:
        """Read, inside `transaction`, that the claim is still ours; raise LeaseLost if not.

        With `mark_done` in the same transaction as a handler's writes, the
        writes and the done mark commit together or not at all.
        """
        current = claim.ref.get(transaction=transaction).to_dict() or {}
        if current.get("lease_token") != claim.token or current.get("state") != "running":
            raise LeaseLost(f"lease on {claim.ref.id} was taken over")

    def mark_done(self, claim: Claim, transaction: firestore.Transaction) -> None:
        now = datetime.now(UTC)
        transaction.update(
            claim.ref,
            {"state": "done", "completed_at": now, "updated_at": now, "lease_expires_at": None},
        )

    def complete(self, claim: Claim) -> None:
        """Mark done in a transaction of its own (for effects outside Firestore)."""

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> None:
            self.check_lease(claim, transaction)
            self.mark_done(claim, transaction)

        run(self._client.transaction())

    def release(self, claim: Claim, *, error: str) -> None:
        """Give the event back after a failed attempt, so a redelivery can run it at once."""

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> None:
            current = claim.ref.get(transaction=transaction).to_dict() or {}
            if current.get("lease_token") != claim.token or current.get("state") != "running":
                return
            transaction.update(
                claim.ref,
                {
                    "state": "failed",
                    "last_error": error[:1500],
                    "lease_expires_at": None,
                    "updated_at": datetime.now(UTC),
                },
            )

        run(self._client.transaction())

    def state(self, handler: str, webhook_id: str) -> dict[str, Any] | None:
        snapshot = self.ref(handler, webhook_id).get()
        data: dict[str, Any] | None = snapshot.to_dict() if snapshot.exists else None
        return data
