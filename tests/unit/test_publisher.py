"""The asyncio publisher's batching, retries, deadlines and back-pressure, over a fake RPC.

The real RPC against the emulator is covered by the integration tests; here the
call is replaced so that each test controls exactly when and how Pub/Sub answers.
Each test runs its own event loop (asyncio.run), as a server's worker does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from ingest_fn import publisher
from ingest_fn.publisher import AsyncPublisher, MessageRejected, PublisherConfig, PublishFailed
from shared.settings import PUBSUB_MAX_REQUEST_BYTES

TOPIC = "projects/p/topics/events"
OTHER_TOPIC = "projects/p/topics/quarantine"


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"fake {self._code.name}"


class FakePublish:
    """Stands in for the Publish RPC: records requests, answers ids, or blocks or fails.

    Like a real channel, it ends a call at its timeout with DEADLINE_EXCEEDED.
    """

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.started: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        # Codes to fail the next calls with, one per call, before answering normally.
        self.failures: list[grpc.StatusCode] = []
        self.fail_always: grpc.StatusCode | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self._next_id = 0

    async def __call__(self, request: Any, *, timeout: float, metadata: object) -> Any:
        assert ("x-goog-request-params", f"topic={request.topic}") in metadata  # type: ignore[operator]
        self.started.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            try:
                await asyncio.wait_for(self.gate.wait(), timeout)
            except TimeoutError:
                raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED) from None
            if self.fail_always is not None:
                raise FakeRpcError(self.fail_always)
            if self.failures:
                raise FakeRpcError(self.failures.pop(0))
            self.requests.append(request)
            ids = [str(self._next_id + n) for n in range(len(request.messages))]
            self._next_id += len(ids)
            return publisher._PublishResponse(message_ids=ids)
        finally:
            self.in_flight -= 1

    @property
    def batches(self) -> list[list[bytes]]:
        return [[m.data for m in request.messages] for request in self.requests]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePublish:
    fake = FakePublish()

    async def open_(self: AsyncPublisher) -> None:
        self._loop = asyncio.get_running_loop()
        self._call = fake

    monkeypatch.setattr(AsyncPublisher, "_open", open_)
    return fake


def make(**overrides: Any) -> AsyncPublisher:
    settings: dict[str, Any] = {
        "project_id": "p",
        "timeout_seconds": 5.0,
        "batch_max_messages": 50,
        "max_outstanding": 1000,
    }
    settings.update(overrides)
    return AsyncPublisher(PublisherConfig(**settings))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def settled(tasks: list[asyncio.Task[str]]) -> list[object]:
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (the fake's gate keeps the rest waiting)."""
    while not condition():
        await asyncio.sleep(0)


def test_one_message_is_published_byte_exact_with_its_attributes(fake: FakePublish) -> None:
    async def test() -> None:
        data = b'{"b": 1,  "a": "\xc3\xa9"}\n'
        attributes = {"event_type": "sync.complete", "webhook_id": "msg_1"}
        pub = make()
        assert await pub.publish(TOPIC, data, attributes) == "0"
        [request] = fake.requests
        assert request.topic == TOPIC
        [message] = request.messages
        assert message.data == data
        assert dict(message.attributes) == attributes
        assert pub.outstanding == 0

    run(test)


def test_messages_arriving_while_an_rpc_is_out_leave_together_in_the_next(
    fake: FakePublish,
) -> None:
    async def test() -> None:
        pub = make()
        fake.gate.clear()
        first = asyncio.create_task(pub.publish(TOPIC, b"first", {}))
        await until(lambda: len(fake.started) == 1)
        later = [asyncio.create_task(pub.publish(TOPIC, b"m%d" % n, {})) for n in range(5)]
        await until(lambda: pub.outstanding == 6)
        assert len(fake.started) == 1  # one RPC out at a time
        fake.gate.set()
        ids = await settled([first, *later])
        assert fake.batches == [[b"first"], [b"m0", b"m1", b"m2", b"m3", b"m4"]]
        assert ids == ["0", "1", "2", "3", "4", "5"]
        assert fake.most_in_flight == 1
        assert pub.outstanding == 0

    run(test)


