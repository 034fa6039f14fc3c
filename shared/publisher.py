"""Publishing to Pub/Sub, confirmed and bounded in time, batched across request threads.

Why not the `google-cloud-pubsub` PublisherClient: measured under 16
concurrent webhooks (`make bench-ingest`), its per-message machinery (a
thread per batch commit, proto-plus wrappers, api_core retry wrappers) cost
more CPU than the whole rest of the function. This module keeps what matters
from it and drops the rest: requests from all threads of the process join
batches (up to `batch_max_messages`, waiting at most `batch_max_latency`),
a few long-lived sender threads call the Pub/Sub `Publish` RPC with the raw
protobuf messages, retry transient errors until each message's deadline, and
wake exactly the threads whose messages were stored.

One publisher per process, created lazily: the channel and the sender threads
start on the first publish (after the server forked its worker), never at
import. PUBSUB_EMULATOR_HOST selects the emulator as the client library does.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.api_core import grpc_helpers
from google.pubsub_v1.types import pubsub as pubsub_types

from shared.errors import PermanentError, RetryableError
from shared.settings import PUBSUB_MAX_REQUEST_BYTES

_PublishRequest: Any = pubsub_types.PublishRequest.pb()
_PubsubMessage: Any = pubsub_types.PubsubMessage.pb()
_PublishResponse: Any = pubsub_types.PublishResponse.pb()
_PUBLISH_METHOD: Final = "/google.pubsub.v1.Publisher/Publish"
_ENDPOINT: Final = "pubsub.googleapis.com:443"
_SCOPES: Final = ("https://www.googleapis.com/auth/pubsub",)
# Codes worth another attempt before the deadline; anything else fails at once.
_TRANSIENT: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)
_BATCH_MAX_BYTES: Final = 1_000_000
_SENDERS: Final = 2
# Room for the request's framing around one message's data and attributes.
_MESSAGE_OVERHEAD: Final = 64


class PublishFailed(RetryableError):
    """Pub/Sub did not confirm the publish in time: the message may not be stored."""


class MessageRejected(PermanentError):
    """Pub/Sub can never accept this message (too large, or refused as invalid)."""


@dataclass(frozen=True)
class PublisherConfig:
    project_id: str
    timeout_seconds: float
    batch_max_latency_seconds: float
    batch_max_messages: int
    max_outstanding: int


class _Pending:
    """One message waiting for its batch's answer."""

    __slots__ = ("attributes", "data", "deadline", "done", "error", "message_id", "size", "topic")

    def __init__(self, topic: str, data: bytes, attributes: Mapping[str, str], deadline: float):
        self.topic = topic
        self.data = data
        self.attributes = attributes
        self.deadline = deadline
        self.size = len(data) + sum(len(k) + len(v) for k, v in attributes.items())
        self.size += _MESSAGE_OVERHEAD
        self.done = threading.Event()
        self.message_id: str | None = None
        self.error: Exception | None = None

    def settle(self, message_id: str | None = None, error: Exception | None = None) -> None:
        self.message_id, self.error = message_id, error
        self.done.set()


class ConfirmingPublisher:
    """Publishes one message and waits for Pub/Sub's confirmation, or raises."""

    def __init__(self, config: PublisherConfig) -> None:
        self._config = config
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._started = False
        self._call: Any = None

    def topic_path(self, topic_id: str) -> str:
        return f"projects/{self._config.project_id}/topics/{topic_id}"

    def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub has stored the message.

        Raises PublishFailed when Pub/Sub errs or does not confirm within the
        configured timeout, and MessageRejected when Pub/Sub can never take it.
        """
        pending = _Pending(
            topic_path, data, attributes, time.monotonic() + self._config.timeout_seconds
        )
        if pending.size + len(topic_path) > PUBSUB_MAX_REQUEST_BYTES:
            raise MessageRejected(f"{pending.size} bytes exceed Pub/Sub's request limit")
        with self._ready:
            if not self._started:
                self._start()
            if len(self._queue) >= self._config.max_outstanding:
                # Bounded memory: while Pub/Sub is slow or down, refuse instead of queueing.
                raise PublishFailed(f"{len(self._queue)} messages already wait for Pub/Sub")
            self._queue.append(pending)
            self._ready.notify()
        if not pending.done.wait(max(0.0, pending.deadline - time.monotonic())):
            raise PublishFailed(f"no confirmation within {self._config.timeout_seconds:g}s")
        if pending.error is not None:
            raise pending.error
        assert pending.message_id is not None
        return pending.message_id

    def _start(self) -> None:
        """Open the channel and start the senders; called once, under the lock."""
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        channel = (
            grpc.insecure_channel(emulator, options=options)
            if emulator
            else grpc_helpers.create_channel(_ENDPOINT, scopes=_SCOPES, options=options)
        )
        self._call = channel.unary_unary(
            _PUBLISH_METHOD,
            request_serializer=_PublishRequest.SerializeToString,
            response_deserializer=_PublishResponse.FromString,
        )
        for number in range(_SENDERS):
            threading.Thread(
                target=self._send_loop, name=f"publisher-{number}", daemon=True
            ).start()
        self._started = True

    def _next_batch(self) -> list[_Pending]:
        """Wait for a message, then for company: up to the batch limits or the latency bound."""
        config = self._config
        with self._ready:
            while not self._queue:
                self._ready.wait()
            first = self._queue.popleft()
            batch, size = [first], first.size
            linger_until = time.monotonic() + config.batch_max_latency_seconds
            while len(batch) < config.batch_max_messages:
                if not self._queue:
                    remaining = linger_until - time.monotonic()
                    if remaining <= 0 or not self._ready.wait(remaining) or not self._queue:
                        break
                candidate = self._queue[0]
                if candidate.topic != first.topic or size + candidate.size > _BATCH_MAX_BYTES:
                    break
                batch.append(self._queue.popleft())
                size += candidate.size
            if self._queue:
                self._ready.notify()
            return batch

    def _send_loop(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                ids = self._publish_batch(batch)
            except Exception as exc:  # noqa: BLE001
                # The batch's callers decide what to answer; this thread must live on.
                for pending in batch:
                    pending.settle(error=exc)
            else:
                for pending, message_id in zip(batch, ids, strict=True):
                    pending.settle(message_id=message_id)

    def _publish_batch(self, batch: list[_Pending]) -> list[str]:
        topic = batch[0].topic
        request = _PublishRequest(
            topic=topic,
            messages=[_PubsubMessage(data=p.data, attributes=p.attributes) for p in batch],
        )
        deadline = min(pending.deadline for pending in batch)
        backoff = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed("deadline passed before Pub/Sub confirmed")
            try:
                response = self._call(
                    request,
                    timeout=remaining,
                    metadata=(("x-goog-request-params", f"topic={topic}"),),
                )
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT and len(batch) == 1:
                    raise MessageRejected(f"Pub/Sub refused the message: {exc.details()}") from exc
                if code not in _TRANSIENT:
                    raise PublishFailed(f"{code.name}: {exc.details()}") from exc
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 1.0)
                continue
            ids: list[str] = list(response.message_ids)
            if len(ids) != len(batch):
                raise PublishFailed(f"Pub/Sub answered {len(ids)} ids for {len(batch)} messages")
            return ids
