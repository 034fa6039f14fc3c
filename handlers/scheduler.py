"""The backfill scheduler: start backfills on configuration changes, cancel them on deletion.

A configuration change (a mapping event) or a successful new connection
starts one backfill per matching backfill hook: a record in Firestore
(handlers/backfill_store.py) and the first chunk's task (handlers/tasks_queue.py).
"""

from __future__ import annotations

from functools import singledispatch

from handlers import deletions
from handlers.backfill_store import backfill_id
from handlers.context import HandlerContext
from handlers.errors import Retry
from handlers.tasks_queue import TaskRequest
from shared.events import (
    ConnectionCreated,
    ConnectionDeleted,
    EntityMappingChange,
    FieldMappingChange,
    WebhookEvent,
    normalise_customer_id,
)


@singledispatch
def handle(event: WebhookEvent, context: HandlerContext) -> None:
    """The route's events, by model."""


@handle.register
def _configuration_changed(
    event: EntityMappingChange | FieldMappingChange, context: HandlerContext
) -> None:
    schedule(event, context)


@handle.register
def _connection_created(event: ConnectionCreated, context: HandlerContext) -> None:
    # The first full load; a failed (re-)authorisation has nothing to load.
    if event.result == "SUCCESS":
        schedule(event, context)


@handle.register
def _connection_deleted(event: ConnectionDeleted, context: HandlerContext) -> None:
    """Record the deletion, and cancel the connection's unfinished backfills: running ones stop
    at their next chunk. By customer and provider: `connection.created` names no connection id,
    so the backfills it started carry none."""
    customer = normalise_customer_id(event.customer_id)
    store = context.backfill_store
    unfinished = list(store.unfinished_for(customer, event.provider_name))
    if unfinished:
        # Cancelling writes outside the transaction below: held first.
        context.claim()
    for backfill in unfinished:
        store.cancel(backfill)
        context.log(
            "INFO",
            "backfill_cancelled",
            f"backfill {backfill} cancelled: connection {event.connection_id} was deleted",
            backfill_id=backfill,
            connection_id=event.connection_id,
        )
    context.commit(
        lambda transaction: deletions.record(
            context.firestore,
            transaction,
            customer_id=customer,
            provider_name=event.provider_name,
            connection_id=event.connection_id,
            deleted_at=context.webhook_timestamp,
        )
    )


def schedule(
    event: EntityMappingChange | FieldMappingChange | ConnectionCreated, context: HandlerContext
) -> None:
    """A backfill per matching hook: its record, then its first chunk's task."""
    queue = context.backfills
    if queue is None:
        raise Retry("backfills are not configured (TASKS_* settings)")
    object_name = event.object_name_or_none
    customer = normalise_customer_id(event.customer_id)
    # The hooks first: without one there is nothing to schedule, and no need to read.
    hooks = context.hooks.backfills_for(provider=event.provider_name, object_name=object_name)
    if not hooks:
        context.log("INFO", "backfill_not_needed", "no backfill hook matches", object=object_name)
        return
    if deletions.deleted_after(
        context.firestore,
        customer_id=customer,
        provider_name=event.provider_name,
        sent_at=context.webhook_timestamp,
    ):
        # An older event arriving after the deletion: the connection is gone.
        context.log(
            "INFO",
            "stale_event_ignored",
            f"no backfill: {event.provider_name} for customer {customer} was deleted after this",
        )
        return
    # Records and tasks outside one transaction: held first, so a duplicate waits.
    context.claim()
    for hook in hooks:
        backfill = backfill_id(context.webhook_id, hook.name)
        created = context.backfill_store.create(
            backfill,
            {
                "backfill_id": backfill,
                "hook": hook.name,
                "customer_id": customer,
                "provider_name": event.provider_name,
                "connection_id": event.connection_key,
                "object": object_name,
                "trigger_event_type": event.webhook_event_type,
                "trigger_webhook_id": context.webhook_id,
                "trigger_sent_at": context.webhook_timestamp,
            },
        )
        # Enqueue even when the record existed: an earlier attempt may have failed in between.
        enqueued = queue.enqueue(TaskRequest(backfill, 0, context.trace))
        context.log(
            "INFO",
            "backfill_scheduled" if created else "backfill_already_scheduled",
            f"backfill {backfill} of {object_name or 'every object'} for customer {customer}",
            backfill_id=backfill,
            hook=hook.name,
            customer_id=customer,
            provider_name=event.provider_name,
            task_created=enqueued,
        )
