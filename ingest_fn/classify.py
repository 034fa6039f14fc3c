"""Decide where a verified webhook goes and with which attributes.

Every verified body is published somewhere: a valid event (known or not) to
the events topic; anything the sender's retries cannot fix to quarantine,
with the reason, so nothing Svix delivered is ever dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ingest_fn.verify import SignedHeaders
from shared.contract import (
    Attr,
    delivery_attributes,
    event_attributes,
    oversized_attributes,
    truncate_utf8,
)
from shared.errors import InvalidEvent
from shared.events import REASON_NOT_JSON, UnknownEvent, parse_event
from shared.log import TraceContext

REASON_ATTRIBUTE_TOO_LONG: Final = "attribute_too_long"


class Destination(StrEnum):
    EVENTS = "events"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class OutgoingMessage:
    destination: Destination
    data: bytes
    attributes: dict[str, str]
    known_type: bool = False

    @property
    def event_type(self) -> str | None:
        return self.attributes.get(Attr.EVENT_TYPE)

    @property
    def reason(self) -> str | None:
        return self.attributes.get(Attr.REASON)


def classify(
    body: bytes, signed: SignedHeaders, *, source: str, trace: TraceContext
) -> OutgoingMessage:
    """Route one verified body; `data` is always the body, byte for byte."""
    base = delivery_attributes(
        webhook_id=signed.webhook_id, webhook_timestamp=signed.timestamp, source=source, trace=trace
    )
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested JSON is valid JSON that Python cannot decode.
        return _quarantine(body, base, REASON_NOT_JSON, type(exc).__name__, payload=None)
    try:
        event = parse_event(payload)
    except InvalidEvent as exc:
        return _quarantine(body, base, exc.reason, exc.detail, payload=payload)

    attributes = {**base, **event_attributes(event)}
    too_long = oversized_attributes(attributes)
    if too_long:
        detail = f"over 1024 bytes: {', '.join(sorted(too_long))}"
        return _quarantine(body, base, REASON_ATTRIBUTE_TOO_LONG, detail, payload=payload)
    return OutgoingMessage(
        Destination.EVENTS, body, attributes, known_type=not isinstance(event, UnknownEvent)
    )


def _quarantine(
    body: bytes, base: dict[str, str], reason: str, detail: str, *, payload: object
) -> OutgoingMessage:
    attributes = {
        **base,
        Attr.REASON.value: reason,
        Attr.REASON_DETAIL.value: truncate_utf8(detail),
    }
    if isinstance(payload, dict):
        event_type = payload.get("webhook_event_type")
        if isinstance(event_type, str) and event_type:
            attributes[Attr.EVENT_TYPE.value] = truncate_utf8(event_type)
    return OutgoingMessage(Destination.QUARANTINE, body, attributes)
