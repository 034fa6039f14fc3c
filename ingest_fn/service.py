"""The ingest pipeline as a plain async function of the request's parts.

Order matters and is fixed here: method, declared size, bounded read, verify
the raw bytes, only then parse and classify, publish, and report success only
once Pub/Sub has confirmed. Every refusal is a typed error from errors.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ingest_fn import publisher
from ingest_fn.classify import Destination, OutgoingMessage, classify
from ingest_fn.errors import MethodNotAllowed, PayloadTooLarge, PublishFailed
from ingest_fn.verify import SignatureVerifier
from shared.log import TraceContext
from shared.settings import IngestSettings


@dataclass(frozen=True)
class Stored:
    """A webhook Pub/Sub has confirmed; only now may the sender hear 2xx."""

    message: OutgoingMessage
    message_id: str
    topic: str


class Publisher(Protocol):
    """What the ingestor needs from Pub/Sub (ingest_fn.publisher.AsyncPublisher)."""

    def topic_path(self, topic_id: str) -> str: ...

    async def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str: ...


class Ingestor:
    def __init__(self, settings: IngestSettings, publisher_: Publisher | None = None) -> None:
        self._settings = settings
        self._verifier = SignatureVerifier(
            (secret.get_secret_value() for secret in settings.webhook_secrets),
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )
        self.publisher = publisher_ or publisher.AsyncPublisher(
            publisher.PublisherConfig(
                project_id=settings.google_cloud_project,
                timeout_seconds=settings.publish_timeout_seconds,
                batch_max_messages=settings.publish_batch_max_messages,
                max_outstanding=settings.publish_max_outstanding,
            )
        )
        self._topics = {
            Destination.EVENTS: self.publisher.topic_path(settings.events_topic),
            Destination.QUARANTINE: self.publisher.topic_path(settings.quarantine_topic),
        }

    async def ingest(
        self,
        *,
        method: str,
        headers: Mapping[str, str],
        content_length: int | None,
        body: AsyncIterable[bytes],
        now: float,
        trace: TraceContext,
    ) -> Stored:
        """Store one webhook delivery or raise an IngestError saying why not; its message
        carries `trace` for the handlers to continue."""
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not allowed; use POST")
        raw = await read_limited(body, content_length, self._settings.max_body_bytes)
        signed = self._verifier.verify(raw, headers, now=now)
        message = classify(raw, signed, source=self._settings.event_source, trace=trace)
        topic = self._topics[message.destination]
        try:
            message_id = await self.publisher.publish(topic, message.data, message.attributes)
        except publisher.MessageRejected as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except publisher.PublishFailed as exc:
            raise PublishFailed(str(exc)) from exc
        return Stored(message, message_id, topic)


async def read_limited(
    chunks: AsyncIterable[bytes], content_length: int | None, limit: int
) -> bytes:
    """The whole body, refused as soon as it is known to exceed `limit`.

    A declared Content-Length over the limit is refused before reading; a body
    without one (chunked) is refused once the limit is crossed while reading, so
    at most one chunk past the limit is ever held.
    """
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"declared {content_length} bytes; the limit is {limit}")
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
