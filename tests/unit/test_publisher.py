"""The confirming publisher's batching, deadlines and back-pressure, over a fake Publish RPC.

The real RPC against the emulator is covered by the integration tests; here the
call is replaced so that each test controls exactly when and how Pub/Sub answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import pytest

from shared import publisher
from shared.publisher import ConfirmingPublisher, PublisherConfig
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
    """Stands in for the Publish RPC: records requests, answers ids, or blocks or fails."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.calling_threads: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.fail_with: Exception | None = None
        # Hang until the gate opens, whatever the deadline (a frozen Pub/Sub).
        self.ignore_timeout = False
        self._lock = threading.Lock()
        self._next_id = 0

    def __call__(self, request: Any, *, timeout: float, metadata: object) -> Any:
        del metadata
        self.entered.release()
        if not self.gate.wait(None if self.ignore_timeout else timeout):
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED)
        with self._lock:
            self.requests.append(request)
            self.calling_threads.append(threading.get_ident())
            if self.fail_with is not None:
                raise self.fail_with
            ids = [str(self._next_id + n) for n in range(len(request.messages))]
            self._next_id += len(ids)
        return publisher._PublishResponse(message_ids=ids)

    @property
    def messages(self) -> list[Any]:
        return [message for request in self.requests for message in request.messages]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePublish:
    fake = FakePublish()

    def start(self: ConfirmingPublisher) -> None:
        self._call = fake

    monkeypatch.setattr(ConfirmingPublisher, "_start", start)
    return fake


def make(**overrides: Any) -> ConfirmingPublisher:
    settings: dict[str, Any] = {
        "project_id": "p",
        "timeout_seconds": 5.0,
        "batch_max_latency_seconds": 0.0,
        "batch_max_messages": 50,
        "max_outstanding": 1000,
    }
    settings.update(overrides)
    return ConfirmingPublisher(PublisherConfig(**settings))


def in_threads(count: int, target: Callable[[int], object]) -> Callable[[], list[object]]:
    """Start target(0..count-1) concurrently; the returned function joins them and
    gives each result or exception, in order."""
    results: list[object] = [None] * count

    def run(number: int) -> None:
        try:
            results[number] = target(number)
        except Exception as exc:  # noqa: BLE001
            results[number] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()

    def join() -> list[object]:
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
        return results

    return join


def hold_the_send_slot(fake: FakePublish, pub: ConfirmingPublisher) -> Callable[[], object]:
    """Start one publish whose RPC hangs until `fake.gate` opens, whatever its deadline (the
    real channel ends an RPC at its deadline; the integration tests freeze the emulator for
    that). With one send slot, everything published meanwhile queues behind it."""
    fake.gate.clear()
    fake.ignore_timeout = True
    holder = in_threads(1, lambda n: pub.publish(TOPIC, b"holder", {}))
    assert fake.entered.acquire(timeout=2)
    return holder


def oversleep(monkeypatch: pytest.MonkeyPatch, late: Mapping[bytes, float]) -> None:
    """The threads of these messages are not scheduled until `late[data]` s after their
    deadline, whatever wakes them: their wait reports a timeout."""
    wait = publisher._Pending.wait

    def descheduled(self: publisher._Pending, timeout: float) -> bool:
        if self.data not in late:
            return wait(self, timeout)
        time.sleep(max(0.0, timeout) + late[self.data])
        return False

    monkeypatch.setattr(publisher._Pending, "wait", descheduled)


def test_one_message_is_published_byte_exact_with_its_attributes(fake: FakePublish) -> None:
    data = b'{"b": 1,  "a": "\xc3\xa9"}\n'
    attributes = {"event_type": "sync.complete", "webhook_id": "msg_1"}
    message_id = make().publish(TOPIC, data, attributes)
    [request] = fake.requests
    assert request.topic == TOPIC
    [message] = request.messages
    assert message.data == data
    assert dict(message.attributes) == attributes
    assert message_id == "0"


