"""The reconciler's own state in Firestore: its watermark and where a pass stopped, the
connection ids it has seen listed, and when it first saw each paused sync.

One document, `reconciler/state`, carries a lease (handlers/lease.py): a pass that starts
while another holds it does nothing, and a pass writes its progress only while its lease is
still its own, in the transaction that checks it. A pass that crashed stops blocking
the next once its lease expires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from handlers.lease import RELEASED, Lease, Leases
from handlers.store import doc_id

COLLECTION: Final = "reconciler"
STATE_DOCUMENT: Final = "state"
# Connection ids seen listed, by (customer, provider): what a deletion the webhook never
# reported was, once it is no longer listed.
SEEN_CONNECTIONS: Final = "reconciler_connections"
# When a pass first saw each paused sync: a pause is recovered once it is older than the
# settle time, so a pause webhook still in Svix's retries is not doubled.
SEEN_PAUSES: Final = "reconciler_paused_syncs"


@dataclass(frozen=True)
class Progress:
    """Where reconciliation stands.

    Runs that ended after `watermark` minus the overlap are read, up to `window_until`; a
    window read to its last page moves the watermark to `window_until`. `cursor` is the page
    a cut-short window continues at, `customer_cursor` the last customer compared.
    """

    watermark: datetime | None = None
    window_until: datetime | None = None
    cursor: str | None = None
    customer_cursor: str | None = None

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> Progress:
        return cls(
            document.get("watermark"),
            document.get("window_until"),
            document.get("cursor"),
            document.get("customer_cursor"),
        )


class Store:
    def __init__(self, client: firestore.Client, *, lease: timedelta) -> None:
        self._client = client
        self._leases = Leases(client, lease)
        self._ref = client.collection(COLLECTION).document(STATE_DOCUMENT)

    def begin(self, now: datetime) -> tuple[Lease, Progress] | None:
        """Take the pass's lease and read the progress; None while another pass holds it.

        No transaction: a read, then one write that fails if the document changed since
        (Leases.take_over) or, the first time, exists. Two passes starting together then wait
        on no lock: one write wins, the other pass does nothing.
        """
        lease, held = self._leases.grant(self._ref, now)
        taken = {**held, "pass_started_at": now}
        snapshot = self._ref.get()
        if not snapshot.exists:
            try:
                self._ref.create(taken)
            except api_exceptions.AlreadyExists:
                return None  # another pass created it between the read and the write
            return lease, Progress()
        current: dict[str, Any] = snapshot.to_dict() or {}
        if Leases.is_held(current, now) or not self._leases.take_over(snapshot, taken):
            return None
        return lease, Progress.of(current)

    def save(self, lease: Lease, fields: Mapping[str, Any], *, finish: bool = False) -> None:
        """Write progress if the lease is still ours (LeaseLost if not); `finish` lets go."""

        @firestore.transactional
        def write(transaction: firestore.Transaction) -> None:
            current = Leases.check(lease, transaction)
            update = dict(fields)
            # Never backwards: a slow pass must not undo a later one's watermark.
            old, new = current.get("watermark"), update.get("watermark")
            if old is not None and new is not None and new < old:
                update["watermark"] = old
            transaction.update(self._ref, {**update, **(RELEASED if finish else {})})

        write(self._client.transaction())

    def release(self, lease: Lease) -> None:
        self._leases.release(lease, {})

    # --- connection ids seen listed -----------------------------------------

    def _seen_ref(self, customer: str, provider: str) -> firestore.DocumentReference:
        return self._client.collection(SEEN_CONNECTIONS).document(doc_id(customer, provider))

    def seen_connections(self, customer: str, providers: Iterable[str]) -> dict[str, str]:
        """Provider -> the connection id last seen listed for `customer`."""
        refs = [self._seen_ref(customer, provider) for provider in providers]
        found: dict[str, str] = {}
        for snapshot in self._client.get_all(refs):
            data = snapshot.to_dict() or {}
            if snapshot.exists and data.get("connection_id"):
                found[str(data["provider_name"])] = str(data["connection_id"])
        return found

    def paused_since(self, sync_ids: Iterable[str]) -> dict[str, datetime]:
        """Sync id -> when a pass first saw it paused (while it stays paused)."""
        refs = [self._client.collection(SEEN_PAUSES).document(sync_id) for sync_id in sync_ids]
        return {
            snapshot.id: (snapshot.to_dict() or {})["seen_at"]
            for snapshot in self._client.get_all(refs)
            if snapshot.exists
        }

    def saw_paused(self, sync_id: str, now: datetime) -> None:
        self._client.collection(SEEN_PAUSES).document(sync_id).set({"seen_at": now})

    def forget_pause(self, sync_id: str) -> None:
        self._client.collection(SEEN_PAUSES).document(sync_id).delete()

    def remember_connection(self, customer: str, provider: str, connection_id: str) -> None:
        self._seen_ref(customer, provider).set(
            {"customer_id": customer, "provider_name": provider, "connection_id": connection_id}
        )
