"""A claim on a Firestore document that expires: at most one live holder at a time.

The ledger claims an event before its handler runs (handlers/ledger.py); the
backfill worker claims a backfill's next chunk (handlers/worker.py). A holder
that crashed stops blocking the others once its lease has expired; one that
outlived its lease finds out when it checks, inside the same transaction that
would commit its work, so the work of a lost lease is never committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from handlers.errors import LeaseLost

HOLDER: Final = "lease_token"
EXPIRES: Final = "lease_expires_at"
# Written whenever a holder lets go, so that a token that matches means a live holder.
RELEASED: Final[Mapping[str, None]] = {HOLDER: None, EXPIRES: None}


@dataclass(frozen=True)
class Lease:
    ref: firestore.DocumentReference
    token: str


class Leases:
    def __init__(self, client: firestore.Client, duration: timedelta) -> None:
        self._client = client
        self._duration = duration

    @staticmethod
    def is_held(document: Mapping[str, Any], now: datetime) -> bool:
        """Someone holds a lease on `document` that has not expired."""
        expires = document.get(EXPIRES)
        return bool(document.get(HOLDER)) and expires is not None and expires > now

    def grant(
        self, ref: firestore.DocumentReference, now: datetime
    ) -> tuple[Lease, dict[str, Any]]:
        """A new lease, and the fields that record it (written by the caller's transaction)."""
        lease = Lease(ref, uuid.uuid4().hex)
        return lease, {HOLDER: lease.token, EXPIRES: now + self._duration}

    def take_over(
        self, snapshot: firestore.DocumentSnapshot[Any], fields: Mapping[str, Any]
    ) -> bool:
        """Write `fields` to the document `snapshot` read, only if nobody wrote it since;
        False if someone did. One write, no transaction: attempts racing for an expired or
        released lease wait on no lock (two transactions reading, then writing, the one
        document can abort each other until both run out of attempts); one write wins."""
        try:
            snapshot.reference.update(
                dict(fields),
                option=self._client.write_option(last_update_time=snapshot.update_time),
            )
        except api_exceptions.FailedPrecondition:
            return False
        return True

    @staticmethod
    def check(lease: Lease, transaction: firestore.Transaction) -> dict[str, Any]:
        """The document as `transaction` reads it, or LeaseLost if the lease is no longer ours.

        Firestore wants every read of a transaction before its first write: call it first.
        """
        current: dict[str, Any] = lease.ref.get(transaction=transaction).to_dict() or {}
        if current.get(HOLDER) != lease.token:
            raise LeaseLost(f"lease on {lease.ref.path} was taken over")
        return current

    def release(self, lease: Lease, fields: Mapping[str, Any]) -> bool:
        """Let go with `fields` written, if the lease is still ours; False if it was not."""

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> bool:
            current = lease.ref.get(transaction=transaction).to_dict() or {}
            if current.get(HOLDER) != lease.token:
                return False
            transaction.update(lease.ref, {**fields, **RELEASED})
            return True

        released: bool = run(self._client.transaction())
        return released
