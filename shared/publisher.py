"""Publishing to Pub/Sub, confirmed and bounded in time, batched across request threads.

Why not the `google-cloud-pubsub` PublisherClient: measured under 16
concurrent webhooks (`make bench-ingest`), its per-message machinery (a
thread per batch commit, proto-plus wrappers, api_core retry wrappers) cost
more CPU than the whole rest of the function. This module keeps what matters
from it and drops the rest: requests from all threads of the process join
batches (up to `batch_max_messages`, waiting at most `batch_max_latency`);
one of the waiting request threads itself calls the Pub/Sub `Publish` RPC
with the raw protobuf messages (no sender threads: handing each message to
another thread and back cost more CPU in thread switches than the RPC),
retries transient errors until the messages' deadline, and wakes exactly the
threads whose messages were stored.

One publisher per process, created lazily: the channel opens on the first
publish (after the server forked its worker), never at import.
PUBSUB_EMULATOR_HOST selects the emulator as the client library does.
"""

from __future__ import annotations

import contextlib
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
# Publish RPCs in flight at once (one per leader); see ConfirmingPublisher. Two, so
# that one RPC retrying a transient error does not hold up every other message. One
# makes bigger batches: against the emulator that gave 10-15% more requests/s with
# an idle emulator, and nothing measurable once `make bench-ingest`'s subscription
# loads it too; not worth the head-of-line blocking against the real service.
_MAX_CONCURRENT_SENDS: Final = 2
# Room for the request's framing around one message's data and attributes.
_MESSAGE_OVERHEAD: Final = 64


def topic_path(project_id: str, topic_id: str) -> str:
    return f"projects/{project_id}/topics/{topic_id}"


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
    # At most this many Publish RPCs in flight at once; messages arriving meanwhile
    # wait in the queue and leave together in the next batch.
    max_concurrent_sends: int = _MAX_CONCURRENT_SENDS


class _Pending:
    """One message, and the waiting request thread it belongs to.

    `_signal` is a lock held from the start; releasing it wakes the waiting thread
    exactly once, either with its answer (`settle`) or with a batch to send
    (`lead`). A bare lock is the cheapest thing one thread can block on.
    """

    __slots__ = (
        "_signal",
        "abandoned",
        "attributes",
        "batch",
        "data",
        "deadline",
        "enqueued",
        "error",
        "message_id",
        "size",
        "topic",
    )

    def __init__(
        self, topic: str, data: bytes, attributes: Mapping[str, str], now: float, timeout: float
    ) -> None:
        self.topic = topic
        self.data = data
        self.attributes = attributes
        self.enqueued = now
        self.deadline = now + timeout
        self.size = len(data) + sum(len(k) + len(v) for k, v in attributes.items())
        self.size += _MESSAGE_OVERHEAD
        self.message_id: str | None = None
        self.error: Exception | None = None
        self.batch: list[_Pending] | None = None
        # Set, under the publisher's lock, once the waiting thread has given up and
        # left: a batch handed to it would never be sent, and the send slot lost.
        self.abandoned = False
        self._signal = threading.Lock()
        self._signal.acquire()

    def settle(self, message_id: str | None = None, error: Exception | None = None) -> None:
        self.message_id, self.error = message_id, error
        self._signal.release()

    def lead(self, batch: list[_Pending]) -> None:
        """Wake this message's thread to send `batch` (which holds this message)."""
        self.batch = batch
        self._signal.release()

    def wait(self, timeout: float) -> bool:
        return self._signal.acquire(timeout=max(0.0, timeout))


