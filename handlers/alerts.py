"""Alerts: turn failure events into log lines that log-based metrics count.

Each line's `event` field is what a metric in terraform/monitoring.tf filters
on; changing one here means changing the metric there (a test checks both).
"""

from __future__ import annotations

from functools import singledispatch
from typing import Final

from handlers.context import HandlerContext
from shared.events import ConnectionCreated, SyncCompleteRun, SyncPaused, WebhookEvent

SYNC_FAILED: Final = "sync_failed"
SYNC_PAUSED: Final = "sync_paused"
RECONNECT_REQUIRED: Final = "reconnect_required"
CONNECTION_ERROR: Final = "connection_error"


@singledispatch
def handle(event: WebhookEvent, context: HandlerContext) -> None:
    """The route's events, by model; a model without a function here needs no alert."""


@handle.register
def _sync_complete(event: SyncCompleteRun, context: HandlerContext) -> None:
    if event.result != "ERROR":
        return
    context.log(
        "ERROR",
        SYNC_FAILED,
        f"sync of {event.synced_object} failed for customer {event.customer_id} "
        f"on {event.provider_name}: {event.error_message or 'no error message'}",
        customer_id=event.customer_id,
        provider_name=event.provider_name,
        connection_id=event.connection_id,
        object=event.synced_object,
        run_id=event.run_id,
        error_message=event.error_message,
    )


@handle.register
def _sync_paused(event: SyncPaused, context: HandlerContext) -> None:
    reconnect = event.requires_reconnect
    context.log(
        "WARNING",
        RECONNECT_REQUIRED if reconnect else SYNC_PAUSED,
        f"sync of {event.object} paused for customer {event.customer_id} "
        f"on {event.provider_name}: {event.pause_reason or 'no reason given'}"
        + (" (the customer must reconnect)" if reconnect else ""),
        customer_id=event.customer_id,
        provider_name=event.provider_name,
        connection_id=event.connection_id,
        object=event.object,
        pause_reason=event.pause_reason,
    )


@handle.register
def _connection_created(event: ConnectionCreated, context: HandlerContext) -> None:
    if event.result != "ERROR":
        return
    # Supaglue also sends this on a re-authorisation that then succeeds: a warning, not a page.
    context.log(
        "WARNING",
        CONNECTION_ERROR,
        f"connection to {event.provider_name} for customer {event.customer_id} "
        "reported ERROR (also sent on re-authorisation)",
        customer_id=event.customer_id,
        provider_name=event.provider_name,
        provider_id=event.provider_id,
    )