def test_concurrent_messages_share_batches_and_each_gets_its_own_id(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(batch_max_latency_seconds=0.01)
    count = 24

    def send(number: int) -> tuple[str, str]:
        return str(number), pub.publish(TOPIC, str(number).encode(), {"n": str(number)})

    results = in_threads(count, send)
    # Let the first RPC in only once everyone is waiting, so that the rest queue up.
    time.sleep(0.3)
    fake.gate.set()
    answers: dict[str, str] = dict(r for r in results() if isinstance(r, tuple))
    assert len(answers) == count
    assert len(fake.requests) < count, "messages were not batched"
    sent = {message.attributes["n"]: message.data for message in fake.messages}
    assert sent == {str(n): str(n).encode() for n in range(count)}
    # Each caller got the id Pub/Sub gave its own message.
    ids = {m.attributes["n"]: str(i) for i, m in enumerate(fake.messages)}
    assert answers == ids


def test_request_threads_send_themselves_without_sender_threads(fake: FakePublish) -> None:
    before = threading.active_count()
    pub = make()
    results = in_threads(8, lambda n: pub.publish(TOPIC, b"x", {"n": str(n)}))()
    assert all(isinstance(result, str) for result in results)
    assert threading.active_count() == before
    assert len(fake.requests) >= 1
    own = threading.get_ident()
    pub.publish(TOPIC, b"y", {})
    assert fake.calling_threads[-1] == own


def test_with_one_send_slot_the_rest_wait_to_leave_together(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(max_concurrent_sends=1)
    results = in_threads(9, lambda n: pub.publish(TOPIC, b"x", {"n": str(n)}))
    assert fake.entered.acquire(timeout=2)
    # While the first RPC hangs, no second one starts: the others queue behind it.
    assert not fake.entered.acquire(timeout=0.3)
    fake.gate.set()
    assert all(isinstance(result, str) for result in results())
    assert len(fake.messages) == 9
    # The first RPC may have left with a few; the ones queued behind it left as one.
    assert len(fake.requests) == 2
    assert len(fake.requests[0].messages) + len(fake.requests[1].messages) == 9


def test_topics_are_never_mixed_in_one_request(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(batch_max_latency_seconds=0.01)
    topics = (TOPIC, OTHER_TOPIC)
    results = in_threads(10, lambda n: pub.publish(topics[n % 2], topics[n % 2].encode(), {}))
    time.sleep(0.2)
    fake.gate.set()
    assert all(isinstance(result, str) for result in results())
    for request in fake.requests:
        assert {message.data for message in request.messages} == {request.topic.encode()}
    assert sum(len(request.messages) for request in fake.requests) == 10
    assert {request.topic for request in fake.requests} == {TOPIC, OTHER_TOPIC}


def test_batches_respect_the_message_limit(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(batch_max_messages=3)
    results = in_threads(10, lambda n: pub.publish(TOPIC, b"x", {}))
    time.sleep(0.2)
    fake.gate.set()
    assert all(isinstance(result, str) for result in results())
    assert max(len(request.messages) for request in fake.requests) <= 3
    assert len(fake.messages) == 10


def test_no_confirmation_in_time_fails_within_the_timeout(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(publisher.PublishFailed):
        pub.publish(TOPIC, b"x", {})
    assert time.monotonic() - started < 1.5


def test_a_queued_message_times_out_too_and_is_then_not_sent(fake: FakePublish) -> None:
    pub = make(timeout_seconds=0.5, batch_max_messages=1, max_concurrent_sends=1)
    holders = hold_the_send_slot(fake, pub)
    started = time.monotonic()
    with pytest.raises(publisher.PublishFailed):
        pub.publish(TOPIC, b"queued", {})
    assert time.monotonic() - started < 1.5
    fake.gate.set()
    holders()
    # Nothing stalls afterwards, and the message given up on while queued is never sent.
    assert pub.publish(TOPIC, b"after", {}) is not None
    sent = [message.data for message in fake.messages]
    assert b"queued" not in sent
    assert sent[-1] == b"after"
    # No send slot or outstanding count was left behind by the message given up on.
    assert (pub._sending, pub._outstanding) == (0, 0)


def test_after_pubsub_recovers_publishing_goes_on(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(timeout_seconds=0.3)
    failed = in_threads(6, lambda n: pub.publish(TOPIC, b"x", {}))()
    assert all(isinstance(result, publisher.PublishFailed) for result in failed)
    fake.gate.set()
    results = in_threads(6, lambda n: pub.publish(TOPIC, str(n).encode(), {}))()
    assert all(isinstance(result, str) for result in results)


def test_a_batch_handed_to_threads_that_gave_up_does_not_lose_the_send_slot(
    fake: FakePublish, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: Pub/Sub answers just as the queued messages time out, the next batch
    goes to a thread that has given up, which passes it to one that has already left."""
    # One slot, so that losing it shows: every later publish would wait for nothing.
    pub = make(timeout_seconds=0.5, max_concurrent_sends=1)
    holder = hold_the_send_slot(fake, pub)
    # "second" (batched after "first") is the first to give up and leave.
    oversleep(monkeypatch, {b"first": 0.3, b"second": 0.1})
    queued = in_threads(2, lambda n: pub.publish(TOPIC, (b"first", b"second")[n], {}))
    time.sleep(0.2)
    fake.gate.set()
    holder()
    assert all(isinstance(result, publisher.PublishFailed) for result in queued())
    # The slot came back: the next message is sent, not queued until it times out.
    assert pub.publish(TOPIC, b"after", {}) is not None
    assert fake.messages[-1].data == b"after"


def test_a_message_confirmed_as_its_wait_runs_out_answers_with_its_id(
    fake: FakePublish, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored is stored: a 503 here would only make Svix send it again."""
    pub = make(timeout_seconds=0.5, max_concurrent_sends=1)
    holder = hold_the_send_slot(fake, pub)
    oversleep(monkeypatch, {b"late": 0.1})
    # "first" leads the next batch and sends "late" with it, long before late's deadline.
    queued = in_threads(2, lambda n: pub.publish(TOPIC, (b"first", b"late")[n], {}))
    time.sleep(0.1)
    fake.gate.set()
    holder()
    first, late = queued()
    assert isinstance(first, str) and isinstance(late, str)
    assert {m.data for m in fake.requests[-1].messages} == {b"first", b"late"}


def test_back_pressure_refuses_beyond_max_outstanding(fake: FakePublish) -> None:
    fake.gate.clear()
    pub = make(max_outstanding=2, timeout_seconds=3)
    waiting = in_threads(2, lambda n: pub.publish(TOPIC, b"x", {}))
    # Both are now outstanding (sent, or queued behind the send): a third is refused at once.
    assert fake.entered.acquire(timeout=2)
    deadline = time.monotonic() + 2
    while pub._outstanding < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(publisher.PublishFailed, match="already wait"):
        pub.publish(TOPIC, b"refused", {})
    assert time.monotonic() - started < 0.2
    fake.gate.set()
    assert all(isinstance(result, str) for result in waiting())
    # Once answered, they no longer count.
    assert pub.publish(TOPIC, b"later", {}) is not None


def test_a_non_transient_error_fails_every_message_of_the_batch(fake: FakePublish) -> None:
    fake.fail_with = FakeRpcError(grpc.StatusCode.PERMISSION_DENIED)
    fake.gate.clear()
    pub = make(batch_max_latency_seconds=0.01)
    results = in_threads(5, lambda n: pub.publish(TOPIC, b"x", {}))
    time.sleep(0.2)
    fake.gate.set()
    assert all(isinstance(result, publisher.PublishFailed) for result in results())
    fake.fail_with = None
    assert pub.publish(TOPIC, b"ok", {}) is not None


def test_transient_errors_are_retried_until_confirmed(fake: FakePublish) -> None:
    failures = iter([FakeRpcError(grpc.StatusCode.UNAVAILABLE)] * 2)
    original = fake.__call__

    def flaky(request: Any, *, timeout: float, metadata: object) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return original(request, timeout=timeout, metadata=metadata)

    pub = make()
    pub._call = flaky
    pub._started = True
    assert pub.publish(TOPIC, b"x", {}) == "0"


def test_a_message_pubsub_refuses_as_invalid_is_rejected(fake: FakePublish) -> None:
    fake.fail_with = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(publisher.MessageRejected):
        make().publish(TOPIC, b"x", {})


def test_a_message_over_the_request_limit_is_rejected_unsent(fake: FakePublish) -> None:
    with pytest.raises(publisher.MessageRejected):
        make().publish(TOPIC, b"x" * PUBSUB_MAX_REQUEST_BYTES, {})
    assert fake.requests == []


def test_a_message_whose_deadline_passed_before_its_batch_left_fails_and_is_not_sent(
    fake: FakePublish,
) -> None:
    """A leader woken just before its deadline may reach the send after it, and so may
    messages in its batch: those answer 503 unsent, the rest go out."""
    pub = make()
    pub._start()
    now = time.monotonic()
    late = publisher._Pending(TOPIC, b"late", {}, now - 10, timeout=1)
    live = publisher._Pending(TOPIC, b"live", {}, now, timeout=5)
    pub._sending, pub._outstanding = 1, 2
    pub._send([late, live])
    assert isinstance(late.error, publisher.PublishFailed)
    assert "before the message was sent" in str(late.error)
    assert live.message_id == "0"
    assert [message.data for message in fake.messages] == [b"live"]
    assert (pub._sending, pub._outstanding) == (0, 0)
