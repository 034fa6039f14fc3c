"""Alerts: turn failure events into alerts (handlers/alerting.py): a log line each, which
log-based metrics count, and the `@hooks.alert` functions that want it.

Each line's `event` field is what a metric in terraform/monitoring.tf filters
on; changing one here means changing the metric there (a test checks both).
The alerts service keeps its own count of failed syncs in a row per (customer,
provider, object), committed with the ledger's done mark, so the Nth failure
in a row is told apart from the first: `sync_failed_repeatedly`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import singledispatch
from typing import Any

from google.cloud import firestore

from handlers.alerting import Alert, AlertKind, raise_alert
from handlers.context import HandlerContext
from handlers.store import ALERT_STATE, doc_id
from shared.events import (
    ConnectionCreated,
    SyncCompleteRun,
    SyncPaused,
    WebhookEvent,
    normalise_customer_id,
)


@singledispatch
def handle(event: WebhookEvent, context: HandlerContext) -> None:
    """The route's events, by model; a model without a function here needs no alert."""


def alert(context: HandlerContext, alert: Alert) -> None:
    # A line and hooks outside Firestore: held first, so a concurrent duplicate writes neither.
    context.claim()
    raise_alert(
        alert, log=context.log, hooks=context.hooks.alerts_for(alert.kind), once=context.once
    )


@handle.register
def _sync_complete(event: SyncCompleteRun, context: HandlerContext) -> None:
    ref = context.firestore.collection(ALERT_STATE).document(
        doc_id(event.customer_id, event.provider_name, event.synced_object)
    )
    sent_at = context.webhook_timestamp
    failed = event.result == "ERROR"
    state: dict[str, Any] = ref.get().to_dict() or {}
    if not failed and not state.get("consecutive_failures"):
        # No streak to end: nothing to write (the most common case costs one read).
        return
    if failed:
        # A run older than the last one counted does not extend or end the streak.
        in_order = sent_at >= state.get("last_run_at", -1)
        streak = int(state.get("consecutive_failures", 0)) + 1 if in_order else None
        repeated = streak is not None and streak >= context.settings.repeated_failure_threshold
        alert(
            context,
            Alert(
                kind=AlertKind.SYNC_FAILED_REPEATEDLY if repeated else AlertKind.SYNC_FAILED,
                message=f"sync of {event.synced_object} failed for customer {event.customer_id} "
                f"on {event.provider_name}"
                + (f" ({streak} times in a row)" if repeated else "")
                + f": {event.error_message or 'no error message'}",
                customer_id=event.customer_id,
                provider_name=event.provider_name,
                connection_id=event.connection_id,
                object=event.synced_object,
                reason=event.error_message,
                webhook_id=context.webhook_id,
                run_id=event.run_id,
                consecutive_failures=streak,
            ),
        )

    def count(transaction: firestore.Transaction) -> None:
        current: dict[str, Any] = ref.get(transaction=transaction).to_dict() or {}
        if sent_at < current.get("last_run_at", -1):
            return
        failures = int(current.get("consecutive_failures", 0))
        transaction.set(
            ref,
            {
                "consecutive_failures": failures + 1 if failed else 0,
                "last_run_at": sent_at,
                "last_run_id": event.run_id,
                "updated_at": datetime.now(UTC),
            },
        )

    context.commit(count)


@handle.register
def _sync_paused(event: SyncPaused, context: HandlerContext) -> None:
    reconnect = event.requires_reconnect
    alert(
        context,
        Alert(
            kind=AlertKind.RECONNECT_REQUIRED if reconnect else AlertKind.SYNC_PAUSED,
            message=f"sync of {event.object} paused for customer {event.customer_id} "
            f"on {event.provider_name}: {event.pause_reason or 'no reason given'}"
            + (" (the customer must reconnect)" if reconnect else ""),
            customer_id=event.customer_id,
            provider_name=event.provider_name,
            connection_id=event.connection_id,
            object=event.object,
            reason=event.pause_reason,
            webhook_id=context.webhook_id,
        ),
    )


@handle.register
def _connection_created(event: ConnectionCreated, context: HandlerContext) -> None:
    if event.result != "ERROR":
        return
    alert(
        context,
        Alert(
            kind=AlertKind.CONNECTION_ERROR,
            message=f"connection to {event.provider_name} for customer {event.customer_id} "
            "reported ERROR (also sent on re-authorisation)",
            customer_id=normalise_customer_id(event.customer_id),
            provider_name=event.provider_name,
            connection_id=None,
            object=None,
            reason=None,
            webhook_id=context.webhook_id,
            provider_id=event.provider_id,
        ),
    )
