"""Publishing to Pub/Sub from the event loop: confirmed per message, bounded in time.

`AsyncPublisher.publish` returns a message's id once Pub/Sub has stored it, or
raises. One Publish RPC is out at a time: the messages that arrive meanwhile wait
in one queue and leave together in the next (one topic per request, within
Pub/Sub's limits); nothing lingers when no RPC is out. While a request holding a
message over 1 MB uploads, a second RPC may go out, so that small webhooks do not
wait behind a large one. A transient error puts the request's messages back at
the head of the queue and the next attempt leaves after a back-off (doubling, up
to 1 s), together with whatever queued meanwhile, until each message's deadline;
every message is answered by its own deadline, whatever Pub/Sub does; beyond
`max_outstanding` unanswered messages a publish is refused at once.

The RPC is grpc.aio's, called with the raw protobuf request: Google's
PublisherAsyncClient costs more CPU per RPC (README, "Why the publisher is our
own"; measured by `python -m ops.bench.publish`). The channel opens on the first
publish, inside the event loop that serves the requests, never at import;
PUBSUB_EMULATOR_HOST selects the emulator as the client libraries do.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import google.auth
import grpc
from google.api_core import grpc_helpers_async
from google.pubsub_v1.types import pubsub as pubsub_types

from shared.errors import PermanentError, RetryableError
from shared.settings import PUBSUB_MAX_REQUEST_BYTES

_PublishRequest: Any = pubsub_types.PublishRequest.pb()
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
# Pub/Sub takes up to 10 MB and 1,000 messages per request; smaller requests keep one
# large message from delaying many small ones.
_BATCH_MAX_BYTES: Final = 1_000_000
# Room for the request's framing around one message's data and attributes.
_MESSAGE_OVERHEAD: Final = 64
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 1.0

Rpc = Callable[..., Awaitable[Any]]


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
    batch_max_messages: int
    max_outstanding: int


class _Pending:
    """One message on its way: what to send, by when, and who waits for the answer."""

    __slots__ = ("attributes", "data", "deadline", "future", "size", "topic")

    def __init__(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        size: int,
        deadline: float,
        future: asyncio.Future[str],
    ) -> None:
        self.topic = topic
        self.data = data
        self.attributes = attributes
        self.size = size
        self.deadline = deadline
        self.future = future


class _Transient(Exception):
    """The attempt failed in a way another attempt may not."""


_CHANNEL_OPTIONS: Final = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


async def _open_channel() -> grpc.aio.Channel:
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        return grpc.aio.insecure_channel(emulator, options=_CHANNEL_OPTIONS)
    # Finding the credentials may ask the metadata server: not on the event loop.
    credentials, _ = await asyncio.to_thread(google.auth.default, scopes=_SCOPES)
    channel: grpc.aio.Channel = grpc_helpers_async.create_channel(
        _ENDPOINT, credentials=credentials, options=_CHANNEL_OPTIONS
    )
    return channel


class AsyncPublisher:
    """One per process, used from one event loop (the worker's)."""

    def __init__(self, config: PublisherConfig) -> None:
        self._config = config
        self._queue: deque[_Pending] = deque()
        # Messages not yet answered by an RPC: queued, or in a request being sent.
        self._outstanding = 0
        self._in_flight = 0
        self._large_in_flight = 0
        self._backoff = 0.0
        self._retry: asyncio.TimerHandle | None = None
        self._call: Rpc | None = None
        self._starting: asyncio.Future[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def topic_path(self, topic_id: str) -> str:
        return topic_path(self._config.project_id, topic_id)

    async def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """The message id once Pub/Sub stored the message.

        Raises PublishFailed when Pub/Sub errs or does not confirm within the
        configured timeout, or too many messages already wait; MessageRejected when
        Pub/Sub can never take it.
        """
        size = len(data) + _MESSAGE_OVERHEAD
        for key, value in attributes.items():
            size += len(key) + len(value)
        if size + len(topic_path) > PUBSUB_MAX_REQUEST_BYTES:
            raise MessageRejected(f"{size} bytes exceed Pub/Sub's request limit")
        if self._outstanding >= self._config.max_outstanding:
            # Bounded memory: while Pub/Sub is slow or down, refuse instead of queueing.
            raise PublishFailed(f"{self._outstanding} messages already wait for Pub/Sub")
        if self._call is None:
            await self._start()
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[str] = loop.create_future()
        deadline = loop.time() + self._config.timeout_seconds
        pending = _Pending(
            topic_path, data, attributes, size=size, deadline=deadline, future=future
        )
        self._queue.append(pending)
        self._outstanding += 1
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire)
        if self._may_send():
            # Soon, not now: the requests already waiting in this turn of the loop join.
            self._in_flight += 1
            loop.call_soon(self._send_next)
        return await future

    def _may_send(self) -> bool:
        if self._retry is not None:
            return False
        # A second RPC only beside one that uploads a large message.
        return self._in_flight == 0 or (self._in_flight == 1 and self._large_in_flight == 1)

    async def _start(self) -> None:
        """Open the channel, once; concurrent first publishes wait for the same start."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._open())
        try:
            await asyncio.shield(self._starting)
        except Exception as exc:
            self._starting = None
            raise PublishFailed(f"cannot open a channel to Pub/Sub: {exc}") from exc

    async def _open(self) -> None:
        channel = await _open_channel()
        self._loop = asyncio.get_running_loop()
        self._call = channel.unary_unary(
            _PUBLISH_METHOD,
            request_serializer=_PublishRequest.SerializeToString,
            response_deserializer=_PublishResponse.FromString,
            # What generated stubs pass: the method is registered with the channel once,
            # not looked up per call.
            _registered_method=True,
        )

    def _send_next(self) -> None:
        """Use the send slot taken by the caller: send what is queued, or give it back."""
        batch = self._take_batch()
        if not batch:
            self._in_flight -= 1
            return
        assert self._loop is not None
        self._loop.create_task(self._send(batch))

    def _take_batch(self) -> list[_Pending]:
        """The oldest queued message and the later ones for its topic, within the limits.

        Messages whose caller has gone (cancelled) are dropped here, unsent, and those
        whose deadline has passed are answered.
        """
        assert self._loop is not None
        now = self._loop.time()
        queue = self._queue
        batch: list[_Pending] = []
        others: list[_Pending] = []
        size = 0
        limit = self._config.batch_max_messages
        while queue and len(batch) < limit:
            pending = queue.popleft()
            if pending.future.done() or pending.deadline <= now:
                self._settle([pending], error=self._timed_out())
                continue
            if batch and pending.topic != batch[0].topic:
                others.append(pending)
                continue
            if batch and size + pending.size > _BATCH_MAX_BYTES:
                queue.appendleft(pending)
                break
            batch.append(pending)
            size += pending.size
        queue.extendleft(reversed(others))
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        large = len(batch) == 1 and batch[0].size > _BATCH_MAX_BYTES
        self._large_in_flight += large
        try:
            ids = await self._attempt(batch)
        except _Transient:
            self._requeue(batch)
            return
        except (MessageRejected, PublishFailed) as error:
            self._settle(batch, error=error)
        except Exception as exc:  # noqa: BLE001 -- the callers must hear of it, whatever it is
            self._settle(batch, error=PublishFailed(f"{type(exc).__name__}: {exc}"))
        else:
            self._backoff = 0.0
            self._settle(batch, ids=ids)
        finally:
            self._large_in_flight -= large
        if self._in_flight > 1 and not self._large_in_flight:
            # The second slot was for the large message's upload, which is over.
            self._in_flight -= 1
            return
        # The slot goes straight to what queued meanwhile.
        self._send_next()

    async def _attempt(self, batch: list[_Pending]) -> list[str]:
        """One Publish RPC for `batch`, bounded by its oldest message's deadline."""
        call, loop = self._call, self._loop
        assert call is not None and loop is not None
        remaining = batch[0].deadline - loop.time()
        if remaining <= 0:
            raise _Transient  # expired on its way out: back in the queue, _expire answers it
        topic = batch[0].topic
        # Each message built once, in place: half the cost of building it and copying it in.
        request = _PublishRequest(topic=topic)
        add = request.messages.add
        for pending in batch:
            add(data=pending.data, attributes=pending.attributes)
        try:
            response = await call(
                request,
                timeout=remaining,
                metadata=(("x-goog-request-params", f"topic={topic}"),),
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT and len(batch) == 1:
                raise MessageRejected(f"Pub/Sub refused the message: {exc.details()}") from exc
            if code in _TRANSIENT:
                raise _Transient from exc
            raise PublishFailed(f"{code.name}: {exc.details()}") from exc
        ids: list[str] = list(response.message_ids)
        if len(ids) != len(batch):
            raise PublishFailed(f"Pub/Sub answered {len(ids)} ids for {len(batch)} messages")
        return ids

    def _settle(
        self, batch: list[_Pending], *, ids: list[str] | None = None, error: Exception | None = None
    ) -> None:
        self._outstanding -= len(batch)
        for number, pending in enumerate(batch):
            if pending.future.done():
                continue
            if ids is not None:
                pending.future.set_result(ids[number])
            else:
                assert error is not None
                pending.future.set_exception(error)

    def _timed_out(self) -> PublishFailed:
        return PublishFailed(f"no confirmation within {self._config.timeout_seconds:g}s")

    def _requeue(self, batch: list[_Pending]) -> None:
        """A transient failure: back to the head of the queue, the next attempt after a pause."""
        loop = self._loop
        assert loop is not None
        self._queue.extendleft(reversed(batch))
        self._in_flight -= 1
        self._backoff = min(self._backoff * 2 or _BACKOFF_FIRST, _BACKOFF_MAX)
        if self._retry is None:
            self._retry = loop.call_later(self._backoff, self._resume)
        # The head is older now: answer what has expired, and time the next expiry from it.
        if self._expiry is not None:
            self._expiry.cancel()
        self._expire()

    def _resume(self) -> None:
        self._retry = None
        if self._queue and self._may_send():
            self._in_flight += 1
            self._send_next()

    def _expire(self) -> None:
        """Answer every queued message whose deadline has passed; re-arm for the next.

        Messages already in a request are bounded by the RPC's own deadline (their
        batch's oldest); these are the ones still waiting for a send slot.
        """
        loop = self._loop
        assert loop is not None
        self._expiry = None
        queue = self._queue
        now = loop.time()
        expired = []
        while queue and queue[0].deadline <= now:
            expired.append(queue.popleft())
        if expired:
            self._settle(expired, error=self._timed_out())
        if queue:
            self._expiry = loop.call_at(queue[0].deadline, self._expire)
