"""`python -m ops` on the real emulators: a wrong name or an empty project fails in one line
naming what exists, and `replay --since` says what it redelivers, which is then what arrives.

The deployment here is `make run`'s topology (ops/local/topology.py) in a
project of its own, pushing to a recorder that acknowledges every push.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package
from google.protobuf import duration_pb2

from ops import pubsub_admin
from ops.cli.main import main
from ops.defaults import LOCAL_PROJECT, LOOPBACK
from ops.local import topology
from ops.local.emulators import Emulator
from shared.names import Names
from shared.routing import load_table
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

NAMES = Names()
ROUTES = sorted(load_table().routes)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, and stderr, which must be at most one line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert err.count("\n") <= 1, err
    return code, out, err.rstrip("\n")


@dataclass
class Recorder:
    """A push endpoint for every service: records (path, message id) and acknowledges."""

    url: str = ""
    pushes: list[tuple[str, str]] = field(default_factory=list)

    def count(self, path: str, message_id: str) -> int:
        return self.pushes.count((path, message_id))


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    state = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            envelope = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.pushes.append((self.path, envelope["message"]["messageId"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    state.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass(frozen=True)
class Deployment:
    project: str
    host: str

    def args(self) -> list[str]:
        return ["--emulator-host", self.host, "--project", self.project]

    @property
    def where(self) -> str:
        return f"project {self.project} on the Pub/Sub emulator at {self.host}"


@pytest.fixture(scope="module")
def deployment(pubsub_emulator: Emulator, recorder: Recorder) -> Deployment:
    """`make run`'s topics and subscriptions, in a project no other test uses."""
    project = f"cli-{uuid.uuid4().hex[:8]}"
    urls = {service: recorder.url for service in load_table().services}
    topology.create(
        NAMES,
        project,
        load_table().routes.values(),
        pubsub_emulator.host_port,
        urls,
        watch_events=True,
    )
    return Deployment(project, pubsub_emulator.host_port)


def deployed_subscriptions() -> str:
    watched = [NAMES.events_topic, NAMES.quarantine_topic]
    watched += [NAMES.dead_letter_topic(route) for route in ROUTES]
    ids = [NAMES.subscription(route) for route in ROUTES]
    ids += [NAMES.watch_subscription(topic) for topic in watched]
    return ", ".join(sorted(ids))


# --- wrong names ------------------------------------------------------------------

ROUTE_LIST = ", ".join(ROUTES)


@pytest.mark.parametrize(
    ("argv", "accepts"),
    [
        (
            ["replay", "--since", "5m", "--subscription", "nonexistent"],
            f"a route ({ROUTE_LIST}), or ",
        ),
        (["dlq", "list", "nonexistent"], f"a route ({ROUTE_LIST}), quarantine, or "),
        (["dlq", "replay", "nonexistent"], f"a route ({ROUTE_LIST}), quarantine, or "),
        (["watch", "--once", "--subscription", "nonexistent"], ""),
    ],
)
def test_a_wrong_name_is_answered_with_the_names_that_exist(
    capsys: pytest.CaptureFixture[str], deployment: Deployment, argv: list[str], accepts: str
) -> None:
    assert run(capsys, *argv, *deployment.args()) == (
        1,
        "",
        f"error: no subscription nonexistent in {deployment.where}; give {accepts}"
        f"one of the subscriptions there: {deployed_subscriptions()}",
    )


def test_a_route_under_a_wrong_prefix_says_which_subscription_it_looked_for(
    capsys: pytest.CaptureFixture[str], deployment: Deployment
) -> None:
    argv = ["replay", "--since", "5m", "--subscription", "sync-state", "--prefix", "other"]
    code, out, err = run(capsys, *argv, *deployment.args())
    assert (code, out) == (1, "")
    assert err.startswith(
        f"error: no subscription other-sync-state (route sync-state with prefix other) "
        f"in {deployment.where}; give a route ("
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--since", "5m", "--subscription", "sync-state"],
        ["dlq", "list", "sync-state"],
        ["dlq", "replay", "quarantine"],
        ["watch", "--once"],
    ],
)
def test_a_project_without_subscriptions_says_so(
    capsys: pytest.CaptureFixture[str], pubsub_emulator: Emulator, argv: list[str]
) -> None:
    empty = Deployment(f"empty-{uuid.uuid4().hex[:8]}", pubsub_emulator.host_port)
    assert run(capsys, *argv, *empty.args()) == (
        1,
        "",
        f"error: {empty.where} has no subscriptions at all: is --project or --emulator-host "
        f"wrong? (`make run` uses project {LOCAL_PROJECT})",
    )


