"""Per (customer, provider, object) sync state, and transforms after a successful sync.

On `SUCCESS`, each transform hook registered for the object runs with its
own stored high-water mark; the new marks and the run's state are stored in
one transaction with the ledger's done mark, and only if every hook succeeded.
A `sync.paused` marks the state paused until a later successful run (a paused
sync does not run): what the reconciler compares with the API's `paused` flag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import singledispatch
from typing import Any

from google.cloud import firestore

from handlers import deletions
from handlers.context import HandlerContext
from handlers.hooks import TransformRun
from handlers.store import SYNC_STATE, doc_id
from shared.events import SyncCompleteRun, SyncPaused, WebhookEvent


@singledispatch
def handle(event: WebhookEvent, context: HandlerContext) -> None:
    """The route's events, by model."""


@handle.register
def _sync_complete(event: SyncCompleteRun, context: HandlerContext) -> None:
    object_name = event.synced_object
    ref = context.firestore.collection(SYNC_STATE).document(
        doc_id(event.customer_id, event.provider_name, object_name)
    )
    sent_at = context.webhook_timestamp
    marks = _run_transforms(event, context, ref) if event.result == "SUCCESS" else {}

    def write(transaction: firestore.Transaction) -> None:
        current: dict[str, Any] = ref.get(transaction=transaction).to_dict() or {}
        update: dict[str, Any] = {
            "customer_id": event.customer_id,
            "provider_name": event.provider_name,
            "object": object_name,
            "connection_id": event.connection_id,
            "total_runs": int(current.get("total_runs", 0)) + 1,
            "updated_at": datetime.now(UTC),
        }
        if marks:
            update["high_water_marks"] = {**current.get("high_water_marks", {}), **marks}
        # Runs can arrive out of order: only a newer run moves the "last run" fields.
        if event.result == "SUCCESS" and sent_at > current.get("paused_at", sent_at):
            update["paused"] = False
        if sent_at >= current.get("last_run_at", -1):
            failures = int(current.get("consecutive_failures", 0))
            update.update(
                {
                    "last_run_id": event.run_id,
                    "last_result": event.result,
                    "last_run_at": sent_at,
                    "last_records_synced": event.num_records_synced,
                    "last_error_message": event.error_message if event.result == "ERROR" else None,
                    "consecutive_failures": failures + 1 if event.result == "ERROR" else 0,
                }
            )
        transaction.set(ref, update, merge=True)

    context.commit(write)


@handle.register
def _sync_paused(event: SyncPaused, context: HandlerContext) -> None:
    ref = context.firestore.collection(SYNC_STATE).document(
        doc_id(event.customer_id, event.provider_name, event.object)
    )
    sent_at = context.webhook_timestamp

    def write(transaction: firestore.Transaction) -> None:
        current: dict[str, Any] = ref.get(transaction=transaction).to_dict() or {}
        # A pause older than the last one recorded changes nothing.
        if sent_at < current.get("paused_at", -1):
            return
        update = {
            "customer_id": event.customer_id,
            "provider_name": event.provider_name,
            "object": event.object,
            "connection_id": event.connection_id,
            "paused": True,
            "paused_at": sent_at,
            "pause_reason": event.pause_reason,
            "updated_at": datetime.now(UTC),
        }
        transaction.set(ref, update, merge=True)

    context.commit(write)


def _run_transforms(
    event: SyncCompleteRun, context: HandlerContext, ref: firestore.DocumentReference
) -> dict[str, str | None]:
    """Run each matching transform hook from its stored mark; the new marks by hook.

    None for a connection deleted after this run was sent: an older run arriving after the
    deletion must not transform what the cleanup hooks removed.
    """
    object_name = event.synced_object
    matching = context.hooks.transforms_for(provider=event.provider_name, object_name=object_name)
    if not matching:
        return {}
    if deletions.deleted_after(
        context.firestore,
        customer_id=event.customer_id,
        provider_name=event.provider_name,
        sent_at=context.webhook_timestamp,
    ):
        context.log("INFO", "stale_event_ignored", "no transform: the connection was deleted after")
        return {}
    # The hooks act outside Firestore: held first, so a concurrent duplicate waits.
    context.claim()
    stored = (ref.get().to_dict() or {}).get("high_water_marks", {})
    marks: dict[str, str | None] = {}
    for hook in matching:
        run = TransformRun(
            customer_id=event.customer_id,
            provider_name=event.provider_name,
            object=object_name,
            connection_id=event.connection_id,
            run_id=event.run_id,
            num_records_synced=event.num_records_synced,
            high_water_mark=stored.get(hook.name),
            event=event,
        )
        new_mark = hook.fn(run)
        marks[hook.name] = new_mark if new_mark is not None else run.high_water_mark
        context.log(
            "INFO",
            "transform_hook_done",
            f"{hook.name} transformed {object_name} for customer {event.customer_id}",
            hook=hook.name,
            high_water_mark=marks[hook.name],
        )
    return marks
