"""Dead-letter inspection, replay and seek, on the Pub/Sub emulator."""

from __future__ import annotations

import datetime
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package

from ops import pubsub_admin
from ops.cli import dead_letters as dlq
from ops.cli import main as cli
from ops.local.emulators import Emulator
from shared.log import TraceContext
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration


FIRST_TRACE = "ab" * 16


@dataclass
class Topics:
    publisher: Any
    subscriber: Any
    events: str
    events_watch: str
    dead_letters: str
    dead_letter_watch: str

    def dead_letter(self, webhook_id: str, reason: str, **extra: str) -> None:
        attributes = {
            "event_type": "sync.complete",
            "webhook_id": webhook_id,
            "customer_id": "c1",
            "reason": reason,
            "reason_detail": "why",
            "dead_letter_handler": "sync-state",
            "original_message_id": "42",
            **extra,
        }
        self.publisher.publish(
            self.dead_letters, f"body-{webhook_id}".encode(), **attributes
        ).result()

    def pull(self, subscription: str) -> list[pubsub_admin.PulledMessage]:
        time.sleep(0.3)
        return pubsub_admin.pull(self.subscriber, subscription)


@pytest.fixture
def topics(pubsub_emulator: Emulator) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    publisher = pubsub_admin.publisher_client(pubsub_emulator.host_port)
    subscriber = pubsub_admin.subscriber_client(pubsub_emulator.host_port)
    events = pubsub_admin.ensure_topic(publisher, PROJECT, f"events-{suffix}")
    dead = pubsub_admin.ensure_topic(publisher, PROJECT, f"dead-{suffix}")
    events_watch = subscriber.subscription_path(PROJECT, f"events-{suffix}-watch")
    subscriber.create_subscription(
        request=pubsub_v1.types.Subscription(
            name=events_watch, topic=events, retain_acked_messages=True
        )
    )
    dead_watch = pubsub_admin.ensure_pull_subscription(
        subscriber, PROJECT, f"dead-{suffix}", f"dead-{suffix}-watch"
    )
    return Topics(publisher, subscriber, events, events_watch, dead, dead_watch)


def test_list_shows_reasons_and_consumes_nothing(topics: Topics) -> None:
    topics.dead_letter("msg_1", "handler_failed")
    topics.dead_letter("msg_2", "invalid_event")
    time.sleep(0.3)
    first = dlq.list_dead_letters(topics.subscriber, topics.dead_letter_watch, limit=10)
    assert sorted(letter.reason for letter in first) == ["handler_failed", "invalid_event"]
    again = dlq.list_dead_letters(topics.subscriber, topics.dead_letter_watch, limit=10)
    assert {m.message_id for m in again} == {m.message_id for m in first}


def test_dry_run_publishes_nothing_and_keeps_every_letter(topics: Topics) -> None:
    topics.dead_letter("msg_1", "handler_failed")
    time.sleep(0.3)
    report = dlq.replay(
        topics.subscriber,
        topics.publisher,
        topics.dead_letter_watch,
        topics.events,
        limit=10,
        dry_run=True,
    )
    assert len(report.replayed) == 1
    assert topics.pull(topics.events_watch) == []
    assert len(dlq.list_dead_letters(topics.subscriber, topics.dead_letter_watch, limit=10)) == 1