def test_a_batch_holds_at_most_batch_max_messages(fake: FakePublish) -> None:
    async def test() -> None:
        pub = make(batch_max_messages=3)
        fake.gate.clear()
        tasks = [asyncio.create_task(pub.publish(TOPIC, b"m%d" % n, {})) for n in range(7)]
        await until(lambda: len(fake.started) == 1)
        fake.gate.set()
        await settled(tasks)
        assert [len(batch) for batch in fake.batches] == [3, 3, 1]

    run(test)


def test_each_request_holds_one_topic_and_no_message_is_overtaken_within_its_topic(
    fake: FakePublish,
) -> None:
    async def test() -> None:
        pub = make()
        fake.gate.clear()
        holder = asyncio.create_task(pub.publish(TOPIC, b"holder", {}))
        await until(lambda: len(fake.started) == 1)
        order = [(TOPIC, b"e1"), (OTHER_TOPIC, b"q1"), (TOPIC, b"e2"), (OTHER_TOPIC, b"q2")]
        tasks = [asyncio.create_task(pub.publish(t, d, {})) for t, d in order]
        await until(lambda: pub.outstanding == 5)
        fake.gate.set()
        await settled([holder, *tasks])
        assert [(r.topic, [m.data for m in r.messages]) for r in fake.requests] == [
            (TOPIC, [b"holder"]),
            (TOPIC, [b"e1", b"e2"]),
            (OTHER_TOPIC, [b"q1", b"q2"]),
        ]

    run(test)


def test_transient_errors_are_retried_and_what_queued_meanwhile_joins_the_retry(
    fake: FakePublish,
) -> None:
    async def test() -> None:
        pub = make()
        fake.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
        first = asyncio.create_task(pub.publish(TOPIC, b"first", {}))
        await until(lambda: len(fake.started) == 1)
        await asyncio.sleep(0.01)  # inside the first back-off
        second = asyncio.create_task(pub.publish(TOPIC, b"second", {}))
        assert await settled([first, second]) == ["0", "1"]
        assert len(fake.started) == 3
        assert fake.batches == [[b"first", b"second"]]
        assert pub.outstanding == 0

    run(test)


def test_transient_errors_until_the_deadline_fail_the_publish_in_time(
    fake: FakePublish,
) -> None:
    async def test() -> None:
        pub = make(timeout_seconds=0.4)
        fake.fail_always = grpc.StatusCode.UNAVAILABLE
        started = time.monotonic()
        with pytest.raises(PublishFailed, match=r"no confirmation within 0\.4s"):
            await pub.publish(TOPIC, b"x", {})
        assert 0.4 <= time.monotonic() - started < 1.0
        assert len(fake.started) >= 3  # retried with back-off meanwhile
        await until(lambda: pub.outstanding == 0)

    run(test)


def test_a_permanent_error_fails_at_once_without_a_retry(fake: FakePublish) -> None:
    async def test() -> None:
        pub = make()
        fake.fail_always = grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(PublishFailed, match="PERMISSION_DENIED"):
            await pub.publish(TOPIC, b"x", {})
        assert len(fake.started) == 1
        assert pub.outstanding == 0

    run(test)


def test_a_message_pubsub_calls_invalid_is_rejected(fake: FakePublish) -> None:
    async def test() -> None:
        fake.fail_always = grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(MessageRejected):
            await make().publish(TOPIC, b"x", {})

    run(test)


def test_a_message_over_pubsubs_request_limit_is_rejected_without_an_rpc(
    fake: FakePublish,
) -> None:
    async def test() -> None:
        with pytest.raises(MessageRejected):
            await make().publish(TOPIC, b"x" * PUBSUB_MAX_REQUEST_BYTES, {})
        assert fake.started == []

    run(test)