@pytest.mark.parametrize("command", ["list", "replay"])
def test_dlq_refuses_a_push_subscription(
    capsys: pytest.CaptureFixture[str],
    deployment: Deployment,
    recorder: Recorder,
    command: str,
) -> None:
    assert run(capsys, "dlq", command, "supaglue-alerts", *deployment.args()) == (
        1,
        "",
        f"error: supaglue-alerts is a push subscription (it delivers to {recorder.url}"
        f"/push/alerts), not dead letters to read: give a route ({ROUTE_LIST}), quarantine "
        "or a pull subscription",
    )


def test_dlq_replay_to_a_wrong_topic_names_the_topics(
    capsys: pytest.CaptureFixture[str], deployment: Deployment
) -> None:
    topics = [NAMES.events_topic, NAMES.quarantine_topic]
    topics += [NAMES.dead_letter_topic(route) for route in ROUTES]
    code, out, err = run(capsys, "dlq", "replay", "alerts", "--topic", "nope", *deployment.args())
    assert (code, out) == (1, "")
    assert err == (
        f"error: no topic nope in {deployment.where}; give --topic with one of the topics "
        f"there: {', '.join(sorted(topics))}"
    )


def test_dlq_replay_refuses_to_republish_a_topic_to_itself(
    capsys: pytest.CaptureFixture[str], deployment: Deployment
) -> None:
    events_watch = NAMES.watch_subscription(NAMES.events_topic)
    assert run(capsys, "dlq", "replay", events_watch, *deployment.args()) == (
        1,
        "",
        f"error: {events_watch} reads {NAMES.events_topic} itself: replaying it would publish "
        "its messages back where they came from; give a dead-letter subscription (a route name "
        "or quarantine)",
    )


def test_status_of_a_project_without_documents_says_so(
    capsys: pytest.CaptureFixture[str], firestore_emulator: Emulator
) -> None:
    project = f"empty-{uuid.uuid4().hex[:8]}"
    host = firestore_emulator.host_port
    assert run(capsys, "status", "--firestore-host", host, "--project", project) == (
        1,
        "",
        f"error: project {project} on the Firestore emulator at {host}, database (default) has "
        "no documents at all: nothing was handled there yet, or --project or --firestore-host "
        f"is wrong (`make run` uses project {LOCAL_PROJECT})",
    )


# --- what replay --since redelivers -----------------------------------------------


def test_replay_redelivers_acknowledged_events_to_a_make_run_subscription(
    capsys: pytest.CaptureFixture[str], deployment: Deployment, recorder: Recorder
) -> None:
    publisher = pubsub_admin.publisher_client(deployment.host)
    topic = publisher.topic_path(deployment.project, NAMES.events_topic)
    message_id = publisher.publish(topic, b"{}", event_type="sync.complete").result(timeout=30)
    path = "/push/sync-state"
    pushed = wait_for(lambda: recorder.count(path, message_id), what="the first push")

    code, out, err = run(
        capsys, "replay", "--since", "5m", "--subscription", "sync-state", *deployment.args()
    )
    assert (code, err) == (0, "")
    rewound, kept, before = out.splitlines()
    assert rewound.startswith(
        f"projects/{deployment.project}/subscriptions/supaglue-sync-state rewound to "
    )
    assert kept == (
        "  it keeps acknowledged messages for 7 days and its topic keeps messages for 7 days: "
        "every message published since then is delivered again (a handler's ledger skips "
        "events that already took effect)"
    )
    assert before.startswith("  messages published before then and not yet acknowledged")
    wait_for(lambda: recorder.count(path, message_id) > pushed, what="the push after the rewind")


@dataclass(frozen=True)
class Channel:
    """A topic and a pull subscription on it, each with the retention a test gives it."""

    project: str
    host: str
    topic: str
    subscription: str
    publisher: pubsub_v1.PublisherClient
    subscriber: pubsub_v1.SubscriberClient

    def publish(self, data: bytes) -> None:
        self.publisher.publish(self.topic, data).result(timeout=30)

    def pull(self, *, ack: bool = True) -> list[bytes]:
        return [m.data for m in pubsub_admin.pull(self.subscriber, self.subscription, ack=ack)]

    def replay(self, capsys: pytest.CaptureFixture[str], since: str) -> tuple[int, str, str]:
        name = self.subscription.rsplit("/", 1)[1]
        args = ["--emulator-host", self.host, "--project", self.project]
        return run(capsys, "replay", "--since", since, "--subscription", name, *args)


