"""Real emulators for the integration tests, started once per session on free ports."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.cloud import firestore, pubsub_v1, tasks_v2  # type: ignore[attr-defined]  # untyped package

from ops import pubsub_admin
from ops.defaults import LOOPBACK
from ops.local.emulators import Emulator, start_firestore, start_pubsub, start_tasks
from ops.local.processes import free_port
from ops.local.stack import Emulators, tasks_queue_path
from ops.local.topology import create_queue
from ops.signing import DEV_SECRET
from shared.names import Names
from tests.conftest import IngestClient, ingest_client

PROJECT = "integration-test"
T = TypeVar("T")


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_pubsub(PROJECT, log_dir=tmp_path_factory.mktemp("logs"))
    yield emulator
    emulator.stop()


@dataclass
class Topics:
    """A fresh pair of topics, each with a pull subscription to read what arrived."""

    emulator_host: str
    events: str
    quarantine: str
    subscriber: pubsub_v1.SubscriberClient

    def subscription(self, topic: str) -> str:
        return str(self.subscriber.subscription_path(PROJECT, f"{topic}-watch"))

    def pull(
        self, topic: str, *, expect: int, timeout: float = 10.0
    ) -> list[pubsub_admin.PulledMessage]:
        """Pull until `expect` messages arrived, then check nothing more comes."""
        deadline = time.monotonic() + timeout
        received: list[pubsub_admin.PulledMessage] = []
        while len(received) < expect and time.monotonic() < deadline:
            batch = pubsub_admin.pull(self.subscriber, self.subscription(topic))
            received.extend(batch)
            if not batch:
                time.sleep(0.05)
        received.extend(pubsub_admin.pull(self.subscriber, self.subscription(topic)))
        return received


def make_topics(emulator: Emulator) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    publisher = pubsub_admin.publisher_client(emulator.host_port)
    subscriber = pubsub_admin.subscriber_client(emulator.host_port)
    topics = Topics(emulator.host_port, f"events-{suffix}", f"quarantine-{suffix}", subscriber)
    for topic in (topics.events, topics.quarantine):
        pubsub_admin.ensure_topic(publisher, PROJECT, topic)
        pubsub_admin.ensure_pull_subscription(subscriber, PROJECT, topic, f"{topic}-watch")
    return topics


@pytest.fixture
def topics(pubsub_emulator: Emulator) -> Topics:
    return make_topics(pubsub_emulator)


def ingest_env(topics: Topics, **overrides: str) -> dict[str, str]:
    return {
        "WEBHOOK_SECRETS": DEV_SECRET,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "EVENTS_TOPIC": topics.events,
        "QUARANTINE_TOPIC": topics.quarantine,
        "PUBSUB_EMULATOR_HOST": topics.emulator_host,
        **overrides,
    }


@pytest.fixture
def ingest_app(monkeypatch: pytest.MonkeyPatch) -> Callable[..., IngestClient]:
    """The real function app, publishing to the emulator behind `topics`."""

    def build(topics: Topics, **overrides: str) -> IngestClient:
        for key, value in ingest_env(topics, **overrides).items():
            monkeypatch.setenv(key, value)
        client: IngestClient = ingest_client()
        return client

    return build


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_firestore(PROJECT, log_dir=tmp_path_factory.mktemp("firestore-logs"))
    yield emulator
    emulator.stop()


@pytest.fixture
def firestore_client(
    firestore_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> firestore.Client:
    """A client of the emulator; the env var also points code under test at it."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host_port)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    return firestore.Client(project=PROJECT)


@pytest.fixture(scope="session")
def tasks_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_tasks(log_dir=tmp_path_factory.mktemp("tasks-logs"))
    # The queue of the default names, which tests that enqueue without a stack use.
    create_queue(emulator.host_port, tasks_queue_path(PROJECT, Names()))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def emulators(
    pubsub_emulator: Emulator, firestore_emulator: Emulator, tasks_emulator: Emulator
) -> Emulators:
    """The three emulators, as a stack runs on them."""
    return Emulators(pubsub_emulator, firestore_emulator, tasks_emulator)


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.2, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or probe}")
        time.sleep(interval)


@dataclass
class FakeCloudTasks:
    """CreateTask that remembers names and refuses a name it has seen, like Cloud Tasks."""

    host: str
    requests: list[tasks_v2.CreateTaskRequest] = field(default_factory=list)
    fail_with: grpc.StatusCode | None = None

    def create_task(
        self, request: tasks_v2.CreateTaskRequest, context: grpc.ServicerContext
    ) -> tasks_v2.Task:
        self.requests.append(request)
        if self.fail_with is not None:
            context.abort(self.fail_with, "injected failure")
        if request.task.name in {r.task.name for r in self.requests[:-1]}:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
        return request.task


@pytest.fixture
def cloud_tasks() -> Iterator[FakeCloudTasks]:
    port = free_port()
    fake = FakeCloudTasks(f"{LOOPBACK}:{port}")
    handler = grpc.method_handlers_generic_handler(
        "google.cloud.tasks.v2.CloudTasks",
        {
            "CreateTask": grpc.unary_unary_rpc_method_handler(
                fake.create_task,
                request_deserializer=tasks_v2.CreateTaskRequest.deserialize,
                response_serializer=tasks_v2.Task.serialize,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(fake.host)
    server.start()
    yield fake
    server.stop(grace=None)
