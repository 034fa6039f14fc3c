"""The connection registry, and cleanup hooks when a connection is deleted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import singledispatch
from typing import Any

from google.cloud import firestore

from handlers import deletions
from handlers.context import HandlerContext
from handlers.hooks import DeletedConnection
from handlers.store import CONNECTIONS, doc_id
from shared.events import (
    ConnectionCreated,
    ConnectionDeleted,
    WebhookEvent,
    normalise_customer_id,
)


@singledispatch
def handle(event: WebhookEvent, context: HandlerContext) -> None:
    """The route's events, by model."""


@handle.register
def _created(event: ConnectionCreated, context: HandlerContext) -> None:
    _record(
        event, context, {"status": "active", "application_id": event.application_id}, created=True
    )


@handle.register
def _deleted(event: ConnectionDeleted, context: HandlerContext) -> None:
    _run_cleanups(event, context)
    _record(
        event,
        context,
        {
            "status": "deleted",
            "connection_id": event.connection_id,
            "deleted_at": datetime.fromtimestamp(context.webhook_timestamp, UTC),
        },
        created=False,
        also=lambda transaction: deletions.record(
            context.firestore,
            transaction,
            customer_id=event.customer_id,
            provider_name=event.provider_name,
            connection_id=event.connection_id,
            deleted_at=context.webhook_timestamp,
        ),
    )


def _record(
    event: ConnectionCreated | ConnectionDeleted,
    context: HandlerContext,
    fields: dict[str, Any],
    *,
    created: bool,
    also: Callable[[firestore.Transaction], None] | None = None,
) -> None:
    """Update the registry from `event`, and run `also` (reads first) in the same transaction."""
    customer = normalise_customer_id(event.customer_id)
    ref = context.firestore.collection(CONNECTIONS).document(doc_id(customer, event.provider_name))
    sent_at = context.webhook_timestamp

    def write(transaction: firestore.Transaction) -> None:
        current: dict[str, Any] = ref.get(transaction=transaction).to_dict() or {}
        if also is not None:
            also(transaction)
        # Svix does not keep order: an older event must not undo a newer one.
        if current.get("last_event_at", -1) > sent_at:
            context.log("INFO", "stale_event_ignored", "older than the registry's state")
            return
        update: dict[str, Any] = {
            "customer_id": customer,
            "provider_name": event.provider_name,
            "provider_id": event.provider_id,
            "category": event.category,
            "last_result": event.result,
            "last_event_type": event.webhook_event_type,
            "last_event_at": sent_at,
            "last_webhook_id": context.webhook_id,
            "updated_at": datetime.now(UTC),
            **fields,
        }
        if created and "created_at" not in current:
            update["created_at"] = datetime.fromtimestamp(sent_at, UTC)
        transaction.set(ref, update, merge=True)

    context.commit(write)


def _run_cleanups(event: ConnectionDeleted, context: HandlerContext) -> None:
    """Run every cleanup hook; one failing retries them all, so hooks must be idempotent."""
    deleted = DeletedConnection(
        customer_id=event.external_customer_id,
        provider_name=event.provider_name,
        connection_id=event.connection_id,
        event=event,
    )
    cleanups = context.hooks.cleanups_for(provider=event.provider_name)
    if cleanups:
        # Effects outside Firestore: held first, so a concurrent duplicate does not run them.
        context.claim()
    for hook in cleanups:
        hook.fn(deleted)
        context.log(
            "INFO",
            "cleanup_hook_done",
            f"{hook.name} cleaned up customer {deleted.customer_id} on {deleted.provider_name}",
            hook=hook.name,
            customer_id=deleted.customer_id,
            provider_name=deleted.provider_name,
        )
