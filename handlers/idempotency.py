"""What the ledger keys an event's effect on: the one place that decides it.

Usually the webhook id (the svix-id, the same on every retry). A sync run, though, can reach
the pipeline twice with two ids: as its webhook, and recovered by the reconciler from
Supaglue's API (`reconciled:run:<run_id>`). Keyed on the run, whichever copy comes second
finds the effect already done, in either order.
"""

from __future__ import annotations

from handlers.envelope import PushMessage
from shared.events import SyncCompleteRun, WebhookEvent, normalise_customer_id
from shared.routing import Route


def ledger_key(route: Route, message: PushMessage, event: WebhookEvent) -> str:
    """The ledger key of `event` on `route` (the same for every route that receives it)."""
    return event_key(event, message.webhook_id)


def event_key(event: WebhookEvent, webhook_id: str) -> str:
    if isinstance(event, SyncCompleteRun):
        # Run ids are unique in Supaglue; the customer and provider keep apart runs that only
        # a sample or a test shares.
        customer = normalise_customer_id(event.customer_id)
        return f"sync.complete:{customer}:{event.provider_name}:{event.run_id}"
    return webhook_id