def test_replay_republishes_chosen_letters_with_their_original_attributes(topics: Topics) -> None:
    topics.dead_letter(
        "msg_a",
        "handler_failed",
        CloudPubSubDeadLetterSourceDeliveryCount="5",
        traceparent=f"00-{FIRST_TRACE}-{'cd' * 8}-01",
    )
    topics.dead_letter("msg_b", "invalid_event")
    topics.dead_letter("msg_c", "handler_failed")
    time.sleep(0.3)
    lines: list[str] = []
    report = dlq.replay(
        topics.subscriber,
        topics.publisher,
        topics.dead_letter_watch,
        topics.events,
        limit=10,
        select=lambda letter: letter.reason == "handler_failed",
        progress=lines.append,
    )
    assert len(report.replayed) == 2
    assert len(report.skipped) == 1
    assert len(lines) == 2
    republished = topics.pull(topics.events_watch)
    assert sorted(m.attributes["webhook_id"] for m in republished) == ["msg_a", "msg_c"]
    traces = set()
    for message in republished:
        attributes = dict(message.attributes)
        webhook_id = attributes["webhook_id"]
        # A trace of its own, linked to the webhook and to the trace it was first handled in.
        trace = TraceContext.from_traceparent(attributes.pop("traceparent"))
        assert trace is not None
        traces.add(trace.trace_id)
        expected = {
            "event_type": "sync.complete",
            "webhook_id": webhook_id,
            "customer_id": "c1",
            "linked_webhook_id": webhook_id,
        }
        if webhook_id == "msg_a":
            expected["linked_trace_id"] = FIRST_TRACE
        assert attributes == expected
        assert message.data == f"body-{message.attributes['webhook_id']}".encode()
    assert len(traces) == 2
    assert FIRST_TRACE not in traces
    left = dlq.list_dead_letters(topics.subscriber, topics.dead_letter_watch, limit=10)
    assert [letter.attributes["webhook_id"] for letter in left] == ["msg_b"]


def test_replay_respects_the_limit(topics: Topics) -> None:
    for number in range(5):
        topics.dead_letter(f"msg_{number}", "handler_failed")
    time.sleep(0.3)
    report = dlq.replay(
        topics.subscriber, topics.publisher, topics.dead_letter_watch, topics.events, limit=2
    )
    assert len(report.replayed) == 2
    assert len(dlq.list_dead_letters(topics.subscriber, topics.dead_letter_watch, limit=10)) == 3


def test_a_letter_that_cannot_be_republished_is_kept(topics: Topics) -> None:
    topics.dead_letter("msg_1", "handler_failed")
    time.sleep(0.3)
    missing_topic = topics.publisher.topic_path(PROJECT, "does-not-exist")
    report = dlq.replay(
        topics.subscriber,
        topics.publisher,
        topics.dead_letter_watch,
        missing_topic,
        limit=10,
        timeout=10,
    )
    assert report.replayed == []
    assert len(report.failed) == 1
    assert len(dlq.list_dead_letters(topics.subscriber, topics.dead_letter_watch, limit=10)) == 1


def test_seek_redelivers_what_was_published_since(topics: Topics) -> None:
    topics.publisher.publish(topics.events, b"before").result()
    time.sleep(1.1)
    since = datetime.datetime.now(datetime.UTC)
    time.sleep(1.1)
    topics.publisher.publish(topics.events, b"after").result()
    assert len(topics.pull(topics.events_watch)) == 2
    assert topics.pull(topics.events_watch) == []
    dlq.seek(topics.subscriber, topics.events_watch, since)
    assert [m.data for m in topics.pull(topics.events_watch)] == [b"after"]


def test_the_cli_lists_replays_and_rewinds(
    topics: Topics, pubsub_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    topics.dead_letter("msg_cli", "invalid_event")
    time.sleep(0.3)
    common = ["--emulator-host", pubsub_emulator.host_port, "--project", PROJECT]
    assert cli.main(["dlq", "list", topics.dead_letter_watch, *common]) == 0
    assert "invalid_event" in capsys.readouterr().out
    events_topic = topics.events.rsplit("/", 1)[1]
    replay = ["dlq", "replay", topics.dead_letter_watch, "--topic", events_topic, *common]
    assert cli.main([*replay, "--dry-run"]) == 0
    assert "would replay 1" in capsys.readouterr().out
    assert cli.main(replay) == 0
    assert "replayed 1" in capsys.readouterr().out
    [message] = topics.pull(topics.events_watch)
    assert message.attributes["webhook_id"] == "msg_cli"
    assert "reason" not in message.attributes
    assert (
        cli.main(["replay", "--since", "5m", "--subscription", topics.events_watch, *common]) == 0
    )
    assert [m.attributes["webhook_id"] for m in topics.pull(topics.events_watch)] == ["msg_cli"]