class ConfirmingPublisher:
    """Publishes one message and waits for Pub/Sub's confirmation, or raises.

    Leader/follower batching, without threads of its own: a request thread that
    finds a send slot free becomes the leader, lingers up to the batch latency for
    company, takes a batch from the queue and calls the Publish RPC itself; the
    other request threads wait on their message. When the RPC returns, the leader
    wakes each message's thread with its answer, and hands the slot over with the
    next batch to the first waiting thread in it, if any. Every thread blocks only
    for its own answer, and no message changes hands between threads just to be sent.
    """

    def __init__(self, config: PublisherConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        # Messages not yet answered: queued, or in a batch being sent.
        self._outstanding = 0
        self._sending = 0
        # Leaders lingering for company, woken early once a batch is full.
        self._lingering: list[threading.Lock] = []
        self._started = False
        self._call: Any = None

    def topic_path(self, topic_id: str) -> str:
        return topic_path(self._config.project_id, topic_id)

    def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub has stored the message.

        Raises PublishFailed when Pub/Sub errs or does not confirm within the
        configured timeout, and MessageRejected when Pub/Sub can never take it.
        """
        config = self._config
        pending = _Pending(topic_path, data, attributes, time.monotonic(), config.timeout_seconds)
        if pending.size + len(topic_path) > PUBSUB_MAX_REQUEST_BYTES:
            raise MessageRejected(f"{pending.size} bytes exceed Pub/Sub's request limit")
        with self._lock:
            if not self._started:
                self._start()
                self._started = True
            if self._outstanding >= config.max_outstanding:
                # Bounded memory: while Pub/Sub is slow or down, refuse instead of queueing.
                raise PublishFailed(f"{self._outstanding} messages already wait for Pub/Sub")
            self._queue.append(pending)
            self._outstanding += 1
            leader = self._sending < config.max_concurrent_sends
            if leader:
                self._sending += 1
            elif self._lingering and len(self._queue) >= config.batch_max_messages:
                self._lingering.pop().release()
        if leader:
            self._lead(pending)
        return self._await(pending)

    def _start(self) -> None:
        """Open the channel; called once, under the lock, on the first publish."""
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
            # What generated stubs pass: the method is registered with the channel once,
            # not looked up per call. Alternating runs against the emulator here: 0.18-0.25
            # instead of 0.24-0.28 ms CPU per Publish RPC.
            _registered_method=True,
        )

    def _lead(self, pending: _Pending) -> None:
        """Holding a send slot: linger for company, then send what is queued."""
        latency = self._config.batch_max_latency_seconds
        wake: threading.Lock | None = None
        if latency > 0:
            wake = threading.Lock()
            wake.acquire()
            with self._lock:
                self._lingering.append(wake)
            wake.acquire(timeout=max(0.0, pending.enqueued + latency - time.monotonic()))
        with self._lock:
            if wake is not None and wake in self._lingering:
                self._lingering.remove(wake)
            batch = self._take_batch()
            if not batch:
                # Another leader took everything, this message included.
                self._sending -= 1
                return
        self._send(batch)

    def _await(self, pending: _Pending) -> str:
        while pending.wait(pending.deadline - time.monotonic()):
            batch = pending.batch
            if batch is None:
                if pending.error is not None:
                    raise pending.error
                assert pending.message_id is not None
                return pending.message_id
            pending.batch = None
            self._send(batch)
        with self._lock:
            pending.abandoned = True
            if pending.batch is not None:
                # Handed a batch just as time ran out: pass it on; _hand_over skips this
                # message, now abandoned, like any other whose thread has left.
                batch, pending.batch = pending.batch, None
                self._hand_over(batch)
            elif pending.message_id is None and pending.error is None:
                with contextlib.suppress(ValueError):
                    # Still queued: drop it, it will not be sent after its 503.
                    self._queue.remove(pending)
                    self._outstanding -= 1
        if pending.message_id is not None:
            # Confirmed in the instant the wait ran out: it is stored, say so.
            return pending.message_id
        raise PublishFailed(f"no confirmation within {self._config.timeout_seconds:g}s")

    def _take_batch(self) -> list[_Pending]:
        """Under the lock: the oldest queued messages, within the batch limits."""
        queue = self._queue
        if not queue:
            return []
        first = queue.popleft()
        batch, size = [first], first.size
        limit = self._config.batch_max_messages
        while queue and len(batch) < limit:
            candidate = queue[0]
            if candidate.topic != first.topic or size + candidate.size > _BATCH_MAX_BYTES:
                break
            batch.append(queue.popleft())
            size += candidate.size
        return batch

    def _hand_over(self, batch: list[_Pending]) -> None:
        """Under the lock: give this send slot and `batch` (or the next one) to a waiter.

        Only to a thread still waiting: one that timed out just as the batch was
        taken has left (queued messages remove themselves when they time out, so
        only a batch can hold such a message), and its answer is already given.
        """
        while True:
            if not batch:
                batch = self._take_batch()
            if not batch:
                self._sending -= 1
                return
            waiting = [pending for pending in batch if not pending.abandoned]
            self._outstanding -= len(batch) - len(waiting)
            if waiting:
                waiting[0].lead(waiting)
                return
            batch = []

    def _send(self, batch: list[_Pending]) -> None:
        """Publish `batch`, answer each message's thread, then pass the slot on."""
        try:
            now = time.monotonic()
            live: list[_Pending] = []
            for pending in batch:
                if pending.deadline > now:
                    live.append(pending)
                else:
                    pending.settle(
                        error=PublishFailed("deadline passed before the message was sent")
                    )
            if live:
                try:
                    ids = self._publish_batch(live)
                except Exception as exc:  # noqa: BLE001
                    # Each caller decides what to answer; the slot must be passed on.
                    for pending in live:
                        pending.settle(error=exc)
                else:
                    for pending, message_id in zip(live, ids, strict=True):
                        pending.settle(message_id=message_id)
        finally:
            with self._lock:
                self._outstanding -= len(batch)
                self._hand_over([])

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
