"""Signature and timestamp verification of a webhook's raw bytes.

Svix signs `"{id}.{timestamp}.{body}"` with HMAC-SHA256 (Standard Webhooks).
The `svix` package computes and compares the signature; this module adds what
it leaves out: several active secrets during rotation, a configurable window,
strict header syntax, and one exception type for every way a request fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from svix.webhooks import Webhook, WebhookVerificationError

from ingest_fn.errors import SignatureRejected

# Svix's own names first, then the unbranded Standard Webhooks names, as svix does.
_ID_HEADERS: Final = ("svix-id", "webhook-id")
_TIMESTAMP_HEADERS: Final = ("svix-timestamp", "webhook-timestamp")
_SIGNATURE_HEADERS: Final = ("svix-signature", "webhook-signature")
_TIMESTAMP: Final = re.compile(r"^[0-9]{1,12}$")
# Svix ids are short (msg_ + 27 chars); anything longer than an attribute can hold is not one.
_MAX_ID_CHARS: Final = 256


@dataclass(frozen=True)
class SignedHeaders:
    """The verified delivery's identity: the idempotency key and its send time."""

    webhook_id: str
    timestamp: str


class SignatureVerifier:
    """Verifies against every configured secret; any one of them passing is enough."""

    def __init__(self, secrets: Iterable[str], *, tolerance_seconds: int) -> None:
        self._webhooks = tuple(Webhook(secret) for secret in secrets)
        if not self._webhooks:
            raise ValueError("at least one webhook secret is required")
        self._tolerance = tolerance_seconds

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> SignedHeaders:
        """Return the delivery's id and timestamp, or raise SignatureRejected."""
        lowered = {key.lower(): value for key, value in headers.items()}
        webhook_id = _first(lowered, _ID_HEADERS)
        timestamp = _first(lowered, _TIMESTAMP_HEADERS)
        signature = _first(lowered, _SIGNATURE_HEADERS)
        if not (webhook_id and timestamp and signature):
            raise SignatureRejected("missing signature headers")
        if len(webhook_id) > _MAX_ID_CHARS or not webhook_id.isprintable():
            raise SignatureRejected("malformed webhook id")
        if not _TIMESTAMP.match(timestamp):
            raise SignatureRejected("malformed timestamp")
        skew = int(timestamp) - now
        if skew < -self._tolerance:
            raise SignatureRejected("timestamp too old")
        if skew > self._tolerance:
            raise SignatureRejected("timestamp too new")

        normalised = {
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }
        for webhook in self._webhooks:
            try:
                webhook.verify(body, normalised)
            except WebhookVerificationError:
                continue
            except ValueError:
                # The verifier raises bare ValueError (and UnicodeDecodeError) for
                # malformed signature lists and non-UTF-8 bodies: still a bad signature.
                raise SignatureRejected("malformed signature header or body") from None
            return SignedHeaders(webhook_id=webhook_id, timestamp=timestamp)
        raise SignatureRejected("no matching signature")


def _first(lowered: Mapping[str, str], names: tuple[str, ...]) -> str:
    """The first non-empty header among `names` (already lower-cased), trimmed."""
    for name in names:
        value = lowered.get(name, "").strip()
        if value:
            return value
    return ""
