"""The Pub/Sub push envelope: what a push subscription POSTs to a handler.

    {"message": {"data": "<base64>", "attributes": {...}, "messageId": "...",
                 "publishTime": "..."}, "subscription": "projects/.../subscriptions/...",
     "deliveryAttempt": 3}

`deliveryAttempt` is present only on subscriptions with a dead-letter policy
(and never from the emulator). Anything else malformed is a permanent error:
redelivering the same bytes cannot fix it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from shared.contract import Attr
from shared.errors import PermanentError

MAX_ENVELOPE_BYTES: Final = 16 * 1024 * 1024  # base64 of Pub/Sub's 10 MB plus the envelope


class BadEnvelope(PermanentError):
    """The request is not a Pub/Sub push envelope this service can read."""

    reason = "bad_envelope"


@dataclass(frozen=True)
class PushMessage:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    publish_time: str | None
    subscription: str | None
    delivery_attempt: int | None

    @property
    def webhook_id(self) -> str:
        return self.attributes[Attr.WEBHOOK_ID]

    @property
    def event_type(self) -> str | None:
        return self.attributes.get(Attr.EVENT_TYPE)


def parse_push(body: bytes) -> PushMessage:
    """Validate and decode one push request body, or raise BadEnvelope saying why."""
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        raise BadEnvelope("body is not JSON") from None
    if not isinstance(envelope, dict):
        raise BadEnvelope("envelope is not a JSON object")
    message = envelope.get("message")
    if not isinstance(message, dict):
        raise BadEnvelope("envelope has no message object")

    data = _decode_data(message.get("data", ""))
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise BadEnvelope("message.attributes is not a map of strings")
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise BadEnvelope("message.messageId is missing")
    if not attributes.get(Attr.WEBHOOK_ID):
        raise BadEnvelope("message has no webhook_id attribute")

    return PushMessage(
        data=data,
        attributes=attributes,
        message_id=message_id,
        publish_time=_optional_str(message.get("publishTime") or message.get("publish_time")),
        subscription=_optional_str(envelope.get("subscription")),
        delivery_attempt=_delivery_attempt(envelope.get("deliveryAttempt")),
    )


def _decode_data(value: Any) -> bytes:
    if not isinstance(value, str):
        raise BadEnvelope("message.data is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadEnvelope("message.data is not valid base64") from None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _delivery_attempt(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadEnvelope("deliveryAttempt is not a positive integer")
    return value


def encode_push(
    data: bytes,
    attributes: dict[str, str],
    *,
    message_id: str,
    subscription: str = "projects/local/subscriptions/local",
    delivery_attempt: int | None = None,
    publish_time: str = "2026-11-28T12:00:00.000Z",
) -> bytes:
    """The body a push subscription POSTs for one message: what `parse_push` reads, for
    the tests and benchmarks that drive a handler app without Pub/Sub."""
    envelope: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": publish_time,
        },
        "subscription": subscription,
    }
    if delivery_attempt is not None:
        envelope["deliveryAttempt"] = delivery_attempt
    return json.dumps(envelope).encode()