def test_a_frozen_pubsub_answers_every_message_by_its_own_deadline(fake: FakePublish) -> None:
    async def test() -> None:
        pub = make(timeout_seconds=0.5)
        fake.gate.clear()
        in_rpc = asyncio.create_task(pub.publish(TOPIC, b"in-rpc", {}))
        await until(lambda: len(fake.started) == 1)
        await asyncio.sleep(0.2)
        queued = asyncio.create_task(pub.publish(TOPIC, b"queued", {}))
        started = time.monotonic()
        results = await settled([in_rpc, queued])
        assert all(isinstance(result, PublishFailed) for result in results)
        # The queued one waited its own 0.5 s, not the RPC's deadline nor a retry's.
        assert 0.45 <= time.monotonic() - started < 0.9
        assert fake.requests == []
        await until(lambda: pub.outstanding == 0)

    run(test)


def test_beyond_max_outstanding_a_publish_is_refused_at_once(fake: FakePublish) -> None:
    async def test() -> None:
        pub = make(max_outstanding=3)
        fake.gate.clear()
        waiting = [asyncio.create_task(pub.publish(TOPIC, b"m%d" % n, {})) for n in range(3)]
        await until(lambda: pub.outstanding == 3)
        with pytest.raises(PublishFailed, match="already wait"):
            await pub.publish(TOPIC, b"one too many", {})
        fake.gate.set()
        assert await settled(waiting) == ["0", "1", "2"]
        # Room again once Pub/Sub answered.
        assert await pub.publish(TOPIC, b"again", {}) == "3"

    run(test)


def test_a_message_whose_caller_left_is_not_sent(fake: FakePublish) -> None:
    async def test() -> None:
        pub = make()
        fake.gate.clear()
        holder = asyncio.create_task(pub.publish(TOPIC, b"holder", {}))
        await until(lambda: len(fake.started) == 1)
        gone = asyncio.create_task(pub.publish(TOPIC, b"gone", {}))
        kept = asyncio.create_task(pub.publish(TOPIC, b"kept", {}))
        await until(lambda: pub.outstanding == 3)
        gone.cancel()
        fake.gate.set()
        await settled([holder, gone, kept])
        assert fake.batches == [[b"holder"], [b"kept"]]
        assert pub.outstanding == 0

    run(test)


def test_small_messages_do_not_wait_behind_a_large_ones_upload(fake: FakePublish) -> None:
    async def test() -> None:
        pub = make()
        fake.gate.clear()
        large = asyncio.create_task(pub.publish(TOPIC, b"L" * 2_000_000, {}))
        await until(lambda: len(fake.started) == 1)
        small = asyncio.create_task(pub.publish(TOPIC, b"small", {}))
        await until(lambda: len(fake.started) == 2)
        assert fake.in_flight == 2
        fake.gate.set()
        await settled([large, small])
        # Once the large upload is over, one RPC at a time again.
        fake.gate.clear()
        tasks = [asyncio.create_task(pub.publish(TOPIC, b"m%d" % n, {})) for n in range(3)]
        await until(lambda: len(fake.started) == 3)
        await asyncio.sleep(0.01)
        assert fake.in_flight == 1
        fake.gate.set()
        await settled(tasks)

    run(test)


def test_the_channel_opens_once_on_the_first_publishes_in_the_running_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakePublish()
    opened: list[asyncio.AbstractEventLoop] = []

    class Channel:
        def unary_unary(self, method: str, **_: object) -> FakePublish:
            assert method == "/google.pubsub.v1.Publisher/Publish"
            return fake

    async def open_channel() -> Channel:
        opened.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return Channel()

    monkeypatch.setattr(publisher, "_open_channel", open_channel)
    pub = make()
    assert opened == []

    async def test() -> None:
        ids = await asyncio.gather(*(pub.publish(TOPIC, b"m%d" % n, {}) for n in range(3)))
        assert sorted(ids) == ["0", "1", "2"]
        assert opened == [asyncio.get_running_loop()]

    run(test)


def test_the_emulator_host_selects_an_insecure_channel_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")

    async def test() -> None:
        channel = await publisher._open_channel()
        try:
            assert isinstance(channel, grpc.aio.Channel)
        finally:
            await channel.close()

    run(test)
