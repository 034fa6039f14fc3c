"""The Pub/Sub message contract between the ingest function and the handlers.

`data` is the verified webhook body, byte for byte. Attributes carry what
routing and filtering need, so nothing downstream has to parse the body to
decide whether a message is its business. Attribute names live here only.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from shared.events import AnyEvent, UnknownEvent
from shared.log import TraceContext

# Pub/Sub refuses attribute values over 1024 bytes.
MAX_ATTRIBUTE_BYTES: Final = 1024
SOURCE_SUPAGLUE: Final = "supaglue"
# The `origin` of an event the reconciler recovered from Supaglue's management API.
ORIGIN_RECONCILED: Final = "reconciled"


class Attr(StrEnum):
    EVENT_TYPE = "event_type"
    WEBHOOK_ID = "webhook_id"
    WEBHOOK_TIMESTAMP = "webhook_timestamp"
    SOURCE = "source"
    CUSTOMER_ID = "customer_id"
    CONNECTION_ID = "connection_id"
    PROVIDER_NAME = "provider_name"
    OBJECT = "object"
    # Set on quarantined and dead-lettered messages only.
    REASON = "reason"
    REASON_DETAIL = "reason_detail"
    # Set on dead-lettered messages only: who gave up on it, and which message it was.
    HANDLER = "dead_letter_handler"
    ORIGINAL_MESSAGE_ID = "original_message_id"
    # Set by the reconciler only (ORIGIN_RECONCILED); a message without it is a webhook.
    ORIGIN = "origin"
    # The trace the message's hops continue, in W3C form: the ingest request's, or a new one.
    TRACEPARENT = "traceparent"
    # On a message that did not come through the door (recovered or replayed): the webhook
    # it stands for, and the trace of the message it repeats, where that had one.
    LINKED_WEBHOOK_ID = "linked_webhook_id"
    LINKED_TRACE_ID = "linked_trace_id"


def delivery_attributes(
    *, webhook_id: str, webhook_timestamp: str, source: str, trace: TraceContext
) -> dict[str, str]:
    """Attributes every message gets, whatever its body holds."""
    return {
        Attr.WEBHOOK_ID.value: webhook_id,
        Attr.WEBHOOK_TIMESTAMP.value: webhook_timestamp,
        Attr.SOURCE.value: source,
        Attr.TRACEPARENT.value: trace.traceparent,
    }


def retraced(attributes: Mapping[str, str]) -> dict[str, str]:
    """A republished message's attributes: a trace of its own, linked to what it repeats.

    Its hops are not part of the original webhook's trace (that one ended), yet each line
    names the webhook, and the trace it was first handled under, to look that up.
    """
    again = dict(attributes)
    first = TraceContext.from_traceparent(attributes.get(Attr.TRACEPARENT))
    again[Attr.TRACEPARENT.value] = TraceContext.new().traceparent
    if Attr.WEBHOOK_ID in attributes:
        again[Attr.LINKED_WEBHOOK_ID.value] = attributes[Attr.WEBHOOK_ID]
    if first is not None:
        again[Attr.LINKED_TRACE_ID.value] = first.trace_id
    return again


def event_attributes(event: AnyEvent) -> dict[str, str]:
    """The event type and whichever routing ids the event carries."""
    attributes = {Attr.EVENT_TYPE.value: event.webhook_event_type}
    if isinstance(event, UnknownEvent):
        # An unknown type still routes by the ids it happens to carry.
        fields = event.model_dump()
        candidates = {
            Attr.CUSTOMER_ID: fields.get("customer_id"),
            Attr.CONNECTION_ID: fields.get("connection_id"),
            Attr.PROVIDER_NAME: fields.get("provider_name"),
            Attr.OBJECT: fields.get("object", fields.get("object_name")),
        }
    else:
        candidates = {
            Attr.CUSTOMER_ID: event.customer_id,
            Attr.CONNECTION_ID: event.connection_key,
            Attr.PROVIDER_NAME: event.provider_name,
            Attr.OBJECT: event.object_name_or_none,
        }
    for name, value in candidates.items():
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            attributes[name.value] = str(value)
    return attributes


def linked_fields(attributes: Mapping[str, str]) -> dict[str, str]:
    """What a log line names of a recovered or replayed message's links (retraced)."""
    return {
        name.value: attributes[name]
        for name in (Attr.ORIGIN, Attr.LINKED_WEBHOOK_ID, Attr.LINKED_TRACE_ID)
        if name in attributes
    }


def oversized_attributes(attributes: dict[str, str]) -> list[str]:
    """Names of attributes whose value Pub/Sub would refuse."""
    return [k for k, v in attributes.items() if len(v.encode()) > MAX_ATTRIBUTE_BYTES]


def truncate_utf8(text: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    """Cut text to at most `limit` UTF-8 bytes without splitting a character."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore")
