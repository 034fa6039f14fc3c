"""Events built from the API's records, shaped exactly as their webhooks would have been.

The body is what Supaglue sends for the event, the attributes are what the ingest function
would have given it (shared/contract.py) plus `origin=reconciled`, and the webhook id is
derived from what the event stands for, so every pass that finds the same gap publishes the
same message, and the ledger lets it take effect once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from handlers.idempotency import event_key
from handlers.reconcile.api import Connection, Sync, SyncRun
from shared.contract import (
    ORIGIN_RECONCILED,
    SOURCE_SUPAGLUE,
    Attr,
    delivery_attributes,
    event_attributes,
)
from shared.events import parse_event
from shared.log import TraceContext

WEBHOOK_ID_PREFIX: Final = "reconciled:"
# The API's run statuses as the webhook reports results; IN_PROGRESS has none yet.
RESULTS: Final = {"SUCCESS": "SUCCESS", "FAILURE": "ERROR"}


@dataclass(frozen=True)
class Synthetic:
    webhook_id: str
    event_type: str
    data: bytes
    attributes: dict[str, str]
    # What the handlers' ledger keys its effect on (handlers/idempotency.py).
    ledger_key: str


def build(payload: dict[str, Any], *, webhook_id: str, sent_at: int) -> Synthetic:
    """The message for `payload`; validated as the handlers will parse it."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    event = parse_event(json.loads(data))
    attributes = {
        # A trace of its own: the webhook it stands for never came, so there is none to join.
        **delivery_attributes(
            webhook_id=webhook_id,
            webhook_timestamp=str(sent_at),
            source=SOURCE_SUPAGLUE,
            trace=TraceContext.new(),
        ),
        **event_attributes(event),
        Attr.ORIGIN.value: ORIGIN_RECONCILED,
        Attr.LINKED_WEBHOOK_ID.value: webhook_id,
    }
    return Synthetic(
        webhook_id, event.webhook_event_type, data, attributes, event_key(event, webhook_id)
    )


def run_webhook_id(run_id: str) -> str:
    return f"{WEBHOOK_ID_PREFIX}run:{run_id}"


def sync_complete(run: SyncRun) -> Synthetic:
    """`sync.complete` for a finished object run, sent when the run ended."""
    assert run.object is not None and run.end_timestamp is not None
    result = RESULTS[run.status]
    payload: dict[str, Any] = {
        "webhook_event_type": "sync.complete",
        "run_id": run.id,
        "connection_id": run.connection_id,
        "customer_id": run.customer_id,
        "provider_name": run.provider_name,
        "result": result,
        # Supaglue sends 0 for a failed run.
        "num_records_synced": int(run.num_records_synced or 0) if result == "SUCCESS" else 0,
        "type": "object",
        "object_type": run.object_type or "standard",
        "object": run.object,
    }
    if result == "ERROR":
        payload["error_message"] = run.error_message or "sync run failed"
    return build(payload, webhook_id=run_webhook_id(run.id), sent_at=epoch(run.end_timestamp))


def connection_created(connection: Connection, *, sent_at: int) -> Synthetic:
    payload: dict[str, Any] = {
        "webhook_event_type": "connection.created",
        "customer_id": connection.customer_id,
        "provider_id": connection.provider_id,
        "category": connection.category,
        "provider_name": connection.provider_name,
        "result": "SUCCESS",
        "application_id": connection.application_id,
    }
    if connection.instance_url:
        payload["instance_url"] = connection.instance_url
    return build(
        payload,
        webhook_id=f"{WEBHOOK_ID_PREFIX}connection.created:{connection.id}",
        sent_at=sent_at,
    )


def connection_deleted(
    *,
    customer_id: str,
    provider_name: str,
    provider_id: str,
    category: str,
    connection_id: str,
    sent_at: int,
) -> Synthetic:
    payload = {
        "webhook_event_type": "connection.deleted",
        "connection_id": connection_id,
        "customer_id": customer_id,
        "provider_id": provider_id,
        "category": category,
        "provider_name": provider_name,
        "result": "SUCCESS",
    }
    return build(
        payload,
        webhook_id=f"{WEBHOOK_ID_PREFIX}connection.deleted:{connection_id}",
        sent_at=sent_at,
    )


def sync_paused(sync: Sync, *, last_run_id: str | None, sent_at: int) -> Synthetic:
    """`sync.paused` for an object sync the API lists as paused; the API gives no reason.

    Its id names the sync and the last run before the pause: a later pause of the same sync,
    after another run, is another event.
    """
    assert sync.object is not None
    payload = {
        "webhook_event_type": "sync.paused",
        "connection_id": sync.connection_id,
        "customer_id": sync.customer_id,
        "provider_name": sync.provider_name,
        "type": "object",
        "object_type": sync.object_type or "standard",
        "object": sync.object,
    }
    webhook_id = f"{WEBHOOK_ID_PREFIX}sync.paused:{sync.id}:after:{last_run_id or 'none'}"
    return build(payload, webhook_id=webhook_id, sent_at=sent_at)


def epoch(timestamp: str) -> int:
    """Unix seconds of an ISO 8601 time from the API (`Z` or an offset)."""
    return int(parse_time(timestamp).timestamp())


def parse_time(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    """The API's form: UTC, microseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
