"""When each connection was last deleted, for every handler to see.

Svix does not keep order, and each route gets its own copy of
`connection.deleted`: an older event (a `connection.created`, a `sync.complete`)
can arrive after the deletion, at the same service or another. Both routes that
receive `connection.deleted` record it here (`deleted_connections/{customer:provider}`,
keyed as the registry is, since `connection.created` carries no connection id),
and a handler about to act for a connection asks `deleted_after` first.
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from handlers.store import DELETED_CONNECTIONS, doc_id
from shared.events import normalise_customer_id


def _ref(db: firestore.Client, customer_id: str, provider_name: str) -> firestore.DocumentReference:
    key = doc_id(normalise_customer_id(customer_id), provider_name)
    return db.collection(DELETED_CONNECTIONS).document(key)


def record(
    db: firestore.Client,
    transaction: firestore.Transaction,
    *,
    customer_id: str,
    provider_name: str,
    connection_id: str,
    deleted_at: int,
) -> None:
    """Inside `transaction` (before its writes: this reads): the newest deletion wins."""
    ref = _ref(db, customer_id, provider_name)
    current: dict[str, Any] = ref.get(transaction=transaction).to_dict() or {}
    if deleted_at > current.get("deleted_at", -1):
        transaction.set(ref, {"deleted_at": deleted_at, "connection_id": connection_id})


def deleted_after(
    db: firestore.Client, *, customer_id: str, provider_name: str, sent_at: int
) -> bool:
    """Whether the customer's connection to the provider was deleted after `sent_at`."""
    found: dict[str, Any] = _ref(db, customer_id, provider_name).get().to_dict() or {}
    return int(found.get("deleted_at", -1)) > sent_at