def kept_for(span: timedelta | None) -> dict[str, duration_pb2.Duration]:
    """A topic's or subscription's message_retention_duration, if given."""
    if span is None:
        return {}
    return {"message_retention_duration": duration_pb2.Duration(seconds=int(span.total_seconds()))}


def channel(
    emulator: Emulator,
    *,
    retain_acked: bool,
    retention: timedelta | None = None,
    topic_retention: timedelta | None = None,
) -> Channel:
    project, suffix = f"replay-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    publisher = pubsub_admin.publisher_client(emulator.host_port)
    subscriber = pubsub_admin.subscriber_client(emulator.host_port)
    topic = publisher.topic_path(project, f"topic-{suffix}")
    publisher.create_topic(request=pubsub_v1.types.Topic(name=topic, **kept_for(topic_retention)))
    subscription = subscriber.subscription_path(project, f"sub-{suffix}")
    subscriber.create_subscription(
        request=pubsub_v1.types.Subscription(
            name=subscription,
            topic=topic,
            retain_acked_messages=retain_acked,
            # Only a seek hands a pulled, unacknowledged message out again within the test.
            ack_deadline_seconds=600,
            **kept_for(retention),
        )
    )
    return Channel(project, emulator.host_port, topic, subscription, publisher, subscriber)


def test_replay_without_retention_says_acknowledged_messages_do_not_come_back(
    capsys: pytest.CaptureFixture[str], pubsub_emulator: Emulator
) -> None:
    line = channel(pubsub_emulator, retain_acked=False)
    line.publish(b"acked")
    assert wait_for(line.pull, what="the first message") == [b"acked"]
    line.publish(b"pending")
    assert wait_for(lambda: line.pull(ack=False), what="the second message") == [b"pending"]

    code, out, err = line.replay(capsys, "5m")
    assert code == 1
    assert out.splitlines()[1] == (
        "  only messages published since then that were not yet acknowledged are delivered again"
    )
    name = line.subscription.rsplit("/", 1)[1]
    assert err.startswith(
        f"error: {name} does not retain acknowledged messages (retain_acked_messages is off) "
        "and its topic keeps none (no message retention), so those acknowledged since "
    )
    assert err.endswith(
        " are NOT delivered again: set either (Terraform and `make run` set both "
        "for the routes' subscriptions); only what is acknowledged after that can be replayed"
    )
    # As it says: the pending message comes again at once, the acknowledged one does not.
    assert wait_for(line.pull, what="the pending message again") == [b"pending"]
    time.sleep(0.5)
    assert line.pull() == []


def test_replay_through_the_topics_retention_redelivers(
    capsys: pytest.CaptureFixture[str], pubsub_emulator: Emulator
) -> None:
    line = channel(pubsub_emulator, retain_acked=False, topic_retention=timedelta(days=1))
    line.publish(b"acked")
    assert wait_for(line.pull, what="the message") == [b"acked"]

    code, out, err = line.replay(capsys, "5m")
    assert (code, err) == (0, "")
    assert out.splitlines()[1].startswith("  its topic keeps messages for 1 day: every message")
    assert wait_for(line.pull, what="the message again") == [b"acked"]


def test_replay_further_back_than_the_retention_warns(
    capsys: pytest.CaptureFixture[str], pubsub_emulator: Emulator
) -> None:
    line = channel(pubsub_emulator, retain_acked=True, retention=timedelta(minutes=10))
    line.publish(b"acked")
    assert wait_for(line.pull, what="the message") == [b"acked"]

    code, out, err = line.replay(capsys, "1h")
    assert code == 0
    assert out.splitlines()[1].startswith("  it keeps acknowledged messages for 10 minutes: every")
    name = line.subscription.rsplit("/", 1)[1]
    assert err.startswith("warning: --since ")
    assert f" is further back than {name} can replay (10 minutes, back to " in err
    assert err.endswith("): messages published before then are not delivered again")
    # What it does retain still comes back.
    assert wait_for(line.pull, what="the message again") == [b"acked"]
